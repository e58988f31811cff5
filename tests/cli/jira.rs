//! `ferry init --tracker jira`: the configuration it writes and how it fails
//! without credentials or without a reachable Jira. (The connector itself is
//! tested against a fake Jira in the library: src/tracker/jira/tests.rs.)

use std::process::Command;

use assert_cmd::cargo::CommandCargoExt;

use super::{Run, World};

fn init(w: &World, env: &[(&str, &str)], args: &[&str]) -> Run {
    std::fs::create_dir_all(w.path("support")).unwrap();
    let mut cmd = Command::cargo_bin("ferry").unwrap();
    cmd.current_dir(w.path("support"))
        .args(["init", "--site", "support", "--tracker", "jira"])
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env_remove("FERRY_DIR")
        .env_remove("FERRY_JIRA_EMAIL")
        .env_remove("FERRY_JIRA_API_TOKEN")
        .env_remove("FERRY_JIRA_PAT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn init_writes_the_jira_block_and_asks_for_the_credentials() {
    let w = World::new();
    let run = init(
        &w,
        &[],
        &[
            "--url",
            "https://acme.atlassian.net",
            "--flavour",
            "cloud",
            "--project",
            "SUP",
        ],
    );
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("FERRY_JIRA_EMAIL and FERRY_JIRA_API_TOKEN"),
        "{}",
        run.stderr
    );
    let config = std::fs::read_to_string(w.path("support/ferry.yaml")).unwrap();
    assert!(config.contains("  kind: jira\n  url: \"https://acme.atlassian.net\"\n  flavour: cloud\n  project: \"SUP\"\n"), "{config}");
    let parsed: serde_yaml::Value = serde_yaml::from_str(&config).unwrap();
    assert_eq!(parsed["tracker"]["kind"], "jira");
}

#[test]
fn an_unreachable_jira_is_a_site_failure_that_never_shows_the_token() {
    let w = World::new();
    let run = init(
        &w,
        &[("FERRY_JIRA_PAT", "s3cret-pat")],
        &[
            "--url",
            "http://127.0.0.1:9",
            "--flavour",
            "datacenter",
            "--project",
            "OPS",
        ],
    );
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("Jira"), "{}", run.stderr);
    assert!(!run.stderr.contains("s3cret") && !run.stdout.contains("s3cret"));
    let config = std::fs::read_to_string(w.path("support/ferry.yaml")).unwrap();
    assert!(config.contains("flavour: datacenter") && !config.contains("s3cret"));
}

#[test]
fn init_jira_without_url_is_a_usage_error() {
    let w = World::new();
    let run = init(&w, &[], &["--flavour", "cloud", "--project", "SUP"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("--url"), "{}", run.stderr);
    assert!(!w.path("support/ferry.yaml").exists());
}

#[test]
fn a_bad_jira_block_is_a_configuration_error_naming_the_key() {
    let w = World::new();
    let run = init(
        &w,
        &[],
        &[
            "--url",
            "https://acme.atlassian.net",
            "--flavour",
            "cloud",
            "--project",
            "SUP",
        ],
    );
    assert_eq!(run.code, 3, "{}", run.stderr);
    let path = w.path("support/ferry.yaml");
    let config = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        config.replace(
            "# jql: component = Printers",
            "jql: status = Open ORDER BY key",
        ),
    )
    .unwrap();
    let run = w.ferry("support", &["sync"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("ferry.yaml")
            && run.stderr.contains("tracker.jql must not contain ORDER BY"),
        "{}",
        run.stderr
    );
    let run = init(
        &w,
        &[],
        &[
            "--url",
            "acme.atlassian.net",
            "--flavour",
            "cloud",
            "--project",
            "SUP",
        ],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("not an http(s) URL"), "{}", run.stderr);
}

/// A Jira site on the repository's fake Jira (Data Center), connected to the
/// local site `support` that shares project ENG; its incoming rule maps the
/// generated statuses onto the fake's workflow.
fn jira_pair(w: &World, fake: &ferry::tracker::jira::fake::FakeJira) {
    w.site("support", &[("eng", "ENG=ENG", "")]);
    std::fs::create_dir_all(w.path("eng")).unwrap();
    std::fs::write(
        w.path("eng/ferry.yaml"),
        format!(
            "site: eng\ntracker:\n  kind: jira\n  url: \"{}\"\n  flavour: datacenter\n  \
             project: ENG\n  token_file: jira.token\n  transition_fields: {{Resolution: Fixed}}\n\
             sync_user: ferry-bot\n",
            fake.url()
        ),
    )
    .unwrap();
    std::fs::write(w.path("eng/jira.token"), "pat-123\n").unwrap();
    w.ok("eng", &["init", "--site", "eng"]);
    w.ok(
        "eng",
        &[
            "connection",
            "add",
            "support",
            "--channel",
            "../exchange.git",
            "--project",
            "ENG=ENG",
        ],
    );
    w.trust("eng", "support");
    w.trust("support", "eng");
    let rule = w.path("eng/rules/incoming.rhai");
    let text = std::fs::read_to_string(&rule).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("let statuses = "))
        .unwrap()
        .to_string();
    std::fs::write(
        &rule,
        text.replace(
            &line,
            "let statuses = #{ \"Open\": \"Backlog\", \"Waiting\": \"Backlog\", \
             \"In Progress\": \"In Progress\", \"Resolved\": \"Closed\", \"Closed\": \"Closed\" };",
        ),
    )
    .unwrap();
}

/// New issues go into Jira in groups (one bulk create, then their transitions
/// and comments side by side). Killed after the group's writes and before or
/// during their bookkeeping, the next run finds every issue and comment made by
/// its origin marker: each generated issue is in Jira once, with its comments
/// once, as after an uninterrupted import.
#[test]
fn a_grouped_import_into_jira_killed_halfway_makes_no_duplicate() {
    for point in [
        "after-create:3",
        "after-comment:7",
        "after-mark-applied:60",
        "before-applied-ref",
    ] {
        let w = World::new();
        let fake = ferry::tracker::jira::fake::FakeJira::start(
            false,
            "ENG",
            "ferry-bot",
            "Bearer pat-123",
        );
        fake.page_size(100);
        jira_pair(&w, &fake);
        w.ok(
            "support",
            &[
                "tracker",
                "generate",
                "70",
                "--project",
                "ENG",
                "--comments",
                "2",
            ],
        );
        w.ok("support", &["sync"]);
        w.ok("eng", &["pull"]);
        w.killed_at("eng", &["import"], point);
        let out = w.ok("eng", &["import"]);
        let issues = fake.overview();
        assert_eq!(issues.len(), 70, "{point}: {out}");
        let mut origins: Vec<&String> = issues
            .iter()
            .flat_map(|(_, labels, _, _)| labels.iter())
            .filter(|l| l.starts_with("ferry-origin:support:"))
            .collect();
        origins.sort();
        origins.dedup();
        assert_eq!(origins.len(), 70, "{point}: one issue per origin");
        for (key, _, status, comments) in &issues {
            assert_eq!(*comments, 2, "{point}: {key} has each comment once");
            assert!(
                ["Backlog", "In Progress", "Closed"].contains(&status.as_str()),
                "{key}: {status}"
            );
        }
        // Nothing left to do.
        let again = w.ok("eng", &["import"]);
        assert_eq!(fake.overview().len(), 70, "{again}");
    }
}

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

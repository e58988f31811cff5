//! The command line as a tool: completions and man page generated from the
//! parser, `-q` for cron, `-v` for a closer look.

use super::World;

#[test]
fn completions_are_valid_shell_and_know_the_commands() {
    let w = World::new();
    std::fs::create_dir_all(w.path("any")).unwrap();
    let bash = w.ok("any", &["completions", "bash"]);
    assert!(
        bash.contains("relink") && bash.contains("--connection"),
        "{bash}"
    );
    let script = w.path("ferry.bash");
    std::fs::write(&script, &bash).unwrap();
    // The real bash parses it.
    let check = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        assert!(
            w.ok("any", &["completions", shell]).contains("sync"),
            "{shell}"
        );
    }
    let bad = w.ferry("any", &["completions", "cmd.exe"]);
    assert_eq!(bad.code, 2);
}

#[test]
fn the_man_page_documents_every_command() {
    let w = World::new();
    std::fs::create_dir_all(w.path("any")).unwrap();
    let man = w.ok("any", &["man"]);
    assert!(
        man.starts_with(".ie") || man.contains(".TH ferry 1"),
        "{man}"
    );
    for command in ["sync", "review", "relink", "errors", "retry", "resolve"] {
        assert!(man.contains(command), "{command} missing from the man page");
    }
}

#[test]
fn quiet_prints_nothing_but_errors_and_verbose_logs_steps() {
    let w = World::escalating_pair();
    w.escalate("Printer on fire");
    let quiet = w.ferry("support", &["sync", "-q"]);
    assert_eq!(quiet.code, 0, "{}", quiet.stderr);
    assert_eq!(quiet.stdout, "", "quiet prints nothing");
    assert_eq!(quiet.stderr, "");
    std::fs::create_dir_all(w.path("nowhere")).unwrap();
    let failed = w.ferry("nowhere", &["-q", "sync"]);
    assert_eq!(failed.code, 2);
    assert!(
        failed.stderr.contains("error:"),
        "errors still show: {}",
        failed.stderr
    );

    let verbose = w.ferry("engineering", &["-vv", "sync"]);
    assert_eq!(verbose.code, 0, "{}", verbose.stderr);
    assert!(
        verbose.stderr.contains("DEBUG") || verbose.stderr.contains("INFO"),
        "{}",
        verbose.stderr
    );
}

#[test]
fn log_file_gets_json_lines_for_log_shippers() {
    let w = World::escalating_pair();
    w.escalate("Printer on fire");
    let log = w.path("ferry.log");
    let log_arg = log.to_str().unwrap();
    w.ok(
        "support",
        &["-q", "sync", "--log-file", log_arg, "--log-json"],
    );
    std::fs::create_dir_all(w.path("empty")).unwrap();
    let failed = w.ferry("empty", &["sync", "--log-file", log_arg, "--log-json"]);
    assert_eq!(failed.code, 2);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let messages: Vec<&str> = lines
        .iter()
        .map(|l| l["fields"]["message"].as_str().unwrap())
        .collect();
    assert!(
        messages.contains(&"export") && messages.contains(&"push"),
        "{messages:?}"
    );
    let done = lines
        .iter()
        .find(|l| l["fields"]["message"] == "done")
        .unwrap();
    assert_eq!(done["fields"]["exit"], 0);
    let last = lines.last().unwrap();
    assert_eq!(last["level"], "ERROR");
    assert_eq!(last["fields"]["exit"], 2);
    assert!(
        last["fields"]["message"]
            .as_str()
            .unwrap()
            .contains("ferry.yaml"),
        "{last}"
    );
}

#[test]
fn a_big_run_lists_the_first_replicas_and_counts_the_rest_unless_verbose() {
    let w = World::escalating_pair();
    for i in 0..25 {
        w.escalate(&format!("Fire {i}"));
    }
    let export = w.ok("support", &["export"]);
    let wrote: Vec<&str> = export.lines().filter(|l| l.contains("wrote")).collect();
    assert_eq!(wrote.len(), 10, "{export}");
    assert!(
        export.contains("… and 15 more (25 replicas written or removed in all; `ferry -v`"),
        "{export}"
    );
    w.ok("support", &["push"]);

    let import = w.ok("engineering", &["-v", "sync"]);
    let created = import.lines().filter(|l| l.contains(" created")).count();
    assert_eq!(created, 25, "-v lists every replica:\n{import}");
    assert!(!import.contains("more ("), "{import}");
}

#[test]
fn version_names_the_commit_and_the_optional_parts() {
    let w = World::new();
    let long = w.ok(".", &["--version"]);
    assert!(
        long.starts_with(&format!("ferry {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{long}"
    );
    // Built from this checkout: the commit is its HEAD (the build records it).
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    if head.status.success() {
        let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
        assert!(long.contains(&format!("(commit {head})")), "{long}");
    }
    assert!(
        long.contains("libgit2 ") && long.contains("https"),
        "{long}"
    );
    assert!(long.contains("SQLite "), "{long}");
    let short = w.ok(".", &["-V"]);
    assert_eq!(short.lines().count(), 1, "{short}");
    assert!(long.starts_with(short.trim()), "{short}");
}

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

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
fn man_out_writes_one_page_per_command_and_links_only_pages_it_wrote() {
    let w = World::new();
    std::fs::create_dir_all(w.path("any")).unwrap();
    let dir = w.path("man");
    w.ok("any", &["man", "--out", dir.to_str().unwrap()]);
    // Every command and subcommand `--help` lists has its page, and no other
    // page is written.
    let page = |path: &[String]| {
        std::iter::once("ferry")
            .chain(path.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join("-")
    };
    // (page, its parent's page)
    let mut pages = vec![("ferry".to_string(), None)];
    let mut paths: Vec<Vec<String>> = vec![vec![]];
    while let Some(path) = paths.pop() {
        for sub in listed_subcommands(&w, &path) {
            let mut sub_path = path.clone();
            sub_path.push(sub);
            pages.push((page(&sub_path), Some(page(&path))));
            paths.push(sub_path);
        }
    }
    let mut expected: Vec<String> = pages.iter().map(|(p, _)| format!("{p}.1")).collect();
    expected.sort();
    let mut written: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    written.sort();
    assert_eq!(written, expected);
    for must in [
        "ferry-sync.1",
        "ferry-tracker-show.1",
        "ferry-connection-add.1",
    ] {
        assert!(written.iter().any(|p| p == must), "{must} missing");
    }
    for (name, parent) in &pages {
        let refs = man_references(&std::fs::read_to_string(dir.join(format!("{name}.1"))).unwrap());
        for reference in &refs {
            assert!(
                written.contains(&format!("{reference}.1")),
                "{name}.1 names {reference}(1), which was not written"
            );
        }
        // SEE ALSO leads back up: every page but the top names its parent.
        if let Some(parent) = parent {
            assert!(refs.contains(parent), "{name}.1 names only {refs:?}");
        }
    }
    // The real man renders a page, when it is installed.
    let rendered = std::process::Command::new("man")
        .arg("-l")
        .arg(dir.join("ferry-sync.1"))
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "80")
        .output();
    match rendered {
        Err(_) => eprintln!("skipped: man is not installed here"),
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && text.contains("SEE ALSO"),
                "man -l: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    // Without --out: the top page, as before.
    let top = w.ok("any", &["man"]);
    assert_eq!(top, std::fs::read_to_string(dir.join("ferry.1")).unwrap());
}

/// The subcommands `ferry PATH --help` lists (without `help` itself).
fn listed_subcommands(w: &World, path: &[String]) -> Vec<String> {
    let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
    args.push("--help");
    let help = w.ok("any", &args);
    let Some((_, list)) = help.split_once("\nCommands:\n") else {
        return Vec::new();
    };
    list.lines()
        .take_while(|line| !line.trim().is_empty())
        // A command starts its line; a wrapped description is indented further.
        .filter(|line| line.starts_with("  ") && !line.starts_with("   "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

/// The `ferry…(1)` page names a roff page mentions.
fn man_references(page: &str) -> Vec<String> {
    let text = page.replace("\\-", "-");
    text.match_indices("(1)")
        .filter_map(|(at, _)| {
            let start = text[..at]
                .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .map_or(0, |p| p + 1);
            let name = &text[start..at];
            name.starts_with("ferry").then(|| name.to_string())
        })
        .collect()
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
    // Built from the offline source archive: the commit its stamp names;
    // from a checkout: its HEAD (the build records either).
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let head = match std::fs::read_to_string(source.join("COMMIT")) {
        Ok(stamp) => Some(stamp.trim().to_string()),
        Err(_) => std::process::Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .current_dir(source)
            .output()
            .ok()
            .filter(|head| head.status.success())
            .map(|head| String::from_utf8_lossy(&head.stdout).trim().to_string()),
    };
    if let Some(head) = head {
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

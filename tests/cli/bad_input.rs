//! Bad input gets a clear error, the right exit code, and nothing half-written.

use super::{World, git};

#[test]
fn init_twice_keeps_the_admins_files() {
    let w = World::new();
    std::fs::create_dir_all(w.path("support")).unwrap();
    let first = w.ok("support", &["init", "--site", "support"]);
    assert!(first.contains("created ferry.yaml"), "{first}");
    std::fs::write(w.path("support/rules/outgoing.rhai"), "// mine\n").unwrap();
    let second = w.ok("support", &["init", "--site", "support"]);
    assert!(second.contains("kept    ferry.yaml"), "{second}");
    assert_eq!(
        std::fs::read_to_string(w.path("support/rules/outgoing.rhai")).unwrap(),
        "// mine\n"
    );
}

#[test]
fn a_bad_query_is_refused_at_connection_add_with_its_column() {
    let w = World::new();
    w.site("support", &[]);
    let run = w.ferry(
        "support",
        &[
            "connection",
            "add",
            "engineering",
            "--channel",
            "../exchange.git",
            "--project",
            "SUP=ENG",
            "--query",
            "labels = escalate AND",
        ],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("column"), "{}", run.stderr);
    assert!(!w.path("support/connections/engineering.yaml").exists());
}

#[test]
fn a_corrupt_config_names_file_line_and_column() {
    let w = World::new();
    w.site("support", &[]);
    std::fs::write(
        w.path("support/ferry.yaml"),
        "site: support\ntracker: [oops\n",
    )
    .unwrap();
    let run = w.ferry("support", &["sync"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("ferry.yaml"), "{}", run.stderr);
    assert!(run.stderr.contains("line 2"), "{}", run.stderr);
}

#[test]
fn a_second_run_waits_for_the_lock_with_exit_75() {
    let w = World::new();
    w.site("support", &[]);
    let lock = std::fs::File::options()
        .write(true)
        .open(w.path("support/.ferry/lock"))
        .unwrap();
    lock.try_lock().unwrap();
    let run = w.ferry("support", &["sync"]);
    assert_eq!(run.code, 75, "{}", run.stderr);
    assert!(run.stderr.contains("lock"), "{}", run.stderr);
}

/// Writes files onto engineering's branch for support with the real git, as a
/// broken or hostile peer would: one support trusts, so the commits are signed
/// with its key by git itself (`gpg.format=ssh`) and name their branch.
pub fn peer_commit(w: &World, files: &[(&str, &str)]) -> String {
    let work = w.path("hostile");
    if !work.exists() {
        git(w.root.path(), &["clone", "-q", "exchange.git", "hostile"]);
        git(&work, &["checkout", "-q", "-b", "engineering/support"]);
        let key = ssh_key(w, "hostile.key");
        w.ok(
            "support",
            &["connection", "trust", "engineering", &format!("{key}.pub")],
        );
        git(&work, &["config", "gpg.format", "ssh"]);
        git(&work, &["config", "user.signingkey", &key]);
        git(&work, &["config", "commit.gpgsign", "true"]);
    }
    for (path, content) in files {
        let file = work.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, content).unwrap();
    }
    git(&work, &["add", "-A"]);
    git(
        &work,
        &[
            "commit",
            "-q",
            "-m",
            "peer",
            "-m",
            "Ferry-Branch: engineering/support",
        ],
    );
    git(&work, &["push", "-q", "origin", "engineering/support"]);
    git(&work, &["rev-parse", "--short=10", "HEAD"])
        .trim()
        .to_string()
}

/// A new passphrase-less ed25519 key made by ssh-keygen in the world's root;
/// returns the private key's path (the public one is beside it, `.pub`).
pub fn ssh_key(w: &World, name: &str) -> String {
    let path = w.path(name).display().to_string();
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f", &path])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ssh-keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

const GOOD: &str = "ferry: 1\nsite: engineering\nid: '7'\nkey: ENG-7\nproject: ENG\ntype: Bug\nsummary: Good one\nstatus: Open\ncreated: 2026-11-20T10:00:00Z\nupdated: 2026-11-20T10:00:00Z\n";

/// A peer commit with malformed replicas is refused whole at the channel, every
/// problem named, before the peer's branch moves; nothing is imported until the
/// peer sends a corrected commit (the same check refuses bundles, see bundles.rs).
#[test]
fn malformed_replicas_are_refused_by_name_and_nothing_is_applied() {
    let w = World::new();
    w.site(
        "support",
        &[("engineering", "SUP=ENG", "labels = escalate")],
    );
    let commit = peer_commit(
        &w,
        &[
            ("issues/ENG/7.yaml", GOOD),
            (
                "issues/ENG/8.yaml",
                "ferry: 1\nsite: engineering\nid: [unclosed\n",
            ),
            (
                "issues/ENG/9.yaml",
                &GOOD.replace("ferry: 1", "ferry: 9").replace("'7'", "'9'"),
            ),
            ("issues/ENG/10.yaml", &GOOD.replace("id: '7'\n", "")),
            ("issues/ENG/11.yaml", &GOOD.replace("'7'", "'12'")),
            ("notes/escape.yaml", GOOD),
        ],
    );
    let run = w.ferry("support", &["sync"]);
    assert_eq!(
        run.code, 3,
        "a refused channel fails the connection:\n{}\n{}",
        run.stdout, run.stderr
    );
    let out = run.stdout;
    for path in [
        "issues/ENG/8.yaml",
        "issues/ENG/9.yaml",
        "issues/ENG/10.yaml",
        "issues/ENG/11.yaml",
        "notes/escape.yaml",
    ] {
        assert!(out.contains(path), "{path} not named in:\n{out}");
    }
    assert!(!out.contains("issues/ENG/7.yaml"), "{out}");
    assert!(
        out.contains(&commit),
        "commit {commit} not named in:\n{out}"
    );
    assert!(out.contains("format 9 is not supported"), "{out}");
    assert!(w.list("support").is_empty(), "nothing applied");
    let local = w.path("support/.ferry/exchange.git");
    let refs = git(&local, &["for-each-ref", "--format=%(refname)"]);
    assert!(!refs.contains("refs/heads/engineering/support"), "{refs}");
    let errors = w.ok("support", &["errors"]);
    assert!(errors.contains("issues/ENG/8.yaml"), "{errors}");

    // The peer fixes them; the next run takes the corrected commit.
    std::fs::remove_file(w.path("hostile/notes/escape.yaml")).unwrap();
    peer_commit(
        &w,
        &[
            (
                "issues/ENG/8.yaml",
                &GOOD.replace("'7'", "'8'").replace("Good one", "Fixed"),
            ),
            ("issues/ENG/9.yaml", &GOOD.replace("'7'", "'9'")),
            ("issues/ENG/10.yaml", &GOOD.replace("'7'", "'10'")),
            ("issues/ENG/11.yaml", &GOOD.replace("'7'", "'11'")),
        ],
    );
    let run = w.ferry("support", &["sync"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let summaries: Vec<String> = w
        .list("support")
        .iter()
        .map(|i| i["summary"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(summaries.len(), 5, "{summaries:?}");
    assert!(summaries.contains(&"Fixed".to_string()), "{summaries:?}");
}

#[test]
fn a_broken_rule_fails_the_issue_not_the_run() {
    let w = World::new();
    w.site("support", &[("engineering", "SUP=ENG", "")]);
    std::fs::write(
        w.path("support/rules/outgoing.rhai"),
        "if issue.summary == \"boom\" {\n    let x = 1 / 0;\n}\n",
    )
    .unwrap();
    w.new_issue("support", &["--project", "SUP", "--summary", "boom"]);
    w.new_issue("support", &["--project", "SUP", "--summary", "fine"]);
    let run = w.ferry("support", &["sync"]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("SUP-1"), "{}", run.stdout);
    assert!(
        run.stdout.contains("outgoing.rhai:2"),
        "script and line named:\n{}",
        run.stdout
    );
    let files = git(
        &w.path("exchange.git"),
        &["ls-tree", "-r", "--name-only", "support/engineering"],
    );
    assert!(files.contains("issues/SUP/02/00/2.yaml"), "{files}");
    assert!(!files.contains("issues/SUP/01/00/1.yaml"), "{files}");
}

//! Hostile input that used to hold a site hostage or leak what it should not:
//! YAML nested to exhaust the parser, and inbox entries that are not bundle files
//! (links to secrets, FIFOs, sockets, folders, names too long for a reason file).
//! Every run has a generous timeout that only guards against a hang: the
//! assertions are about what ferry says, not how fast it says it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::bad_input::peer_commit;
use super::{Run, World};

/// Long enough for any machine, short enough that a hang fails the test.
const HANG_GUARD: Duration = Duration::from_secs(60);

/// Runs `cmd` and kills it when it outlives [`HANG_GUARD`], failing the test.
fn run_guarded(mut cmd: Command, what: &str) -> Run {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > HANG_GUARD {
            child.kill().unwrap();
            let _ = child.wait();
            panic!("{what} still running after {HANG_GUARD:?}: it hangs");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `ferry ARGS` at `site`, under the hang guard.
fn ferry_guarded(w: &World, site: &str, args: &[&str]) -> Run {
    run_guarded(w.command(site, args), &format!("ferry {args:?}"))
}

const GOOD: &str = "ferry: 1\nsite: engineering\nid: '7'\nkey: ENG-7\nproject: ENG\ntype: Bug\nsummary: Good one\nstatus: Open\ncreated: 2026-11-20T10:00:00Z\nupdated: 2026-11-20T10:00:00Z\n";

/// A signed commit of a trusted peer with replicas nested 100 000 deep (flow
/// brackets) and 300 deep (block sequences) is refused at once, naming the
/// commit, each path, its line and the limit; the parser never sees them.
#[test]
fn deeply_nested_replicas_are_refused_before_parsing() {
    let w = World::new();
    w.site(
        "support",
        &[("engineering", "SUP=ENG", "labels = escalate")],
    );
    let flow = format!(
        "{GOOD}fields:\n  Deep: {}{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    )
    .replace("'7'", "'8'")
    .replace("ENG-7", "ENG-8");
    let mut block = GOOD.replace("'7'", "'9'").replace("ENG-7", "ENG-9");
    block.push_str("fields:\n  Deep:\n");
    for level in 0..300 {
        block.push_str(&" ".repeat(4 + 2 * level));
        block.push_str("- \n");
    }
    let commit = peer_commit(
        &w,
        &[
            ("issues/ENG/7.yaml", GOOD),
            ("issues/ENG/8.yaml", &flow),
            ("issues/ENG/9.yaml", &block),
        ],
    );
    let run = ferry_guarded(&w, "support", &["sync"]);
    assert_eq!(run.code, 3, "{}\n{}", run.stdout, run.stderr);
    for path in ["issues/ENG/8.yaml", "issues/ENG/9.yaml"] {
        let line = run
            .stdout
            .lines()
            .flat_map(|l| l.split("; "))
            .find(|l| l.contains(path))
            .unwrap_or_else(|| panic!("{path} not named in:\n{}", run.stdout));
        assert!(
            line.contains("nested more than 64 levels deep"),
            "{path}: {line}"
        );
    }
    assert!(
        run.stdout.contains("issues/ENG/8.yaml: line 12:"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("issues/ENG/9.yaml: line "),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains(&commit), "{}", run.stdout);
    assert!(w.list("support").is_empty(), "nothing applied");
    let errors = w.ok("support", &["errors"]);
    assert!(
        errors.contains("nested more than 64 levels deep"),
        "{errors}"
    );
}

/// `site.yaml` has a strict schema: a key no ferry writes is refused, and so is
/// deep nesting, before the parser sees it.
#[test]
fn a_site_yaml_with_an_unknown_key_or_deep_nesting_is_refused() {
    let w = World::new();
    w.site(
        "support",
        &[("engineering", "SUP=ENG", "labels = escalate")],
    );
    peer_commit(
        &w,
        &[
            ("issues/ENG/7.yaml", GOOD),
            (
                "site.yaml",
                "ferry: 1\nsite: engineering\npeer: support\nextra: surprise\n",
            ),
        ],
    );
    let run = ferry_guarded(&w, "support", &["sync"]);
    assert_eq!(run.code, 3, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("site.yaml") && run.stdout.contains("unknown field `extra`"),
        "{}",
        run.stdout
    );

    let deep = format!(
        "ferry: 1\nsite: engineering\npeer: support\nack: {}{}\n",
        "{a: ".repeat(50_000),
        "}".repeat(50_000)
    );
    peer_commit(&w, &[("site.yaml", &deep)]);
    let run = ferry_guarded(&w, "support", &["sync"]);
    assert_eq!(run.code, 3, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("site.yaml: line 4: YAML nested more than 64 levels deep"),
        "{}",
        run.stdout
    );
    assert!(w.list("support").is_empty(), "nothing applied");
}

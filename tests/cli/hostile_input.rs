//! Hostile input that used to hold a site hostage or leak what it should not:
//! YAML nested to exhaust the parser, and inbox entries that are not bundle files
//! (links to secrets, FIFOs, sockets, folders, names too long for a reason file).
//! Every run has a generous timeout that only guards against a hang: the
//! assertions are about what ferry says, not how fast it says it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::bad_input::peer_commit;
use super::bundles::bundle_site;
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

// ---------------------------------------------------------------------------
// The inbox of a bundle channel: regular files only.

const TO_ENG: &str = "usb/support-to-engineering";

/// Engineering with a bundle inbox; support is never created.
fn receiving() -> World {
    let w = World::new();
    bundle_site(&w, "engineering", "support", "ENG=SUP", "");
    w
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A link in the inbox to a secret elsewhere is refused for what it is: never
/// followed, nothing of the secret in the report, the reason file (0600), the
/// ledger or `ferry errors`.
#[test]
fn a_symlink_in_the_inbox_is_refused_without_reading_its_target() {
    let w = receiving();
    let secret = w.path("token");
    std::fs::write(&secret, "TOKEN-hunter2-do-not-leak\nsecond line\n").unwrap();
    let inbox = w.path(TO_ENG);
    std::os::unix::fs::symlink(&secret, inbox.join("x.bundle")).unwrap();
    let run = ferry_guarded(&w, "engineering", &["sync"]);
    assert_eq!(run.code, 3, "{}\n{}", run.stdout, run.stderr);
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(!all.contains("hunter2"), "the secret leaked:\n{all}");
    assert!(
        run.stdout.contains("x.bundle") && run.stdout.contains("a symbolic link"),
        "{}",
        run.stdout
    );
    let reason = inbox.join("rejected/x.bundle.reason");
    let text = std::fs::read_to_string(&reason).unwrap();
    assert!(text.contains("a symbolic link"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    assert_eq!(mode(&reason), 0o600, "reason files are private");
    assert!(
        inbox
            .join("rejected/x.bundle")
            .symlink_metadata()
            .unwrap()
            .file_type()
            .is_symlink(),
        "the link itself was moved aside"
    );
    assert_eq!(
        std::fs::read_to_string(&secret).unwrap(),
        "TOKEN-hunter2-do-not-leak\nsecond line\n",
        "the target is untouched"
    );
    let errors = w.ok("engineering", &["errors"]);
    assert!(!errors.contains("hunter2"), "{errors}");
    assert!(errors.contains("x.bundle"), "{errors}");
    // The next run is clean: the link was moved out of the inbox.
    let run = ferry_guarded(&w, "engineering", &["sync"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);

    // A bundle whose content is not a bundle is refused without quoting it.
    std::fs::write(inbox.join("y.bundle"), "TOKEN-hunter2-in-a-file\n").unwrap();
    let run = ferry_guarded(&w, "engineering", &["sync"]);
    assert_eq!(run.code, 3, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("not a git bundle"), "{}", run.stdout);
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(!all.contains("hunter2"), "the content was echoed:\n{all}");
    let text = std::fs::read_to_string(inbox.join("rejected/y.bundle.reason")).unwrap();
    assert!(!text.contains("hunter2"), "{text}");
}

/// A FIFO, a socket and a folder named like bundles are each reported for what
/// they are, and none of them hangs the run; `ferry bundle import` of a FIFO
/// does not hang either.
#[test]
fn fifos_sockets_and_folders_in_the_inbox_are_reported_not_waited_on() {
    let w = receiving();
    let inbox = w.path(TO_ENG);
    let fifo = inbox.join("a-fifo.bundle");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let _socket = std::os::unix::net::UnixListener::bind(inbox.join("b-socket.bundle")).unwrap();
    std::fs::create_dir(inbox.join("c-folder.bundle")).unwrap();

    let run = ferry_guarded(
        &w,
        "engineering",
        &["bundle", "import", fifo.to_str().unwrap()],
    );
    assert_ne!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("a FIFO"), "{}", run.stderr);

    let run = ferry_guarded(&w, "engineering", &["sync"]);
    assert_eq!(run.code, 3, "{}\n{}", run.stdout, run.stderr);
    for (name, what) in [
        ("a-fifo.bundle", "a FIFO"),
        ("b-socket.bundle", "a socket"),
        ("c-folder.bundle", "a folder"),
    ] {
        let line = run
            .stdout
            .split("; ")
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{name} not reported:\n{}", run.stdout));
        assert!(line.contains(what), "{name}: {line}");
        let reason = inbox.join(format!("rejected/{name}.reason"));
        assert!(
            std::fs::read_to_string(&reason).unwrap().contains(what),
            "{name}"
        );
        assert!(!inbox.join(name).exists(), "{name} moved aside");
    }
}

/// A bundle whose name leaves no room for `.reason` (file names are at most 255
/// bytes) still gets its reason written, under a shortened name the report gives.
#[test]
fn a_bundle_name_too_long_for_its_reason_file_still_gets_one() {
    let w = receiving();
    let inbox = w.path(TO_ENG);
    let name = format!("{}.bundle", "n".repeat(255 - ".bundle".len()));
    std::fs::write(inbox.join(&name), "not a bundle\n").unwrap();
    let run = ferry_guarded(&w, "engineering", &["sync"]);
    assert_eq!(run.code, 3, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains(&name), "{}", run.stdout);
    assert!(run.stdout.contains("not a git bundle"), "{}", run.stdout);
    assert!(inbox.join("rejected").join(&name).exists(), "moved aside");
    let reasons: Vec<String> = std::fs::read_dir(inbox.join("rejected"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".reason"))
        .collect();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].len() <= 255, "{reasons:?}");
    assert!(
        run.stdout.contains(&reasons[0]),
        "the report names the reason file {}:\n{}",
        reasons[0],
        run.stdout
    );
    let text = std::fs::read_to_string(inbox.join("rejected").join(&reasons[0])).unwrap();
    assert!(text.contains(&name), "the reason names its bundle: {text}");
    assert!(text.contains("not a git bundle"), "{text}");
}

/// Links left in the folders below the inbox are never written through: a link
/// at a reason file's name is replaced, and a `rejected/` that is a link stops
/// the run, naming it, with nothing written where it points.
#[test]
fn links_planted_below_the_inbox_are_not_written_through() {
    let w = receiving();
    let inbox = w.path(TO_ENG);
    let victim = w.path("victim");
    std::fs::write(&victim, "keep me\n").unwrap();
    std::fs::create_dir_all(inbox.join("rejected")).unwrap();
    std::os::unix::fs::symlink(&victim, inbox.join("rejected/y.bundle.reason")).unwrap();
    std::fs::write(inbox.join("y.bundle"), "not a bundle\n").unwrap();
    let run = ferry_guarded(&w, "engineering", &["sync"]);
    assert_eq!(run.code, 3, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me\n");
    let reason = inbox.join("rejected/y.bundle.reason");
    assert!(
        reason.symlink_metadata().unwrap().is_file(),
        "the link was replaced"
    );
    assert!(
        std::fs::read_to_string(&reason)
            .unwrap()
            .contains("not a git bundle")
    );

    let elsewhere = w.path("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::remove_dir_all(inbox.join("rejected")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, inbox.join("rejected")).unwrap();
    std::fs::write(inbox.join("z.bundle"), "not a bundle either\n").unwrap();
    let run = ferry_guarded(&w, "engineering", &["sync"]);
    assert_eq!(run.code, 3, "{}\n{}", run.stdout, run.stderr);
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(all.contains("rejected is a symbolic link"), "{all}");
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    assert!(inbox.join("z.bundle").exists(), "left in the inbox");
}

//! What an operator gets wrong by accident: a typo in a URL or in `state:`, a
//! ledger deleted, a disk run full. Each gets a message that says what happened
//! and what to do, and none is answered by quietly starting over.

use std::fs;
use std::process::Command;

use super::{World, git};

#[test]
fn a_mistyped_url_scheme_is_refused_when_the_connection_is_added() {
    let w = World::new();
    fs::create_dir_all(w.path("support")).unwrap();
    w.ok(
        "support",
        &["init", "--site", "support", "--tracker", "local"],
    );
    let run = w.ferry(
        "support",
        &[
            "connection",
            "add",
            "engineering",
            "--channel",
            "htps://git.example.com/exchange.git",
            "--project",
            "SUP=ENG",
        ],
    );
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains(r#"scheme "htps""#) && run.stderr.contains("https://"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("port"), "{}", run.stderr);
    assert!(!w.path("support/connections/engineering.yaml").exists());
}

#[test]
fn a_mistyped_state_folder_is_a_configuration_error_and_nothing_is_created() {
    let w = World::escalating_pair();
    w.escalate("Printer on fire");
    w.ok("support", &["sync"]);
    let config = w.path("support/ferry.yaml");
    let text = fs::read_to_string(&config).unwrap();
    fs::write(
        &config,
        text.replace("\nstate: .ferry\n", "\nstate: .ferr\n"),
    )
    .unwrap();

    for args in [&["sync"][..], &["status"], &["errors"]] {
        let run = w.ferry("support", args);
        assert_eq!(run.code, 2, "{args:?}: {}{}", run.stdout, run.stderr);
        assert!(
            run.stderr.contains("`state: .ferr`") && run.stderr.contains("does not exist"),
            "{args:?}: {}",
            run.stderr
        );
        assert!(
            run.stderr.contains("fix ferry.yaml"),
            "{args:?}: {}",
            run.stderr
        );
    }
    let doctor = w.ferry("support", &["doctor"]);
    assert_eq!(doctor.code, 1, "{}{}", doctor.stdout, doctor.stderr);
    assert!(
        doctor.stdout.contains("FAIL state") && doctor.stdout.contains("fix `state:`"),
        "{}",
        doctor.stdout
    );
    assert!(
        !w.path("support/.ferr").exists(),
        "no command may create the mistyped folder"
    );
    assert_eq!(w.commits("support/engineering"), 1);
}

#[test]
fn a_deleted_ledger_stops_the_site_until_relink_rebuilds_it() {
    let w = World::escalating_pair();
    w.escalate("Printer on fire");
    w.ok("support", &["sync"]);
    w.ok("engineering", &["sync"]);
    for file in ["ledger.db", "ledger.db-wal", "ledger.db-shm"] {
        let _ = fs::remove_file(w.path(&format!("support/.ferry/{file}")));
    }
    w.escalate("Second fire");
    let before = git(
        &w.path("exchange.git"),
        &["rev-parse", "support/engineering"],
    );

    let run = w.ferry("support", &["sync"]);
    assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("ledger") && run.stderr.contains("ferry relink"),
        "{}",
        run.stderr
    );
    assert!(!w.path("support/.ferry/ledger.db").exists());
    let after = git(
        &w.path("exchange.git"),
        &["rev-parse", "support/engineering"],
    );
    assert_eq!(before, after, "nothing may be sent without the ledger");

    let doctor = w.ferry("support", &["doctor"]);
    assert!(
        doctor.stdout.contains("FAIL ledger") && doctor.stdout.contains("ferry relink"),
        "{}",
        doctor.stdout
    );
    let errors = w.ferry("support", &["errors"]);
    assert_eq!(errors.code, 3, "{}{}", errors.stdout, errors.stderr);
    assert!(
        errors.stdout.contains("ledger unusable"),
        "{}",
        errors.stdout
    );
    assert!(!w.path("support/.ferry/ledger.db").exists());

    w.ok("support", &["relink"]);
    w.ok("support", &["sync"]);
    w.ok("engineering", &["sync"]);
    assert_eq!(w.list("engineering").len(), 2, "no duplicates");
}

/// A small file system mounted for one test, unmounted when dropped.
struct Mounted(std::path::PathBuf);

impl Mounted {
    /// Mounts a tmpfs of `mib` MiB on `dir`: needs root (or CAP_SYS_ADMIN), which
    /// CI has. Elsewhere the test says it skipped, and CI fails on that line.
    fn tmpfs(dir: &std::path::Path, mib: u32) -> Option<Mounted> {
        fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() => Some(Mounted(dir.to_path_buf())),
            _ => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "CI must be able to mount a tmpfs for the full-disk test"
                );
                eprintln!("SKIPPED: cannot mount a tmpfs here (not root)");
                None
            }
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_is_named_and_no_restore_is_advised() {
    let w = World::new();
    let Some(_disk) = Mounted::tmpfs(&w.path("support"), 4) else {
        return;
    };
    w.site(
        "support",
        &[("engineering", "SUP=ENG", "labels = escalate")],
    );
    w.escalate("Printer on fire");
    w.ok("support", &["sync"]);
    w.escalate("Second fire");
    // Fill what is left, as a runaway log would.
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=64k"])
        .arg(format!("of={}", w.path("support/filler").display()))
        .stderr(std::process::Stdio::null())
        .status();

    let run = w.ferry("support", &["sync"]);
    assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("is full"), "{}", run.stderr);
    let doctor = w.ferry("support", &["doctor"]);
    assert!(
        doctor.stdout.contains("is full") && !doctor.stdout.contains("restore the ledger from"),
        "{}",
        doctor.stdout
    );
    let errors = w.ferry("support", &["errors"]);
    assert!(
        errors.stdout.contains("is full") && !errors.stdout.contains("restore the ledger from"),
        "{}",
        errors.stdout
    );

    // With space again, the run goes on where it stopped.
    fs::remove_file(w.path("support/filler")).unwrap();
    w.ok("support", &["sync"]);
    assert_eq!(w.commits("support/engineering"), 2);
}

//! What operators rely on: the lock names its holder and survives a killed run,
//! and a paused connection loses nothing.

use super::World;

#[test]
fn the_lock_names_its_holder() {
    let w = World::new();
    w.site("support", &[]);
    std::fs::write(
        w.path("support/.ferry/lock"),
        "pid 4242 on cron-host since 2026-11-23T03:00:00Z\n",
    )
    .unwrap();
    let lock = std::fs::File::options()
        .write(true)
        .open(w.path("support/.ferry/lock"))
        .unwrap();
    lock.try_lock().unwrap();
    let run = w.ferry("support", &["sync"]);
    assert_eq!(run.code, 75, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("pid 4242 on cron-host since 2026-11-23T03:00:00Z"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_run_killed_holding_the_lock_does_not_block_the_next() {
    let w = World::escalating_pair();
    w.escalate("Printer on fire");
    // Killed after its export commit, before the ledger knew of it, with the lock
    // held and its note in the lock file.
    w.killed_at("support", &["sync"], "after-commit");
    let note = std::fs::read_to_string(w.path("support/.ferry/lock")).unwrap();
    assert!(note.starts_with("pid "), "{note:?}");
    // A killed writer's ref lock in the private clone is cleaned up too.
    std::fs::write(
        w.path("support/.ferry/exchange.git/refs/heads/support/engineering.lock"),
        "",
    )
    .unwrap();
    // And so are the packs a killed run was writing (ferry's own, libgit2's
    // indexer's); the packs in use stay.
    let packs = w.path("support/.ferry/exchange.git/objects/pack");
    let in_use = |dir: &std::path::Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before = in_use(&packs);
    for leftover in [
        "tmp_pack_Xy12ab",
        "tmp_idx_Q9z",
        "pack_git2_0123456789abcdef",
    ] {
        std::fs::write(packs.join(leftover), "half a pack").unwrap();
    }

    w.ok("support", &["sync"]);
    let after: Vec<String> = in_use(&packs)
        .into_iter()
        .filter(|name| before.contains(name) || !name.starts_with("pack-"))
        .collect();
    assert_eq!(after, before, "leftovers removed, packs kept");
    w.ok("engineering", &["sync"]);
    assert_eq!(w.list("engineering").len(), 1);
    assert_eq!(
        w.commits("support/engineering"),
        1,
        "the interrupted run's commit was reused, not repeated"
    );
}

#[test]
fn a_step_interrupted_by_a_kill_is_shown_then_finished_once() {
    let w = World::escalating_pair();
    w.escalate("Printer on fire");
    w.ok("support", &["sync"]);
    w.killed_at("engineering", &["sync"], "after-create");
    let status = w.ok("engineering", &["status"]);
    assert!(
        status.contains("resuming  create of issues/SUP/1.yaml"),
        "{status}"
    );

    w.ok("engineering", &["sync"]);
    assert_eq!(w.list("engineering").len(), 1, "created once, not twice");
    let status = w.ok("engineering", &["status"]);
    assert!(!status.contains("resuming"), "{status}");
}

#[test]
fn a_paused_connection_catches_up_on_resume() {
    let w = World::escalating_pair();
    w.escalate("Before the pause");
    w.ok("support", &["sync"]);
    w.ok("engineering", &["sync"]);

    let paused = w.ok("engineering", &["connection", "pause", "support"]);
    assert!(paused.contains("paused"), "{paused}");
    let again = w.ok("engineering", &["connection", "pause", "support"]);
    assert!(again.contains("already paused"), "{again}");

    // While engineering is paused, both sides keep working.
    w.escalate("During the pause");
    w.ok(
        "support",
        &["tracker", "comment", "SUP-1", "Any news?", "--as", "ann"],
    );
    w.ok(
        "engineering",
        &[
            "tracker",
            "comment",
            "ENG-1",
            "Looking at it.",
            "--as",
            "kevin",
        ],
    );
    w.ok("support", &["sync"]);
    let skipped = w.ok("engineering", &["sync"]);
    assert!(
        skipped.contains("paused support: since") && skipped.contains("by tester"),
        "{skipped}"
    );
    let import = w.ok("engineering", &["import"]);
    assert!(import.contains("paused support"), "{import}");
    assert_eq!(
        w.list("engineering").len(),
        1,
        "nothing imported while paused"
    );
    let show = w.show("engineering", "ENG-1");
    assert_eq!(show["comments"].as_array().unwrap().len(), 1);
    let status = w.ok("engineering", &["status"]);
    assert!(status.contains("PAUSED    since"), "{status}");

    let resumed = w.ok("engineering", &["connection", "resume", "support"]);
    assert!(resumed.contains("resumed"), "{resumed}");
    w.ok("engineering", &["sync"]);
    w.ok("support", &["sync"]);

    let eng = w.list("engineering");
    let summaries: Vec<&str> = eng.iter().map(|i| i["summary"].as_str().unwrap()).collect();
    assert_eq!(summaries, ["Before the pause", "During the pause"]);
    assert_eq!(
        w.show("engineering", "ENG-1")["comments"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let sup = w.show("support", "SUP-1");
    let bodies: Vec<&str> = sup["comments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["body"].as_str().unwrap())
        .collect();
    assert!(bodies.contains(&"Looking at it."), "{bodies:?}");
    let resumed_twice = w.ok("engineering", &["connection", "resume", "support"]);
    assert!(resumed_twice.contains("was not paused"), "{resumed_twice}");
}

#[test]
fn pausing_an_unknown_connection_is_a_usage_error() {
    let w = World::escalating_pair();
    let run = w.ferry("support", &["connection", "pause", "nobody"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
}

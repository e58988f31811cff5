//! Imports into the embedded tracker go in batches (`engine::import::batch`):
//! one tracker transaction and two ledger ones for hundreds of replicas. However
//! a run is killed, the next one must end exactly where an uninterrupted import
//! ends, and a write the tracker refuses must fail its own replica only.

use ferry::model::Issue;
use ferry::tracker::local::LocalTracker;

use super::World;

/// More replicas than one batch holds (500).
const ISSUES: &str = "520";

/// A fixed clock, so that two worlds write the same timestamps.
const NOW: &str = "2026-11-24T01:00:00Z";

/// support has shared its `ISSUES` generated issues (two comments each) and
/// engineering has pulled them, not imported them yet.
fn pulled() -> World {
    let mut w = World::new();
    w.now = Some(NOW);
    w.site("support", &[("engineering", "GEN=GEN", "")]);
    w.site("engineering", &[("support", "GEN=GEN", "")]);
    w.ok(
        "support",
        &[
            "tracker",
            "generate",
            ISSUES,
            "--project",
            "GEN",
            "--comments",
            "2",
        ],
    );
    w.ok("support", &["sync"]);
    w.ok("engineering", &["pull"]);
    w
}

/// engineering's tracker, and the rows of its ledger an import writes.
fn state(w: &World) -> (Vec<Issue>, Vec<String>) {
    let issues = LocalTracker::open(&w.path("engineering/tracker.db"))
        .unwrap()
        .list()
        .unwrap();
    let ledger = rusqlite::Connection::open(w.path("engineering/.ferry/ledger.db")).unwrap();
    let mut rows = Vec::new();
    for sql in [
        "SELECT 'link', peer, remote_id, remote_key, local_id FROM links ORDER BY 2, 3",
        "SELECT 'applied', peer, path, blob, '' FROM applied ORDER BY 2, 3",
        "SELECT 'baseline', peer, local_id, field, value || ' @' || seq FROM baselines ORDER BY 2, 3, 4",
        "SELECT 'step', peer, path, kind, coalesce(finished_at, 'open') FROM steps ORDER BY id",
        "SELECT 'pending', peer, path, tries, parked FROM pending ORDER BY 2, 3",
        "SELECT 'error', level, coalesce(subject, ''), message, '' FROM errors WHERE resolved = 0 ORDER BY id",
    ] {
        let mut statement = ledger.prepare(sql).unwrap();
        let found = statement
            .query_map([], |r| {
                Ok((1..5)
                    .map(|i| {
                        r.get::<_, rusqlite::types::Value>(i)
                            .map(|v| format!("{v:?}"))
                    })
                    .collect::<Result<Vec<_>, _>>()?
                    .join(" "))
            })
            .unwrap()
            .map(|row| format!("{}: {}", sql.split('\'').nth(1).unwrap(), row.unwrap()));
        rows.extend(found);
    }
    (issues, rows)
}

#[test]
fn a_batched_import_killed_anywhere_ends_as_an_uninterrupted_one() {
    let calm = pulled();
    calm.ok("engineering", &["import"]);
    let (expected_issues, expected_ledger) = state(&calm);
    assert_eq!(expected_issues.len(), 520);
    assert!(expected_issues.iter().all(|i| i.comments.len() == 2));
    assert!(!expected_ledger.iter().any(|row| row.starts_with("step")));

    let w = pulled();
    // Each kill leaves work for the next: a batch holds at most 500 replicas.
    // In the middle of the first batch, before anything is committed.
    w.killed_at("engineering", &["import"], "before-create:10");
    // Right after a batch's tracker commit, before its bookkeeping: the journal
    // tells what was written, and the next run finds it instead of repeating it.
    w.killed_at("engineering", &["import"], "after-create");
    let status = w.ok("engineering", &["status"]);
    assert!(
        status.contains("resuming  create of issues/GEN/"),
        "{status}"
    );
    assert!(status.contains("more steps"), "{status}");
    w.killed_at("engineering", &["import"], "after-comment");
    w.killed_at("engineering", &["import"], "after-mark-applied");
    w.killed_at("engineering", &["import"], "before-applied-ref");
    w.ok("engineering", &["import"]);

    let (issues, ledger) = state(&w);
    assert_eq!(
        issues.len(),
        expected_issues.len(),
        "no issue lost or doubled"
    );
    assert_eq!(issues, expected_issues);
    assert_eq!(ledger, expected_ledger);
    let status = w.ok("engineering", &["status"]);
    assert!(!status.contains("resuming"), "{status}");
}

#[test]
fn a_write_refused_in_a_batch_fails_its_replica_alone() {
    let w = pulled();
    let rule = w.path("engineering/rules/incoming.rhai");
    let good = std::fs::read_to_string(&rule).unwrap();
    // The tracker refuses an empty comment: GEN-7 is created, then fails.
    std::fs::write(
        &rule,
        format!(
            "{good}\nif replica.key == \"GEN-7\" {{ new_comments.push(#{{ author: \"ferry\", body: \" \" }}); }}\n"
        ),
    )
    .unwrap();
    let run = w.ferry("engineering", &["import"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("GEN/7.yaml") && run.stderr.contains("a comment needs text"),
        "{}",
        run.stderr
    );
    let (issues, ledger) = state(&w);
    assert_eq!(issues.len(), 520, "the refused replica's create stays");
    assert!(
        ledger
            .iter()
            .any(|row| row.starts_with("pending") && row.contains("GEN/7.yaml")),
        "{ledger:?}"
    );
    let applied = ledger.iter().filter(|r| r.starts_with("applied")).count();
    assert_eq!(applied, 519);

    std::fs::write(&rule, good).unwrap();
    w.ok("engineering", &["retry", "--all"]);
    w.ok("engineering", &["import"]);
    let calm = pulled();
    calm.ok("engineering", &["import"]);
    assert_eq!(state(&w).0, state(&calm).0);
}

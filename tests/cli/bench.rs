//! `ferry bench` at a scale a test can afford: the command runs every step of
//! the benchmark (the sites, the exports, git fast-import, the syncs, the
//! bundle, the one-edit syncs, the fake Jira and Redmine) and prints the table
//! of the twelve items on both shapes of site, so it cannot rot unseen between the runs at full scale
//! that docs/performance.md records.

use super::World;

#[test]
fn the_benchmark_runs_every_item_at_a_small_scale() {
    let w = World::new();
    std::fs::create_dir_all(w.path("bench")).unwrap();
    let baseline = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/fastimport_baseline.py");
    let keep = w.path("kept");
    let out = w.ok(
        "bench",
        &[
            "bench",
            "--issues",
            "120",
            "--projects",
            "3",
            "--comments",
            "2",
            "--changed",
            "10",
            "--small",
            "40",
            "--import",
            "50",
            "--syncs",
            "5",
            "--jira-export",
            "40",
            "--jira-import",
            "30",
            "--redmine-export",
            "40",
            "--latency",
            "5",
            "--server-issues",
            "150",
            "--baseline",
            baseline,
            "--keep",
            keep.to_str().unwrap(),
        ],
    );
    for item in [
        "1 full export, 120 issues × 2 comments, 1 project",
        "1 full export, 120 issues × 2 comments, 3 projects",
        "2 incremental, 10 changed in 120 issues, 1 project",
        "2 incremental, 10 changed in 40 issues, 3 projects",
        "2 one edit in 120 issues, 1 project",
        "2 one edit in 120 issues, growth, 3 projects",
        "3 import of 50 new replicas, ledger on",
        "4 incremental bundle, 10 changed issues, 1 project",
        "5 peak RSS, highest of the items above",
        "6 bundle outbox, 10 one-edit runs, no ack, 3 projects",
        "7 clone, channel after 5 one-edit syncs, 40 issues, 1 project",
        "7 clone, channel after 5 one-edit syncs, 40 issues, 3 projects",
        "8 Jira first export, 40 issues × 5 comments, 5 ms a request",
        "8 Jira first export, requests per issue",
        "9 Jira import of 30 new issues, 5 ms a request",
        "10 peak RSS, Redmine first export, 150 issues × 5 notes",
        "11 peak RSS, Jira first export, 150 issues × 5 comments",
        "12 Redmine first export, 40 issues × 5 notes, 5 ms a request",
    ] {
        assert!(out.contains(item), "{item:?} missing from:\n{out}");
    }
    assert!(out.contains("× fast-import"), "{out}");
    // The sites stay for a look: b imported all of a's issues.
    let listed = w.ok("kept/p3/big/b", &["tracker", "list"]);
    assert_eq!(listed.lines().count(), 120, "{listed}");
}

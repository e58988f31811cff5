//! The two-site story of issue #3, the three-site relay, and the quiet re-sync.

use super::World;

fn comments(issue: &serde_json::Value) -> Vec<String> {
    issue["comments"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| c["body"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// support ↔ engineering over one bare repo, as cron would run it.
fn two_sites() -> World {
    let w = World::new();
    w.site(
        "support",
        &[(
            "engineering",
            "SUP=ENG",
            "labels = escalate AND status != Closed",
        )],
    );
    w.site(
        "engineering",
        &[("support", "ENG=SUP", "labels = customer-facing")],
    );
    w
}

#[test]
fn escalation_flows_both_ways_and_internal_notes_stay_home() {
    let w = two_sites();
    let key = w.new_issue(
        "support",
        &[
            "--project",
            "SUP",
            "--type",
            "Bug",
            "--summary",
            "Printer on fire",
            "--label",
            "escalate",
            "--as",
            "ann",
        ],
    );
    assert_eq!(key, "SUP-1");
    let quiet = w.new_issue(
        "support",
        &["--project", "SUP", "--summary", "Not escalated"],
    );
    w.ok(
        "support",
        &[
            "tracker",
            "comment",
            &key,
            "--as",
            "ann",
            "Customer sent logs.",
        ],
    );
    w.ok(
        "support",
        &[
            "tracker",
            "comment",
            &key,
            "--internal",
            "--as",
            "ann",
            "SECRET-SUPPORT-NOTE",
        ],
    );

    w.ok("support", &["sync"]);
    w.ok("engineering", &["sync"]);
    let eng = w.list("engineering");
    assert_eq!(eng.len(), 1, "only the escalated issue crosses: {eng:?}");
    assert_eq!(eng[0]["key"], "ENG-1");
    assert_eq!(eng[0]["summary"], "Printer on fire");
    let eng1 = w.show("engineering", "ENG-1");
    assert_eq!(comments(&eng1), vec!["Customer sent logs."]);
    assert_eq!(eng1["origin"]["site"], "support");

    w.ok(
        "engineering",
        &[
            "tracker",
            "comment",
            "ENG-1",
            "--as",
            "kevin",
            "Reproduced, fix in 2.1.1.",
        ],
    );
    w.ok(
        "engineering",
        &[
            "tracker",
            "comment",
            "ENG-1",
            "--internal",
            "--as",
            "kevin",
            "SECRET-ENG-NOTE",
        ],
    );
    w.ok(
        "engineering",
        &["tracker", "edit", "ENG-1", "--status", "In Progress"],
    );
    w.ok("engineering", &["sync"]);
    w.ok("support", &["sync"]);

    let sup1 = w.show("support", &key);
    assert_eq!(sup1["status"], "In Progress");
    let sup_comments = comments(&sup1);
    assert!(
        sup_comments.contains(&"Reproduced, fix in 2.1.1.".to_string()),
        "{sup_comments:?}"
    );
    assert!(!sup_comments.iter().any(|c| c.contains("SECRET-ENG-NOTE")));
    assert_eq!(
        sup_comments
            .iter()
            .filter(|c| *c == "Customer sent logs.")
            .count(),
        1,
        "no echo of support's own comment: {sup_comments:?}"
    );
    let eng_comments = comments(&w.show("engineering", "ENG-1"));
    assert_eq!(
        eng_comments
            .iter()
            .filter(|c| c.starts_with("Reproduced"))
            .count(),
        1
    );

    // Let acknowledgements settle, then a further round must be completely quiet.
    w.ok("engineering", &["sync"]);
    w.ok("support", &["sync"]);
    let before = (
        w.commits("support/engineering"),
        w.commits("engineering/support"),
    );
    let s = w.ok("support", &["sync"]);
    let e = w.ok("engineering", &["sync"]);
    assert_eq!(
        before,
        (
            w.commits("support/engineering"),
            w.commits("engineering/support")
        )
    );
    assert!(s.contains("no change, no commit"), "{s}");
    assert!(e.contains("no change, no commit"), "{e}");
    assert_eq!(w.list("engineering").len(), 1);

    // Internal comments never reached any git object, on any branch.
    let objects = w.exchange_objects();
    assert!(
        objects.contains("Customer sent logs."),
        "the oracle sees the replicas"
    );
    assert!(!objects.contains("SECRET-SUPPORT-NOTE"));
    assert!(!objects.contains("SECRET-ENG-NOTE"));
    assert!(!objects.contains(&quiet) || !objects.contains("Not escalated"));
}

#[test]
fn replicas_are_deterministic_yaml_in_the_documented_layout() {
    let w = two_sites();
    let key = w.new_issue(
        "support",
        &[
            "--project",
            "SUP",
            "--summary",
            "Printer on fire",
            "--label",
            "escalate",
        ],
    );
    w.ok("support", &["sync"]);
    let exchange = w.path("exchange.git");
    let files = super::git(
        &exchange,
        &["ls-tree", "-r", "--name-only", "support/engineering"],
    );
    assert_eq!(
        files.lines().collect::<Vec<_>>(),
        vec!["issues/SUP/01/00/1.yaml", "site.yaml"]
    );
    let replica = super::git(
        &exchange,
        &["show", "support/engineering:issues/SUP/01/00/1.yaml"],
    );
    assert!(
        replica.starts_with("ferry: 1\nsite: support\nid: '1'\nkey: SUP-1\nproject: SUP\n"),
        "{replica}"
    );
    // Exporting again without a change makes no commit.
    let out = w.ok("support", &["export"]);
    assert!(out.contains("no change, no commit"), "{out}");
    assert_eq!(w.commits("support/engineering"), 1);
    let _ = key;
}

#[test]
fn three_sites_relay_without_duplicates() {
    // support → engineering → qa; qa's comment travels back to support through
    // engineering, once.
    let w = World::new();
    w.site(
        "support",
        &[("engineering", "SUP=ENG", "labels = escalate")],
    );
    w.site(
        "engineering",
        &[
            ("support", "ENG=SUP", "labels = customer-facing"),
            ("qa", "ENG=QA", "labels = escalate"),
        ],
    );
    w.site("qa", &[("engineering", "QA=ENG", "labels = nothing-new")]);
    w.new_issue(
        "support",
        &[
            "--project",
            "SUP",
            "--summary",
            "Relay me",
            "--label",
            "escalate",
        ],
    );
    w.ok("support", &["tracker", "comment", "SUP-1", "From support."]);
    for _ in 0..2 {
        for site in ["support", "engineering", "qa"] {
            w.ok(site, &["sync"]);
        }
    }
    let qa = w.list("qa");
    assert_eq!(qa.len(), 1, "{qa:?}");
    assert_eq!(qa[0]["key"], "QA-1");
    assert_eq!(comments(&w.show("qa", "QA-1")), vec!["From support."]);
    w.ok("qa", &["tracker", "comment", "QA-1", "Verified by QA."]);
    for _ in 0..3 {
        for site in ["qa", "engineering", "support"] {
            w.ok(site, &["sync"]);
        }
    }
    for (site, key) in [
        ("support", "SUP-1"),
        ("engineering", "ENG-1"),
        ("qa", "QA-1"),
    ] {
        let cs = comments(&w.show(site, key));
        assert_eq!(
            cs.iter().filter(|c| *c == "From support.").count(),
            1,
            "{site}: {cs:?}"
        );
        assert_eq!(
            cs.iter().filter(|c| *c == "Verified by QA.").count(),
            1,
            "{site}: {cs:?}"
        );
    }
    assert_eq!(w.list("engineering").len(), 1);
    assert_eq!(w.list("support").len(), 1);
}

#[test]
fn the_demo_tells_the_whole_story() {
    let w = World::new();
    let out = w.ok(".", &["demo", "--keep", "demo"]);
    for line in [
        "SUP-1 → ENG-1 created, 1 comment",
        "+status: In Progress",
        "status: Escalated",
        "kevin (via engineering)",
        "export support: no change, no commit",
        "objects containing an internal comment's text: 0",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    // What the demo left behind is a working pair of sites.
    let support = w.list("demo/support");
    assert_eq!(support.len(), 2);
    assert_eq!(w.list("demo/engineering").len(), 1);
}

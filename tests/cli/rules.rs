//! `ferry rules test`: candidate scripts replayed on what was really exchanged.

use super::World;

#[test]
fn an_edited_rule_is_tried_on_the_last_exchanges_before_it_goes_live() {
    let w = World::escalating_pair();
    w.escalate("Printer on fire");
    w.ok("support", &["sync"]);
    w.ok("engineering", &["sync"]);
    w.ok(
        "engineering",
        &["tracker", "edit", "ENG-1", "--status", "In Progress"],
    );
    w.ok("engineering", &["sync"]);
    w.ok("support", &["sync"]);

    // The scripts in use: they already made the tracker what it is.
    let same = w.ok("support", &["rules", "test"]);
    assert!(
        same.contains("ENG-1 → SUP-1: no difference") && same.contains("SUP-1: no difference"),
        "{same}"
    );

    let incoming = std::fs::read_to_string(w.path("support/rules/incoming.rhai"))
        .unwrap()
        .replace(
            "\"In Progress\": \"In Progress\"",
            "\"In Progress\": \"Investigating\"",
        );
    std::fs::write(w.path("support/candidate-in.rhai"), incoming).unwrap();
    std::fs::write(
        w.path("support/candidate-out.rhai"),
        "replica.summary = \"[support] \" + replica.summary;",
    )
    .unwrap();
    let run = w.ferry(
        "support",
        &[
            "rules",
            "test",
            "--incoming",
            "candidate-in.rhai",
            "--outgoing",
            "candidate-out.rhai",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .contains("ENG-1 → SUP-1: would change status: In Progress → Investigating"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("SUP-1: would send different summary"),
        "{}",
        run.stdout
    );
    // Nothing was applied.
    assert_eq!(w.show("support", "SUP-1")["status"], "In Progress");

    std::fs::write(w.path("support/broken.rhai"), "throw \"not yet\";").unwrap();
    let broken = w.ferry("support", &["rules", "test", "--incoming", "broken.rhai"]);
    assert_eq!(broken.code, 1, "a failing script fails the test");
    assert!(
        broken.stdout.contains("FAILS: ") && broken.stdout.contains("not yet"),
        "{}",
        broken.stdout
    );

    let json: serde_json::Value =
        serde_json::from_str(&w.ok("support", &["rules", "test", "--json"])).unwrap();
    assert_eq!(json[0]["peer"], "engineering");
    assert_eq!(json[0]["incoming"][0]["verdict"]["action"], "nothing");
}

//! Every error level produced for real and shown by `ferry errors`; retries with
//! parking, `ferry retry` and `ferry resolve`.

use super::World;

fn errors(w: &World, site: &str) -> Vec<serde_json::Value> {
    serde_json::from_str(&w.ok(site, &["errors", "--json"])).unwrap()
}

/// engineering's incoming rule refuses issues whose summary says "poison".
fn poison_rule(w: &World) -> std::path::PathBuf {
    let rule = w.path("engineering/rules/incoming.rhai");
    let text = std::fs::read_to_string(&rule).unwrap();
    std::fs::write(
        &rule,
        format!("if replica.summary.contains(\"poison\") {{ throw \"poisoned\"; }}\n{text}"),
    )
    .unwrap();
    rule
}

fn set_retry(w: &World, site: &str, max_tries: u32) {
    let path = w.path(&format!("{site}/ferry.yaml"));
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        "retry:\n  max_tries: {max_tries}\n  backoff_minutes: 0\n"
    ));
    std::fs::write(path, text).unwrap();
}

#[test]
fn a_failing_issue_is_retried_parked_requeued_and_cleared() {
    let w = World::escalating_pair();
    set_retry(&w, "engineering", 2);
    let rule = poison_rule(&w);
    w.escalate("poison pill");
    w.escalate("fine");
    w.ok("support", &["sync"]);

    let first = w.ferry("engineering", &["sync"]);
    assert_eq!(first.code, 1, "{}{}", first.stdout, first.stderr);
    assert!(first.stdout.contains("(try 1;"), "{}", first.stdout);
    assert_eq!(
        w.list("engineering").len(),
        1,
        "the good issue is not held back"
    );
    let listed = errors(&w, "engineering");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["level"], "issue");
    assert_eq!(listed[0]["subject"], "issues/SUP/1.yaml");
    assert_eq!(listed[0]["tries"], 1);
    let id = listed[0]["id"].as_i64().unwrap().to_string();

    let second = w.ferry("engineering", &["sync"]);
    assert_eq!(second.code, 1);
    assert!(
        second.stdout.contains("parked after 2 tries"),
        "{}",
        second.stdout
    );
    // Parked: later runs leave it alone.
    w.ok("engineering", &["sync"]);
    let shown = w.ok("engineering", &["errors"]);
    assert!(shown.contains("parked after 2 tries"), "{shown}");
    assert!(shown.contains(&format!("`ferry retry {id}`")), "{shown}");
    assert_eq!(errors(&w, "engineering")[0]["count"], 2);

    let queued = w.ok("engineering", &["retry", &id]);
    assert!(queued.contains("queued"), "{queued}");
    let third = w.ferry("engineering", &["sync"]);
    assert_eq!(third.code, 1, "retried after `ferry retry`");
    assert_eq!(errors(&w, "engineering")[0]["tries"], 1);

    // The admin fixes the rule: the next retry imports, the error goes away.
    std::fs::write(&rule, "").unwrap();
    w.ok("engineering", &["retry", "--all"]);
    w.ok("engineering", &["sync"]);
    assert_eq!(w.list("engineering").len(), 2);
    assert!(
        w.ok("engineering", &["errors"])
            .contains("no unresolved errors")
    );
}

#[test]
fn a_resolved_issue_error_is_no_longer_retried() {
    let w = World::escalating_pair();
    poison_rule(&w);
    w.escalate("poison");
    w.ok("support", &["sync"]);
    assert_eq!(w.ferry("engineering", &["sync"]).code, 1);
    let id = errors(&w, "engineering")[0]["id"].to_string();
    let resolved = w.ok("engineering", &["resolve", &id]);
    assert!(resolved.contains("no longer retried"), "{resolved}");
    w.ok("engineering", &["sync"]);
    assert!(errors(&w, "engineering").is_empty());
    let unknown = w.ferry("engineering", &["resolve", "999"]);
    assert_eq!(unknown.code, 2, "{}", unknown.stderr);
    assert!(unknown.stderr.contains("no unresolved error #999"));
}

#[test]
fn an_unreachable_channel_is_a_connection_error_until_it_is_back() {
    let w = World::escalating_pair();
    std::fs::rename(w.path("exchange.git"), w.path("away.git")).unwrap();
    let run = w.ferry("support", &["sync"]);
    assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
    let listed = errors(&w, "support");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["level"], "connection");
    assert_eq!(listed[0]["connection"], "engineering");

    std::fs::rename(w.path("away.git"), w.path("exchange.git")).unwrap();
    w.ok("support", &["sync"]);
    assert!(
        errors(&w, "support").is_empty(),
        "resolved by the run that got through"
    );
}

#[test]
fn a_tracker_that_cannot_be_opened_is_a_site_error() {
    let w = World::escalating_pair();
    let db = w.path("support/tracker.db");
    std::fs::rename(&db, w.path("support/tracker.db.bak")).unwrap();
    std::fs::create_dir(&db).unwrap();
    let run = w.ferry("support", &["sync"]);
    assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("tracker unavailable"), "{}", run.stderr);
    let listed = errors(&w, "support");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["level"], "site");
    assert!(
        listed[0]["message"]
            .as_str()
            .unwrap()
            .contains("tracker.db"),
        "{listed:?}"
    );

    std::fs::remove_dir(&db).unwrap();
    std::fs::rename(w.path("support/tracker.db.bak"), &db).unwrap();
    w.ok("support", &["sync"]);
    assert!(errors(&w, "support").is_empty());
}

#[test]
fn broken_local_state_is_a_node_error() {
    let w = World::escalating_pair();
    w.ok("support", &["sync"]);
    let clone = w.path("support/.ferry/exchange.git");
    std::fs::rename(&clone, w.path("support/clone.bak")).unwrap();
    std::fs::create_dir(&clone).unwrap();
    std::fs::write(clone.join("stray"), "not a repository").unwrap();
    let run = w.ferry("support", &["sync"]);
    assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
    let listed = errors(&w, "support");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["level"], "node");
    assert!(
        listed[0]["message"]
            .as_str()
            .unwrap()
            .contains("not a bare git repository"),
        "{listed:?}"
    );
    std::fs::remove_dir_all(&clone).unwrap();
    std::fs::rename(w.path("support/clone.bak"), &clone).unwrap();
    w.ok("support", &["sync"]);
    assert!(errors(&w, "support").is_empty());

    // An unusable ledger cannot record anything: `ferry errors` reports it.
    let ledger = w.path("support/.ferry/ledger.db");
    std::fs::write(&ledger, vec![b'x'; 8192]).unwrap();
    let run = w.ferry("support", &["sync"]);
    assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("ledger.db"), "{}", run.stderr);
    let shown = w.ferry("support", &["errors"]);
    assert_eq!(shown.code, 3);
    assert!(
        shown.stdout.contains("node (ledger unusable)") && shown.stdout.contains("ledger.db"),
        "{}",
        shown.stdout
    );
}

#[test]
fn a_silent_peer_is_a_connection_error_once_until_something_arrives() {
    let mut w = World::escalating_pair();
    let file = w.path("engineering/connections/support.yaml");
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str("stale_after_hours: 24\n");
    std::fs::write(&file, text).unwrap();

    w.now = Some("2026-11-23T10:00:00Z");
    w.ok("engineering", &["sync"]);
    w.now = Some("2026-11-24T09:00:00Z");
    w.ok("engineering", &["sync"]);
    assert!(
        errors(&w, "engineering").is_empty(),
        "23 hours is not stale yet"
    );

    w.now = Some("2026-11-24T11:00:00Z");
    let run = w.ferry("engineering", &["sync"]);
    assert_eq!(
        run.code, 0,
        "silence is reported, not a failed run: {}",
        run.stderr
    );
    w.now = Some("2026-11-24T12:00:00Z");
    w.ok("engineering", &["sync"]);
    let listed = errors(&w, "engineering");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["level"], "connection");
    assert_eq!(listed[0]["subject"], "silence");
    assert_eq!(
        listed[0]["count"], 2,
        "one error, seen twice, notified once"
    );
    let message = listed[0]["message"].as_str().unwrap();
    assert!(
        message.contains("nothing has arrived from support since 2026-11-23T10:00:00Z"),
        "{message}"
    );

    w.escalate("At last");
    w.ok("support", &["sync"]);
    w.ok("engineering", &["sync"]);
    assert!(errors(&w, "engineering").is_empty());
    let status = w.ok("engineering", &["status"]);
    assert!(
        status.contains("arrived   2026-11-24T12:00:00Z"),
        "{status}"
    );
}

use super::*;

const HOUR: chrono::Duration = chrono::Duration::hours(1);

fn ledger() -> (tempfile::TempDir, Ledger) {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(&dir.path().join("ledger.db")).unwrap();
    (dir, ledger)
}

#[test]
fn links_map_both_ways_and_connect() {
    let (_dir, mut ledger) = ledger();
    assert!(!ledger.is_connected("eng", "7").unwrap());
    ledger.link("eng", "42", "ENG-1", "7").unwrap();
    assert_eq!(ledger.local_for("eng", "42").unwrap().as_deref(), Some("7"));
    assert_eq!(
        ledger.remote_for("eng", "7").unwrap(),
        Some(("42".into(), "ENG-1".into()))
    );
    assert!(ledger.is_connected("eng", "7").unwrap());
    assert!(!ledger.is_connected("qa", "7").unwrap());
    ledger.mark_shared("qa", &["7".into()]).unwrap();
    assert!(ledger.is_connected("qa", "7").unwrap());
    assert_eq!(
        ledger.connected_among("eng", &["7", "8"]).unwrap(),
        std::collections::HashSet::from(["7".to_string()])
    );
}

#[test]
fn picks_replace_each_other_and_wait_for_an_export() {
    let (_dir, mut ledger) = ledger();
    assert_eq!(ledger.pick_for("qa", "7").unwrap(), None);
    ledger.pick("qa", "7", true, false).unwrap();
    ledger.pick("qa", "8", false, true).unwrap();
    assert_eq!(ledger.unexported_picks("qa").unwrap(), vec!["7", "8"]);
    ledger.mark_picks_exported("qa", &["7".into()]).unwrap();
    assert_eq!(ledger.unexported_picks("qa").unwrap(), vec!["8"]);
    let picks = ledger.picks_among("qa", &["7", "8", "9"]).unwrap();
    assert_eq!(picks.get("7"), Some(&true));
    assert_eq!(picks.get("8"), Some(&false));
    assert_eq!(picks.get("9"), None);
    // Changing one's mind replaces the choice, and the next export acts again.
    ledger.pick("qa", "7", false, false).unwrap();
    let pick = ledger.pick_for("qa", "7").unwrap().unwrap();
    assert!(!pick.shared && !pick.exported && !pick.by_peer);
    assert!(ledger.pick_for("qa", "8").unwrap().unwrap().by_peer);
    // An issue unshared no longer counts as shared.
    ledger.mark_shared("qa", &["7".into(), "9".into()]).unwrap();
    assert_eq!(ledger.counts("qa").unwrap().0, 1);
    assert!(ledger.unexported_picks("other").unwrap().is_empty());
}

#[test]
fn relations_wait_until_made_and_are_forgotten_when_no_longer_asked() {
    let (_dir, ledger) = ledger();
    let blocks = Relation {
        link: Some(("Blocks".into(), LinkDirection::Outward)),
        other: Origin {
            site: "support".into(),
            id: "7".into(),
        },
    };
    let parent = Relation {
        link: None,
        other: blocks.other.clone(),
    };
    let path = "issues/SUP/5.yaml";
    for relation in [&blocks, &parent, &blocks] {
        ledger
            .want_relation("support", "12", relation, path)
            .unwrap();
    }
    let kept = ledger.relations("support", "12").unwrap();
    assert_eq!(kept.len(), 2);
    assert!(kept.iter().all(|k| k.made_with.is_none() && k.path == path));
    assert_eq!(ledger.waiting_relations("support").unwrap().len(), 2);
    assert!(ledger.waiting_relations("other").unwrap().is_empty());
    ledger.relation_made("support", "12", &blocks, "3").unwrap();
    let waiting = ledger.waiting_relations("support").unwrap();
    assert_eq!(
        waiting.iter().map(|k| &k.relation).collect::<Vec<_>>(),
        [&parent]
    );
    let made = ledger.relations("support", "12").unwrap();
    let made = made.iter().find(|k| k.relation == blocks).unwrap();
    assert_eq!(made.made_with.as_deref(), Some("3"));
    ledger.forget_relation("support", "12", &blocks).unwrap();
    ledger.forget_relation("support", "12", &parent).unwrap();
    assert!(ledger.relations("support", "12").unwrap().is_empty());
}

#[test]
fn applied_clears_pending() {
    let (_dir, mut ledger) = ledger();
    let policy = RetryPolicy::default();
    ledger
        .retry_later("eng", "issues/ENG/1.yaml", &policy)
        .unwrap();
    ledger
        .retry_later("eng", "issues/ENG/1.yaml", &policy)
        .unwrap();
    assert_eq!(ledger.pending("eng").unwrap(), vec!["issues/ENG/1.yaml"]);
    ledger
        .mark_applied("eng", "issues/ENG/1.yaml", "abc")
        .unwrap();
    assert!(ledger.pending("eng").unwrap().is_empty());
    assert_eq!(
        ledger
            .applied_blob("eng", "issues/ENG/1.yaml")
            .unwrap()
            .as_deref(),
        Some("abc")
    );
}

#[test]
fn retries_back_off_then_park_until_requeued() {
    let (_dir, mut ledger) = ledger();
    let start = parse_timestamp("2026-11-20T10:00:00Z").unwrap();
    ledger.clock = Some(start);
    let policy = RetryPolicy {
        max_tries: 3,
        backoff_minutes: 10,
    };
    let path = "issues/ENG/1.yaml";
    let first = ledger.retry_later("eng", path, &policy).unwrap();
    assert_eq!((first.tries, first.parked), (1, false));
    assert_eq!(ledger.due_retries("eng").unwrap(), vec![path], "next run");

    let second = ledger.retry_later("eng", path, &policy).unwrap();
    assert_eq!(second.next_at, start + chrono::Duration::minutes(10));
    assert!(ledger.due_retries("eng").unwrap().is_empty());
    ledger.clock = Some(second.next_at);
    assert_eq!(ledger.due_retries("eng").unwrap(), vec![path]);

    let third = ledger.retry_later("eng", path, &policy).unwrap();
    assert!(third.parked);
    ledger.clock = Some(start + chrono::Duration::days(30));
    assert!(ledger.due_retries("eng").unwrap().is_empty(), "parked");
    assert_eq!(ledger.pending("eng").unwrap(), vec![path]);

    assert!(ledger.requeue("eng", path).unwrap());
    assert_eq!(ledger.due_retries("eng").unwrap(), vec![path]);
    assert_eq!(ledger.retry_later("eng", path, &policy).unwrap().tries, 1);
    ledger.forget_retry("eng", path).unwrap();
    assert!(ledger.pending("eng").unwrap().is_empty());
    assert!(!ledger.requeue("eng", path).unwrap());
}

#[test]
fn cursor_round_trips_and_resets() {
    let (_dir, ledger) = ledger();
    assert_eq!(ledger.cursor("eng").unwrap(), None);
    let t = parse_timestamp("2026-11-20T10:00:00Z").unwrap();
    ledger.set_cursor("eng", Some(t)).unwrap();
    assert_eq!(ledger.cursor("eng").unwrap(), Some(t));
    ledger.set_cursor("eng", None).unwrap();
    assert_eq!(ledger.cursor("eng").unwrap(), None);
}

#[test]
fn same_error_twice_is_counted_not_duplicated() {
    let (_dir, ledger) = ledger();
    for _ in 0..2 {
        ledger
            .record_error(Level::Issue, Some("eng"), Some("issues/ENG/1.yaml"), "bad")
            .unwrap();
    }
    let errors = ledger.open_errors().unwrap();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].count, 2);
    ledger.resolve_subject("eng", "issues/ENG/1.yaml").unwrap();
    assert!(ledger.open_errors().unwrap().is_empty());
}

#[test]
fn notified_errors_are_not_listed_again_until_they_come_back() {
    let (_dir, mut ledger) = ledger();
    ledger
        .record_error(Level::Issue, Some("eng"), Some("issues/ENG/1.yaml"), "bad")
        .unwrap();
    let pending = ledger.unnotified_errors(HOUR).unwrap();
    assert_eq!(pending.len(), 1);
    ledger.mark_notified(&[pending[0].id]).unwrap();
    assert!(ledger.unnotified_errors(HOUR).unwrap().is_empty());
    // Seen again: counted, not notified again.
    ledger
        .record_error(Level::Issue, Some("eng"), Some("issues/ENG/1.yaml"), "bad")
        .unwrap();
    assert!(ledger.unnotified_errors(HOUR).unwrap().is_empty());
    // Resolved and back: a new error, notified again.
    ledger.resolve_subject("eng", "issues/ENG/1.yaml").unwrap();
    ledger
        .record_error(Level::Issue, Some("eng"), Some("issues/ENG/1.yaml"), "bad")
        .unwrap();
    assert_eq!(ledger.unnotified_errors(HOUR).unwrap().len(), 1);
}

#[test]
fn a_notice_that_may_have_gone_out_waits_for_the_window() {
    let (_dir, mut ledger) = ledger();
    let start = parse_timestamp("2026-11-20T10:00:00Z").unwrap();
    ledger.clock = Some(start);
    ledger
        .record_error(Level::Site, None, None, "down")
        .unwrap();
    let ids: Vec<i64> = ledger
        .unnotified_errors(HOUR)
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    // The run died after sending, before hearing the answer.
    ledger.mark_notice_attempt(&ids).unwrap();
    ledger.clock = Some(start + chrono::Duration::minutes(59));
    assert!(ledger.unnotified_errors(HOUR).unwrap().is_empty());
    ledger.clock = Some(start + HOUR);
    assert_eq!(ledger.unnotified_errors(HOUR).unwrap().len(), 1);
    // A send that certainly failed is retried at once.
    ledger.mark_notice_attempt(&ids).unwrap();
    ledger.clear_notice_attempt(&ids).unwrap();
    assert_eq!(ledger.unnotified_errors(HOUR).unwrap().len(), 1);
}

/// Staging then recording, as an export does around its commit.
trait RecordExports {
    fn record(&mut self, at: (&str, &str), exports: &[NewExport]) -> Result<(), LedgerError>;
}

impl RecordExports for Ledger {
    fn record(
        &mut self,
        (peer, commit): (&str, &str),
        exports: &[NewExport],
    ) -> Result<(), LedgerError> {
        self.stage_exports(peer, exports)?;
        self.record_staged_exports(peer, commit)
    }
}

#[test]
fn staged_exports_no_commit_carries_are_dropped() {
    let (_dir, mut ledger) = ledger();
    ledger.stage_exports("eng", &[export("7", "Open")]).unwrap();
    ledger.drop_staged_exports("eng").unwrap();
    ledger
        .record(("eng", "c1"), &[export("8", "Open")])
        .unwrap();
    assert!(ledger.exports("eng", "7").unwrap().is_empty());
    assert_eq!(ledger.exports("eng", "8").unwrap()[0].commit, "c1");
}

fn values(status: &str) -> BTreeMap<String, serde_json::Value> {
    BTreeMap::from([("status".to_string(), serde_json::json!(status))])
}

fn export(id: &str, status: &str) -> NewExport {
    NewExport::new(id.into(), Utc::now(), values(status))
}

#[test]
fn a_baseline_value_is_replaced_only_by_a_newer_one() {
    let (_dir, mut ledger) = ledger();
    ledger
        .record(("eng", "c1"), &[export("7", "Open")])
        .unwrap();
    ledger
        .record(("eng", "c2"), &[export("7", "Closed")])
        .unwrap();
    let exports = ledger.exports("eng", "7").unwrap();
    assert_eq!(exports.len(), 2);
    // An import after both exports: newer than either.
    ledger
        .merge_baseline("eng", "7", &values("Resolved"), None)
        .unwrap();
    // Folding in the acknowledged first export does not undo it.
    ledger
        .merge_baseline("eng", "7", &values("Open"), Some(exports[0].seq))
        .unwrap();
    assert_eq!(ledger.baseline("eng", "7").unwrap()["status"].0, "Resolved");
    // An export made after the import, once acknowledged, replaces it.
    ledger
        .record(("eng", "c3"), &[export("7", "Closed")])
        .unwrap();
    let third = ledger.exports("eng", "7").unwrap()[2].seq;
    ledger
        .merge_baseline("eng", "7", &values("Closed"), Some(third))
        .unwrap();
    assert_eq!(ledger.baseline("eng", "7").unwrap()["status"].0, "Closed");
    ledger.forget_exports_before("eng", "7", third).unwrap();
    assert_eq!(ledger.exports("eng", "7").unwrap().len(), 1);
}

#[test]
fn only_the_newest_exports_of_an_issue_are_kept() {
    let (_dir, mut ledger) = ledger();
    for i in 0..KEPT_EXPORTS + 5 {
        ledger
            .record(("eng", &format!("c{i}")), &[export("7", "Open")])
            .unwrap();
    }
    ledger
        .record(("eng", "other"), &[export("8", "Open")])
        .unwrap();
    let kept = ledger.exports("eng", "7").unwrap();
    assert_eq!(kept.len() as i64, KEPT_EXPORTS);
    assert_eq!(
        kept.last().unwrap().commit,
        format!("c{}", KEPT_EXPORTS + 4)
    );
    assert_eq!(ledger.exports("eng", "8").unwrap().len(), 1);
}

#[test]
fn an_old_ledger_gains_notified_at() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let old = Connection::open(&path).unwrap();
    old.execute_batch(SCHEMA).unwrap();
    old.execute(
        "INSERT INTO errors (level, message, first_seen, last_seen) VALUES ('issue', 'old', 'x', 'x')",
        [],
    )
    .unwrap();
    drop(old);
    let ledger = Ledger::open(&path).unwrap();
    assert_eq!(ledger.unnotified_errors(HOUR).unwrap().len(), 1);
    drop(ledger);
    // Opening again does not try to add the column twice.
    Ledger::open(&path).unwrap();
}

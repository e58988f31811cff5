//! The steps of an export: the pure ones (cursor, message) on their own, the
//! page selection and the whole export against a real site on the embedded
//! tracker.

use chrono::{DateTime, Utc};

use super::{Changed, ExportReport, Gathered, Known, Shared, commit_message, export, next_cursor};
use crate::engine::tests::{Fixture, PEER, fixture};
use crate::model::{Issue, parse_timestamp};
use crate::replica::{Format, stored_path};

fn time(s: &str) -> DateTime<Utc> {
    parse_timestamp(s).unwrap()
}

fn run(f: &mut Fixture) -> ExportReport {
    let changed = Changed::read(&f.site, &[&f.connection]).unwrap();
    export(&mut f.site, &f.connection, &changed).unwrap()
}

/// The replica paths on this site's branch for the peer, as `git ls-tree`
/// lists them: the real git CLI is the oracle of what the commit holds.
fn on_branch(f: &Fixture) -> Vec<String> {
    let out = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(f.site.exchange.repo().path())
        .args(["ls-tree", "-r", "--name-only"])
        .arg(crate::exchange::own_branch("sup", PEER))
        .arg("issues/")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn path_of(f: &Fixture, issue: &Issue) -> String {
    let format = super::writing_format(&f.site, PEER, None).unwrap();
    stored_path(&issue.project, &issue.id, format)
}

#[test]
fn the_cursor_stops_at_the_oldest_failure_else_passes_a_second_the_clock_has_left() {
    let (ten, eleven) = (time("2026-11-20T10:00:00Z"), time("2026-11-20T11:00:00Z"));
    assert_eq!(next_cursor(None, None, eleven), None);
    assert_eq!(
        next_cursor(None, Some(ten), eleven),
        Some(ten + chrono::Duration::seconds(1))
    );
    // Changes may still be stamped with the second the tracker is in.
    assert_eq!(next_cursor(None, Some(eleven), eleven), Some(eleven));
    assert_eq!(next_cursor(Some(ten), Some(eleven), eleven), Some(ten));
}

#[test]
fn the_commit_message_counts_what_was_written_and_shared() {
    let report = ExportReport {
        written: vec!["SUP-1".into()],
        removed: vec!["SUP-2".into(), "SUP-3".into()],
        ..Default::default()
    };
    assert_eq!(
        commit_message("sup", PEER, &report, 1, 2),
        "sup → eng: 1 issue written, 2 removed\n\nShared in this run: 1 issue, 2 comments\n"
    );
}

#[test]
fn a_page_keeps_the_issues_the_connection_shares_and_removes_those_unshared_by_hand() {
    let mut f = fixture();
    f.connection.query = "labels = escalate".parse().unwrap();
    let plain = f.create_local("Plain");
    let mut escalated = f.create_local("Escalated");
    escalated.labels = vec!["escalate".into()];
    let elsewhere = Issue {
        project: "OPS".into(),
        labels: vec!["escalate".into()],
        ..escalated.clone()
    };
    let connected = f.create_local("Shared before");
    let unshared = f.create_local("Unshared by hand");
    let known = Known {
        connected: [connected.id.clone()].into(),
        picks: [(unshared.id.clone(), false)].into(),
    };
    let mut run = Gathered::default();
    let page = vec![&plain, &escalated, &elsewhere, &connected, &unshared];
    let chosen = run
        .select(
            &f.connection,
            &Shared::Empty,
            Format::V1,
            page,
            &known,
            false,
        )
        .unwrap();
    let chosen: Vec<(&str, &str)> = chosen
        .iter()
        .map(|(issue, path)| (issue.summary.as_str(), path.as_str()))
        .collect();
    let v1 = |issue: &Issue| stored_path(&issue.project, &issue.id, Format::V1);
    assert_eq!(
        chosen,
        [
            ("Escalated", v1(&escalated).as_str()),
            ("Shared before", v1(&connected).as_str())
        ]
    );
    // Nothing of it on the branch yet: nothing to remove, but the choice is
    // acted on.
    assert!(run.writes.is_empty());
    assert!(run.report.removed.is_empty());
    assert!(run.picked.contains(&unshared.id));
    assert_eq!(run.newest, Some(unshared.updated.max(plain.updated)));
}

#[test]
fn an_export_writes_what_changed_only_and_removes_an_issue_unshared_by_hand() {
    let mut f = fixture();
    let first = f.create_local("Printer on fire");
    let second = f.create_local("Toner low");
    let report = run(&mut f);
    assert!(report.commit.is_some());
    let mut written = report.written.clone();
    written.sort();
    assert_eq!(written, [first.key.clone(), second.key.clone()]);
    let mut expected = vec![path_of(&f, &first), path_of(&f, &second)];
    expected.sort();
    assert_eq!(on_branch(&f), expected);

    let quiet = run(&mut f);
    assert_eq!(quiet.commit, None, "{quiet:?}");
    assert!(quiet.written.is_empty() && quiet.removed.is_empty());

    f.site.ledger.pick(PEER, &second.id, false, false).unwrap();
    let removed = run(&mut f);
    assert_eq!(removed.removed, [second.key.as_str()]);
    assert!(removed.commit.is_some());
    assert_eq!(on_branch(&f), [path_of(&f, &first)]);
    assert_eq!(run(&mut f).commit, None, "the choice was acted on once");
}

#[test]
fn an_issue_the_rule_fails_is_its_own_error_and_holds_the_cursor() {
    let mut f = fixture();
    let rule = f.root.join("rules/outgoing-under-test.rhai");
    std::fs::write(
        &rule,
        "if issue.summary.contains(\"boom\") { throw \"cannot share this one\"; }\n",
    )
    .unwrap();
    f.connection.settings.outgoing = rule;
    let good = f.create_local("Printer on fire");
    let bad = f.create_local("boom");
    let report = run(&mut f);
    assert_eq!(report.written, [good.key.as_str()]);
    assert_eq!(report.errors.len(), 1, "{report:?}");
    assert_eq!(report.errors[0].subject, bad.key);
    assert!(
        report.errors[0].message.contains("cannot share this one"),
        "{report:?}"
    );
    assert_eq!(f.site.ledger.cursor(PEER).unwrap(), Some(bad.updated));
    assert_eq!(on_branch(&f), [path_of(&f, &good)]);
}

//! The tracker contract: what the engine relies on from every connector, as checks
//! that each connector's tests run against a real instance of its tracker.
//!
//! A connector's test calls [`run_all`] with a [`Setup`] naming a project and a user
//! that exist there, and a function that hands each check a tracker to work on
//! (a fresh one if it can; the checks never assume an empty tracker, so a shared
//! test server works too). Every check runs even when one fails; the failure
//! message lists the failing checks by name.
//!
//! The one slow check ([`noop_update_keeps_updated`]) waits for the next wall-clock
//! second, because a wrong bump of `updated` within the same second is invisible.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::Utc;

use super::{IssuePatch, LinkChange, NewAttachment, NewComment, NewIssue, Tracker, TrackerError};
use crate::model::{FieldValue, Issue, LinkDirection, Origin, truncate_to_seconds};

/// What the checks need to exist in the tracker under test.
pub(crate) struct Setup<'a> {
    /// A project issues may be created in.
    pub project: &'a str,
    /// A user issues may be assigned to and comments written by.
    pub user: &'a str,
    /// For a tracker that keeps resolutions: a status whose workflow step asks
    /// for one (a done status) and a resolution it accepts.
    pub done: Option<(&'a str, &'a str)>,
    /// For a tracker where only an epic's children leave it by an edit
    /// (Jira: a sub-task stays one), the epic issue type: the parent in the
    /// `parents` check.
    pub epic: Option<&'a str>,
}

/// One contract check.
pub(crate) type Check = fn(&mut dyn Tracker, &Setup);

/// Every check, by name.
pub(crate) const CHECKS: &[(&str, Check)] = &[
    ("create_then_get", create_then_get),
    ("summary_is_required", summary_is_required),
    ("unknown_ids", unknown_ids),
    ("noop_update_keeps_updated", noop_update_keeps_updated),
    ("sets_and_fields", sets_and_fields),
    ("comments", comments),
    ("origins", origins),
    ("delete_leaves_tombstone", delete_leaves_tombstone),
    ("changed_since_is_at_or_after", changed_since_is_at_or_after),
    ("done_takes_a_resolution", done_takes_a_resolution),
    ("changed_ids_then_get_many", changed_ids_then_get_many),
    ("attachments", attachments),
    ("batches", batches),
    ("links", links),
    ("parents", parents),
];

/// Gives a check the tracker under test.
pub(crate) type UseTracker<'a> = dyn FnMut(&mut dyn Tracker) + 'a;

/// Runs every check. `with_tracker` is called once per check and must call the
/// function it is given with the tracker under test.
pub(crate) fn run_all(setup: &Setup, with_tracker: &mut dyn FnMut(&mut UseTracker)) {
    let failed: Vec<&str> = CHECKS
        .iter()
        .filter(|(_, check)| {
            catch_unwind(AssertUnwindSafe(|| {
                with_tracker(&mut |tracker| check(tracker, setup))
            }))
            .is_err()
        })
        .map(|(name, _)| *name)
        .collect();
    assert!(
        failed.is_empty(),
        "tracker contract checks failed (messages above): {}",
        failed.join(", ")
    );
}

/// A text unique to this run, so that checks on a shared server never see each
/// other's issues or origins.
fn unique(what: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{what} {nanos}")
}

fn new_issue(setup: &Setup, summary: &str) -> NewIssue {
    NewIssue {
        project: setup.project.into(),
        patch: IssuePatch {
            summary: Some(unique(summary)),
            ..IssuePatch::default()
        },
        author: setup.user.into(),
        origin: None,
    }
}

fn comment(setup: &Setup, body: &str, internal: bool, origin: Option<Origin>) -> NewComment {
    NewComment {
        author: setup.user.into(),
        body: body.into(),
        internal,
        origin,
    }
}

fn reload(tracker: &dyn Tracker, issue: &Issue) -> Issue {
    tracker
        .get(&issue.id)
        .expect("get")
        .expect("the issue exists")
}

/// Sleeps into the next wall-clock second.
fn next_second() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    std::thread::sleep(Duration::from_nanos(
        1_000_000_000 - u64::from(now.subsec_nanos()) + 10_000_000,
    ));
}

/// A create stores every value it is given and returns the issue as `get` does.
fn create_then_get(tracker: &mut dyn Tracker, setup: &Setup) {
    let before = truncate_to_seconds(Utc::now());
    let clock = tracker.now().expect("now");
    assert_eq!(
        clock,
        truncate_to_seconds(clock),
        "the clock is in whole seconds"
    );
    let mut issue = new_issue(setup, "Printer on fire");
    issue.patch.issue_type = Some("Bug".into());
    issue.patch.description = Some(Some("Smoke after the update.\nTwice.".into()));
    issue.patch.priority = Some(Some("High".into()));
    issue.patch.assignee = Some(Some(setup.user.into()));
    issue.patch.labels = Some(vec!["customer".into(), "escalate".into()]);
    issue.patch.fields = [("Severity".to_string(), FieldValue::from(2))].into();
    let created = tracker.create(&issue).expect("create");
    assert!(!created.id.is_empty() && !created.key.is_empty());
    assert_eq!(created.project, setup.project);
    assert_eq!(Some(&created.summary), issue.patch.summary.as_ref());
    assert_eq!(created.issue_type, "Bug");
    assert_eq!(
        created.description.as_deref(),
        Some("Smoke after the update.\nTwice.")
    );
    assert_eq!(created.priority.as_deref(), Some("High"));
    assert_eq!(created.assignee.as_deref(), Some(setup.user));
    assert_eq!(created.labels, ["customer", "escalate"]);
    assert_eq!(created.fields.get("Severity"), Some(&FieldValue::from(2)));
    assert!(!created.status.is_empty() && !created.deleted);
    assert!(created.created >= before && created.updated >= created.created);
    assert!(
        created.updated >= clock,
        "updated comes from the same clock as now()"
    );
    assert_eq!(reload(tracker, &created), created);
    assert_eq!(
        tracker.get_by_key(&created.key).expect("get by key"),
        Some(created)
    );
}

/// An issue without a summary is refused for that issue, not as an outage.
fn summary_is_required(tracker: &mut dyn Tracker, setup: &Setup) {
    let mut issue = new_issue(setup, "");
    issue.patch.summary = Some(String::new());
    assert!(matches!(
        tracker.create(&issue),
        Err(TrackerError::Rejected { .. })
    ));
}

/// Unknown ids: `None` from reads, `NotFound` from writes.
fn unknown_ids(tracker: &mut dyn Tracker, setup: &Setup) {
    let id = "987654321";
    assert!(tracker.get(id).expect("get").is_none());
    let key = format!("{}-987654321", setup.project);
    assert!(tracker.get_by_key(&key).expect("get by key").is_none());
    assert!(matches!(
        tracker.update(id, &IssuePatch::default(), setup.user),
        Err(TrackerError::NotFound(_))
    ));
    assert!(matches!(
        tracker.add_comment(id, &comment(setup, "x", false, None)),
        Err(TrackerError::NotFound(_))
    ));
    assert!(matches!(
        tracker.delete(id, setup.user),
        Err(TrackerError::NotFound(_))
    ));
}

/// An update that changes nothing leaves `updated` alone; a real one bumps it.
fn noop_update_keeps_updated(tracker: &mut dyn Tracker, setup: &Setup) {
    let mut issue = new_issue(setup, "No-op");
    issue.patch.labels = Some(vec!["a".into(), "b".into()]);
    let created = tracker.create(&issue).expect("create");
    next_second();
    let same = IssuePatch {
        summary: Some(created.summary.clone()),
        labels: Some(vec!["b".into(), "a".into()]),
        status: Some(created.status.clone()),
        ..IssuePatch::default()
    };
    let unchanged = tracker
        .update(&created.id, &same, setup.user)
        .expect("update");
    assert_eq!(unchanged, created);
    assert_eq!(reload(tracker, &created), created);
    let change = IssuePatch {
        summary: Some(unique("Renamed")),
        ..IssuePatch::default()
    };
    let changed = tracker
        .update(&created.id, &change, setup.user)
        .expect("update");
    assert_eq!(Some(&changed.summary), change.summary.as_ref());
    assert!(changed.updated > created.updated);
    assert_eq!(reload(tracker, &created), changed);
}

/// Entering a done status with a resolution stores both, even where the
/// workflow step refuses to move without one.
fn done_takes_a_resolution(tracker: &mut dyn Tracker, setup: &Setup) {
    let Some((status, resolution)) = setup.done else {
        return;
    };
    let created = tracker
        .create(&new_issue(setup, "Done soon"))
        .expect("create");
    let patch = IssuePatch {
        status: Some(status.into()),
        resolution: Some(Some(resolution.into())),
        ..IssuePatch::default()
    };
    let done = tracker
        .update(&created.id, &patch, setup.user)
        .expect("update");
    assert_eq!(done.status, status);
    assert_eq!(done.resolution.as_deref(), Some(resolution));
    assert_eq!(reload(tracker, &created), done);
}

/// Labels and components are replaced as whole sets; custom fields are set one by
/// one and removed by `null`; `Some(None)` clears an optional text.
fn sets_and_fields(tracker: &mut dyn Tracker, setup: &Setup) {
    let mut issue = new_issue(setup, "Sets");
    issue.patch.description = Some(Some("text".into()));
    issue.patch.labels = Some(vec!["x".into(), "y".into()]);
    issue.patch.fields = [
        ("Customer".to_string(), FieldValue::from("ACME")),
        ("Severity".to_string(), FieldValue::from(2)),
    ]
    .into();
    let created = tracker.create(&issue).expect("create");
    let patch = IssuePatch {
        description: Some(None),
        labels: Some(vec!["z".into()]),
        fields: [
            ("Customer".to_string(), FieldValue::Null),
            ("Severity".to_string(), FieldValue::from(3)),
        ]
        .into(),
        ..IssuePatch::default()
    };
    let updated = tracker
        .update(&created.id, &patch, setup.user)
        .expect("update");
    assert_eq!(updated.description, None);
    assert_eq!(updated.labels, ["z"]);
    assert_eq!(updated.fields.get("Customer"), None);
    assert_eq!(updated.fields.get("Severity"), Some(&FieldValue::from(3)));
    let keep = IssuePatch {
        status: Some(updated.status.clone()),
        ..IssuePatch::default()
    };
    let kept = tracker
        .update(&created.id, &keep, setup.user)
        .expect("update");
    assert_eq!(kept.labels, ["z"], "labels: None leaves them as they are");
}

/// Comments keep their internal flag, come back oldest first, and bump the issue.
fn comments(tracker: &mut dyn Tracker, setup: &Setup) {
    let issue = tracker
        .create(&new_issue(setup, "Comments"))
        .expect("create");
    let public = tracker
        .add_comment(
            &issue.id,
            &comment(setup, "Customer sent logs.", false, None),
        )
        .expect("comment");
    let internal = tracker
        .add_comment(&issue.id, &comment(setup, "Looks like PEBKAC.", true, None))
        .expect("comment");
    assert!(!public.internal && internal.internal);
    assert_eq!(public.body, "Customer sent logs.");
    assert_eq!(public.author, setup.user);
    let stored = reload(tracker, &issue);
    assert_eq!(stored.comments, [public, internal.clone()]);
    assert!(stored.updated >= internal.created);
}

/// Origin markers find issues and make a retried comment a no-op.
fn origins(tracker: &mut dyn Tracker, setup: &Setup) {
    let origin = Origin {
        site: "contract".into(),
        id: unique("issue").replace(' ', "-"),
    };
    let mut issue = new_issue(setup, "From a peer");
    issue.origin = Some(origin.clone());
    let created = tracker.create(&issue).expect("create");
    assert_eq!(created.origin.as_ref(), Some(&origin));
    assert_eq!(
        tracker.find_by_origin(&origin).expect("find"),
        Some(created.clone())
    );
    let nobody = Origin {
        site: "contract-nobody".into(),
        id: origin.id.clone(),
    };
    assert_eq!(tracker.find_by_origin(&nobody).expect("find"), None);

    let from_peer = Origin {
        site: "contract".into(),
        id: "c-1".into(),
    };
    let first = tracker
        .add_comment(
            &created.id,
            &comment(setup, "Hi", false, Some(from_peer.clone())),
        )
        .expect("comment");
    assert_eq!(first.origin.as_ref(), Some(&from_peer));
    let retried = tracker
        .add_comment(&created.id, &comment(setup, "Hi", false, Some(from_peer)))
        .expect("comment");
    assert_eq!(retried, first);
    assert_eq!(reload(tracker, &created).comments, [first]);
}

/// A deleted issue is still readable and shows up in `changed_since` as a
/// tombstone that keeps its id, key and summary.
fn delete_leaves_tombstone(tracker: &mut dyn Tracker, setup: &Setup) {
    let issue = tracker.create(&new_issue(setup, "Doomed")).expect("create");
    let before = truncate_to_seconds(Utc::now());
    tracker.delete(&issue.id, setup.user).expect("delete");
    let tomb = reload(tracker, &issue);
    assert!(tomb.deleted);
    assert_eq!(
        (&tomb.id, &tomb.key, &tomb.summary),
        (&issue.id, &issue.key, &issue.summary)
    );
    assert!(tomb.updated >= before);
    let changed = tracker.changed_since(Some(before)).expect("changed_since");
    let found = changed
        .iter()
        .find(|i| i.id == issue.id)
        .expect("tombstone");
    assert!(found.deleted);
}

/// `changed_since(t)` includes an issue updated exactly at `t`, not one before.
fn changed_since_is_at_or_after(tracker: &mut dyn Tracker, setup: &Setup) {
    let issue = tracker.create(&new_issue(setup, "Cursor")).expect("create");
    let has = |since| {
        tracker
            .changed_since(Some(since))
            .expect("changed_since")
            .iter()
            .any(|i| i.id == issue.id)
    };
    assert!(has(issue.updated));
    assert!(!has(issue.updated + chrono::Duration::seconds(1)));
    let all = tracker.changed_since(None).expect("changed_since");
    assert_eq!(all.iter().find(|i| i.id == issue.id), Some(&issue));
}

/// Listing ids and reading them in pages gives what `changed_since` gives.
fn changed_ids_then_get_many(tracker: &mut dyn Tracker, setup: &Setup) {
    let first = tracker
        .create(&new_issue(setup, "Paged 1"))
        .expect("create");
    let second = tracker
        .create(&new_issue(setup, "Paged 2"))
        .expect("create");
    let since = Some(first.updated);
    let whole = tracker.changed_since(since).expect("changed_since");
    assert!(whole.iter().any(|i| i.id == second.id));
    if let Some(ids) = tracker.changed_ids(since).expect("changed_ids") {
        let listed: Vec<&str> = whole.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, listed);
    }
    let ids = vec![second.id.clone(), "987654321".to_string(), first.id.clone()];
    let read = tracker.get_many(&ids).expect("get_many");
    assert_eq!(
        read,
        vec![reload(tracker, &second), reload(tracker, &first)]
    );
}

/// An attached file comes back byte for byte with its name, size and (when the
/// tracker knows it) its hash; removing it twice is fine, and both bump the issue.
fn attachments(tracker: &mut dyn Tracker, setup: &Setup) {
    let issue = tracker
        .create(&new_issue(setup, "With a file"))
        .expect("create");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("trace.log");
    let content: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
    std::fs::write(&path, &content).expect("write file");
    let sha256 = format!("{:x}", <sha2::Sha256 as sha2::Digest>::digest(&content));
    let file = NewAttachment {
        name: "trace.log",
        author: setup.user,
        path: &path,
        size: content.len() as u64,
        sha256: &sha256,
    };
    next_second();
    let attached = tracker.attach(&issue.id, &file).expect("attach");
    assert_eq!(attached.name, "trace.log");
    assert_eq!(attached.size, content.len() as u64);
    assert!(attached.sha256.is_empty() || attached.sha256 == sha256);
    let stored = reload(tracker, &issue);
    assert_eq!(stored.attachments, std::slice::from_ref(&attached));
    assert!(stored.updated > issue.updated, "attaching bumps updated");

    let mut back = Vec::new();
    let n = tracker
        .read_attachment(&issue.id, &attached.id, &mut back)
        .expect("read back");
    assert_eq!(n, content.len() as u64);
    assert!(back == content, "the content comes back byte for byte");
    assert!(matches!(
        tracker.read_attachment(&issue.id, "987654321", &mut Vec::new()),
        Err(TrackerError::NotFound(_))
    ));

    next_second();
    tracker
        .delete_attachment(&issue.id, &attached.id, setup.user)
        .expect("delete attachment");
    tracker
        .delete_attachment(&issue.id, &attached.id, setup.user)
        .expect("deleting it again is not an error");
    let after = reload(tracker, &issue);
    assert!(after.attachments.is_empty());
    assert!(after.updated > stored.updated, "removing bumps updated");
}

/// A batch's writes are read back before the commit and kept by it; a write
/// refused inside a batch leaves no trace and keeps the others; a rolled-back
/// batch leaves nothing. A tracker that cannot batch says so and writes at once.
fn batches(tracker: &mut dyn Tracker, setup: &Setup) {
    let marked = |summary: &str| {
        let mut issue = new_issue(setup, summary);
        issue.origin = Some(Origin {
            site: "contract".into(),
            id: unique(summary).replace(' ', "-"),
        });
        issue
    };
    let kept = marked("Batched");
    let batched = tracker.begin_batch().expect("begin");
    let created = tracker.create(&kept).expect("create");
    let origin = kept.origin.as_ref().expect("origin");
    assert_eq!(
        tracker.find_by_origin(origin).expect("find"),
        Some(created.clone())
    );
    let mut refused = new_issue(setup, "");
    refused.patch.summary = Some(String::new());
    assert!(matches!(
        tracker.create(&refused),
        Err(TrackerError::Rejected { .. })
    ));
    let note = tracker
        .add_comment(&created.id, &comment(setup, "Kept.", false, None))
        .expect("comment");
    tracker.commit_batch().expect("commit");
    assert_eq!(reload(tracker, &created).comments, [note]);

    let dropped = marked("Rolled back");
    assert_eq!(tracker.begin_batch().expect("begin"), batched);
    let created = tracker.create(&dropped).expect("create");
    tracker.rollback_batch().expect("rollback");
    let found = tracker
        .find_by_origin(dropped.origin.as_ref().expect("origin"))
        .expect("find")
        .map(|issue| issue.id);
    assert_eq!(found, (!batched).then_some(created.id));
    // Without a batch open, both are no-ops.
    tracker.commit_batch().expect("commit");
    tracker.rollback_batch().expect("rollback");
}

/// A link made from one end shows at both, with opposite directions, moves
/// both issues' `updated` (where the tracker says it does), is made once however often it is asked for, and
/// goes from both when removed from either; a link to no issue is refused.
fn links(tracker: &mut dyn Tracker, setup: &Setup) {
    let a = tracker
        .create(&new_issue(setup, "Blocker"))
        .expect("create");
    let b = tracker
        .create(&new_issue(setup, "Blocked"))
        .expect("create");
    next_second();
    let blocks = |direction, other: &Issue| LinkChange {
        link_type: "Blocks".into(),
        direction,
        other: other.id.clone(),
    };
    let add = IssuePatch {
        add_links: vec![blocks(LinkDirection::Outward, &b)],
        ..IssuePatch::default()
    };
    let linked = tracker.update(&a.id, &add, setup.user).expect("link");
    let seen = |issue: &Issue| -> Vec<(String, LinkDirection, String)> {
        issue
            .links
            .iter()
            .map(|l| (l.link_type.clone(), l.direction, l.issue.id.clone()))
            .collect()
    };
    assert_eq!(
        seen(&linked),
        [("Blocks".to_string(), LinkDirection::Outward, b.id.clone())]
    );
    assert_eq!(linked.links[0].issue.key, b.key);
    let b_now = reload(tracker, &b);
    assert_eq!(
        seen(&b_now),
        [("Blocks".to_string(), LinkDirection::Inward, a.id.clone())]
    );
    if tracker.link_changes_move_updated() {
        assert!(linked.updated > a.updated && b_now.updated > b.updated);
    }
    // Asked for again, from the other end: still one link.
    let again = IssuePatch {
        add_links: vec![blocks(LinkDirection::Inward, &a)],
        ..IssuePatch::default()
    };
    tracker
        .update(&b.id, &again, setup.user)
        .expect("link again");
    assert_eq!(seen(&reload(tracker, &a)).len(), 1);
    let remove = IssuePatch {
        remove_links: again.add_links.clone(),
        ..IssuePatch::default()
    };
    tracker.update(&b.id, &remove, setup.user).expect("unlink");
    assert!(reload(tracker, &a).links.is_empty());
    assert!(reload(tracker, &b).links.is_empty());
    tracker
        .update(&b.id, &remove, setup.user)
        .expect("unlinking what is not linked");
    let mut nowhere = add.clone();
    nowhere.add_links[0].other = "999999999".into();
    assert!(matches!(
        tracker.update(&a.id, &nowhere, setup.user),
        Err(TrackerError::Rejected { .. } | TrackerError::NotFound(_))
    ));
}

/// A sub-task created under a parent names it, and the parent lists it; a
/// sub-task made an issue of its own leaves the list. (Under an epic where
/// the tracker says so: see [`Setup::epic`].)
fn parents(tracker: &mut dyn Tracker, setup: &Setup) {
    let mut parent = new_issue(setup, "Parent");
    parent.patch.issue_type = setup.epic.map(str::to_string);
    let parent = tracker.create(&parent).expect("create");
    let mut child = new_issue(setup, "Sub-task");
    child.patch.parent = Some(Some(parent.id.clone()));
    let child = tracker.create(&child).expect("create a sub-task");
    assert_eq!(
        child
            .parent
            .as_ref()
            .map(|p| (p.id.as_str(), p.key.as_str())),
        Some((parent.id.as_str(), parent.key.as_str()))
    );
    let listed: Vec<String> = reload(tracker, &parent)
        .subtasks
        .iter()
        .map(|s| s.id.clone())
        .collect();
    assert_eq!(listed, std::slice::from_ref(&child.id));
    let alone = IssuePatch {
        parent: Some(None),
        ..IssuePatch::default()
    };
    let child = tracker
        .update(&child.id, &alone, setup.user)
        .expect("clear");
    assert_eq!(child.parent, None);
    assert!(reload(tracker, &parent).subtasks.is_empty());
}

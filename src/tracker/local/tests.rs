use super::*;
use crate::model::parse_timestamp;
use crate::tracker::{LinkChange, contract};

fn at(text: &str) -> DateTime<Utc> {
    parse_timestamp(text).unwrap()
}

fn fresh() -> (tempfile::TempDir, LocalTracker) {
    let dir = tempfile::tempdir().unwrap();
    let mut tracker = LocalTracker::open(&dir.path().join("tracker.db")).unwrap();
    tracker.set_clock(Some(at("2026-11-20T10:00:00Z")));
    (dir, tracker)
}

fn new_issue(summary: &str) -> NewIssue {
    NewIssue {
        project: "SUP".into(),
        patch: IssuePatch {
            summary: Some(summary.into()),
            ..IssuePatch::default()
        },
        author: "ann".into(),
        origin: None,
    }
}

fn comment(body: &str, internal: bool, origin: Option<Origin>) -> NewComment {
    NewComment {
        author: "kevin".into(),
        body: body.into(),
        internal,
        origin,
    }
}

#[test]
fn contract() {
    let setup = contract::Setup {
        project: "SUP",
        user: "ann",
        done: None,
        epic: None,
    };
    contract::run_all(&setup, &mut |check| {
        let dir = tempfile::tempdir().unwrap();
        let mut tracker = LocalTracker::open(&dir.path().join("tracker.db")).unwrap();
        // The contract runs on the real clock, whatever FERRY_NOW says.
        tracker.set_clock(None);
        check(&mut tracker);
    });
}

#[test]
fn create_applies_defaults_and_numbers_per_project() {
    let (_dir, mut t) = fresh();
    let a = t.create(&new_issue("First")).unwrap();
    assert_eq!(
        (a.key.as_str(), a.issue_type.as_str(), a.status.as_str()),
        ("SUP-1", "Task", "Open")
    );
    assert_eq!(a.priority.as_deref(), Some("Medium"));
    assert_eq!(a.reporter.as_deref(), Some("ann"));
    assert_eq!(a.created, at("2026-11-20T10:00:00Z"));
    assert_eq!(a.updated, a.created);
    let b = t.create(&new_issue("Second")).unwrap();
    assert_eq!(b.key, "SUP-2");
    let other = t
        .create(&NewIssue {
            project: "ENG".into(),
            ..new_issue("Elsewhere")
        })
        .unwrap();
    assert_eq!(other.key, "ENG-1");
    assert_eq!(t.get_by_key("SUP-2").unwrap(), Some(b));
    assert_eq!(t.get_by_key("SUP-9").unwrap(), None);
    assert_eq!(t.get_by_key("nonsense").unwrap(), None);
    let keys: Vec<String> = t.list().unwrap().into_iter().map(|i| i.key).collect();
    assert_eq!(keys, ["ENG-1", "SUP-1", "SUP-2"]);
}

#[test]
fn create_rejects_bad_input() {
    let (_dir, mut t) = fresh();
    assert!(matches!(
        t.create(&new_issue("  ")),
        Err(TrackerError::Rejected { .. })
    ));
    for project in ["", "S-UP", "1SUP"] {
        let issue = NewIssue {
            project: project.into(),
            ..new_issue("x")
        };
        assert!(
            matches!(t.create(&issue), Err(TrackerError::Rejected { .. })),
            "{project}"
        );
    }
}

#[test]
fn noop_update_keeps_updated_and_real_change_bumps_it() {
    let (_dir, mut t) = fresh();
    let mut issue = new_issue("Printer on fire");
    issue.patch.labels = Some(vec!["b".into(), "a".into()]);
    issue.patch.fields.insert("Severity".into(), 2.into());
    let created = t.create(&issue).unwrap();
    t.set_clock(Some(at("2026-11-21T10:00:00Z")));
    let same = IssuePatch {
        summary: Some("Printer on fire".into()),
        labels: Some(vec!["a".into(), "b".into(), "a".into()]),
        priority: Some(Some("Medium".into())),
        fields: [("Severity".to_string(), FieldValue::from(2))].into(),
        ..IssuePatch::default()
    };
    assert_eq!(t.update(&created.id, &same, "kevin").unwrap(), created);
    assert_eq!(t.get(&created.id).unwrap().unwrap(), created);
    let change = IssuePatch {
        status: Some("In Progress".into()),
        ..IssuePatch::default()
    };
    let changed = t.update(&created.id, &change, "kevin").unwrap();
    assert_eq!(changed.status, "In Progress");
    assert_eq!(changed.updated, at("2026-11-21T10:00:00Z"));
    assert_eq!(changed.created, created.created);
}

#[test]
fn labels_components_and_fields_are_replaced_as_sets() {
    let (_dir, mut t) = fresh();
    let mut issue = new_issue("Sets");
    issue.patch.labels = Some(vec!["x".into(), "".into(), "a".into(), "x".into()]);
    issue.patch.components = Some(vec!["printing".into()]);
    issue.patch.fields = [
        ("Customer".to_string(), FieldValue::from("ACME")),
        ("Severity".to_string(), FieldValue::from(2)),
        ("Ignored".to_string(), FieldValue::Null),
    ]
    .into();
    let created = t.create(&issue).unwrap();
    assert_eq!(created.labels, ["a", "x"]);
    assert_eq!(created.components, ["printing"]);
    assert_eq!(
        serde_json::to_value(&created.fields).unwrap(),
        serde_json::json!({"Customer": "ACME", "Severity": 2})
    );
    let patch = IssuePatch {
        labels: Some(vec!["escalate".into()]),
        components: Some(Vec::new()),
        description: Some(Some("Now with text".into())),
        fields: [
            ("Customer".to_string(), FieldValue::Null),
            ("Tags".to_string(), serde_json::json!(["a", {"b": 1.5}])),
        ]
        .into(),
        ..IssuePatch::default()
    };
    let updated = t.update(&created.id, &patch, "ann").unwrap();
    assert_eq!(updated.labels, ["escalate"]);
    assert!(updated.components.is_empty());
    assert_eq!(updated.description.as_deref(), Some("Now with text"));
    assert_eq!(
        serde_json::to_value(&updated.fields).unwrap(),
        serde_json::json!({"Severity": 2, "Tags": ["a", {"b": 1.5}]})
    );
    let clear = IssuePatch {
        description: Some(None),
        priority: Some(Some(String::new())),
        ..IssuePatch::default()
    };
    let cleared = t.update(&created.id, &clear, "ann").unwrap();
    assert_eq!((cleared.description, cleared.priority), (None, None));
}

#[test]
fn comments_keep_internal_flag_order_and_bump_updated() {
    let (_dir, mut t) = fresh();
    let issue = t.create(&new_issue("Talk")).unwrap();
    t.set_clock(Some(at("2026-11-20T11:00:00Z")));
    let public = t
        .add_comment(&issue.id, &comment("Public", false, None))
        .unwrap();
    t.set_clock(Some(at("2026-11-20T12:00:00Z")));
    let internal = t
        .add_comment(&issue.id, &comment("Internal", true, None))
        .unwrap();
    assert!(internal.internal && !public.internal);
    let stored = t.get(&issue.id).unwrap().unwrap();
    assert_eq!(stored.comments, [public, internal]);
    assert_eq!(stored.updated, at("2026-11-20T12:00:00Z"));
    assert!(matches!(
        t.add_comment(&issue.id, &comment(" ", false, None)),
        Err(TrackerError::Rejected { .. })
    ));
    assert!(matches!(
        t.add_comment("999", &comment("x", false, None)),
        Err(TrackerError::NotFound(_))
    ));
}

#[test]
fn origins_find_issues_and_make_comments_idempotent() {
    let (_dir, mut t) = fresh();
    let origin = Origin {
        site: "engineering".into(),
        id: "5521".into(),
    };
    let mut issue = new_issue("From a peer");
    issue.origin = Some(origin.clone());
    let created = t.create(&issue).unwrap();
    assert_eq!(created.origin.as_ref(), Some(&origin));
    assert_eq!(t.find_by_origin(&origin).unwrap(), Some(created.clone()));
    let other = Origin {
        site: "engineering".into(),
        id: "1".into(),
    };
    assert_eq!(t.find_by_origin(&other).unwrap(), None);

    let first = t
        .add_comment(&created.id, &comment("Hi", false, Some(other.clone())))
        .unwrap();
    t.set_clock(Some(at("2026-11-25T00:00:00Z")));
    let again = t
        .add_comment(&created.id, &comment("Hi", false, Some(other)))
        .unwrap();
    assert_eq!(first, again);
    let stored = t.get(&created.id).unwrap().unwrap();
    assert_eq!(stored.comments.len(), 1);
    assert_eq!(stored.updated, created.updated, "a retry changes nothing");
}

#[test]
fn delete_is_soft_and_shows_as_tombstone() {
    let (_dir, mut t) = fresh();
    let keep = t.create(&new_issue("Keep")).unwrap();
    let gone = t.create(&new_issue("Gone")).unwrap();
    t.set_clock(Some(at("2026-11-21T00:00:00Z")));
    t.delete(&gone.id, "ann").unwrap();
    t.delete(&gone.id, "ann").unwrap();
    let tomb = t.get(&gone.id).unwrap().unwrap();
    assert!(tomb.deleted);
    assert_eq!(
        (tomb.key.as_str(), tomb.summary.as_str()),
        ("SUP-2", "Gone")
    );
    assert_eq!(tomb.updated, at("2026-11-21T00:00:00Z"));
    assert!(t.get_by_key("SUP-2").unwrap().unwrap().deleted);
    assert_eq!(t.list().unwrap(), std::slice::from_ref(&keep));
    assert_eq!(t.changed_since(None).unwrap(), [keep, tomb.clone()]);
    assert_eq!(t.changed_since(Some(tomb.updated)).unwrap(), [tomb]);
    assert!(matches!(
        t.update(&gone.id, &IssuePatch::default(), "ann"),
        Err(TrackerError::Rejected { .. })
    ));
    assert!(matches!(
        t.delete("77", "ann"),
        Err(TrackerError::NotFound(_))
    ));
    assert!(matches!(
        t.delete("x", "ann"),
        Err(TrackerError::NotFound(_))
    ));
}

#[test]
fn reopening_keeps_data_and_schema_version() {
    let (dir, mut t) = fresh();
    let issue = t.create(&new_issue("Persist")).unwrap();
    drop(t);
    let t = LocalTracker::open(&dir.path().join("tracker.db")).unwrap();
    assert_eq!(t.get(&issue.id).unwrap(), Some(issue));
    let version: i64 = t
        .conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
}

fn link(link_type: &str, direction: LinkDirection, other: &Issue) -> LinkChange {
    LinkChange {
        link_type: link_type.into(),
        direction,
        other: other.id.clone(),
    }
}

/// What `issue`'s links say, as `(type, direction, other key)`.
fn links_of(issue: &Issue) -> Vec<(String, LinkDirection, String)> {
    issue
        .links
        .iter()
        .map(|l| (l.link_type.clone(), l.direction, l.issue.key.clone()))
        .collect()
}

#[test]
fn a_link_is_seen_from_both_ends_and_moves_both() {
    let (_dir, mut t) = fresh();
    let a = t.create(&new_issue("A")).unwrap();
    let b = t.create(&new_issue("B")).unwrap();
    t.set_clock(Some(at("2026-11-20T11:00:00Z")));
    let patch = IssuePatch {
        add_links: vec![link("Blocks", LinkDirection::Outward, &b)],
        ..IssuePatch::default()
    };
    let linked = t.update(&a.id, &patch, "ann").unwrap();
    let b_now = t.get(&b.id).unwrap().unwrap();
    assert_eq!(
        links_of(&linked),
        [("Blocks".into(), LinkDirection::Outward, "SUP-2".into())]
    );
    assert_eq!(
        links_of(&b_now),
        [("Blocks".into(), LinkDirection::Inward, "SUP-1".into())]
    );
    assert_eq!(linked.updated, at("2026-11-20T11:00:00Z"));
    assert_eq!(b_now.updated, at("2026-11-20T11:00:00Z"));
    // The same link again, from the other end: nothing changes, nothing moves.
    t.set_clock(Some(at("2026-11-20T12:00:00Z")));
    let again = IssuePatch {
        add_links: vec![link("Blocks", LinkDirection::Inward, &a)],
        ..IssuePatch::default()
    };
    assert_eq!(t.update(&b.id, &again, "ann").unwrap(), b_now);
    // Removed from the other end, gone from both.
    let unlink = IssuePatch {
        remove_links: again.add_links.clone(),
        ..IssuePatch::default()
    };
    let b_after = t.update(&b.id, &unlink, "ann").unwrap();
    assert!(b_after.links.is_empty());
    let a_after = t.get(&a.id).unwrap().unwrap();
    assert!(a_after.links.is_empty());
    assert_eq!(a_after.updated, at("2026-11-20T12:00:00Z"));
    // Removing it again is no change.
    assert_eq!(t.update(&b.id, &unlink, "ann").unwrap(), b_after);
}

#[test]
fn links_must_name_another_live_issue_and_a_type() {
    let (_dir, mut t) = fresh();
    let a = t.create(&new_issue("A")).unwrap();
    let b = t.create(&new_issue("B")).unwrap();
    t.delete(&b.id, "ann").unwrap();
    let refused = |t: &mut LocalTracker, change: LinkChange| {
        let patch = IssuePatch {
            add_links: vec![change],
            ..IssuePatch::default()
        };
        match t.update(&a.id, &patch, "ann") {
            Err(TrackerError::Rejected { message, .. }) => message,
            other => panic!("not refused: {other:?}"),
        }
    };
    let self_link = refused(&mut t, link("Relates", LinkDirection::Outward, &a));
    assert!(self_link.contains("cannot link to itself"), "{self_link}");
    let deleted = refused(&mut t, link("Relates", LinkDirection::Outward, &b));
    assert!(deleted.contains("SUP-2: it is deleted"), "{deleted}");
    let mut missing = link("Relates", LinkDirection::Outward, &a);
    missing.other = "99".into();
    let unknown = refused(&mut t, missing);
    assert!(
        unknown.contains("no issue") && unknown.contains("99"),
        "{unknown}"
    );
    let c = t.create(&new_issue("C")).unwrap();
    for bad in ["", " Blocks", "Blocks\nRelates"] {
        let message = refused(&mut t, link(bad, LinkDirection::Outward, &c));
        assert!(message.contains("is not a link type"), "{message}");
    }
    assert!(t.get(&a.id).unwrap().unwrap().links.is_empty());
}

#[test]
fn parents_make_a_hierarchy_without_cycles() {
    let (_dir, mut t) = fresh();
    let epic = t.create(&new_issue("Epic")).unwrap();
    let mut child = new_issue("Child");
    child.patch.parent = Some(Some(epic.id.clone()));
    t.set_clock(Some(at("2026-11-20T11:00:00Z")));
    let child = t.create(&child).unwrap();
    assert_eq!(child.parent.as_ref().map(|p| p.key.as_str()), Some("SUP-1"));
    let epic = t.get(&epic.id).unwrap().unwrap();
    assert_eq!(epic.subtasks.len(), 1);
    assert_eq!(epic.subtasks[0].key, "SUP-2");
    assert_eq!(epic.updated, at("2026-11-20T11:00:00Z"));
    // A parent's parent may not be its own sub-task.
    let cycle = IssuePatch {
        parent: Some(Some(child.id.clone())),
        ..IssuePatch::default()
    };
    let err = t.update(&epic.id, &cycle, "ann").unwrap_err().to_string();
    assert!(err.contains("cannot be one of its own sub-tasks"), "{err}");
    // Cleared: both ends change.
    t.set_clock(Some(at("2026-11-20T12:00:00Z")));
    let clear = IssuePatch {
        parent: Some(None),
        ..IssuePatch::default()
    };
    let child = t.update(&child.id, &clear, "ann").unwrap();
    assert_eq!(child.parent, None);
    let epic = t.get(&epic.id).unwrap().unwrap();
    assert!(epic.subtasks.is_empty());
    assert_eq!(epic.updated, at("2026-11-20T12:00:00Z"));
    assert_eq!(t.update(&child.id, &clear, "ann").unwrap(), child);
}

#[test]
fn deleting_an_issue_unlinks_it_and_frees_its_sub_tasks() {
    let (_dir, mut t) = fresh();
    let a = t.create(&new_issue("A")).unwrap();
    let b = t.create(&new_issue("B")).unwrap();
    let mut sub = new_issue("Sub");
    sub.patch.parent = Some(Some(a.id.clone()));
    sub.patch.add_links = vec![link("Relates", LinkDirection::Inward, &b)];
    let sub = t.create(&sub).unwrap();
    assert_eq!(links_of(&sub).len(), 1);
    t.set_clock(Some(at("2026-11-21T00:00:00Z")));
    t.delete(&a.id, "ann").unwrap();
    t.delete(&b.id, "ann").unwrap();
    let sub = t.get(&sub.id).unwrap().unwrap();
    assert_eq!((sub.parent.clone(), sub.links.clone()), (None, Vec::new()));
    assert_eq!(sub.updated, at("2026-11-21T00:00:00Z"));
    let tomb = t.get(&a.id).unwrap().unwrap();
    assert!(tomb.subtasks.is_empty() && tomb.links.is_empty());
}

/// A database a ferry from before links wrote (schema version 1) opens,
/// keeps its issues, and takes links from then on.
#[test]
fn a_version_1_database_gains_links_and_parents() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tracker.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute_batch(
            "INSERT INTO projects VALUES ('SUP', 3);
             INSERT INTO issues (project, number, type, summary, status, created, updated)
                 VALUES ('SUP', 1, 'Bug', 'Old', 'Open', 0, 0),
                        ('SUP', 2, 'Task', 'Older', 'Open', 0, 0);",
        )
        .unwrap();
    }
    let mut t = LocalTracker::open(&path).unwrap();
    let version: i64 = t
        .conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let old = t.get_by_key("SUP-1").unwrap().unwrap();
    let older = t.get_by_key("SUP-2").unwrap().unwrap();
    assert_eq!(old.summary, "Old");
    let patch = IssuePatch {
        add_links: vec![link("Duplicate", LinkDirection::Outward, &older)],
        parent: Some(Some(older.id.clone())),
        ..IssuePatch::default()
    };
    let linked = t.update(&old.id, &patch, "ann").unwrap();
    assert_eq!(linked.links.len(), 1);
    assert_eq!(linked.parent.map(|p| p.key), Some("SUP-2".into()));
}

#[test]
fn newer_schema_is_refused() {
    let (dir, t) = fresh();
    t.conn.pragma_update(None, "user_version", 99).unwrap();
    drop(t);
    let err = LocalTracker::open(&dir.path().join("tracker.db"))
        .err()
        .unwrap();
    assert!(err.to_string().contains("schema version 99"), "{err}");
}

#[test]
fn generate_is_deterministic_and_realistic() {
    let run = |seed| {
        let (_dir, mut t) = fresh();
        let keys = t
            .generate(300, "GEN", seed, &GenerateShape::default())
            .unwrap();
        (keys, t.changed_since(None).unwrap())
    };
    let (keys, issues) = run(7);
    assert_eq!(keys.len(), 300);
    assert_eq!((keys[0].as_str(), keys[299].as_str()), ("GEN-1", "GEN-300"));
    assert_eq!(run(7).1, issues);
    assert_ne!(run(8).1, issues);
    let count = |f: &dyn Fn(&Issue) -> bool| issues.iter().filter(|i| f(i)).count();
    assert!(count(&|i| i.labels.iter().any(|l| l == "escalate")) > 10);
    assert!(count(&|i| i.comments.iter().any(|c| c.internal)) > 10);
    assert!(count(&|i| i.comments.is_empty()) > 10);
    assert!(count(&|i| i.fields.contains_key("Severity")) > 10);
    assert!(count(&|i| i.issue_type == "Bug") > 10);
    assert!(count(&|i| i.status == "Closed") > 10);
    assert!(issues.iter().all(|i| {
        i.comments.len() <= 5
            && i.updated == at("2026-11-20T10:00:00Z")
            && i.comments
                .iter()
                .all(|c| c.created >= i.created && c.created <= i.updated)
    }));
}

#[test]
fn generate_spreads_over_projects_with_fixed_comments() {
    let (_dir, mut t) = fresh();
    let shape = GenerateShape {
        projects: 12,
        comments: Some(5),
    };
    let keys = t.generate(30, "P", 3, &shape).unwrap();
    assert_eq!(
        (keys[0].as_str(), keys[11].as_str(), keys[12].as_str()),
        ("P01-1", "P12-1", "P01-2")
    );
    let issues = t.changed_since(None).unwrap();
    let projects: std::collections::BTreeSet<_> =
        issues.iter().map(|i| i.project.as_str()).collect();
    assert_eq!(projects.len(), 12);
    assert!(issues.iter().all(|i| {
        i.comments.len() == 5
            && i.comments
                .iter()
                .all(|c| !c.internal && c.created >= i.created)
    }));
}

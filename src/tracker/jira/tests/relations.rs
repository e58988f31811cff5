//! Links, sub-tasks and epics against the fake Jira, both flavours: the
//! requests sent, and what Jira refuses.

use super::sites::TwoSites;
use super::*;
use crate::model::LinkDirection;
use crate::tracker::LinkChange;

fn typed(summary: &str, issue_type: &str) -> NewIssue {
    let mut issue = new_issue(summary);
    issue.patch.issue_type = Some(issue_type.into());
    issue
}

fn under(summary: &str, issue_type: &str, parent: &Issue) -> NewIssue {
    let mut issue = typed(summary, issue_type);
    issue.patch.parent = Some(Some(parent.id.clone()));
    issue
}

fn link(link_type: &str, direction: LinkDirection, other: &Issue) -> IssuePatch {
    IssuePatch {
        add_links: vec![LinkChange {
            link_type: link_type.into(),
            direction,
            other: other.id.clone(),
        }],
        ..IssuePatch::default()
    }
}

/// "A blocks B" is made with A as `inwardIssue` (the source), and A then
/// lists B as its `outwardIssue`; a description names the type too, turning
/// the ends round; the other end's origin marker is read with it.
#[test]
fn a_link_is_made_source_first_and_read_with_the_other_ends_origin() {
    for flavour in [Flavour::Cloud, Flavour::Datacenter] {
        let mut rig = rig(flavour);
        let a = rig.jira.create(&new_issue("Blocker")).expect("create");
        let mut copy = new_issue("A copy");
        copy.origin = Some(Origin {
            site: "eng".into(),
            id: "77".into(),
        });
        let b = rig.jira.create(&copy).expect("create");
        let linked = rig
            .jira
            .update(&a.id, &link("Blocks", LinkDirection::Outward, &b), "x")
            .expect("link");
        let post = rig
            .fake
            .requests()
            .into_iter()
            .rfind(|r| r.method == "POST" && r.path.ends_with("/issueLink"))
            .expect("a link made");
        let body = post.json();
        assert_eq!(body["inwardIssue"]["id"], json!(a.id), "{flavour:?}");
        assert_eq!(body["outwardIssue"]["id"], json!(b.id));
        assert_eq!(body["type"]["name"], "Blocks");
        let raw = rig
            .jira
            .get_json(&format!("/issue/{}", a.id), &[])
            .expect("raw");
        assert_eq!(
            raw["fields"]["issuelinks"][0]["outwardIssue"]["key"],
            json!(b.key)
        );
        assert_eq!(linked.links.len(), 1);
        assert_eq!(linked.links[0].direction, LinkDirection::Outward);
        assert_eq!(linked.links[0].issue.origin, copy.origin);

        // "is blocked by" from B's side is the same link: nothing is sent.
        let before = rig.fake.request_count();
        let again = link("is blocked by", LinkDirection::Outward, &a);
        rig.jira.update(&b.id, &again, "x").expect("same link");
        assert!(
            !rig.fake.requests()[before..]
                .iter()
                .any(|r| r.method == "POST" && r.path.ends_with("/issueLink"))
        );
        let unknown = link("Precedes", LinkDirection::Outward, &b);
        match rig.jira.update(&a.id, &unknown, "x") {
            Err(TrackerError::Rejected { message, .. }) => {
                assert!(message.contains("Blocks, Cloners"), "{message}");
            }
            other => panic!("an unknown link type was taken: {other:?}"),
        }
    }
}

/// A sub-task is made under its parent on both flavours; Cloud moves it to
/// another parent with an edit, Data Center's REST API cannot, and says so.
#[test]
fn sub_tasks_are_made_under_their_parent_and_only_cloud_moves_them() {
    for flavour in [Flavour::Cloud, Flavour::Datacenter] {
        let mut rig = rig(flavour);
        let story = rig.jira.create(&new_issue("Story")).expect("create");
        let other = rig.jira.create(&new_issue("Other")).expect("create");
        let sub = rig
            .jira
            .create(&under("Step", "Sub-task", &story))
            .expect("a sub-task");
        assert_eq!(sub.parent.as_ref().map(|p| &p.id), Some(&story.id));
        let listed = rig.jira.get(&story.id).expect("get").expect("story");
        assert_eq!(listed.subtasks[0].key, sub.key);
        let moved = IssuePatch {
            parent: Some(Some(other.id.clone())),
            ..IssuePatch::default()
        };
        let result = rig.jira.update(&sub.id, &moved, "x");
        match flavour {
            Flavour::Cloud => {
                let sub = result.expect("moved");
                assert_eq!(sub.parent.map(|p| p.id), Some(other.id.clone()));
            }
            Flavour::Datacenter => match result {
                Err(TrackerError::Rejected { message, .. }) => {
                    assert!(message.contains("cannot move"), "{message}");
                }
                other => panic!("Data Center moved a sub-task: {other:?}"),
            },
        }
    }
}

/// An issue Jira will not take under the parent named (a Task under a Task)
/// is made on its own, and setting that parent afterwards fails with Jira's
/// reason: the engine's relation then waits with it.
#[test]
fn an_issue_jira_will_not_take_under_its_parent_is_made_on_its_own() {
    for flavour in [Flavour::Cloud, Flavour::Datacenter] {
        let mut rig = rig(flavour);
        let story = rig.jira.create(&new_issue("Story")).expect("create");
        let task = rig
            .jira
            .create(&under("Task", "Task", &story))
            .expect("made on its own");
        assert_eq!(task.parent, None);
        let creates = rig
            .fake
            .requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/issue"))
            .count();
        assert_eq!(
            creates, 3,
            "{flavour:?}: the parent's, then two for the task"
        );
        let set = IssuePatch {
            parent: Some(Some(story.id.clone())),
            ..IssuePatch::default()
        };
        assert!(matches!(
            rig.jira.update(&task.id, &set, "x"),
            Err(TrackerError::Rejected { .. })
        ));
    }
}

/// An epic's children: Cloud's `parent`, Data Center's Epic Link field (by
/// key); both read back as the parent, and the epic lists its children.
#[test]
fn epics_hold_their_children_in_parent_or_the_epic_link() {
    for flavour in [Flavour::Cloud, Flavour::Datacenter] {
        let mut rig = rig(flavour);
        let epic = rig.jira.create(&typed("Epic", "Epic")).expect("epic");
        let story = rig.jira.create(&new_issue("Story")).expect("story");
        let set = IssuePatch {
            parent: Some(Some(epic.id.clone())),
            ..IssuePatch::default()
        };
        let story = rig
            .jira
            .update(&story.id, &set, "x")
            .expect("into the epic");
        assert_eq!(story.parent.as_ref().map(|p| &p.key), Some(&epic.key));
        let put = rig
            .fake
            .requests()
            .into_iter()
            .rfind(|r| r.method == "PUT")
            .expect("an edit");
        let field = match flavour {
            Flavour::Cloud => "parent",
            Flavour::Datacenter => "customfield_10014",
        };
        assert!(
            put.json()["fields"].get(field).is_some(),
            "{flavour:?}: {}",
            put.json()
        );
        let epic_now = rig.jira.get(&epic.id).expect("get").expect("epic");
        assert_eq!(epic_now.subtasks.len(), 1, "{flavour:?}");
        assert_eq!(epic_now.subtasks[0].id, story.id);
    }
}

/// An issue the account cannot see is not listed at the other end of a
/// link; when Jira refuses a search for the related issues (one vanished
/// between the read and the search), each is read on its own and the
/// missing one left out.
#[test]
fn a_related_issue_hidden_or_gone_is_left_out() {
    let mut rig = rig(Flavour::Cloud);
    let a = rig.jira.create(&new_issue("Seen")).expect("create");
    let b = rig.jira.create(&new_issue("Hidden")).expect("create");
    rig.jira
        .update(&a.id, &link("Relates", LinkDirection::Outward, &b), "x")
        .expect("link");
    rig.fake.hide(&b.id);
    let later = rig.next_run();
    assert!(later.get(&a.id).expect("get").expect("a").links.is_empty());
    rig.fake.unhide(&b.id);
    assert_eq!(
        later.get(&a.id).expect("get").expect("a").links[0]
            .issue
            .key,
        b.key
    );

    let found = later
        .labels_of("id", &[b.id.clone(), "999999".into()])
        .expect("read one by one");
    let ids: Vec<String> = found.iter().map(|raw| string_id(&raw["id"])).collect();
    assert_eq!(ids, std::slice::from_ref(&b.id));
}

/// The whole engine between two Jira sites: a link between two escalated
/// issues and an epic's story arrive as a link and an Epic Link between the
/// copies; unlinking in support unlinks in engineering, even before the
/// copies' replicas (which echo the link) are back in support.
#[test]
fn links_and_epics_travel_between_two_jira_sites() {
    let sites = TwoSites::new();
    let mut in_sup = sites.jira(&sites.sup, "SUP", "pat-sup");
    let escalated = |summary: &str, issue_type: &str| {
        let mut issue = typed(summary, issue_type);
        issue.author = DC_USER.into();
        issue.patch.labels = Some(vec!["escalate".into()]);
        issue
    };
    let crash = in_sup.create(&escalated("Crash", "Task")).unwrap();
    let cause = in_sup.create(&escalated("Root cause", "Task")).unwrap();
    let epic = in_sup.create(&escalated("Release 2", "Epic")).unwrap();
    let blocked = link("Blocks", LinkDirection::Inward, &cause);
    in_sup.update(&crash.id, &blocked, DC_USER).unwrap();
    let into_epic = IssuePatch {
        parent: Some(Some(epic.id.clone())),
        ..IssuePatch::default()
    };
    in_sup.update(&crash.id, &into_epic, DC_USER).unwrap();
    sites.round();

    let in_eng = sites.jira(&sites.eng, "ENG", "pat-eng");
    let copies = in_eng.changed_since(None).unwrap();
    let copy = |summary: &str| {
        copies
            .iter()
            .find(|i| i.summary == summary)
            .unwrap_or_else(|| panic!("no copy of {summary}: {copies:?}"))
            .clone()
    };
    let (crash_copy, cause_copy, epic_copy) =
        (copy("Crash"), copy("Root cause"), copy("Release 2"));
    let seen: Vec<(&str, LinkDirection, &str)> = crash_copy
        .links
        .iter()
        .map(|l| (l.link_type.as_str(), l.direction, l.issue.id.as_str()))
        .collect();
    assert_eq!(
        seen,
        [("Blocks", LinkDirection::Inward, cause_copy.id.as_str())]
    );
    assert_eq!(crash_copy.parent.map(|p| p.id), Some(epic_copy.id.clone()));
    let edited_epic = sites.eng.requests().iter().any(|r| {
        r.method == "PUT" && r.json()["fields"]["customfield_10014"] == json!(epic_copy.key)
    });
    assert!(
        edited_epic,
        "Data Center's epic is set in the Epic Link field"
    );

    // Unlinked before engineering's replicas of the copies (which carry the
    // link support told it of) are back: they must not make it again.
    let unlink = IssuePatch {
        remove_links: blocked.add_links.clone(),
        ..IssuePatch::default()
    };
    in_sup.update(&crash.id, &unlink, DC_USER).unwrap();
    sites.round();
    sites.round();
    let crash_now = in_eng.get(&crash_copy.id).unwrap().unwrap();
    assert!(crash_now.links.is_empty(), "{:?}", crash_now.links);
    let crash_here = in_sup.get(&crash.id).unwrap().unwrap();
    assert!(
        crash_here.links.is_empty(),
        "made again: {:?}",
        crash_here.links
    );
    assert_eq!(crash_now.parent.map(|p| p.id), Some(epic_copy.id));
}

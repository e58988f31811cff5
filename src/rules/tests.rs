use super::*;
use crate::model::parse_timestamp;

fn ts(s: &str) -> chrono::DateTime<chrono::Utc> {
    parse_timestamp(s).unwrap()
}

fn comment(id: &str, author: &str, body: &str, internal: bool) -> Comment {
    Comment {
        id: id.into(),
        author: author.into(),
        created: ts(&format!("2026-11-20T10:0{}:00Z", id.len() % 10)),
        body: body.into(),
        internal,
        origin: None,
    }
}

fn sample_issue() -> Issue {
    Issue {
        resolution: None,
        id: "10042".into(),
        key: "SUP-42".into(),
        project: "SUP".into(),
        issue_type: "Bug".into(),
        summary: "Printer on fire".into(),
        description: Some("Smoke seen after the last firmware update.".into()),
        status: "Open".into(),
        priority: Some("High".into()),
        assignee: Some("kevin".into()),
        reporter: Some("ann".into()),
        labels: vec!["customer".into(), "escalate".into()],
        components: vec!["printing".into()],
        created: ts("2026-11-20T10:00:00Z"),
        updated: ts("2026-11-22T09:30:00Z"),
        fields: BTreeMap::from([
            ("Customer".to_string(), Value::from("ACME")),
            ("Severity".to_string(), Value::from(2)),
            ("Cost".to_string(), Value::from(1200)),
        ]),
        comments: vec![
            comment("881", "ann", "Customer sent logs.", false),
            comment("882", "kevin", "ACME is behind on payments.", true),
        ],
        attachments: vec![],
        links: Vec::new(),
        parent: None,
        subtasks: Vec::new(),
        origin: None,
        deleted: false,
    }
}

/// The engineering side's replica of the sample issue, as support receives it.
fn peer_replica() -> Replica {
    let mut issue = sample_issue();
    issue.id = "5521".into();
    issue.key = "ENG-7".into();
    issue.project = "ENG".into();
    issue.status = "In Progress".into();
    issue.assignee = Some("zoe".into());
    issue.comments = vec![
        comment("901", "zoe", "Reproduced on firmware 2.1.", false),
        comment("902", "raj", "Fix is in review.", false),
    ];
    Replica::from_issue("engineering", &issue)
}

fn script(source: &str) -> RuleScript {
    RuleScript::from_source(
        Path::new("test.rhai"),
        source,
        Tables::new(),
        RuleSettings::default(),
    )
    .unwrap()
}

fn template(name: &str) -> RuleScript {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("templates")
        .join(name);
    RuleScript::load(&path, Tables::new(), RuleSettings::default()).unwrap()
}

/// A peer on the first exchange format: the gate is closed.
const CTX: OutgoingContext<'static> = OutgoingContext {
    site: "support",
    peer: "engineering",
    format: crate::replica::Format::V1,
    shared: &BTreeSet::new(),
};

fn incoming<'a>(
    replica: &'a Replica,
    previous: Option<&'a Replica>,
    local: Option<&'a Issue>,
    changed: &'a [String],
) -> IncomingInput<'a> {
    IncomingInput {
        site: "support",
        peer: "engineering",
        replica,
        previous,
        local,
        local_project: "SUP",
        added_comments: &replica.comments,
        added_attachments: &replica.attachments,
        removed_attachments: &[],
        changed_fields: changed,
        conflicts: &[],
    }
}

fn outgoing_error(source: &str) -> RuleError {
    script(source)
        .run_outgoing(&sample_issue(), &CTX)
        .expect_err("the script must fail")
}

fn compile_error(source: &str) -> RuleError {
    match RuleScript::from_source(
        Path::new("test.rhai"),
        source,
        Tables::new(),
        RuleSettings::default(),
    ) {
        Ok(_) => panic!("the script must not compile"),
        Err(e) => e,
    }
}

#[test]
fn scripts_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<RuleScript>();
}

#[test]
fn default_outgoing_shares_everything_but_internal_comments() {
    let issue = sample_issue();
    let replica = template("outgoing.rhai")
        .run_outgoing(&issue, &CTX)
        .unwrap()
        .unwrap();
    let mut expected = Replica::from_issue("support", &issue);
    expected.comments.retain(|c| c.id == "881");
    assert_eq!(replica, expected);
    assert_eq!(replica.fields["Customer"], Value::from("ACME"));
}

#[test]
fn a_resolution_is_sent_only_to_peers_that_read_format_2() {
    let mut issue = sample_issue();
    issue.resolution = Some("Fixed".into());
    let rule = script("replica.resolution = issue.resolution;");
    let new_peer = OutgoingContext {
        format: crate::replica::Format::V2,
        ..CTX
    };
    let sent = rule.run_outgoing(&issue, &new_peer).unwrap().unwrap();
    assert_eq!(sent.resolution.as_deref(), Some("Fixed"));
    assert!(sent.to_yaml().starts_with("ferry: 2\n"));
    let kept = rule.run_outgoing(&issue, &CTX).unwrap().unwrap();
    assert_eq!(kept.resolution, None);
    assert!(!kept.to_yaml().contains("resolution"));
    assert!(kept.to_yaml().starts_with("ferry: 1\n"));
}

/// The gate open: a peer that reads the keys newer than the first exchange
/// format. Issues 1 and 3 are shared with it, 2 is not.
fn ctx_newer(shared: &BTreeSet<String>) -> OutgoingContext<'_> {
    OutgoingContext {
        site: "support",
        peer: "engineering",
        format: crate::replica::Format::V2,
        shared,
    }
}

fn related(id: &str, key: &str) -> crate::model::RelatedIssue {
    crate::model::RelatedIssue {
        id: id.into(),
        key: key.into(),
        origin: None,
    }
}

/// The sample issue blocking SUP-1 (shared), duplicating SUP-2 (not
/// shared), a sub-task of SUP-3 (shared).
fn related_issue() -> (Issue, BTreeSet<String>) {
    use crate::model::{IssueLink, LinkDirection};
    let mut issue = sample_issue();
    issue.links = vec![
        IssueLink {
            link_type: "Blocks".into(),
            direction: LinkDirection::Outward,
            issue: related("1", "SUP-1"),
        },
        IssueLink {
            link_type: "Duplicate".into(),
            direction: LinkDirection::Inward,
            issue: related("2", "SUP-2"),
        },
    ];
    issue.parent = Some(related("3", "SUP-3"));
    (issue, ["1".to_string(), "3".to_string()].into())
}

fn origin(site: &str, id: &str) -> Origin {
    Origin {
        site: site.into(),
        id: id.into(),
    }
}

#[test]
fn relations_travel_to_shared_issues_once_the_peer_reads_them() {
    let (issue, shared) = related_issue();
    let open = script("")
        .run_outgoing(&issue, &ctx_newer(&shared))
        .unwrap()
        .unwrap();
    assert_eq!(
        open.links,
        [ReplicaLink {
            link_type: "Blocks".into(),
            direction: crate::model::LinkDirection::Outward,
            issue: origin("support", "1"),
        }]
    );
    assert_eq!(open.parent, Some(origin("support", "3")));
    // The gate closed (a peer on the first exchange format): nothing.
    let closed = script("").run_outgoing(&issue, &CTX).unwrap().unwrap();
    assert!(closed.links.is_empty() && closed.parent.is_none());
    assert_eq!(closed.to_yaml(), {
        let mut plain = sample_issue();
        plain.comments.retain(|c| !c.internal);
        Replica::from_issue("support", &plain).to_yaml()
    });
}

#[test]
fn the_rule_sees_every_relation_and_may_drop_one_or_send_text() {
    let (issue, shared) = related_issue();
    let rule = script(
        "if issue.links.len() != 2 || issue.links[1].with_peer || !issue.links[0].with_peer
             || !issue.parent.with_peer || issue.subtasks != [] || replica.links.len() != 1 {
             throw `unexpected: ${issue.links} ${replica.links}`;
         }
         for l in issue.links {
             replica.description += \"\\n\" + `${l.type} ${l.direction} ${l.issue.key}`;
         }
         replica.links = replica.links.filter(|l| l.type != \"Blocks\");
         replica.parent = ();",
    );
    let replica = rule
        .run_outgoing(&issue, &ctx_newer(&shared))
        .unwrap()
        .unwrap();
    assert!(replica.links.is_empty() && replica.parent.is_none());
    let description = replica.description.unwrap();
    assert!(
        description.ends_with("\nBlocks outward SUP-1\nDuplicate inward SUP-2"),
        "{description:?}"
    );
    let sample = template("outgoing.rhai");
    let default = sample
        .run_outgoing(&issue, &ctx_newer(&shared))
        .unwrap()
        .unwrap();
    assert_eq!(default.links.len(), 1);
    let text = RuleScript::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/rules/links-as-text-outgoing.rhai"),
        Tables::new(),
        RuleSettings::default(),
    )
    .unwrap();
    let all: BTreeSet<String> = ["1", "2", "3"].map(String::from).into();
    let replica = text
        .run_outgoing(&issue, &ctx_newer(&all))
        .unwrap()
        .unwrap();
    assert_eq!(replica.links.len(), 1, "{:?}", replica.links);
    assert!(
        replica
            .description
            .unwrap()
            .ends_with("\n\nDuplicate links at support: inward SUP-2")
    );
}

#[test]
fn a_rule_cannot_send_a_relation_to_an_issue_the_peer_lacks() {
    let (issue, shared) = related_issue();
    let replica = script(
        "replica.links.push(#{type: \"Relates\", direction: \"outward\",
                             issue: #{site: \"support\", id: \"2\"}});
         replica.links.push(#{type: \"Relates\", direction: \"outward\",
                             issue: #{site: \"elsewhere\", id: \"9\"}});
         replica.links[0].type = \"Precedes\";
         replica.parent = #{site: \"support\", id: \"2\"};",
    )
    .run_outgoing(&issue, &ctx_newer(&shared))
    .unwrap()
    .unwrap();
    // Retyping a shared link is the rule's to do; naming another issue is not.
    assert_eq!(replica.links.len(), 1);
    assert_eq!(replica.links[0].link_type, "Precedes");
    assert_eq!(replica.parent, None);
}

#[test]
fn incoming_links_and_parent_start_as_the_peer_s_and_map_through_the_rule() {
    use crate::model::LinkDirection;
    let mut replica = peer_replica();
    let link = |link_type: &str, id: &str| ReplicaLink {
        link_type: link_type.into(),
        direction: LinkDirection::Inward,
        issue: origin("engineering", id),
    };
    replica.links = vec![
        link("blocks", "1"),
        link("Cloners", "2"),
        link("Epic-ish", "3"),
    ];
    replica.parent = Some(origin("support", "10041"));
    let untouched = script("")
        .run_incoming(&incoming(&replica, None, None, &[]))
        .unwrap()
        .unwrap();
    replica.normalize();
    assert_eq!(untouched.links, replica.links);
    assert_eq!(untouched.parent, replica.parent);
    let mapped = template("incoming.rhai")
        .run_incoming(&incoming(&replica, None, None, &[]))
        .unwrap()
        .unwrap();
    let types: Vec<&str> = mapped.links.iter().map(|l| l.link_type.as_str()).collect();
    assert_eq!(types, ["Blocks", "Cloners", "Epic-ish"]);
    assert_eq!(mapped.parent, replica.parent);
    let none = script("links = []; parent = ();")
        .run_incoming(&incoming(&replica, None, None, &[]))
        .unwrap()
        .unwrap();
    assert!(none.links.is_empty() && none.parent.is_none());
    let bad = script("links[0].type = \"\";")
        .run_incoming(&incoming(&replica, None, None, &[]))
        .unwrap_err()
        .to_string();
    assert!(bad.contains("`links[0].type` is empty"), "{bad}");
    let typo = script("links[0].kind = \"x\";")
        .run_incoming(&incoming(&replica, None, None, &[]))
        .unwrap_err()
        .to_string();
    assert!(typo.contains("`links[0]"), "{typo}");
    assert!(typo.contains("unknown field `kind`"), "{typo}");
}

#[test]
fn internal_comments_never_leave_whatever_the_rule_does() {
    let replica = script(
        "replica.comments = issue.comments;
         for i in 0..replica.comments.len() { replica.comments[i].internal = false; }
         replica.comments.push(#{id: \"999\", author: \"eve\", created: \"2026-11-21T00:00:00Z\",
                                body: \"leak\", internal: true});",
    )
    .run_outgoing(&sample_issue(), &CTX)
    .unwrap()
    .unwrap();
    let ids: Vec<&str> = replica.comments.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["881"]);
}

#[test]
fn outgoing_identity_cannot_be_forged() {
    let issue = sample_issue();
    let replica = script(
        "replica.id = \"1\"; replica.site = \"engineering\"; replica.key = \"X-1\";
         replica.project = \"X\"; replica.created = \"not a date\"; replica.ferry = 99;
         replica.origin = #{site: \"x\", id: \"y\"}; replica.deleted = true;
         replica.summary = \"Shared summary\";",
    )
    .run_outgoing(&issue, &CTX)
    .unwrap()
    .unwrap();
    assert_eq!(
        (replica.ferry, replica.site.as_str(), replica.id.as_str()),
        (1, "support", "10042")
    );
    assert_eq!(
        (replica.key.as_str(), replica.project.as_str()),
        ("SUP-42", "SUP")
    );
    assert_eq!(
        (replica.created, replica.updated),
        (issue.created, issue.updated)
    );
    assert_eq!((replica.origin, replica.deleted), (None, false));
    assert_eq!(replica.summary, "Shared summary");
}

/// Well-formed forgeries decode as they are (the fast path of
/// `run_outgoing`); the identity is put back all the same.
#[test]
fn outgoing_identity_cannot_be_forged_with_well_formed_values() {
    let issue = sample_issue();
    let replica = script(
        "replica.id = \"1\"; replica.site = \"engineering\"; replica.key = \"X-1\";
         replica.project = \"X\"; replica.created = \"2001-01-01T00:00:00Z\";
         replica.updated = \"2001-01-01T00:00:00Z\"; replica.ferry = 99;
         replica.origin = #{site: \"x\", id: \"y\"}; replica.deleted = true;",
    )
    .run_outgoing(&issue, &CTX)
    .unwrap()
    .unwrap();
    let mut expected = Replica::from_issue("support", &issue);
    expected.comments.retain(|c| !c.internal);
    assert_eq!(replica, expected);
}

#[test]
fn unit_replica_means_not_shared() {
    let shared = script("if issue.status == \"Open\" { replica = (); }")
        .run_outgoing(&sample_issue(), &CTX)
        .unwrap();
    assert_eq!(shared, None);
}

#[test]
fn outgoing_scope_has_site_peer_and_normalises() {
    let replica = script(
        "replica.labels = [\"zeta\", site, peer, \"zeta\"]; replica.custom_keys.from = site;",
    )
    .run_outgoing(&sample_issue(), &CTX)
    .unwrap()
    .unwrap();
    assert_eq!(replica.labels, ["engineering", "support", "zeta"]);
    assert_eq!(replica.custom_keys["from"], Value::from("support"));
}

#[test]
fn a_wrong_type_names_the_variable_and_field() {
    let err = outgoing_error("replica.comments[0].body = 5;");
    assert_eq!(err.line, None);
    assert!(
        err.message.contains("`replica.comments[0].body`"),
        "{}",
        err.message
    );
    let err = outgoing_error("replica.summary = [1];");
    assert!(err.message.contains("`replica.summary`"), "{}", err.message);
    let err = outgoing_error("replica.colour = \"red\";");
    assert!(err.message.contains("`replica.colour`"), "{}", err.message);
}

#[test]
fn default_incoming_creates_a_new_issue() {
    let replica = peer_replica();
    let result = template("incoming.rhai")
        .run_incoming(&incoming(&replica, None, None, &[]))
        .unwrap()
        .unwrap();
    let issue = result.issue;
    assert_eq!(issue.project, "SUP");
    assert_eq!(issue.issue_type, "Bug");
    assert_eq!(issue.summary, "Printer on fire");
    assert_eq!(issue.status, "In Progress");
    assert_eq!(issue.priority.as_deref(), Some("High"));
    assert_eq!(issue.reporter.as_deref(), Some("ann"));
    assert_eq!(issue.assignee, None);
    assert!(issue.fields.is_empty());
    assert_eq!(issue.labels, ["customer", "escalate"]);
    assert_eq!(
        result.new_comments,
        [
            TargetComment {
                author: "zoe".into(),
                body: "Reproduced on firmware 2.1.".into(),
                internal: false,
                source: Some("901".into()),
            },
            TargetComment {
                author: "raj".into(),
                body: "Fix is in review.".into(),
                internal: false,
                source: Some("902".into()),
            },
        ]
    );
    assert!(!result.delete_issue);
}

#[test]
fn default_incoming_updates_an_existing_issue() {
    let local = sample_issue();
    let previous = peer_replica();
    let mut replica = peer_replica();
    replica.summary = "Printer on fire again".into();
    replica.status = "Resolved".into();
    replica.labels = vec!["fixed".into()];
    replica.priority = Some("Low".into());
    replica.comments = vec![comment("903", "raj", "Released in 2.2.", false)];
    let changed = ["summary".to_string(), "status".to_string()];
    let result = template("incoming.rhai")
        .run_incoming(&incoming(&replica, Some(&previous), Some(&local), &changed))
        .unwrap()
        .unwrap();
    let issue = result.issue;
    assert_eq!(issue.summary, "Printer on fire again");
    assert_eq!(issue.status, "Resolved");
    assert_eq!(issue.labels, ["fixed"]);
    // Not taken on updates: the local values stay.
    assert_eq!(issue.priority.as_deref(), Some("High"));
    assert_eq!(issue.assignee.as_deref(), Some("kevin"));
    assert_eq!(issue.fields, local.fields);
    assert_eq!(result.new_comments.len(), 1);
    assert_eq!(result.new_comments[0].source.as_deref(), Some("903"));
}

#[test]
fn default_incoming_keeps_local_status_when_unknown() {
    let local = sample_issue();
    let mut replica = peer_replica();
    replica.status = "Needs Triage".into();
    let result = template("incoming.rhai")
        .run_incoming(&incoming(&replica, None, Some(&local), &[]))
        .unwrap()
        .unwrap();
    assert_eq!(result.issue.status, "Open");
}

#[test]
fn default_incoming_closes_on_deletion_with_one_note() {
    let local = sample_issue();
    let mut replica = peer_replica();
    replica.deleted = true;
    let result = template("incoming.rhai")
        .run_incoming(&incoming(&replica, None, Some(&local), &[]))
        .unwrap()
        .unwrap();
    assert_eq!(result.issue.status, "Closed");
    assert!(result.issue.labels.contains(&"peer-deleted".to_string()));
    assert!(!result.delete_issue);
    let note = &result.new_comments.last().unwrap();
    assert_eq!(note.source, None);
    assert!(note.body.contains("deleted its issue"), "{}", note.body);

    // Already deleted in the previous version: no second note.
    let again = template("incoming.rhai")
        .run_incoming(&incoming(&replica, Some(&replica), Some(&local), &[]))
        .unwrap()
        .unwrap();
    assert!(again.new_comments.iter().all(|c| c.source.is_some()));
}

#[test]
fn incoming_sees_the_change_set() {
    let previous = peer_replica();
    let replica = peer_replica();
    let changed = ["status".to_string()];
    let result = script(
        "if changed_fields.contains(\"status\") && previous.status == replica.status
             && !is_new && !deleted && site == \"support\" && peer == \"engineering\" {
             issue.summary = \"seen\";
         }
         new_comments.push(comment_from(added_comments[1]));
         delete_issue = true;",
    )
    .run_incoming(&incoming(
        &replica,
        Some(&previous),
        Some(&sample_issue()),
        &changed,
    ))
    .unwrap()
    .unwrap();
    assert_eq!(result.issue.summary, "seen");
    assert_eq!(result.new_comments[0].body, "Fix is in review.");
    assert_eq!(result.new_comments[0].source.as_deref(), Some("902"));
    assert!(result.delete_issue);
}

#[test]
fn unit_issue_skips_the_replica() {
    let replica = peer_replica();
    let result = script("if is_new { issue = (); }")
        .run_incoming(&incoming(&replica, None, None, &[]))
        .unwrap();
    assert_eq!(result, None);
}

#[test]
fn new_comments_must_come_from_added_comments() {
    let replica = peer_replica();
    let run = |source: &str| {
        script(source)
            .run_incoming(&incoming(&replica, None, None, &[]))
            .expect_err("the script must fail")
            .message
    };
    let message = run("new_comments.push(#{author: \"x\", body: \"y\", source: \"42\"});");
    assert!(
        message.contains("`new_comments[0].source` is \"42\"") && message.contains("901, 902"),
        "{message}"
    );
    let message = run("new_comments.push(comment_from(added_comments[0]));
                       new_comments.push(comment_from(added_comments[0]));");
    assert!(message.contains("`new_comments[1].source`"), "{message}");
    let message = run("new_comments.push(#{author: \"x\", body: 7});");
    assert!(message.contains("new_comments[0]"), "{message}");
    let message = run("issue.asignee = \"x\";");
    assert!(message.contains("`issue.asignee`"), "{message}");
}

#[test]
fn inputs_are_read_only() {
    let replica = peer_replica();
    let err = script("\nreplica.summary = \"x\";")
        .run_incoming(&incoming(&replica, None, None, &[]))
        .unwrap_err();
    assert_eq!(err.line, Some(2), "{err}");
}

#[test]
fn helpers_map_and_look_up() {
    let tables = Tables::from([(
        "users".to_string(),
        serde_json::json!({"zoe": "z.kowalski", "raj": "r.patel"}),
    )]);
    let mut replica = peer_replica();
    replica.resolution = Some("Fixed".into());
    let result = RuleScript::from_source(
        Path::new("test.rhai"),
        "issue.assignee = lookup(\"users\", replica.assignee);
         issue.reporter = lookup(\"users\", replica.reporter, \"nobody\");
         issue.status = map_value(replica.status, #{\"In Progress\": \"Escalated\"}, \"?\");
         issue.priority = map_value((), #{}, \"Normal\");
         issue.resolution = map_value(replica.resolution, #{\"Fixed\": \"Done\"}, issue.resolution);
         issue.description = tables.users.raj;",
        tables,
        RuleSettings::default(),
    )
    .unwrap()
    .run_incoming(&incoming(&replica, None, None, &[]))
    .unwrap()
    .unwrap();
    assert_eq!(result.issue.assignee.as_deref(), Some("z.kowalski"));
    assert_eq!(result.issue.reporter.as_deref(), Some("nobody"));
    assert_eq!(result.issue.status, "Escalated");
    assert_eq!(result.issue.resolution.as_deref(), Some("Done"));
    assert_eq!(result.issue.priority.as_deref(), Some("Normal"));
    assert_eq!(result.issue.description.as_deref(), Some("r.patel"));
}

#[test]
fn an_unknown_table_is_an_error() {
    let err = outgoing_error("\n  let x = lookup(\"usres\", \"ann\");");
    assert_eq!((err.line, err.column), (Some(2), Some(11)), "{err}");
    assert!(err.message.contains("no table \"usres\""), "{err}");
}

#[test]
fn throw_gives_the_script_message() {
    let err = outgoing_error("throw \"no customer set\";");
    assert_eq!(err.to_string(), "test.rhai:1:1: no customer set");
}

#[test]
fn an_endless_loop_hits_the_operations_limit() {
    let err = outgoing_error("let x = 0;\nloop {\n    x += 1;\n}");
    assert!(
        err.message.contains("too many operations (limit 1000000)"),
        "{err}"
    );
    assert!(err.line.is_some() && err.column.is_some(), "{err}");
}

#[test]
fn endless_recursion_hits_the_call_limit() {
    // rhai reports the overflow at the outermost call.
    let err = outgoing_error("fn down(n) {\n    down(n + 1)\n}\ndown(0);");
    assert!(err.message.contains("nested too deeply (limit 32"), "{err}");
    assert_eq!((err.line, err.column), (Some(4), Some(1)), "{err}");
}

#[test]
fn an_error_in_a_function_names_the_function_and_its_line() {
    let err = outgoing_error("fn half(x) {\n    x / 0\n}\nlet y = half(4);");
    assert!(err.message.contains("(in function `half`)"), "{err}");
    assert_eq!(err.line, Some(2), "{err}");
}

#[test]
fn a_huge_string_hits_the_size_limit() {
    let err = outgoing_error("let s = \"x\";\nwhile true {\n    s += s;\n}");
    assert!(
        err.message
            .contains("string over the limit of 16777216 bytes"),
        "{err}"
    );
    assert_eq!(err.line, Some(3), "{err}");
}

#[test]
fn a_huge_array_hits_the_size_limit() {
    let err = outgoing_error("let a = [];\na.pad(2000000, 0);");
    assert!(
        err.message.contains("over the limit of 1048576 items"),
        "{err}"
    );
}

#[test]
fn one_value_may_hold_as_much_text_as_a_replica() {
    // Fifteen strings of 1 MiB in one list: 15 MiB of text in one value.
    let shared = script(
        "let s = \"x\";\nwhile s.len() < 1024 * 1024 { s += s; }\n\
         let all = [];\nfor i in 0..15 { all.push(s + i); }\n\
         replica.description = all[14];",
    )
    .run_outgoing(&sample_issue(), &CTX)
    .unwrap()
    .unwrap();
    assert!(shared.description.unwrap().len() > 1024 * 1024);
}

#[test]
fn a_rule_over_its_memory_budget_is_stopped_naming_the_budget() {
    let source = "let s = \"x\";\nwhile s.len() < 1024 * 1024 { s += s; }\n\
                  let m = #{};\nfor i in 0..100 { m[\"k\" + i] = s + i; }";
    let small = RuleSettings { max_memory_mib: 16 };
    let err = RuleScript::from_source(Path::new("test.rhai"), source, Tables::new(), small)
        .unwrap()
        .run_outgoing(&sample_issue(), &CTX)
        .unwrap_err();
    assert_eq!(err.line, Some(4), "{err}");
    assert!(
        err.message.contains("memory budget of 16 MiB")
            && err.message.contains("rules.max_memory_mib"),
        "{err}"
    );
    // The default budget holds it (100 MiB).
    script(source).run_outgoing(&sample_issue(), &CTX).unwrap();
}

#[test]
fn copying_a_value_over_and_over_hits_the_allocation_budget() {
    let source = "let s = \"x\";\nwhile s.len() < 1024 * 1024 { s += s; }\n\
                  for i in 0..200 { let t = s + i; }";
    let err = RuleScript::from_source(
        Path::new("test.rhai"),
        source,
        Tables::new(),
        RuleSettings { max_memory_mib: 16 },
    )
    .unwrap()
    .run_outgoing(&sample_issue(), &CTX)
    .unwrap_err();
    assert!(err.message.contains("more than 64 MiB in all"), "{err}");
}

#[test]
fn a_value_put_inside_itself_is_stopped_quickly() {
    let started = std::time::Instant::now();
    let err = outgoing_error("let a = [];\nfor i in 0..100000 {\n    a = [a];\n}");
    assert!(
        err.message.contains("nests arrays or maps too deeply"),
        "{err}"
    );
    assert_eq!(err.line, Some(3), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn splitting_counts_the_pieces_before_making_them() {
    let mut issue = sample_issue();
    issue.description = Some("x\n".repeat(1_100_000));
    for call in [
        "split(\"\")",
        "split(\"\\n\")",
        "split('\\n')",
        "split_rev(\"\\n\")",
        "split()",
        "to_chars()",
    ] {
        let source = format!("let parts = issue.description.{call};");
        let err = script(&source).run_outgoing(&issue, &CTX).unwrap_err();
        assert!(
            err.message
                .contains("pieces, over the limit of 1048576 items"),
            "{call}: {err}"
        );
    }
    // Otherwise they are rhai's.
    let replica = script(
        "let a = \"a,b,,c\".split(\",\");\n\
         let b = \"a,b,c\".split(\",\", 2);\n\
         let c = \"a b  c\".split();\n\
         let d = \"a-b-c\".split_rev('-', 2);\n\
         let e = \"ab\".split(\"\");\n\
         let f = \"\".split(\",\");\n\
         replica.fields.parts = [a, b, c, d, e, f, \"héllo\".to_chars()];",
    )
    .run_outgoing(&sample_issue(), &CTX)
    .unwrap()
    .unwrap();
    assert_eq!(
        serde_json::to_value(&replica.fields["parts"]).unwrap(),
        serde_json::json!([
            ["a", "b", "", "c"],
            ["a", "b,c"],
            ["a", "b", "c"],
            ["c", "a-b"],
            ["", "a", "b", ""],
            [""],
            ["h", "é", "l", "l", "o"]
        ])
    );
}

#[test]
fn values_left_for_ferry_nest_at_most_the_depth_limit() {
    let deep = |depth: usize, target: &str| {
        format!("let v = 1;\nfor i in 0..{depth} {{ v = [v]; }}\n{target} = v;")
    };
    let fits = MAX_VALUE_DEPTH - 2; // replica, fields, then the value's own
    script(&deep(fits, "replica.fields.deep"))
        .run_outgoing(&sample_issue(), &CTX)
        .unwrap();
    let err = outgoing_error(&deep(fits + 1, "replica.fields.deep"));
    assert_eq!(
        err.to_string(),
        "test.rhai: after the script ran: `replica.fields.deep` holds arrays or maps nested \
         deeper than 16 levels, the most a value a rule leaves for ferry may have"
    );
    let replica = peer_replica();
    let err = script(&deep(40, "new_comments"))
        .run_incoming(&incoming(&replica, None, None, &[]))
        .unwrap_err();
    assert!(err.message.contains("`new_comments`"), "{err}");
}

#[test]
fn modules_cannot_be_imported() {
    let err = outgoing_error("import \"x\" as x;");
    assert!(err.message.contains("cannot import"), "{err}");
    assert_eq!(err.line, Some(1), "{err}");
}

#[test]
fn eval_is_disabled() {
    let err = compile_error("let x = eval(\"40 + 2\");");
    assert_eq!(err.line, Some(1), "{err}");
}

#[test]
fn a_syntax_error_names_path_line_and_column() {
    let err = compile_error("let x = 1;\nlet y = ;\n");
    assert_eq!(err.script, Path::new("test.rhai"));
    assert_eq!((err.line, err.column), (Some(2), Some(9)), "{err}");
    assert!(err.to_string().starts_with("test.rhai:2:9: "), "{err}");
}

#[test]
fn a_variable_of_the_other_direction_is_explained() {
    let err = outgoing_error("\nlet x = added_comments;");
    assert_eq!(err.line, Some(2), "{err}");
    assert!(
        err.message.contains(
            "`added_comments` does not exist in outgoing scripts, which see: issue, replica, site, peer, tables"
        ),
        "{err}"
    );
}

#[test]
fn a_misspelt_variable_is_a_compile_error() {
    let err = compile_error("\nreplica.summary = isue.summary;");
    assert_eq!(err.line, Some(2), "{err}");
    assert!(err.message.contains("isue"), "{err}");
}

#[test]
fn a_runtime_type_error_names_line_and_column() {
    let err = outgoing_error("let n = 1;\nlet s = \"a\" - n;");
    assert_eq!((err.line, err.column), (Some(2), Some(13)), "{err}");
}

#[test]
fn a_missing_script_names_its_path() {
    let err = RuleScript::load(
        Path::new("/nonexistent/outgoing.rhai"),
        Tables::new(),
        RuleSettings::default(),
    )
    .err()
    .unwrap();
    assert!(
        err.to_string()
            .starts_with("/nonexistent/outgoing.rhai: cannot read"),
        "{err}"
    );
}

#[test]
fn tables_load_from_yaml_files() {
    let dir = tempfile::tempdir().unwrap();
    assert!(load_tables(&dir.path().join("missing")).unwrap().is_empty());
    std::fs::write(
        dir.path().join("users.yaml"),
        "ann: anna\n\"Jane Doe\": jdoe\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("empty.yaml"), "# nothing yet\n").unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a table").unwrap();
    let tables = load_tables(dir.path()).unwrap();
    assert_eq!(tables.keys().collect::<Vec<_>>(), ["empty", "users"]);
    assert_eq!(tables["users"]["Jane Doe"], Value::from("jdoe"));

    std::fs::write(dir.path().join("bad.yaml"), "ann: anna\n  bob: [\n").unwrap();
    let err = load_tables(dir.path()).unwrap_err();
    assert!(err.script.ends_with("bad.yaml"), "{err}");
    assert!(err.line.is_some() && err.column.is_some(), "{err}");
    assert!(!err.message.contains(" at line "), "{err}");

    std::fs::write(dir.path().join("bad.yaml"), "- a\n- b\n").unwrap();
    let err = load_tables(dir.path()).unwrap_err();
    assert!(err.message.contains("must be a YAML mapping"), "{err}");
}

#[test]
fn template_tables_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/tables");
    assert_eq!(load_tables(&dir).unwrap()["users"], serde_json::json!({}));
}

#[test]
fn every_sample_compiles_and_runs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/rules");
    let tables = load_tables(&dir.join("tables")).unwrap();
    assert!(tables.contains_key("users"));
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rhai"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 5);

    let issue = sample_issue();
    let mut other = sample_issue();
    other.components = vec!["scanning".into()];
    let replica = peer_replica();
    for path in names {
        let script = RuleScript::load(&path, tables.clone(), RuleSettings::default()).unwrap();
        let name = path.file_name().unwrap().to_str().unwrap();
        if name.ends_with("-outgoing.rhai") {
            let shared = script.run_outgoing(&issue, &CTX).unwrap();
            assert!(shared.is_some(), "{name}");
            script.run_outgoing(&other, &CTX).unwrap();
        } else {
            script
                .run_incoming(&incoming(&replica, None, None, &[]))
                .unwrap();
            script
                .run_incoming(&incoming(&replica, Some(&replica), Some(&issue), &[]))
                .unwrap()
                .unwrap();
        }
    }
}

#[test]
fn samples_do_what_they_say() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/rules");
    let tables = load_tables(&dir.join("tables")).unwrap();
    let load = |name: &str| {
        RuleScript::load(&dir.join(name), tables.clone(), RuleSettings::default()).unwrap()
    };
    let issue = sample_issue();

    let replica = load("drop-custom-field-outgoing.rhai")
        .run_outgoing(&issue, &CTX)
        .unwrap()
        .unwrap();
    assert!(!replica.fields.contains_key("Customer") && !replica.fields.contains_key("Cost"));
    assert!(replica.fields.contains_key("Severity"));

    let one = load("one-component-outgoing.rhai");
    assert!(one.run_outgoing(&issue, &CTX).unwrap().is_some());
    let mut other = sample_issue();
    other.components = vec!["scanning".into()];
    assert_eq!(one.run_outgoing(&other, &CTX).unwrap(), None);

    let peer = peer_replica();
    let result = load("status-mapping-incoming.rhai")
        .run_incoming(&incoming(&peer, None, Some(&issue), &[]))
        .unwrap()
        .unwrap();
    assert_eq!(result.issue.status, "Escalated");

    let result = load("rewrite-users-incoming.rhai")
        .run_incoming(&incoming(&peer, None, None, &[]))
        .unwrap()
        .unwrap();
    assert_eq!(result.issue.assignee.as_deref(), Some("z.kowalski"));
    assert_eq!(result.new_comments[0].author, "z.kowalski");
}

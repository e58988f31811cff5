//! `ferry review`: the pending diff, per issue and field, and nothing applied.

use super::World;

pub(super) fn world() -> World {
    let mut w = World::new();
    w.now = Some("2026-11-20T10:00:00Z");
    w.site(
        "support",
        &[("engineering", "SUP=ENG", "labels = escalate")],
    );
    w.site(
        "engineering",
        &[("support", "ENG=SUP", "labels = customer-facing")],
    );
    w
}

#[test]
fn a_new_escalation_is_shown_in_full_before_import() {
    let w = world();
    w.new_issue(
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
    w.ok(
        "support",
        &[
            "tracker",
            "comment",
            "SUP-1",
            "--as",
            "ann",
            "Customer sent logs.",
        ],
    );
    w.ok("support", &["sync"]);
    w.ok("engineering", &["pull"]);
    let review = w.ok("engineering", &["review"]);
    insta::assert_snapshot!(review, @r"
    support: 1 commit pending, 1 issue

      SUP-1 (new here)
        summary: Printer on fire
        type: Bug   status: Open
        + comment by ann at 2026-11-20T10:00:00Z:
          Customer sent logs.
        => create an issue in ENG
    ");
    assert!(w.list("engineering").is_empty(), "review applies nothing");
    w.ok("engineering", &["import"]);
    assert_eq!(w.list("engineering").len(), 1);
    assert_eq!(
        w.ok("engineering", &["review"]),
        "support: nothing pending\n"
    );
}

#[test]
fn changes_are_shown_field_by_field_with_the_rules_verdict() {
    let w = world();
    w.new_issue(
        "support",
        &[
            "--project",
            "SUP",
            "--summary",
            "Printer on fire",
            "--description",
            "Smoke after update.",
            "--label",
            "escalate",
        ],
    );
    w.ok("support", &["sync"]);
    w.ok("engineering", &["sync"]);
    w.ok("support", &["sync"]);
    w.ok(
        "engineering",
        &[
            "tracker",
            "comment",
            "ENG-1",
            "--as",
            "kevin",
            "Reproduced.",
        ],
    );
    w.ok(
        "engineering",
        &[
            "tracker",
            "edit",
            "ENG-1",
            "--status",
            "In Progress",
            "--description",
            "Smoke after the firmware update.",
        ],
    );
    w.ok("engineering", &["sync"]);
    w.ok("support", &["pull"]);
    let review = w.ok("support", &["review"]);
    insta::assert_snapshot!(review, @r"
    engineering: 1 commit pending, 1 issue

      ENG-1 → SUP-1
        status: Open → In Progress
        description: Smoke after {+the firmware +}update.
        + comment by kevin at 2026-11-20T10:00:00Z:
          Reproduced.
        => update: description: Smoke after update. → Smoke after the firmware update.; status: Open → In Progress; add 1 comment
    ");
    let json: serde_json::Value =
        serde_json::from_str(&w.ok("support", &["review", "--json"])).unwrap();
    assert_eq!(json[0]["issues"][0]["verdict"]["action"], "update");
    assert_eq!(
        w.show("support", "SUP-1")["status"],
        "Open",
        "review applies nothing"
    );
    w.ok("support", &["import"]);
    assert_eq!(w.show("support", "SUP-1")["status"], "In Progress");
}

#[test]
fn status_shows_each_connection_at_a_glance() {
    let w = world();
    w.new_issue(
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
    w.ok("engineering", &["pull"]);
    let status = |site: &str| -> serde_json::Value {
        serde_json::from_str(&w.ok(site, &["status", "--json"])).unwrap()
    };
    let eng = status("engineering");
    assert_eq!(eng[0]["peer"], "support");
    assert_eq!(eng[0]["pending_commits"], 1);
    assert!(eng[0]["applied"].is_null());
    w.ok("engineering", &["import"]);
    let eng = status("engineering");
    assert_eq!(eng[0]["pending_commits"], 0);
    assert_eq!(eng[0]["linked_issues"], 1);
    assert_eq!(eng[0]["applied"], eng[0]["fetched"]);
    let sup = status("support");
    assert_eq!(sup[0]["shared_issues"], 1);
    assert_eq!(sup[0]["export_cursor"], "2026-11-20T10:00:00Z");
    let text = w.ok("support", &["status"]);
    assert!(
        text.starts_with("site support\n\nengineering (both, auto) via ../exchange.git\n"),
        "{text}"
    );
    assert!(text.contains("issues    1 shared, 0 linked"), "{text}");
    assert!(text.contains("errors    none"), "{text}");
    assert!(text.contains("trusts    1 key of engineering"), "{text}");
    assert_eq!(sup[0]["signatures"], "required");
    assert_eq!(sup[0]["trusted_keys"], 1);
}

fn pending_commits(w: &World) -> Vec<String> {
    let review: serde_json::Value =
        serde_json::from_str(&w.ok("engineering", &["review", "--json"])).unwrap();
    review[0]["commits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn with_review_required_only_approved_commits_are_imported_once() {
    let w = World::escalating_pair();
    let file = w.path("engineering/connections/support.yaml");
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str("review:\n  required: true\n");
    std::fs::write(&file, text).unwrap();

    w.escalate("First");
    w.ok("support", &["sync"]);
    let run = w.ok("engineering", &["sync"]);
    assert!(
        run.contains("review support: 1 commit await approval"),
        "{run}"
    );
    assert!(
        w.list("engineering").is_empty(),
        "not approved, not imported"
    );
    let shown = w.ok("engineering", &["review"]);
    assert!(
        shown.contains("support: review required; nothing approved yet") && shown.contains("First"),
        "{shown}"
    );

    w.escalate("Second");
    w.ok("support", &["sync"]);
    w.ok("engineering", &["pull"]);
    let commits = pending_commits(&w);
    assert_eq!(commits.len(), 2, "{commits:?}");
    let (first, second) = (&commits[0][..10], &commits[1][..10]);

    let approved = w.ok("engineering", &["review", "approve", first]);
    assert!(
        approved.contains("approved support's commits up to"),
        "{approved}"
    );
    let run = w.ok("engineering", &["sync"]);
    assert!(run.contains("1 commit await approval"), "{run}");
    let summaries = |w: &World| -> Vec<String> {
        w.list("engineering")
            .iter()
            .map(|i| i["summary"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(summaries(&w), ["First"]);

    let rejected = w.ok(
        "engineering",
        &[
            "review",
            "reject",
            second,
            "--reason",
            "holds customer data",
        ],
    );
    assert!(rejected.contains("rejected support's commit"), "{rejected}");
    let errors = w.ok("engineering", &["errors"]);
    assert!(
        errors.contains("connection support review") && errors.contains("holds customer data"),
        "{errors}"
    );
    w.ok("engineering", &["sync"]);
    assert_eq!(summaries(&w), ["First"], "a rejected commit stays out");
    let shown = w.ok("engineering", &["review"]);
    assert!(
        shown.contains("rejected") && shown.contains("by tester"),
        "{shown}"
    );

    // The reviewer changes their mind: approving past the rejection says so.
    let approved = w.ok("engineering", &["review", "approve"]);
    assert!(approved.contains("rejected by tester"), "{approved}");
    w.ok("engineering", &["sync"]);
    w.ok("engineering", &["sync"]);
    assert_eq!(summaries(&w), ["First", "Second"], "each exactly once");
    assert!(
        w.ok("engineering", &["errors"])
            .contains("no unresolved errors")
    );

    let again = w.ferry(
        "engineering",
        &["review", "reject", first, "--reason", "late"],
    );
    assert_eq!(again.code, 2, "{}", again.stderr);
    assert!(
        again.stderr.contains("already approved"),
        "{}",
        again.stderr
    );
    let unknown = w.ferry("engineering", &["review", "approve", "0123456789"]);
    assert_eq!(unknown.code, 2, "{}", unknown.stderr);
}

#[test]
fn status_of_one_issue_shows_its_sync_panel() {
    let mut w = World::escalating_pair();
    w.now = Some("2026-11-23T10:00:00Z");
    w.escalate("Printer on fire");
    w.ok("support", &["sync"]);
    w.ok("engineering", &["sync"]);
    w.ok(
        "engineering",
        &[
            "tracker",
            "comment",
            "ENG-1",
            "Reproduced.",
            "--as",
            "kevin",
        ],
    );
    w.ok("engineering", &["sync"]);
    w.ok("support", &["sync"]);

    let panel = w.ok("support", &["status", "SUP-1"]);
    assert!(
        panel.starts_with("SUP-1 \"Printer on fire\" (Open, updated 2026-11-23T10:00:00Z)"),
        "{panel}"
    );
    for line in [
        "\nengineering\n",
        "  linked    ENG-1 (their id 1)",
        "  sent      issues/SUP/1.yaml, updated 2026-11-23T10:00:00Z, in ",
        "  received  issues/ENG/1.yaml, updated 2026-11-23T10:00:00Z, applied",
    ] {
        assert!(panel.contains(line), "missing {line:?} in\n{panel}");
    }
    let copy = w.ok("engineering", &["status", "ENG-1"]);
    assert!(copy.contains("copied from support's issue 1"), "{copy}");
    assert!(copy.contains("  received  issues/SUP/1.yaml"), "{copy}");

    let json: serde_json::Value =
        serde_json::from_str(&w.ok("support", &["status", "SUP-1", "--json"])).unwrap();
    assert_eq!(json["key"], "SUP-1");
    let c = &json["connections"][0];
    assert_eq!(c["peer"], "engineering");
    assert_eq!(c["shared"], true);
    assert_eq!(c["linked"], serde_json::json!(["1", "ENG-1"]));
    assert_eq!(c["received"]["path"], "issues/ENG/1.yaml");
    assert!(c["errors"].as_array().unwrap().is_empty());

    let missing = w.ferry("support", &["status", "SUP-99"]);
    assert_eq!(missing.code, 2, "{}", missing.stderr);
    assert!(
        missing.stderr.contains("no issue SUP-99"),
        "{}",
        missing.stderr
    );
}

#[test]
fn review_lists_what_the_mappings_cannot_place() {
    let w = World::escalating_pair();
    w.escalate("Printer on fire");
    w.ok("support", &["sync"]);
    w.ok("engineering", &["sync"]);
    w.ok(
        "engineering",
        &["tracker", "edit", "ENG-1", "--status", "Needs Triage"],
    );
    w.ok("engineering", &["sync"]);
    w.ok("support", &["pull"]);
    let review = w.ok("support", &["review"]);
    assert!(
        review.contains("    ! not mapped: \"Needs Triage\" has no mapping (map_value gave Open)"),
        "{review}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&w.ok("support", &["review", "--json"])).unwrap();
    assert_eq!(
        json[0]["issues"][0]["unmapped"].as_array().unwrap().len(),
        1
    );
}

/// `review --html FILE`: one page with the pending issue on it, whose peer
/// text stays text (a `<script>`, an image that would call home, a terminal
/// escape), and a policy that forbids scripts and fetches.
#[test]
fn the_html_report_holds_the_pending_issue_and_keeps_hostile_text_as_text() {
    let w = world();
    w.new_issue(
        "support",
        &[
            "--project",
            "SUP",
            "--summary",
            "<script>alert('owned')</script> on fire",
            "--description",
            "Logs: <img src=\"http://attacker.example/x.png\"> \u{1b}[2J",
            "--label",
            "escalate",
            "--as",
            "ann",
        ],
    );
    w.ok(
        "support",
        &[
            "tracker",
            "comment",
            "SUP-1",
            "--as",
            "ann",
            "</pre><b>bold</b>",
        ],
    );
    w.ok("support", &["sync"]);
    w.ok("engineering", &["pull"]);
    let file = w.path("review.html");
    let said = w.ok("engineering", &["review", "--html", file.to_str().unwrap()]);
    assert!(said.contains("1 pending issue"), "{said}");
    let html = std::fs::read_to_string(&file).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("default-src 'none'"), "no fetch, no script");
    assert!(html.contains("SUP-1 (new here)"));
    assert!(html.contains("<th>signed by</th>"), "{html}");
    assert!(html.contains("<code>SHA256:"), "the signer's key: {html}");
    assert!(html.contains("&lt;script&gt;alert(&#39;owned&#39;)&lt;/script&gt; on fire"));
    assert!(html.contains("&lt;img src=&quot;http://attacker.example/x.png&quot;&gt;"));
    assert!(html.contains("&lt;/pre&gt;&lt;b&gt;bold&lt;/b&gt;"));
    assert!(html.contains("\\u{1b}[2J"));
    assert!(!html.contains('\u{1b}'));
    let lower = html.to_lowercase();
    for tag in ["<script", "<img", "<b>", "<link", "<iframe"] {
        assert!(!lower.contains(tag), "{tag} in the page");
    }
    for attribute in ["src=\"", "href=", "url("] {
        assert!(!lower.contains(attribute), "{attribute} in the page");
    }
    assert!(w.list("engineering").is_empty(), "a report applies nothing");
}

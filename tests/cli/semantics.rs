//! Sync semantics: conflicts (every policy), an issue moving project, relinking a
//! lost ledger, and a copied site refused until confirmed.

use std::fs;

use super::{World, git};

/// The clock of step `n` of a test: one minute apart, so `newest` has something
/// to compare.
fn at(n: u32) -> &'static str {
    Box::leak(format!("2026-11-20T10:{n:02}:00Z").into_boxed_str())
}

/// support's SUP-1 shared with engineering as ENG-1, and the echo settled, so both
/// sites have a baseline. The clock is at step 1.
fn linked() -> World {
    let mut w = World::new();
    w.now = Some(at(0));
    w.site(
        "support",
        &[("engineering", "SUP=ENG", "labels = escalate")],
    );
    w.site(
        "engineering",
        &[("support", "ENG=SUP", "labels = customer-facing")],
    );
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
    settle(&mut w, 1);
    assert_eq!(w.show("engineering", "ENG-1")["summary"], "Printer on fire");
    w
}

/// Syncs support, engineering, support, engineering at the clock of step `n`.
fn settle(w: &mut World, n: u32) {
    w.now = Some(at(n));
    for _ in 0..2 {
        w.ok("support", &["sync"]);
        w.ok("engineering", &["sync"]);
    }
}

/// Both sites export and push what they changed before either has seen the
/// other's change: the two edits cross in the exchange.
fn cross(w: &World) {
    for site in ["support", "engineering"] {
        w.ok(site, &["export"]);
        w.ok(site, &["push"]);
    }
}

fn field(w: &World, site: &str, key: &str, name: &str) -> String {
    w.show(site, key)[name]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn set_conflicts(w: &World, site: &str, peer: &str, yaml: &str) {
    let path = w.path(&format!("{site}/connections/{peer}.yaml"));
    let mut text = fs::read_to_string(&path).unwrap();
    text.push_str(yaml);
    fs::write(path, text).unwrap();
}

/// A further round commits nothing on either branch.
fn assert_quiet(w: &mut World, n: u32) {
    w.now = Some(at(n));
    let before = (
        w.commits("support/engineering"),
        w.commits("engineering/support"),
    );
    w.ok("support", &["sync"]);
    w.ok("engineering", &["sync"]);
    w.ok("support", &["sync"]);
    let after = (
        w.commits("support/engineering"),
        w.commits("engineering/support"),
    );
    assert_eq!(before, after, "a settled pair must not keep committing");
}

#[test]
fn both_sites_editing_one_field_converge_on_the_newest_value() {
    let mut w = linked();
    w.now = Some(at(2));
    w.ok(
        "support",
        &["tracker", "edit", "SUP-1", "--status", "In Progress"],
    );
    w.now = Some(at(3));
    w.ok(
        "engineering",
        &["tracker", "edit", "ENG-1", "--status", "Resolved"],
    );
    // Each site sees the other's edit before its own went anywhere: without
    // baselines each would take the other's value and they would swap.
    w.now = Some(at(4));
    cross(&w);
    let run = w.ok("engineering", &["sync"]);
    assert!(
        run.contains(r#"conflict on status: kept this site's "Resolved" (newest)"#),
        "{run}"
    );
    let run = w.ok("support", &["sync"]);
    assert!(
        run.contains(r#"conflict on status: took the peer's "Resolved" (newest)"#),
        "{run}"
    );
    settle(&mut w, 5);
    assert_eq!(field(&w, "support", "SUP-1", "status"), "Resolved");
    assert_eq!(field(&w, "engineering", "ENG-1", "status"), "Resolved");
    assert_quiet(&mut w, 6);
    assert_eq!(field(&w, "support", "SUP-1", "status"), "Resolved");
    assert_eq!(field(&w, "engineering", "ENG-1", "status"), "Resolved");
}

#[test]
fn a_stale_replica_does_not_revert_an_edit_of_another_field() {
    let mut w = linked();
    w.now = Some(at(2));
    w.ok(
        "support",
        &[
            "tracker",
            "edit",
            "SUP-1",
            "--summary",
            "Printer on fire again",
        ],
    );
    w.ok(
        "engineering",
        &["tracker", "edit", "ENG-1", "--status", "In Progress"],
    );
    cross(&w);
    // The review (a dry run of the import) already shows the settled outcome.
    w.ok("support", &["pull"]);
    let review = w.ok("support", &["review"]);
    assert!(
        review.contains("=> update: status: Open → In Progress\n"),
        "{review}"
    );
    settle(&mut w, 3);
    for (site, key) in [("support", "SUP-1"), ("engineering", "ENG-1")] {
        assert_eq!(field(&w, site, key, "summary"), "Printer on fire again");
        assert_eq!(field(&w, site, key, "status"), "In Progress");
    }
    assert_quiet(&mut w, 4);
}

#[test]
fn the_error_policy_parks_the_issue_until_the_sites_agree() {
    let mut w = linked();
    set_conflicts(
        &w,
        "engineering",
        "support",
        "conflicts:\n  default: newest\n  fields:\n    status: error\n",
    );
    w.now = Some(at(2));
    w.ok(
        "support",
        &["tracker", "edit", "SUP-1", "--status", "Closed"],
    );
    w.ok(
        "support",
        &["tracker", "comment", "SUP-1", "Parked with it."],
    );
    w.now = Some(at(3));
    w.ok(
        "engineering",
        &["tracker", "edit", "ENG-1", "--status", "Resolved"],
    );
    cross(&w);
    w.ok("engineering", &["pull"]);
    let review = w.ok("engineering", &["review"]);
    assert!(
        review.contains("ENG-1: conflict: both sites changed status"),
        "{review}"
    );

    let run = w.ferry("engineering", &["sync"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let import: Vec<&str> = run
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("import"))
        .take_while(|l| !l.starts_with("export"))
        .collect();
    insta::assert_snapshot!(without_commit_ids(&import.join("\n")), @r#"
    import support: 0 replicas, 1 error
      error: issues/SUP/1.yaml: commit [id]: ENG-1: conflict: both sites changed status (last shared "Open", here "Resolved", support's "Closed") since the last exchange, and the policy is `error`; nothing of this change is applied. Make both sites agree (set it here to support's value, or have support set it to this site's) and `ferry retry`, or choose another policy under `conflicts:` in ./connections/support.yaml. (try 1; retried on a later run)
    "#);
    let errors = w.ok("engineering", &["errors"]);
    assert!(errors.contains("conflict"), "{errors}");
    // Nothing of the parked replica is applied, not even its comment.
    let eng1 = w.show("engineering", "ENG-1");
    assert_eq!(eng1["status"], "Resolved");
    assert!(eng1["comments"].as_array().is_none_or(|c| c.is_empty()));
    // Still parked on the next run.
    assert_eq!(w.ferry("engineering", &["sync"]).code, 1);

    // The operator makes the sites agree and asks for the retry now rather than
    // after the backoff; the run imports it and clears the error.
    w.now = Some(at(4));
    w.ok(
        "engineering",
        &["tracker", "edit", "ENG-1", "--status", "Closed"],
    );
    w.ok("engineering", &["retry", "--all"]);
    w.ok("engineering", &["sync"]);
    assert_eq!(
        w.ok("engineering", &["errors"]).trim(),
        "no unresolved errors"
    );
    let eng1 = w.show("engineering", "ENG-1");
    assert_eq!(eng1["comments"][0]["body"], "Parked with it.");
    settle(&mut w, 5);
    assert_eq!(field(&w, "support", "SUP-1", "status"), "Closed");
    assert_quiet(&mut w, 6);
}

#[test]
fn local_on_one_side_and_remote_on_the_other_converge_whatever_the_times() {
    let mut w = linked();
    set_conflicts(
        &w,
        "support",
        "engineering",
        "conflicts: {default: remote}\n",
    );
    set_conflicts(
        &w,
        "engineering",
        "support",
        "conflicts: {default: local}\n",
    );
    w.now = Some(at(2));
    w.ok(
        "engineering",
        &["tracker", "edit", "ENG-1", "--status", "Resolved"],
    );
    // support's edit is the newer one, and still loses.
    w.now = Some(at(3));
    w.ok(
        "support",
        &["tracker", "edit", "SUP-1", "--status", "In Progress"],
    );
    cross(&w);
    settle(&mut w, 4);
    assert_eq!(field(&w, "support", "SUP-1", "status"), "Resolved");
    assert_eq!(field(&w, "engineering", "ENG-1", "status"), "Resolved");
    assert_quiet(&mut w, 5);
}

#[test]
fn the_rule_policy_lets_the_incoming_rule_settle_the_conflict() {
    let mut w = linked();
    set_conflicts(
        &w,
        "support",
        "engineering",
        "conflicts: {default: newest, fields: {status: rule}}\n",
    );
    // support's rule: on a status conflict, the status further along the workflow.
    let rule = w.path("support/rules/incoming.rhai");
    let mut text = fs::read_to_string(&rule).unwrap();
    text.push_str(
        r#"
let workflow = ["Open", "In Progress", "Resolved", "Closed"];
for c in conflicts {
    if c.field == "status" {
        issue.status = if workflow.index_of(c.remote) > workflow.index_of(c.local) { c.remote } else { c.local };
    }
}
"#,
    );
    fs::write(&rule, text).unwrap();
    w.now = Some(at(2));
    w.ok(
        "engineering",
        &["tracker", "edit", "ENG-1", "--status", "Resolved"],
    );
    // support's edit is the newer one: `newest` would keep it, the rule does not.
    w.now = Some(at(3));
    w.ok(
        "support",
        &["tracker", "edit", "SUP-1", "--status", "In Progress"],
    );
    cross(&w);
    w.now = Some(at(4));
    let run = w.ok("support", &["sync"]);
    assert!(
        run.contains(r#"conflict on status: took the peer's "Resolved" (rule)"#),
        "{run}"
    );
    settle(&mut w, 5);
    assert_eq!(field(&w, "support", "SUP-1", "status"), "Resolved");
    assert_eq!(field(&w, "engineering", "ENG-1", "status"), "Resolved");
    assert_quiet(&mut w, 6);
}

#[test]
fn an_unknown_field_in_the_conflict_policies_is_a_configuration_error() {
    let w = linked();
    set_conflicts(
        &w,
        "support",
        "engineering",
        "conflicts: {fields: {stauts: error}}\n",
    );
    let run = w.ferry("support", &["sync"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("engineering.yaml")
            && run.stderr.contains(r#"`conflicts.fields` names "stauts""#),
        "{}",
        run.stderr
    );
    set_conflicts(
        &w,
        "engineering",
        "support",
        "conflicts: {default: sometimes}\n",
    );
    let run = w.ferry("engineering", &["sync"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("sometimes"), "{}", run.stderr);
}

#[test]
fn an_issue_moved_to_another_project_stays_the_same_issue_for_the_peer() {
    let mut w = World::new();
    w.now = Some(at(0));
    let support = ("engineering", "SUP=ENG", "labels = escalate");
    w.site("support", &[support]);
    w.site(
        "engineering",
        &[("support", "ENG=SUP", "labels = customer-facing")],
    );
    for (site, peer, pair) in [
        ("support", "engineering", "  OPS: OPSENG\n"),
        ("engineering", "support", "  OPSENG: OPS\n"),
    ] {
        let path = w.path(&format!("{site}/connections/{peer}.yaml"));
        let text = fs::read_to_string(&path).unwrap();
        let text = text.replacen("projects:\n", &format!("projects:\n{pair}"), 1);
        fs::write(path, text).unwrap();
    }
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
    settle(&mut w, 1);

    w.now = Some(at(2));
    let moved = w.ok("support", &["tracker", "move", "SUP-1", "OPS"]);
    assert_eq!(moved.trim(), "SUP-1 → OPS-1");
    settle(&mut w, 3);

    // The replica moved with the issue: one file, at the new path, with the new key.
    let files = git(
        &w.path("exchange.git"),
        &["ls-tree", "-r", "--name-only", "support/engineering"],
    );
    assert_eq!(
        files.lines().collect::<Vec<_>>(),
        vec!["issues/OPS/01/00/1.yaml", "site.yaml"]
    );
    let replica = git(
        &w.path("exchange.git"),
        &["show", "support/engineering:issues/OPS/01/00/1.yaml"],
    );
    assert!(replica.contains("key: OPS-1"), "{replica}");
    // Same issue at engineering: not a second one, not a deletion.
    let eng = w.list("engineering");
    assert_eq!(eng.len(), 1, "{eng:?}");
    assert_eq!(eng[0]["key"], "ENG-1");
    assert!(!eng[0]["labels"].to_string().contains("peer-deleted"));

    // Edits still flow both ways.
    w.now = Some(at(4));
    w.ok(
        "engineering",
        &["tracker", "comment", "ENG-1", "Seen after the move."],
    );
    w.ok(
        "support",
        &[
            "tracker",
            "edit",
            "OPS-1",
            "--summary",
            "Printer on fire (ops)",
        ],
    );
    settle(&mut w, 5);
    assert_eq!(
        w.show("support", "OPS-1")["comments"][0]["body"],
        "Seen after the move."
    );
    assert_eq!(
        field(&w, "engineering", "ENG-1", "summary"),
        "Printer on fire (ops)"
    );
    assert_eq!(w.list("support").len(), 1);
    assert_eq!(w.list("engineering").len(), 1);
}

#[test]
fn relink_rebuilds_a_lost_ledger_without_duplicates() {
    let mut w = linked();
    w.now = Some(at(2));
    w.new_issue(
        "engineering",
        &[
            "--project",
            "ENG",
            "--summary",
            "Driver crash",
            "--label",
            "customer-facing",
        ],
    );
    settle(&mut w, 3);
    assert_eq!(w.list("support").len(), 2);

    for file in ["ledger.db", "ledger.db-wal", "ledger.db-shm"] {
        let _ = fs::remove_file(w.path(&format!("support/.ferry/{file}")));
    }
    w.now = Some(at(4));
    let run = w.ok("support", &["relink"]);
    assert!(
        run.starts_with("relink engineering: 2 links, 2 shared, applied at "),
        "{run}"
    );
    assert!(run.contains("0 queued"), "{run}");
    settle(&mut w, 5);
    assert_eq!(w.list("support").len(), 2, "no duplicates at support");
    assert_eq!(
        w.list("engineering").len(),
        2,
        "no duplicates at engineering"
    );

    // Later edits flow both ways, on issues of either origin.
    w.now = Some(at(6));
    w.ok(
        "support",
        &["tracker", "comment", "SUP-2", "Customer confirms."],
    );
    w.ok(
        "support",
        &["tracker", "edit", "SUP-1", "--summary", "Printer fixed?"],
    );
    w.ok(
        "engineering",
        &["tracker", "edit", "ENG-2", "--status", "In Progress"],
    );
    settle(&mut w, 7);
    assert_eq!(
        w.show("engineering", "ENG-2")["comments"][0]["body"],
        "Customer confirms."
    );
    assert_eq!(
        field(&w, "engineering", "ENG-1", "summary"),
        "Printer fixed?"
    );
    assert_eq!(field(&w, "support", "SUP-2", "status"), "In Progress");
    assert_eq!(w.list("support").len(), 2);
    assert_eq!(w.list("engineering").len(), 2);
    assert_quiet(&mut w, 8);
}

#[test]
fn relink_queues_what_a_restored_tracker_lacks_and_the_import_creates_it_once() {
    let mut w = linked();
    w.now = Some(at(2));
    // A backup of support's tracker taken now...
    let backup = w.path("tracker-backup.db");
    sqlite_copy(&w.path("support/tracker.db"), &backup);
    w.new_issue(
        "engineering",
        &[
            "--project",
            "ENG",
            "--summary",
            "Driver crash",
            "--label",
            "customer-facing",
        ],
    );
    settle(&mut w, 3);
    assert_eq!(w.list("support").len(), 2);
    // ...restored, with the ledger lost too.
    for file in ["tracker.db-wal", "tracker.db-shm"] {
        let _ = fs::remove_file(w.path(&format!("support/{file}")));
    }
    fs::copy(&backup, w.path("support/tracker.db")).unwrap();
    for file in ["ledger.db", "ledger.db-wal", "ledger.db-shm"] {
        let _ = fs::remove_file(w.path(&format!("support/.ferry/{file}")));
    }
    let run = w.ok("support", &["relink"]);
    assert!(run.contains("1 queued for import"), "{run}");
    assert!(run.contains("queued issues/ENG/2.yaml"), "{run}");
    settle(&mut w, 4);
    let support = w.list("support");
    assert_eq!(support.len(), 2, "{support:?}");
    assert_eq!(support[1]["summary"], "Driver crash");
    assert_eq!(w.list("engineering").len(), 2);
}

/// `text` with every `commit <10 hex digits>` as `commit [id]`: commit ids depend
/// on signatures and clocks this test does not pin.
fn without_commit_ids(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("commit ") {
        let (head, tail) = rest.split_at(at + "commit ".len());
        out.push_str(head);
        let hex = tail.chars().take_while(char::is_ascii_hexdigit).count();
        if hex >= 7 {
            out.push_str("[id]");
            rest = &tail[hex..];
        } else {
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

/// Copies a SQLite database consistently through SQLite itself (`VACUUM INTO`),
/// as a backup tool would.
fn sqlite_copy(from: &std::path::Path, to: &std::path::Path) {
    let conn = rusqlite::Connection::open(from).unwrap();
    conn.execute("VACUUM INTO ?1", [to.to_str().unwrap()])
        .unwrap();
}

#[test]
fn a_copied_site_folder_is_refused_until_confirmed() {
    let mut w = linked();
    copy_dir(&w.path("support"), &w.path("staging"));
    w.now = Some(at(2));
    let run = w.ferry("staging", &["sync"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let root = fs::canonicalize(w.root.path()).unwrap();
    let stderr = run.stderr.replace(&root.display().to_string(), "[world]");
    insta::assert_snapshot!(stderr, @r#"error: this is not the site the ledger [world]/staging/.ferry/ledger.db belongs to: the tracker's location was "[world]/support/tracker.db", is now "[world]/staging/tracker.db". A copy of a site (a staging clone, a copied folder or tracker database) must not sync as the original; if this really is that site (moved, or its tracker restored from a backup), confirm it with: ferry --dir [world]/staging site confirm"#);
    assert!(run.stdout.is_empty(), "nothing ran: {}", run.stdout);
    // The original is untouched and still syncs.
    w.ok("support", &["sync"]);

    let confirmed = w.ok("staging", &["site", "confirm"]);
    assert!(confirmed.contains("site support confirmed:"), "{confirmed}");
    assert!(
        confirmed.contains("the tracker's location was"),
        "{confirmed}"
    );
    w.ok("staging", &["sync"]);
    assert!(
        w.ok("staging", &["site", "confirm"])
            .contains("nothing to confirm"),
        "confirming twice changes nothing"
    );
}

#[test]
fn another_tracker_database_in_place_is_refused_until_confirmed() {
    let w = linked();
    for file in ["tracker.db-wal", "tracker.db-shm"] {
        let _ = fs::remove_file(w.path(&format!("support/{file}")));
    }
    sqlite_copy(&w.path("engineering/tracker.db"), &w.path("copy.db"));
    fs::copy(w.path("copy.db"), w.path("support/tracker.db")).unwrap();
    let run = w.ferry("support", &["sync"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("the tracker's instance id was") && !run.stderr.contains("location"),
        "{}",
        run.stderr
    );
    w.ok("support", &["site", "confirm"]);
    w.ok("support", &["sync"]);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry.unwrap();
        let target = to.join(entry.path().strip_prefix(from).unwrap());
        if entry.file_type().is_dir() {
            fs::create_dir_all(&target).unwrap();
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn relink_after_losing_the_whole_state_folder_pulls_first() {
    let mut w = linked();
    w.now = Some(at(2));
    w.new_issue(
        "engineering",
        &[
            "--project",
            "ENG",
            "--summary",
            "Driver crash",
            "--label",
            "customer-facing",
        ],
    );
    settle(&mut w, 3);
    fs::remove_dir_all(w.path("support/.ferry")).unwrap();
    w.now = Some(at(4));
    // The signing key was in the state folder too: a new one, which the peer
    // must trust (its commits signed with the lost key stay valid).
    w.ok(
        "support",
        &["init", "--site", "support", "--tracker", "local"],
    );
    w.trust("engineering", "support");
    w.ok("support", &["pull"]);
    // The clone is new: it knows no applied position, so the peer's replicas are
    // imported again, each onto the issue its origin marker names. With this
    // site's own branch lost too, nothing says SUP-1 was shared with
    // engineering, so engineering's copy of it does not link yet.
    let run = w.ok("support", &["relink"]);
    assert!(
        run.starts_with("relink engineering: 1 link, 0 shared, applied at (nothing)"),
        "{run}"
    );
    assert!(run.contains("not linked issues/ENG/1.yaml"), "{run}");
    // The first sync shares SUP-1 again, and stops at the push: the channel's
    // copy of support's branch was signed with the lost key, which support can
    // no longer tell from anyone else's. The operator adopts it by name.
    let sync = w.ferry("support", &["sync"]);
    assert_eq!(sync.code, 3, "{}", sync.stdout);
    let tip = git(
        &w.path("exchange.git"),
        &["rev-parse", "support/engineering"],
    );
    let tip = tip.trim();
    assert!(
        sync.stdout.contains(&format!("--adopt {tip}")),
        "{}",
        sync.stdout
    );
    w.ok(
        "support",
        &["push", "--connection", "engineering", "--adopt", tip],
    );
    // After the retry delay, engineering's copy of SUP-1 links: it is shared now.
    settle(&mut w, 15);
    assert_eq!(w.list("support").len(), 2, "no duplicates at support");
    assert_eq!(
        w.list("engineering").len(),
        2,
        "no duplicates at engineering"
    );
    w.now = Some(at(16));
    w.ok(
        "support",
        &["tracker", "edit", "SUP-1", "--summary", "Printer fixed?"],
    );
    w.ok(
        "engineering",
        &["tracker", "edit", "ENG-2", "--status", "In Progress"],
    );
    settle(&mut w, 17);
    assert_eq!(
        field(&w, "engineering", "ENG-1", "summary"),
        "Printer fixed?"
    );
    assert_eq!(field(&w, "support", "SUP-2", "status"), "In Progress");
    assert_quiet(&mut w, 18);
}

#[test]
fn an_ack_naming_an_unknown_commit_acknowledges_nothing_and_stops_nothing() {
    let mut w = linked();
    let work = w.path("peer-work");
    git(w.root.path(), &["clone", "-q", "exchange.git", "peer-work"]);
    git(&work, &["checkout", "-q", "engineering/support"]);
    let site_yaml = work.join("site.yaml");
    let text = fs::read_to_string(&site_yaml).unwrap();
    let ack = text.lines().find(|l| l.starts_with("ack: ")).unwrap();
    fs::write(
        &site_yaml,
        text.replace(ack, &format!("ack: {}", "d".repeat(40))),
    )
    .unwrap();
    let replica = work.join("issues/ENG/01/00/1.yaml");
    let text = fs::read_to_string(&replica).unwrap();
    fs::write(
        &replica,
        text.replace("summary: Printer on fire", "summary: Printer still on fire"),
    )
    .unwrap();
    // Signed with engineering's own key, as its ferry would.
    let key = w.path("engineering/.ferry/signing_key");
    git(&work, &["config", "gpg.format", "ssh"]);
    git(&work, &["config", "user.signingkey", key.to_str().unwrap()]);
    git(
        &work,
        &[
            "commit",
            "-q",
            "-S",
            "-am",
            "a peer with a bad ack",
            "-m",
            "Ferry-Branch: engineering/support",
        ],
    );
    git(&work, &["push", "-q", "origin", "engineering/support"]);
    w.now = Some(at(2));
    w.ok("support", &["sync"]);
    assert_eq!(
        field(&w, "support", "SUP-1", "summary"),
        "Printer still on fire"
    );
}

/// The incoming rule template's status map, as `init` writes it.
const TEMPLATE_STATUS_MAP: &str = r#"let statuses = #{ "Open": "Open", "In Progress": "In Progress", "Resolved": "Resolved", "Closed": "Closed" };"#;

fn set_status_map(w: &World, site: &str, map: &str) {
    let path = w.path(&format!("{site}/rules/incoming.rhai"));
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains(TEMPLATE_STATUS_MAP), "{text}");
    fs::write(path, text.replace(TEMPLATE_STATUS_MAP, map)).unwrap();
}

/// support maps engineering's Reopened and Open both onto its Open. Its own
/// Reopened must not bounce back to Open when engineering's status did not
/// change: neither when engineering holds it as it was, nor when engineering
/// took support's Reopened and sends it back; a real change still arrives.
#[test]
fn a_many_to_one_status_map_does_not_bounce_a_status_back() {
    let mut w = linked();
    set_status_map(
        &w,
        "support",
        r#"let statuses = #{ "Reopened": "Open", "Open": "Open" };"#,
    );
    assert_eq!(field(&w, "support", "SUP-1", "status"), "Open");

    // engineering's map does not know Reopened: it keeps its Open.
    w.now = Some(at(2));
    w.ok(
        "support",
        &["tracker", "edit", "SUP-1", "--status", "Reopened"],
    );
    settle(&mut w, 3);
    assert_eq!(field(&w, "engineering", "ENG-1", "status"), "Open");
    w.now = Some(at(4));
    w.ok(
        "engineering",
        &[
            "tracker",
            "edit",
            "ENG-1",
            "--summary",
            "Printer still on fire",
        ],
    );
    settle(&mut w, 5);
    assert_eq!(
        field(&w, "support", "SUP-1", "summary"),
        "Printer still on fire"
    );
    assert_eq!(
        field(&w, "support", "SUP-1", "status"),
        "Reopened",
        "engineering's Open did not change"
    );

    // Now engineering takes Reopened as it is, and its replica says so.
    set_status_map(
        &w,
        "engineering",
        r#"let statuses = #{ "Reopened": "Reopened", "Open": "Open" };"#,
    );
    w.now = Some(at(6));
    w.ok("support", &["tracker", "edit", "SUP-1", "--status", "Open"]);
    settle(&mut w, 7);
    w.now = Some(at(8));
    w.ok(
        "support",
        &["tracker", "edit", "SUP-1", "--status", "Reopened"],
    );
    settle(&mut w, 9);
    assert_eq!(field(&w, "engineering", "ENG-1", "status"), "Reopened");
    assert_eq!(
        field(&w, "support", "SUP-1", "status"),
        "Reopened",
        "support's own Reopened, echoed"
    );

    // A status engineering really changes arrives.
    w.now = Some(at(10));
    w.ok(
        "engineering",
        &["tracker", "edit", "ENG-1", "--status", "Open"],
    );
    settle(&mut w, 11);
    assert_eq!(field(&w, "support", "SUP-1", "status"), "Open");
    assert_quiet(&mut w, 12);
}

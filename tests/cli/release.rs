//! The release gate: exports behind `release: {required: true}` leave only
//! once released, over both channel kinds; a rejected export's text is in
//! nothing that left, before or after a later export supersedes it; a run
//! killed between a release and its push loses nothing.

use std::path::{Path, PathBuf};

use super::relations::{Channel, pair};
use super::{World, git};

const SECRET: &str = "PASSWORD-IN-THE-DESCRIPTION";

/// support ↔ engineering over `channel`, support's exports behind the gate.
fn gated(channel: Channel) -> World {
    let w = pair(channel);
    let file = w.path("support/connections/engineering.yaml");
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str("release:\n  required: true\n");
    std::fs::write(&file, text).unwrap();
    w
}

fn escalate(w: &World, summary: &str, description: &str) -> String {
    w.new_issue(
        "support",
        &[
            "--project",
            "SUP",
            "--summary",
            summary,
            "--description",
            description,
            "--label",
            "escalate",
        ],
    )
}

/// Every file below `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The text of every object that left support: the shared repository's, and
/// every bundle ever written (unpacked by the real git), with what reached
/// engineering's clone.
fn everything_that_left(w: &World) -> String {
    let mut text = String::new();
    if w.path("exchange.git").exists() {
        text.push_str(&w.exchange_objects());
    }
    let scratch = w.path("unbundled.git");
    // In the order they were written: each needs the one before.
    let mut bundles: Vec<PathBuf> = walk(&w.path("usb/support-to-engineering"))
        .into_iter()
        .filter(|f| f.to_string_lossy().ends_with(".bundle"))
        .collect();
    bundles.sort_by_key(|f| f.file_name().map(|n| n.to_os_string()));
    for file in bundles {
        if !scratch.exists() {
            git(w.root.path(), &["init", "-q", "--bare", "unbundled.git"]);
        }
        git(&scratch, &["bundle", "unbundle", file.to_str().unwrap()]);
    }
    for repo in [scratch, w.path("engineering/.ferry/exchange.git")] {
        if repo.exists() {
            text.push_str(&git(&repo, &["cat-file", "--batch-all-objects", "--batch"]));
        }
    }
    text
}

fn keys(w: &World, site: &str) -> Vec<String> {
    w.list(site)
        .iter()
        .map(|i| i["summary"].as_str().unwrap().to_string())
        .collect()
}

fn approve_reject_supersede(channel: Channel) {
    let w = gated(channel);
    escalate(&w, "Printer on fire", "Smoke after the update.");
    let said = w.ok("support", &["sync"]);
    assert!(
        said.contains("hold   engineering: 1 commit waits for release"),
        "{said}"
    );
    w.ok("engineering", &["sync"]);
    assert!(w.list("engineering").is_empty(), "nothing left unreleased");
    let status = w.ok("support", &["status"]);
    assert!(status.contains("1 commit waits for release"), "{status}");
    // Recorded as a connection error, so the notification tells someone.
    let errors = w.ok("support", &["errors"]);
    assert!(
        errors.contains("1 commit of exports for engineering waits for release"),
        "{errors}"
    );
    w.ok(
        "support",
        &[
            "tracker",
            "comment",
            "SUP-1",
            "--internal",
            "Call the customer back.",
        ],
    );
    w.ok("support", &["sync"]);
    let listed = w.ok("support", &["release"]);
    assert!(listed.contains("SUP-1 (new to engineering)"), "{listed}");
    assert!(
        listed.contains("stays here: 1 internal comment"),
        "{listed}"
    );
    assert!(!listed.contains("Call the customer back"), "{listed}");
    assert!(listed.contains("summary: Printer on fire"), "{listed}");

    let said = w.ok("support", &["release", "approve"]);
    assert!(said.contains("released up to"), "{said}");
    w.ok("support", &["sync"]);
    w.ok("engineering", &["sync"]);
    assert_eq!(keys(&w, "engineering"), ["Printer on fire"]);
    assert!(
        !w.ok("support", &["errors"]).contains("wait"),
        "resolved once nothing waits"
    );

    // A change whose text must not leave: rejected, then a later export of
    // the same issue supersedes it only when a release names the issue.
    w.ok(
        "support",
        &["tracker", "edit", "SUP-1", "--description", SECRET],
    );
    w.ok("support", &["sync"]);
    let waiting: serde_json::Value =
        serde_json::from_str(&w.ok("support", &["release", "--json"])).unwrap();
    let rev = waiting[0]["commits"][0].as_str().unwrap().to_string();
    let said = w.ok(
        "support",
        &["release", "reject", &rev, "--reason", "a password"],
    );
    assert!(said.contains("held until a release names them"), "{said}");
    assert!(said.contains("SUP-1"), "{said}");
    w.ok("support", &["sync"]);
    w.ok("engineering", &["sync"]);
    assert_eq!(
        w.show("engineering", "ENG-1")["description"],
        "Smoke after the update."
    );

    w.ok(
        "support",
        &[
            "tracker",
            "edit",
            "SUP-1",
            "--description",
            "Smoke after the update; the password was changed.",
        ],
    );
    w.ok("support", &["sync"]);
    let listed = w.ok("support", &["release"]);
    assert!(
        listed.contains("HELD by a rejection (a password)"),
        "{listed}"
    );
    let refused = w.ferry("support", &["release", "approve"]);
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("--including"), "{}", refused.stderr);
    w.ok("support", &["release", "approve", "--including", "SUP-1"]);
    w.ok("support", &["sync"]);
    w.ok("engineering", &["sync"]);
    assert_eq!(
        w.show("engineering", "ENG-1")["description"],
        "Smoke after the update; the password was changed."
    );
    let left = everything_that_left(&w);
    assert!(
        left.contains("the password was changed"),
        "the check sees what left"
    );
    assert!(!left.contains(SECRET), "a rejected export left");
    assert_eq!(
        w.ok("support", &["release"]),
        "engineering: nothing waits for release\n"
    );
}

#[test]
fn approve_reject_and_supersede_over_a_repo() {
    approve_reject_supersede(Channel::Repo);
}

#[test]
fn approve_reject_and_supersede_over_bundles() {
    approve_reject_supersede(Channel::Bundles);
}

/// Killed after the release is recorded but before the branch that leaves
/// moved, and killed after that but before the push: the next sync sends
/// what was released, once.
fn a_kill_between_release_and_push_loses_nothing(channel: Channel) {
    let w = gated(channel);
    escalate(&w, "First", "one");
    w.ok("support", &["sync"]);
    w.killed_at("support", &["release", "approve"], "after-release-recorded");
    w.ok("support", &["sync"]);
    w.ok("engineering", &["sync"]);
    assert_eq!(keys(&w, "engineering"), ["First"]);

    escalate(&w, "Second", "two");
    w.ok("support", &["sync"]);
    w.ok("support", &["release", "approve"]);
    w.killed_at("support", &["sync"], "before-push");
    w.ok("support", &["sync"]);
    w.ok("engineering", &["sync"]);
    let mut got = keys(&w, "engineering");
    got.sort();
    assert_eq!(got, ["First", "Second"]);
}

#[test]
fn a_kill_between_release_and_push_loses_nothing_over_a_repo() {
    a_kill_between_release_and_push_loses_nothing(Channel::Repo);
}

#[test]
fn a_kill_between_release_and_push_loses_nothing_over_bundles() {
    a_kill_between_release_and_push_loses_nothing(Channel::Bundles);
}

/// A commit that carries only `site.yaml` (the acknowledgement of the
/// peer's commits and the formats this site reads) needs no release: here
/// the one a rejection leaves of the first export leaves at the next sync,
/// and nothing of the rejected issue with it.
#[test]
fn a_commit_of_site_yaml_only_leaves_without_a_release() {
    let w = gated(Channel::Repo);
    escalate(&w, "Printer on fire", SECRET);
    w.ok("support", &["sync"]);
    assert_eq!(w.commits("support/engineering"), 0, "nothing left");
    let waiting: serde_json::Value =
        serde_json::from_str(&w.ok("support", &["release", "--json"])).unwrap();
    let rev = waiting[0]["commits"][0].as_str().unwrap().to_string();
    w.ok("support", &["release", "reject", &rev, "--reason", "no"]);
    w.ok("support", &["sync"]);
    let tree = git(
        &w.path("exchange.git"),
        &["ls-tree", "-r", "--name-only", "support/engineering"],
    );
    assert_eq!(tree, "site.yaml\n");
    assert!(!w.exchange_objects().contains(SECRET));
}

/// `release --html FILE`: the page lists what waits, the tracker's markup
/// stays text, and it forbids scripts and fetches.
#[test]
fn the_release_report_is_one_page_whose_text_stays_text() {
    let w = gated(Channel::Repo);
    escalate(
        &w,
        "<script>alert(1)</script> printer",
        "<img src=\"http://attacker.example/x\">",
    );
    w.ok("support", &["sync"]);
    let file = w.path("release.html");
    let said = w.ok("support", &["release", "--html", file.to_str().unwrap()]);
    assert!(said.contains("1 issue waiting"), "{said}");
    let html = std::fs::read_to_string(&file).unwrap();
    assert!(html.contains("default-src 'none'"));
    assert!(html.contains("SUP-1 (new to the peer)"), "{html}");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; printer"));
    let lower = html.to_lowercase();
    for tag in ["<script", "<img", "src=\"", "href="] {
        assert!(!lower.contains(tag), "{tag} in the page");
    }
}

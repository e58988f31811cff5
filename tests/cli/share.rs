//! Sharing one issue by hand (`ferry share`) and stopping (`ferry unshare`),
//! between two sites, over both channel kinds: an issue the query does not
//! match travels once shared by hand; unshared, the peer keeps its copy, which
//! gets no further change and sends none back; shared again, the same copy
//! resumes, with no duplicate.

use super::World;
use super::relations::{Channel, add_site, keys, pair, site_git};

/// support syncs, then engineering.
fn over(w: &World) {
    w.ok("support", &["sync"]);
    w.ok("engineering", &["sync"]);
}

/// Two rounds both ways.
fn settle(w: &World) {
    for _ in 0..2 {
        over(w);
    }
}

fn summary(w: &World, site: &str, key: &str) -> String {
    w.show(site, key)["summary"].as_str().unwrap().to_string()
}

/// The bodies of ferry's own notes on an issue.
fn notes(w: &World, site: &str, key: &str) -> Vec<String> {
    w.show(site, key)["comments"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["author"] == "ferry")
        .map(|c| c["body"].as_str().unwrap().to_string())
        .collect()
}

fn share_unshare_share(channel: Channel) {
    let w = pair(channel);
    // Not labelled `escalate`: the query does not share it.
    let key = w.new_issue("support", &["--project", "SUP", "--summary", "by hand"]);
    over(&w);
    assert!(keys(&w, "engineering").is_empty());

    let status = w.ok("support", &["status", &key]);
    assert!(
        status.contains(
            "  not shared with engineering: the connection's query does not match it \
             (`ferry share` shares it by hand)"
        ),
        "{status}"
    );

    let out = w.ok("support", &["share", &key, "--with", "engineering"]);
    assert!(out.contains("shared with engineering by hand"), "{out}");
    // Nothing changed in the tracker: the next sync sends it all the same.
    over(&w);
    assert_eq!(keys(&w, "engineering"), vec!["ENG-1"]);
    assert_eq!(summary(&w, "engineering", "ENG-1"), "by hand");
    settle(&w);
    let status = w.ok("support", &["status", &key]);
    assert!(
        status.contains("  shared    shared by hand (`ferry share`) at "),
        "{status}"
    );
    let status = w.ok("engineering", &["status", "ENG-1"]);
    assert!(
        status.contains("  shared    a copy of support's issue"),
        "{status}"
    );

    w.ok("support", &["unshare", &key, "--with", "engineering"]);
    w.ok(
        "support",
        &["tracker", "edit", &key, "--summary", "changed here"],
    );
    w.ok(
        "engineering",
        &["tracker", "edit", "ENG-1", "--summary", "changed there"],
    );
    settle(&w);
    // The peer keeps its copy, says so in it, and neither side's change
    // reaches the other.
    assert_eq!(keys(&w, "engineering"), vec!["ENG-1"]);
    let said = notes(&w, "engineering", "ENG-1");
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(
        said[0].starts_with("No longer shared by support"),
        "{said:?}"
    );
    // Neither branch holds a replica of it any more: engineering no longer
    // sends its copy either.
    for (site, branch) in [
        ("support", "refs/heads/support/engineering"),
        ("engineering", "refs/heads/engineering/support"),
    ] {
        let files = site_git(&w, site, &["ls-tree", "-r", "--name-only", branch]);
        assert!(!files.contains("issues/"), "{site}: {files}");
    }
    assert_eq!(summary(&w, "engineering", "ENG-1"), "changed there");
    assert_eq!(summary(&w, "support", &key), "changed here");
    let status = w.ok("support", &["status", &key]);
    assert!(
        status.contains("  shared    no: unshared by hand (`ferry unshare`) at "),
        "{status}"
    );
    let status = w.ok("engineering", &["status", "ENG-1"]);
    assert!(
        status.contains("  shared    no: no longer shared by support"),
        "{status}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&w.ok("engineering", &["status", "ENG-1", "--json"])).unwrap();
    assert_eq!(json["connections"][0]["shared"], false);
    // The query does not share it again, even once it matches.
    w.ok(
        "support",
        &["tracker", "edit", &key, "--add-label", "escalate"],
    );
    settle(&w);
    assert_eq!(summary(&w, "engineering", "ENG-1"), "changed there");

    w.ok("support", &["share", &key, "--with", "engineering"]);
    settle(&w);
    // The same copy resumes: no second issue at engineering.
    assert_eq!(keys(&w, "engineering"), vec!["ENG-1"]);
    // What both sides changed meanwhile is settled like any conflict: the two
    // agree again, and changes travel both ways.
    assert_eq!(
        summary(&w, "engineering", "ENG-1"),
        summary(&w, "support", &key)
    );
    w.ok(
        "support",
        &["tracker", "edit", &key, "--summary", "shared again"],
    );
    settle(&w);
    assert_eq!(summary(&w, "engineering", "ENG-1"), "shared again");
    // Both ways again: engineering's copy sends its changes once more.
    w.ok(
        "engineering",
        &["tracker", "edit", "ENG-1", "--summary", "answered there"],
    );
    settle(&w);
    assert_eq!(summary(&w, "support", &key), "answered there");
    // The note stays (internal: it never travels), and is not repeated.
    assert_eq!(notes(&w, "engineering", "ENG-1").len(), 1);
    assert!(notes(&w, "support", &key).is_empty());
}

#[test]
fn share_by_hand_unshare_and_share_again_over_a_shared_repo() {
    share_unshare_share(Channel::Repo);
}

#[test]
fn share_by_hand_unshare_and_share_again_over_bundles() {
    share_unshare_share(Channel::Bundles);
}

/// A connection for hand-picked issues only: its query matches nothing.
#[test]
fn a_connection_whose_query_matches_nothing_shares_only_what_is_picked() {
    let w = World::new();
    add_site(
        &w,
        "support",
        "engineering",
        Channel::Repo,
        &["SUP=ENG"],
        "key IS EMPTY",
    );
    add_site(
        &w,
        "engineering",
        "support",
        Channel::Repo,
        &["ENG=SUP"],
        "key IS EMPTY",
    );
    let picked = w.new_issue("support", &["--project", "SUP", "--summary", "picked"]);
    w.new_issue("support", &["--project", "SUP", "--summary", "not picked"]);
    w.ok("support", &["share", &picked, "--with", "engineering"]);
    settle(&w);
    assert_eq!(keys(&w, "engineering"), vec!["ENG-1"]);
    assert_eq!(summary(&w, "engineering", "ENG-1"), "picked");
}

#[test]
fn share_names_what_it_cannot_find() {
    let w = pair(Channel::Repo);
    let key = w.new_issue("support", &["--project", "SUP", "--summary", "here"]);
    let run = w.ferry("support", &["share", "SUP-99", "--with", "engineering"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("no issue SUP-99"), "{}", run.stderr);
    let run = w.ferry("support", &["unshare", &key, "--with", "qa"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("qa"), "{}", run.stderr);
    let file = w.path("support/connections/engineering.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let inbound = text.replace("direction: both", "direction: in");
    assert_ne!(inbound, text);
    std::fs::write(&file, inbound).unwrap();
    let run = w.ferry("support", &["share", &key, "--with", "engineering"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("only imports"), "{}", run.stderr);
}

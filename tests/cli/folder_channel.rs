//! A channel that is a folder is read and written by ferry itself (a pack of
//! what a tree diff finds new, then a compare-and-swap of the branch): a run
//! killed between the two leaves every ref as it was, and the next run
//! completes the transfer. The real `git` is the oracle.

use super::{World, git};

/// What `refname` points at in the repository `repo`, `None` when it does not exist.
fn rev(w: &World, repo: &str, refname: &str) -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--verify", "-q", refname])
        .current_dir(w.path(repo))
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8(out.stdout).unwrap().trim().to_string())
}

#[test]
fn a_transfer_killed_after_its_pack_leaves_the_refs_as_they_were() {
    let w = World::escalating_pair();
    let branch = "refs/heads/support/engineering";
    let support = "support/.ferry/exchange.git";
    let engineering = "engineering/.ferry/exchange.git";
    w.escalate("first");
    w.ok("support", &["sync"]);
    w.ok("engineering", &["sync"]);
    let first = rev(&w, "exchange.git", branch).expect("pushed");

    w.escalate("second");
    w.ok("support", &["export"]);
    let second = rev(&w, support, branch).unwrap();
    assert_ne!(second, first);

    // Killed with the objects in the channel, its branch not moved.
    w.killed_at("support", &["push"], "push-after-pack");
    assert_eq!(rev(&w, "exchange.git", branch), Some(first.clone()));
    git(
        &w.path("exchange.git"),
        &["fsck", "--full", "--no-dangling"],
    );
    w.ok("support", &["push"]);
    assert_eq!(rev(&w, "exchange.git", branch), Some(second.clone()));

    // Killed with the objects fetched, no local ref moved.
    w.killed_at("engineering", &["pull"], "fetch-after-pack");
    assert_eq!(rev(&w, engineering, branch), Some(first.clone()));
    assert_eq!(
        rev(&w, engineering, "refs/ferry/applied/support"),
        Some(first)
    );
    git(&w.path(engineering), &["fsck", "--full", "--no-dangling"]);
    w.ok("engineering", &["sync"]);
    assert_eq!(rev(&w, engineering, branch), Some(second.clone()));
    assert_eq!(
        rev(&w, engineering, "refs/ferry/applied/support"),
        Some(second)
    );
    let found = w.ok("engineering", &["tracker", "list", "--json"]);
    assert!(found.contains("second"), "{found}");
    for repo in ["exchange.git", support, engineering] {
        git(&w.path(repo), &["fsck", "--full", "--strict"]);
    }
}

//! Exchange formats: a pair of sites whose ferry versions differ keeps working,
//! each branch moves to the newer layout in one commit once the peer announces
//! that it reads it, and back when the peer goes back. A site held at format 1
//! (`FERRY_EXCHANGE_FORMAT=1`) announces and writes what a ferry from before
//! format 2 did; the real git lists what each branch holds.

use std::process::Command;

use super::{World, git};

/// Runs ferry at `site` held at exchange format 1, insisting on exit 0.
fn ok_at_format_1(w: &World, site: &str, args: &[&str]) -> String {
    run_at_format_1(w.command(site, args), args)
}

fn run_at_format_1(mut command: Command, args: &[&str]) -> String {
    let out = command.env("FERRY_EXCHANGE_FORMAT", "1").output().unwrap();
    assert!(
        out.status.success(),
        "ferry {args:?} (format 1) failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The replica paths on `branch` of the git repository at `repo`.
fn replica_paths(repo: &std::path::Path, branch: &str) -> Vec<String> {
    git(repo, &["ls-tree", "-r", "--name-only", branch])
        .lines()
        .filter(|path| path.starts_with("issues/"))
        .map(str::to_string)
        .collect()
}

/// `ferry: N` of the `site.yaml` on `branch`.
fn announced(repo: &std::path::Path, branch: &str) -> String {
    let file = git(repo, &["show", &format!("{branch}:site.yaml")]);
    file.lines()
        .find_map(|line| line.strip_prefix("ferry: "))
        .unwrap_or_default()
        .to_string()
}

fn flat(paths: &[String]) -> bool {
    !paths.is_empty() && paths.iter().all(|p| p.split('/').count() == 3)
}

fn fanned_out(paths: &[String]) -> bool {
    !paths.is_empty() && paths.iter().all(|p| p.split('/').count() == 5)
}

fn comments(w: &World, site: &str, key: &str) -> Vec<String> {
    w.show(site, key)["comments"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["body"].as_str().unwrap().to_string())
        .collect()
}

/// The key of the issue with `summary` at `site`.
fn key_of(w: &World, site: &str, summary: &str) -> String {
    w.list(site)
        .into_iter()
        .find(|i| i["summary"] == summary)
        .unwrap_or_else(|| panic!("no issue {summary:?} at {site}"))["key"]
        .as_str()
        .unwrap()
        .to_string()
}

fn pair() -> World {
    let w = World::new();
    w.site(
        "support",
        &[("engineering", "SUP=ENG", "labels = escalate")],
    );
    w.site(
        "engineering",
        &[("support", "ENG=SUP", "labels = escalate")],
    );
    w
}

/// A pair that ran a ferry from before format 2 (held at format 1), with ten
/// issues escalated from support and one from engineering, synced both ways.
fn pair_on_format_1() -> (World, Vec<String>, String) {
    let w = World::new();
    for (site, peer, projects) in [
        ("support", "engineering", "SUP=ENG"),
        ("engineering", "support", "ENG=SUP"),
    ] {
        std::fs::create_dir_all(w.path(site)).unwrap();
        ok_at_format_1(&w, site, &["init", "--site", site, "--tracker", "local"]);
        ok_at_format_1(
            &w,
            site,
            &[
                "connection",
                "add",
                peer,
                "--channel",
                "../exchange.git",
                "--project",
                projects,
                "--query",
                "labels = escalate",
            ],
        );
    }
    w.trust("support", "engineering");
    w.trust("engineering", "support");
    // Ten issues, so a bucket holds several replicas and several buckets exist.
    let keys = (0..10)
        .map(|n| w.escalate(&format!("Printer {n} on fire")))
        .collect();
    ok_at_format_1(&w, "support", &["sync"]);
    let theirs = w.new_issue(
        "engineering",
        &[
            "--project",
            "ENG",
            "--summary",
            "Fan noise",
            "--label",
            "escalate",
        ],
    );
    ok_at_format_1(&w, "engineering", &["sync"]);
    ok_at_format_1(&w, "support", &["sync"]);
    let repo = w.path("exchange.git");
    for branch in ["support/engineering", "engineering/support"] {
        assert!(flat(&replica_paths(&repo, branch)), "{branch}");
        assert_eq!(announced(&repo, branch), "1");
    }
    (w, keys, theirs)
}

#[test]
fn a_pair_on_different_formats_keeps_syncing_and_upgrades_in_one_commit_per_branch() {
    let (w, keys, theirs) = pair_on_format_1();
    let repo = w.path("exchange.git");

    // Support upgrades first: it announces format 2 at once, in a commit of
    // its own, and keeps writing format 1 for engineering.
    let before = w.commits("support/engineering");
    w.ok("support", &["sync"]);
    assert_eq!(w.commits("support/engineering"), before + 1);
    assert_eq!(announced(&repo, "support/engineering"), "2");
    assert!(flat(&replica_paths(&repo, "support/engineering")));
    let doctor = w.ferry("support", &["doctor"]);
    assert!(
        doctor
            .stdout
            .contains("engineering announces that it reads exchange format 1 only"),
        "{}",
        doctor.stdout
    );
    assert!(doctor.stdout.contains("upgrade ferry at engineering"));

    // Support keeps writing format 1 for it, in both directions.
    w.ok(
        "support",
        &["tracker", "comment", &keys[0], "still smoking"],
    );
    w.ok("support", &["sync"]);
    assert!(flat(&replica_paths(&repo, "support/engineering")));
    ok_at_format_1(&w, "engineering", &["sync"]);
    let printer_0 = key_of(&w, "engineering", "Printer 0 on fire");
    assert_eq!(comments(&w, "engineering", &printer_0), ["still smoking"]);
    let copy_of_theirs = key_of(&w, "support", "Fan noise");
    // Nothing moved while engineering announces format 1.
    assert!(flat(&replica_paths(&repo, "support/engineering")));

    // Engineering upgrades: its next run moves its branch in one commit.
    let before = w.commits("engineering/support");
    w.ok("engineering", &["sync"]);
    let paths = replica_paths(&repo, "engineering/support");
    assert!(fanned_out(&paths), "{paths:?}");
    assert!(paths.iter().any(|p| p.starts_with("issues/ENG/")));
    assert_eq!(w.commits("engineering/support"), before + 1);
    let message = git(&repo, &["log", "-1", "--format=%s", "engineering/support"]);
    assert!(message.contains("exchange format 2"), "{message}");
    assert!(message.contains("moved to issues/<project>/<nn>/<mm>/<id>.yaml"));

    // Support imports a move, not a change, then moves its own branch.
    let out = w.ok("support", &["sync"]);
    assert!(!out.contains("updated"), "{out}");
    assert!(fanned_out(&replica_paths(&repo, "support/engineering")));
    // Every replica moved with its bytes: the trees differ, the blobs do not.
    let blobs = |branch: &str| {
        let mut blobs: Vec<String> = git(&repo, &["ls-tree", "-r", branch])
            .lines()
            .filter(|l| l.contains("\tissues/"))
            .map(|l| l.split_whitespace().nth(2).unwrap().to_string())
            .collect();
        blobs.sort();
        blobs
    };
    assert_eq!(blobs("support/engineering"), blobs("support/engineering~1"));

    // Changes keep flowing both ways in the new layout, with no duplicate.
    w.ok("engineering", &["sync"]);
    w.ok(
        "engineering",
        &["tracker", "comment", &printer_0, "fixed the fan"],
    );
    w.ok("engineering", &["sync"]);
    w.ok("support", &["sync"]);
    assert_eq!(
        comments(&w, "support", &keys[0]),
        ["still smoking", "fixed the fan"]
    );
    w.ok("support", &["tracker", "comment", &copy_of_theirs, "seen"]);
    w.ok("support", &["sync"]);
    w.ok("engineering", &["sync"]);
    assert_eq!(comments(&w, "engineering", &theirs), ["seen"]);
    assert_eq!(w.list("support").len(), 11);
    assert_eq!(w.list("engineering").len(), 11);
    let doctor = w.ok("support", &["doctor"]);
    assert!(
        doctor.contains("this site writes exchange format 2 for engineering, which reads 2"),
        "{doctor}"
    );

    // Engineering goes back to the older ferry: support follows it back.
    ok_at_format_1(&w, "engineering", &["sync"]);
    assert!(flat(&replica_paths(&repo, "engineering/support")));
    w.ok("support", &["sync"]);
    assert!(flat(&replica_paths(&repo, "support/engineering")));
    w.ok("support", &["tracker", "comment", &keys[1], "again"]);
    w.ok("support", &["sync"]);
    ok_at_format_1(&w, "engineering", &["sync"]);
    let printer_1 = key_of(&w, "engineering", "Printer 1 on fire");
    assert_eq!(comments(&w, "engineering", &printer_1), ["again"]);
    git(&repo, &["fsck", "--strict"]);
}

#[test]
fn a_new_pair_writes_the_newest_format_from_the_first_commit() {
    let w = pair();
    let key = w.escalate("Printer on fire");
    w.ok("support", &["sync"]);
    let repo = w.path("exchange.git");
    assert_eq!(
        replica_paths(&repo, "support/engineering"),
        ["issues/SUP/01/00/1.yaml"]
    );
    w.ok("engineering", &["sync"]);
    w.ok("engineering", &["tracker", "comment", "ENG-1", "on it"]);
    w.ok("engineering", &["sync"]);
    assert_eq!(
        replica_paths(&repo, "engineering/support"),
        ["issues/ENG/01/00/1.yaml"]
    );
    w.ok("support", &["sync"]);
    assert_eq!(comments(&w, "support", &key), ["on it"]);
    // No move was needed on either side.
    for branch in ["support/engineering", "engineering/support"] {
        let log = git(&repo, &["log", "--format=%s", branch]);
        assert!(!log.contains("exchange format"), "{log}");
    }
}

#[test]
fn bundles_carry_the_upgrade_and_a_kill_during_it_loses_nothing() {
    let w = World::new();
    for (site, peer, projects) in [
        ("support", "engineering", "SUP=ENG"),
        ("engineering", "support", "ENG=SUP"),
    ] {
        std::fs::create_dir_all(w.path(site)).unwrap();
        let (outbox, inbox) = if site == "support" {
            ("usb/to-eng", "usb/to-sup")
        } else {
            ("usb/to-sup", "usb/to-eng")
        };
        std::fs::create_dir_all(w.path(outbox)).unwrap();
        ok_at_format_1(&w, site, &["init", "--site", site, "--tracker", "local"]);
        ok_at_format_1(
            &w,
            site,
            &[
                "connection",
                "add",
                peer,
                "--outbox",
                &format!("../{outbox}"),
                "--inbox",
                &format!("../{inbox}"),
                "--project",
                projects,
                "--query",
                "labels = escalate",
            ],
        );
    }
    w.trust("support", "engineering");
    w.trust("engineering", "support");
    let key = w.escalate("Printer on fire");
    ok_at_format_1(&w, "support", &["sync"]);
    ok_at_format_1(&w, "engineering", &["sync"]);
    w.ok("engineering", &["tracker", "comment", "ENG-1", "on it"]);
    ok_at_format_1(&w, "engineering", &["sync"]);
    ok_at_format_1(&w, "support", &["sync"]);
    assert_eq!(comments(&w, "support", &key), ["on it"]);
    let clone = w.path("support/.ferry/exchange.git");
    assert!(flat(&replica_paths(&clone, "support/engineering")));

    // Both upgrade. Engineering's run dies right after its announcement
    // commit, and again, later, right after its move commit.
    w.killed_at("engineering", &["sync"], "after-format-commit");
    w.ok("engineering", &["sync"]);
    w.ok("support", &["sync"]);
    w.killed_at("engineering", &["sync"], "after-format-commit");
    w.ok("engineering", &["sync"]);
    w.ok("support", &["sync"]);
    assert!(fanned_out(&replica_paths(&clone, "engineering/support")));
    assert!(fanned_out(&replica_paths(&clone, "support/engineering")));
    w.ok("support", &["tracker", "comment", &key, "thanks"]);
    w.ok("support", &["sync"]);
    w.ok("engineering", &["sync"]);
    assert_eq!(comments(&w, "engineering", "ENG-1"), ["on it", "thanks"]);
    assert_eq!(w.list("engineering").len(), 1);
    assert_eq!(w.list("support").len(), 1);
}

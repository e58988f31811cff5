//! Links between issues and the parent/sub-task hierarchy, between two sites,
//! over both channel kinds (a shared repository and bundle files): a relation
//! travels once both issues are shared, waits at the importer for an issue that
//! has not arrived, whichever end comes first, across runs and across a kill,
//! and unlinking on one side unlinks on the other.
//!
//! Relations are replica keys of exchange format 2, which a peer on format 1
//! refuses: the last test pairs a site with a peer held at format 1
//! (`FERRY_EXCHANGE_FORMAT=1`) and sees none sent.

use std::process::Command;

use super::World;

/// How the two sites exchange commits.
#[derive(Debug, Clone, Copy)]
pub(super) enum Channel {
    /// A bare repository both reach (`exchange.git` in the world).
    Repo,
    /// Bundle files through an outbox and an inbox per direction.
    Bundles,
}

const TO_ENG: &str = "usb/support-to-engineering";
const TO_SUP: &str = "usb/engineering-to-support";

/// Creates site `name` with one connection, to `peer`, over `channel`, mapping
/// `projects` (LOCAL=REMOTE) and sharing what `query` selects; the signing keys
/// are exchanged once both sites exist.
pub(super) fn add_site(
    w: &World,
    name: &str,
    peer: &str,
    channel: Channel,
    projects: &[&str],
    query: &str,
) {
    std::fs::create_dir_all(w.path(name)).unwrap();
    w.ok(name, &["init", "--site", name, "--tracker", "local"]);
    let mut args = vec!["connection".to_string(), "add".into(), peer.into()];
    match channel {
        Channel::Repo => args.extend(["--channel".into(), "../exchange.git".into()]),
        Channel::Bundles => {
            let (outbox, inbox) = if name == "support" {
                (TO_ENG, TO_SUP)
            } else {
                (TO_SUP, TO_ENG)
            };
            for dir in [outbox, inbox] {
                std::fs::create_dir_all(w.path(dir)).unwrap();
            }
            args.extend([
                "--outbox".into(),
                format!("../{outbox}"),
                "--inbox".into(),
                format!("../{inbox}"),
            ]);
        }
    }
    for projects in projects {
        args.extend(["--project".into(), projects.to_string()]);
    }
    args.extend(["--query".into(), query.into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    w.ok(name, &args);
    if w.path(peer).join("ferry.yaml").exists() {
        w.trust(name, peer);
        w.trust(peer, name);
    }
}

/// support (projects SUP and OPS) ↔ engineering (ENG only, for now: ENGOPS
/// takes OPS once [`map_ops`] maps it), each
/// sharing what is labelled `escalate`.
pub(super) fn pair(channel: Channel) -> World {
    let w = World::new();
    add_site(
        &w,
        "support",
        "engineering",
        channel,
        &["SUP=ENG", "OPS=ENGOPS"],
        "labels = escalate",
    );
    add_site(
        &w,
        "engineering",
        "support",
        channel,
        &["ENG=SUP"],
        "labels = escalate",
    );
    w
}

/// Engineering maps support's OPS project too, into its ENGOPS.
fn map_ops(w: &World) {
    let file = w.path("engineering/connections/support.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let mapped = text.replace("  ENG: SUP\n", "  ENG: SUP\n  ENGOPS: OPS\n");
    assert_ne!(mapped, text);
    std::fs::write(&file, mapped).unwrap();
}

/// support syncs, then engineering: what support changed reaches engineering.
fn over(w: &World) -> String {
    w.ok("support", &["sync"]);
    w.ok("engineering", &["sync"])
}

/// Two rounds both ways: every echo has come back and settled.
fn settle(w: &World) {
    for _ in 0..2 {
        w.ok("support", &["sync"]);
        w.ok("engineering", &["sync"]);
    }
}

/// The links of an issue, each as a sentence: `ENG-1 Blocks ENG-2`.
fn links(w: &World, site: &str, key: &str) -> Vec<String> {
    let issue = w.show(site, key);
    let Some(links) = issue["links"].as_array() else {
        return Vec::new();
    };
    links
        .iter()
        .map(|l| {
            let other = l["issue"]["key"].as_str().unwrap();
            let link_type = l["type"].as_str().unwrap();
            match l["direction"].as_str().unwrap() {
                "outward" => format!("{key} {link_type} {other}"),
                _ => format!("{other} {link_type} {key}"),
            }
        })
        .collect()
}

/// The key of an issue's parent.
fn parent(w: &World, site: &str, key: &str) -> Option<String> {
    w.show(site, key)["parent"]["key"]
        .as_str()
        .map(str::to_string)
}

/// The keys of a site's issues, in order.
pub(super) fn keys(w: &World, site: &str) -> Vec<String> {
    w.list(site)
        .iter()
        .map(|i| i["key"].as_str().unwrap().to_string())
        .collect()
}

/// Runs git in a site's exchange clone (whatever the channel, it holds the
/// site's own branch).
pub(super) fn site_git(w: &World, site: &str, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(w.path(&format!("{site}/.ferry/exchange.git")))
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The replica named `path` (`issues/<project>/<id>.yaml`) on support's
/// branch for engineering, in whichever layout the branch has.
fn sent(w: &World, path: &str) -> String {
    let branch = "refs/heads/support/engineering";
    let files = site_git(w, "support", &["ls-tree", "-r", "--name-only", branch]);
    let (dir, file) = path.rsplit_once('/').unwrap();
    let stored = files
        .lines()
        .find(|stored| {
            stored.ends_with(&format!("/{file}"))
                && stored.starts_with(&format!("{dir}/"))
                && (stored.len() == path.len() || stored.len() == path.len() + 6)
        })
        .unwrap_or_else(|| panic!("no {path} on {branch}:\n{files}"));
    site_git(w, "support", &["show", &format!("{branch}:{stored}")])
}

/// Commits on both sites' branches.
fn commits(w: &World) -> (String, String) {
    (
        site_git(
            w,
            "support",
            &["rev-list", "--count", "refs/heads/support/engineering"],
        ),
        site_git(
            w,
            "engineering",
            &["rev-list", "--count", "refs/heads/engineering/support"],
        ),
    )
}

fn escalated(w: &World, project: &str, summary: &str, more: &[&str]) -> String {
    let mut args = vec![
        "--project",
        project,
        "--summary",
        summary,
        "--label",
        "escalate",
    ];
    args.extend_from_slice(more);
    w.new_issue("support", &args)
}

/// A link to an issue the peer does not have is not sent; once that issue is
/// shared the link travels (the issue that was already shared is sent again to
/// say so), is made once at the peer however often it echoes, and unlinking
/// on either side unlinks on the other, even before the peer's echo of the
/// link is back.
fn a_link_travels_once_both_issues_are_shared(channel: Channel) {
    let w = pair(channel);
    assert_eq!(escalated(&w, "SUP", "Printer on fire", &[]), "SUP-1");
    let internal = ["--project", "SUP", "--summary", "Driver crash"];
    assert_eq!(w.new_issue("support", &internal), "SUP-2");
    w.ok("support", &["tracker", "link", "SUP-1", "Blocks", "SUP-2"]);
    over(&w);
    assert_eq!(keys(&w, "engineering"), ["ENG-1"]);
    assert!(links(&w, "engineering", "ENG-1").is_empty());
    let replica = sent(&w, "issues/SUP/1.yaml");
    assert!(replica.contains("summary: Printer on fire"), "{replica}");
    assert!(!replica.contains("links:"), "{replica}");

    w.ok(
        "support",
        &["tracker", "edit", "SUP-2", "--add-label", "escalate"],
    );
    let out = over(&w);
    assert!(out.contains("links and parents: 1 made"), "{out}");
    assert_eq!(links(&w, "engineering", "ENG-1"), ["ENG-1 Blocks ENG-2"]);
    assert_eq!(links(&w, "engineering", "ENG-2"), ["ENG-1 Blocks ENG-2"]);
    let replica = sent(&w, "issues/SUP/1.yaml");
    assert!(
        replica.contains(
            "links:\n- type: Blocks\n  direction: outward\n  issue:\n    site: support\n    id: '2'\n"
        ),
        "{replica}"
    );
    settle(&w);
    assert_eq!(links(&w, "support", "SUP-1"), ["SUP-1 Blocks SUP-2"]);
    assert_eq!(links(&w, "engineering", "ENG-1"), ["ENG-1 Blocks ENG-2"]);
    let before = commits(&w);
    settle(&w);
    assert_eq!(commits(&w), before, "the echo settled");

    // Unlinked at engineering: gone at support too.
    w.ok(
        "engineering",
        &["tracker", "unlink", "ENG-1", "Blocks", "ENG-2"],
    );
    settle(&w);
    assert!(links(&w, "support", "SUP-1").is_empty());
    assert!(links(&w, "engineering", "ENG-1").is_empty());
    // Linked again at support, the other way round: there again.
    w.ok("support", &["tracker", "link", "SUP-2", "Relates", "SUP-1"]);
    settle(&w);
    assert_eq!(links(&w, "engineering", "ENG-1"), ["ENG-2 Relates ENG-1"]);
    // Unlinked at support: gone at engineering.
    w.ok(
        "support",
        &["tracker", "unlink", "SUP-1", "Relates", "SUP-2"],
    );
    settle(&w);
    assert!(links(&w, "engineering", "ENG-2").is_empty());
    assert!(links(&w, "support", "SUP-2").is_empty());
    // Unlinked at support before engineering's replicas, which echo the
    // link support told it of, are back: the echo does not make it again.
    w.ok(
        "support",
        &["tracker", "link", "SUP-1", "Duplicate", "SUP-2"],
    );
    over(&w);
    assert_eq!(links(&w, "engineering", "ENG-1"), ["ENG-1 Duplicate ENG-2"]);
    w.ok(
        "support",
        &["tracker", "unlink", "SUP-1", "Duplicate", "SUP-2"],
    );
    settle(&w);
    assert!(links(&w, "support", "SUP-1").is_empty());
    assert!(links(&w, "engineering", "ENG-1").is_empty());
}

#[test]
fn a_link_travels_once_both_issues_are_shared_over_a_repo() {
    a_link_travels_once_both_issues_are_shared(Channel::Repo);
}

#[test]
fn a_link_travels_once_both_issues_are_shared_over_bundles() {
    a_link_travels_once_both_issues_are_shared(Channel::Bundles);
}

/// A sub-task names its parent; the parent does not name its sub-tasks. So a
/// sub-task that arrives first waits for its parent, in the same run (its
/// replica comes first) or a later one (the parent's project is not mapped
/// until the operator maps it), and one that arrives after its parent is
/// placed at once.
fn a_parent_is_set_whichever_end_arrives_first(channel: Channel) {
    let w = pair(channel);
    escalated(&w, "SUP", "Epic one", &[]);
    escalated(&w, "SUP", "After its parent", &["--parent", "SUP-1"]);
    escalated(&w, "SUP", "Before its parent", &[]);
    escalated(&w, "SUP", "Epic two", &[]);
    w.ok(
        "support",
        &["tracker", "edit", "SUP-3", "--parent", "SUP-4"],
    );
    assert_eq!(escalated(&w, "OPS", "Print server", &[]), "OPS-1");
    escalated(&w, "SUP", "Under the print server", &["--parent", "OPS-1"]);
    w.ok("support", &["sync"]);
    assert!(sent(&w, "issues/SUP/3.yaml").contains("parent:\n  site: support\n  id: '4'\n"));

    // OPS is not mapped at engineering: its issue fails, its sub-task waits.
    let run = w.ferry("engineering", &["sync"]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("links and parents: 2 made, 1 waiting for the other issue to arrive"),
        "{}",
        run.stdout
    );
    assert_eq!(
        keys(&w, "engineering"),
        ["ENG-1", "ENG-2", "ENG-3", "ENG-4", "ENG-5"]
    );
    assert_eq!(parent(&w, "engineering", "ENG-2").as_deref(), Some("ENG-1"));
    assert_eq!(parent(&w, "engineering", "ENG-3").as_deref(), Some("ENG-4"));
    assert_eq!(parent(&w, "engineering", "ENG-5"), None);
    let status = w.ok("engineering", &["status"]);
    assert!(
        status.contains("relations 1 link or parent is waiting for the other issue to arrive"),
        "{status}"
    );
    let subtasks = &w.show("engineering", "ENG-4")["subtasks"];
    assert_eq!(subtasks[0]["key"], "ENG-3");

    map_ops(&w);
    let out = w.ok("engineering", &["sync"]);
    assert!(out.contains("links and parents: 1 made"), "{out}");
    assert_eq!(
        parent(&w, "engineering", "ENG-5").as_deref(),
        Some("ENGOPS-1")
    );
    let status: serde_json::Value =
        serde_json::from_str(&w.ok("engineering", &["status", "--json"])).unwrap();
    assert_eq!(status[0]["waiting_relations"], 0);
    settle(&w);
    assert_eq!(parent(&w, "support", "SUP-5").as_deref(), Some("OPS-1"));
    assert_eq!(parent(&w, "support", "SUP-3").as_deref(), Some("SUP-4"));

    // Made an issue of its own at support: the same at engineering.
    w.ok("support", &["tracker", "edit", "SUP-2", "--parent", ""]);
    settle(&w);
    assert_eq!(parent(&w, "engineering", "ENG-2"), None);
    assert_eq!(parent(&w, "engineering", "ENG-3").as_deref(), Some("ENG-4"));
}

#[test]
fn a_parent_is_set_whichever_end_arrives_first_over_a_repo() {
    a_parent_is_set_whichever_end_arrives_first(Channel::Repo);
}

#[test]
fn a_parent_is_set_whichever_end_arrives_first_over_bundles() {
    a_parent_is_set_whichever_end_arrives_first(Channel::Bundles);
}

/// A parent is its issue's owner's to set: a sub-task engineering makes under
/// a copy of support's issue reaches support under the original; support
/// moving its sub-task elsewhere moves the copy; engineering moving a copy
/// keeps that place at engineering only; and when both move the same sub-task
/// at once, support's move wins at both and the sites fall quiet, instead of
/// swapping the two parents for ever.
#[test]
fn the_parent_is_the_owner_s_to_set() {
    let w = pair(Channel::Repo);
    escalated(&w, "SUP", "Epic one", &[]);
    escalated(&w, "SUP", "Epic two", &[]);
    escalated(&w, "SUP", "Task", &["--parent", "SUP-1"]);
    settle(&w);
    assert_eq!(parent(&w, "engineering", "ENG-3").as_deref(), Some("ENG-1"));

    let mine = [
        "--project",
        "ENG",
        "--summary",
        "Engineering's part",
        "--label",
        "escalate",
        "--parent",
        "ENG-1",
    ];
    assert_eq!(w.new_issue("engineering", &mine), "ENG-4");
    settle(&w);
    assert_eq!(parent(&w, "support", "SUP-4").as_deref(), Some("SUP-1"));

    // Engineering moves its copy: only there.
    w.ok(
        "engineering",
        &["tracker", "edit", "ENG-3", "--parent", "ENG-2"],
    );
    settle(&w);
    assert_eq!(parent(&w, "engineering", "ENG-3").as_deref(), Some("ENG-2"));
    assert_eq!(parent(&w, "support", "SUP-3").as_deref(), Some("SUP-1"));

    // Both move it before either hears of the other: support's move wins.
    w.ok(
        "support",
        &["tracker", "edit", "SUP-3", "--parent", "SUP-2"],
    );
    w.ok(
        "engineering",
        &["tracker", "edit", "ENG-3", "--parent", "ENG-1"],
    );
    for site in ["support", "engineering"] {
        w.ok(site, &["export"]);
        w.ok(site, &["push"]);
    }
    settle(&w);
    assert_eq!(parent(&w, "support", "SUP-3").as_deref(), Some("SUP-2"));
    assert_eq!(parent(&w, "engineering", "ENG-3").as_deref(), Some("ENG-2"));
    let before = commits(&w);
    settle(&w);
    assert_eq!(commits(&w), before, "the parents settled");
}

/// Two owners each placing its issue under the other's, before either hears of
/// the other, make a cycle: each tracker refuses the half that would close it,
/// which waits with an error naming it, until one site moves its issue out.
#[test]
fn crossed_hierarchies_wait_until_one_side_gives_way() {
    let w = pair(Channel::Repo);
    escalated(&w, "SUP", "Support's", &[]);
    let theirs = [
        "--project",
        "ENG",
        "--summary",
        "Engineering's",
        "--label",
        "escalate",
    ];
    assert_eq!(w.new_issue("engineering", &theirs), "ENG-1");
    settle(&w);
    // SUP-2 is engineering's ENG-1 at support; ENG-2 is support's SUP-1.
    w.ok(
        "support",
        &["tracker", "edit", "SUP-1", "--parent", "SUP-2"],
    );
    w.ok(
        "engineering",
        &["tracker", "edit", "ENG-1", "--parent", "ENG-2"],
    );
    for site in ["support", "engineering"] {
        w.ok(site, &["export"]);
        w.ok(site, &["push"]);
    }
    let run = w.ferry("support", &["sync"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stdout.contains("could not be set, and waits")
            && run.stdout.contains("cannot be one of its own sub-tasks"),
        "{}",
        run.stdout
    );
    assert_eq!(parent(&w, "support", "SUP-1").as_deref(), Some("SUP-2"));
    assert_eq!(parent(&w, "support", "SUP-2"), None);

    // Support gives way: engineering's placement reaches it.
    w.ok("support", &["tracker", "edit", "SUP-1", "--parent", ""]);
    w.ok("support", &["sync"]);
    w.ok("engineering", &["sync"]);
    w.ok("support", &["sync"]);
    assert_eq!(parent(&w, "support", "SUP-2").as_deref(), Some("SUP-1"));
    assert_eq!(parent(&w, "engineering", "ENG-1").as_deref(), Some("ENG-2"));
    assert_eq!(parent(&w, "engineering", "ENG-2"), None);
    settle(&w);
    let errors = w.ok("support", &["errors"]);
    assert!(!errors.contains("sub-tasks"), "{errors}");
}

/// A link waits across runs for its other end; the runs that bring it are
/// killed, once just after the other issue was created (before the ledger
/// knew) and once just after the link was made (before the ledger knew): the
/// next run makes neither a second issue nor a second link, and records the
/// link, so that unlinking at support still reaches it.
fn a_waiting_link_survives_kills(channel: Channel) {
    let w = pair(channel);
    escalated(&w, "SUP", "Printer on fire", &[]);
    escalated(&w, "OPS", "Print server", &[]);
    w.ok("support", &["tracker", "link", "SUP-1", "Blocks", "OPS-1"]);
    w.ok("support", &["sync"]);
    let run = w.ferry("engineering", &["sync"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(links(&w, "engineering", "ENG-1").is_empty());

    map_ops(&w);
    w.killed_at("engineering", &["sync"], "after-create");
    w.killed_at("engineering", &["sync"], "after-relate");
    w.ok("engineering", &["sync"]);
    assert_eq!(keys(&w, "engineering"), ["ENG-1", "ENGOPS-1"]);
    assert_eq!(links(&w, "engineering", "ENG-1"), ["ENG-1 Blocks ENGOPS-1"]);
    settle(&w);
    assert_eq!(links(&w, "engineering", "ENG-1"), ["ENG-1 Blocks ENGOPS-1"]);
    assert_eq!(links(&w, "support", "SUP-1"), ["SUP-1 Blocks OPS-1"]);

    w.ok(
        "support",
        &["tracker", "unlink", "SUP-1", "Blocks", "OPS-1"],
    );
    settle(&w);
    assert!(links(&w, "engineering", "ENGOPS-1").is_empty());
}

#[test]
fn a_waiting_link_survives_kills_over_a_repo() {
    a_waiting_link_survives_kills(Channel::Repo);
}

#[test]
fn a_waiting_link_survives_kills_over_bundles() {
    a_waiting_link_survives_kills(Channel::Bundles);
}

/// Without the interim switch (a peer on the first exchange format), no
/// relation leaves: the replicas keep the bytes they had before relations.
#[test]
fn the_gate_closed_sends_no_relations() {
    let w = World::new();
    add_site(
        &w,
        "support",
        "engineering",
        Channel::Repo,
        &["SUP=ENG"],
        "labels = escalate",
    );
    add_site(
        &w,
        "engineering",
        "support",
        Channel::Repo,
        &["ENG=SUP"],
        "labels = escalate",
    );
    // Engineering runs a ferry that reads only format 1, and says so first.
    let format_1 = |args: &[&str]| {
        let out = w
            .command("engineering", args)
            .env("FERRY_EXCHANGE_FORMAT", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    w.new_issue(
        "engineering",
        &[
            "--project",
            "ENG",
            "--summary",
            "Fan",
            "--label",
            "escalate",
        ],
    );
    format_1(&["sync"]);
    let settle = || {
        for _ in 0..2 {
            w.ok("support", &["sync"]);
            format_1(&["sync"]);
        }
    };
    escalated(&w, "SUP", "Printer on fire", &[]);
    escalated(&w, "SUP", "Driver crash", &["--parent", "SUP-1"]);
    w.ok("support", &["tracker", "link", "SUP-1", "Blocks", "SUP-2"]);
    settle();
    for path in ["issues/SUP/1.yaml", "issues/SUP/2.yaml"] {
        let replica = sent(&w, path);
        assert!(replica.contains("summary:"), "{replica}");
        assert!(
            !replica.contains("links:") && !replica.contains("parent:"),
            "{replica}"
        );
    }
    assert!(links(&w, "engineering", "ENG-2").is_empty());
    assert_eq!(parent(&w, "engineering", "ENG-3"), None);
}

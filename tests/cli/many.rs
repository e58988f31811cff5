//! One busy site with twenty connections, fifteen through one shared repository
//! and five over bundle folders: each peer gets exactly what its query selects,
//! and a sync with nothing new writes nothing anywhere.

use super::{World, git};

const PEERS: usize = 20;
/// Peers above this number use bundle folders instead of the shared repository.
const LAST_ON_THE_REPOSITORY: usize = 15;

fn peer(i: usize) -> String {
    format!("eng{i:02}")
}

#[test]
fn twenty_connections_through_one_repository_and_bundle_folders() {
    let w = World::new();
    let projects: Vec<(String, String, String)> = (1..=PEERS)
        .map(|i| {
            (
                peer(i),
                format!("SUP=E{i:02}"),
                format!("labels = team{i:02}"),
            )
        })
        .collect();
    let connections: Vec<(&str, &str, &str)> = projects
        .iter()
        .map(|(p, m, q)| (p.as_str(), m.as_str(), q.as_str()))
        .collect();
    w.site("support", &connections);
    for i in 1..=PEERS {
        let mapping = format!("E{i:02}=SUP");
        w.site(&peer(i), &[("support", mapping.as_str(), "labels = back")]);
    }
    for i in LAST_ON_THE_REPOSITORY + 1..=PEERS {
        let (to, from) = (
            format!("usb/to-{}", peer(i)),
            format!("usb/from-{}", peer(i)),
        );
        for dir in [&to, &from] {
            std::fs::create_dir_all(w.path(dir)).unwrap();
        }
        let ends = [
            (
                "support".to_string(),
                peer(i),
                &to,
                &from,
                format!("SUP=E{i:02}"),
                format!("labels = team{i:02}"),
            ),
            (
                peer(i),
                "support".to_string(),
                &from,
                &to,
                format!("E{i:02}=SUP"),
                "labels = back".to_string(),
            ),
        ];
        for (site, other, outbox, inbox, mapping, query) in ends {
            w.ok(
                &site,
                &[
                    "connection",
                    "add",
                    &other,
                    "--force",
                    "--outbox",
                    &format!("../{outbox}"),
                    "--inbox",
                    &format!("../{inbox}"),
                    "--project",
                    &mapping,
                    "--query",
                    &query,
                ],
            );
        }
    }
    // Two issues for each team.
    for i in 1..=PEERS {
        for n in 1..=2 {
            let label = format!("team{i:02}");
            let summary = format!("For team {i}, #{n}");
            w.new_issue(
                "support",
                &["--project", "SUP", "--summary", &summary, "--label", &label],
            );
        }
    }
    let out = w.ok("support", &["sync"]);
    assert_eq!(out.matches("push   eng").count(), PEERS, "{out}");
    let bundles = |w: &World| -> usize {
        walkdir::WalkDir::new(w.path("usb"))
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .count()
    };
    assert_eq!(
        bundles(&w),
        PEERS - LAST_ON_THE_REPOSITORY,
        "one bundle per bundle peer"
    );
    for i in 1..=PEERS {
        w.ok(&peer(i), &["sync"]);
        let issues = w.list(&peer(i));
        assert_eq!(issues.len(), 2, "{} got {issues:?}", peer(i));
        assert!(
            issues.iter().all(|issue| issue["summary"]
                .as_str()
                .unwrap()
                .starts_with(&format!("For team {i},"))),
            "{} got another team's issues: {issues:?}",
            peer(i)
        );
    }

    // The peers' copies come back once (they are linked, so they are shared);
    // after that, nothing new anywhere: no commit, on any branch.
    w.ok("support", &["sync"]);
    let before = (w.exchange_objects(), bundles(&w));
    let quiet = w.ok("support", &["sync"]);
    assert_eq!(quiet.matches("nothing new").count(), PEERS, "{quiet}");
    assert_eq!(
        quiet.matches("no change, no commit").count(),
        PEERS,
        "{quiet}"
    );
    assert_eq!(
        (w.exchange_objects(), bundles(&w)),
        before,
        "a no-op sync wrote to the repository or a bundle folder"
    );
    let status: serde_json::Value =
        serde_json::from_str(&w.ok("support", &["status", "--json"])).unwrap();
    assert_eq!(status.as_array().unwrap().len(), PEERS);
}

/// The export cursor is at-or-after (a change in the same second as the last one
/// exported must not be missed), so the issues of the newest second are read
/// again; once the tracker's clock has left that second, the cursor moves past it
/// and a quiet run reads no issue at all.
#[test]
fn a_quiet_run_reads_no_issue_once_the_second_is_over() {
    let mut w = World::escalating_pair();
    w.now = Some("2026-11-23T10:00:00Z");
    w.escalate("Printer on fire");
    let exported = |w: &World| -> String {
        let run = w.ferry("support", &["-v", "sync"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        run.stderr
            .lines()
            .find(|l| l.contains(" export "))
            .unwrap_or_else(|| panic!("no export line in {}", run.stderr))
            .to_string()
    };
    // Same second as the change: read again next time.
    let first = exported(&w);
    assert!(first.contains("issues=1"), "{first}");
    w.now = Some("2026-11-23T10:00:00Z");
    // An edit in that same second is not missed.
    w.ok(
        "support",
        &[
            "tracker",
            "edit",
            "SUP-1",
            "--summary",
            "Printer still on fire",
        ],
    );
    assert!(exported(&w).contains("issues=1"));
    let replica = super::git(
        &w.path("exchange.git"),
        &["show", "support/engineering:issues/SUP/01/00/1.yaml"],
    );
    assert!(replica.contains("Printer still on fire"), "{replica}");
    // The clock moved on: one more read of that second, then none.
    w.now = Some("2026-11-23T10:05:00Z");
    assert!(exported(&w).contains("issues=1"));
    w.now = Some("2026-11-23T10:10:00Z");
    assert!(exported(&w).contains("issues=0"));
}

/// An export of more issues than it holds at once (a page is 1 000) reads them a
/// page at a time and runs the rule on every core; the commit must be what one
/// issue at a time gives. `ferry rules test` is the oracle: it renders each
/// replica of the last commit again, one by one, and compares.
#[test]
fn an_export_larger_than_a_page_is_the_sum_of_its_issues() {
    let mut w = World::new();
    w.now = Some("2026-11-24T01:00:00Z");
    std::fs::create_dir_all(w.path("big")).unwrap();
    w.ok("big", &["init", "--site", "big", "--tracker", "local"]);
    let mut add = vec!["connection", "add", "peer", "--channel", "../exchange.git"];
    let projects = ["P1=P1", "P2=P2", "P3=P3"];
    for pair in &projects {
        add.extend(["--project", pair]);
    }
    w.ok("big", &add);
    w.ok(
        "big",
        &[
            "tracker",
            "generate",
            "2500",
            "--project",
            "P",
            "--projects",
            "3",
            "--comments",
            "2",
        ],
    );
    w.ok("big", &["export"]);

    let exchange = w.path("big/.ferry/exchange.git");
    let files = git(&exchange, &["ls-tree", "-r", "--name-only", "big/peer"]);
    let replicas = files.lines().filter(|p| p.starts_with("issues/")).count();
    assert_eq!(replicas, 2500, "{files}");
    git(&exchange, &["fsck", "--full", "--strict", "--no-dangling"]);
    // ferry indexes the pack it writes itself: byte for byte what git makes.
    let packs = exchange.join("objects/pack");
    let pack = std::fs::read_dir(&packs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "pack"))
        .expect("the export wrote a pack");
    let by_git = w.path("by-git.idx");
    git(
        &packs,
        &[
            "index-pack",
            "-o",
            by_git.to_str().unwrap(),
            pack.to_str().unwrap(),
        ],
    );
    assert!(
        std::fs::read(pack.with_extension("idx")).unwrap() == std::fs::read(&by_git).unwrap(),
        "the index ferry wrote differs from git index-pack's"
    );

    let replay = w.ok("big", &["rules", "test"]);
    assert!(
        replay.contains("2500 issues replayed"),
        "{}",
        &replay[..replay.len().min(2000)]
    );
    let differing: Vec<&str> = replay
        .lines()
        .filter(|l| l.starts_with("  ") && !l.ends_with(": no difference"))
        .collect();
    assert!(differing.is_empty(), "{differing:?}");

    // Read again (same second: the cursor is at-or-after), all unchanged.
    let head = git(&exchange, &["rev-parse", "big/peer"]);
    w.ok("big", &["export"]);
    assert_eq!(git(&exchange, &["rev-parse", "big/peer"]), head);

    w.ok("big", &["tracker", "edit", "P2-400", "--summary", "Edited"]);
    w.ok("big", &["export"]);
    let changed = git(&exchange, &["diff", "--name-only", head.trim(), "big/peer"]);
    let changed: Vec<&str> = changed.lines().collect();
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert!(changed[0].starts_with("issues/P2/"), "{changed:?}");
}

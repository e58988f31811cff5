//! One busy site with twenty connections through one shared repository: each
//! peer gets exactly what its query selects, and a sync with nothing new writes
//! nothing anywhere.

use super::World;

const PEERS: usize = 20;

fn peer(i: usize) -> String {
    format!("eng{i:02}")
}

#[test]
fn twenty_connections_through_one_repository() {
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
    let before = w.exchange_objects();
    let quiet = w.ok("support", &["sync"]);
    assert_eq!(quiet.matches("nothing new").count(), PEERS, "{quiet}");
    assert_eq!(
        quiet.matches("no change, no commit").count(),
        PEERS,
        "{quiet}"
    );
    assert_eq!(
        w.exchange_objects(),
        before,
        "a no-op sync wrote to the repository"
    );
    let status: serde_json::Value =
        serde_json::from_str(&w.ok("support", &["status", "--json"])).unwrap();
    assert_eq!(status.as_array().unwrap().len(), PEERS);
}

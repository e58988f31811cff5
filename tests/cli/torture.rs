//! The torture test: two sites syncing creates, edits, comments (public and
//! internal) and deletions while `ferry sync` is killed with SIGKILL over and over,
//! at named fail points and at random instants. Afterwards both trackers must hold
//! exactly the expected state: every shared issue once on the other side, every
//! public comment exactly once, no internal comment outside its site, every
//! deletion seen.
//!
//! Ignored by default (it runs hundreds of processes); `.ci/run` runs it with
//! `cargo test --test integration torture -- --ignored --nocapture`.
//! `FERRY_TORTURE_KILLS` sets how many kills to reach (default 200) and
//! `FERRY_TORTURE_SEED` replays a run (the seed is printed).

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;
use ferry::failpoint::{FAILPOINT_ENV, POINTS};
use ferry::model::{Issue, LinkDirection, Origin, RelatedIssue};
use ferry::tracker::local::LocalTracker;
use ferry::tracker::{IssuePatch, LinkChange, NewAttachment, NewComment, NewIssue, Tracker};
use sha2::Digest;

use super::World;
use super::bundles::bundle_site;

const SITES: [(&str, &str); 2] = [("support", "SUP"), ("engineering", "ENG")];

/// The owner is authoritative for summary and description (so the expected value
/// of each is the owner's last edit, whatever the timing); comments flow both
/// ways; a deletion labels the copy. Conflicting edits have their own tests.
const INCOMING: &str = r#"
let ours = replica.origin != () && replica.origin.site == site;
if !ours {
    issue.summary = replica.summary;
    issue.description = replica.description;
    issue.labels = replica.labels;
}
for c in added_comments {
    new_comments.push(comment_from(c));
}
for a in added_attachments {
    new_attachments.push(a);
}
if deleted {
    issue.labels.push("peer-deleted");
}
"#;

/// What the test did and saw.
#[derive(Default)]
struct Counts {
    kills_at_points: usize,
    kills_at_instants: usize,
    clean_runs: usize,
    creates: usize,
    edits: usize,
    comments: usize,
    internal_comments: usize,
    attachments: usize,
    deletions: usize,
    links: usize,
    parents: usize,
    /// Repositories repacked by clean runs (killed runs repack too).
    maintenances: usize,
    /// Kills at the fail points of a repack.
    kills_in_maintenance: usize,
}

impl Counts {
    fn kills(&self) -> usize {
        self.kills_at_points + self.kills_at_instants
    }
}

struct Torture {
    world: World,
    rng: fastrand::Rng,
    counts: Counts,
    /// A typical clean sync's duration: random kills land within it.
    typical: Duration,
    /// Bodies of internal comments, which must never leave their site.
    internal: Vec<String>,
    /// The owner's last summary and description of every issue, by (site, id).
    expected: BTreeMap<(String, String), (String, Option<String>)>,
    serial: usize,
}

impl Torture {
    fn tracker(&self, site: &str) -> LocalTracker {
        LocalTracker::open(&self.world.path(&format!("{site}/tracker.db"))).unwrap()
    }

    fn text(&mut self, what: &str) -> String {
        self.serial += 1;
        format!("{what} {}.", self.serial)
    }

    /// One random change at one site, made straight in its tracker (as a person
    /// using the tracker would, between syncs).
    fn change(&mut self) {
        let (site, project) = SITES[self.rng.usize(..SITES.len())];
        let mut tracker = self.tracker(site);
        let live: Vec<Issue> = tracker.list().unwrap();
        let own: Vec<&Issue> = live.iter().filter(|i| i.origin.is_none()).collect();
        match self.rng.u8(..13) {
            0..=2 => {
                let summary = self.text("summary");
                let created = tracker
                    .create(&NewIssue {
                        project: project.into(),
                        patch: IssuePatch {
                            summary: Some(summary.clone()),
                            labels: Some(vec!["escalate".into()]),
                            ..Default::default()
                        },
                        author: "ann".into(),
                        origin: None,
                    })
                    .unwrap();
                self.expected
                    .insert((site.into(), created.id), (summary, None));
                self.counts.creates += 1;
            }
            3..=4 if !own.is_empty() => {
                // Only the owner edits summary and description, so the expected
                // value is simply the owner's (conflicts have their own tests).
                let issue = own[self.rng.usize(..own.len())];
                let (summary, description) = (self.text("summary"), self.text("description"));
                let patch = IssuePatch {
                    summary: Some(summary.clone()),
                    description: Some(Some(description.clone())),
                    ..Default::default()
                };
                tracker.update(&issue.id, &patch, "ann").unwrap();
                self.expected.insert(
                    (site.into(), issue.id.clone()),
                    (summary, Some(description)),
                );
                self.counts.edits += 1;
            }
            5..=7 if !live.is_empty() => {
                let issue = &live[self.rng.usize(..live.len())];
                let body = self.text("comment");
                tracker
                    .add_comment(
                        &issue.id,
                        &NewComment {
                            author: "bob".into(),
                            body,
                            internal: false,
                            origin: None,
                        },
                    )
                    .unwrap();
                self.counts.comments += 1;
            }
            8 if !live.is_empty() => {
                let issue = &live[self.rng.usize(..live.len())];
                let body = self.text("internal note");
                tracker
                    .add_comment(
                        &issue.id,
                        &NewComment {
                            author: "bob".into(),
                            body: body.clone(),
                            internal: true,
                            origin: None,
                        },
                    )
                    .unwrap();
                self.internal.push(body);
                self.counts.internal_comments += 1;
            }
            10 if !live.is_empty() => {
                // Named after the site that attached it, so the check knows
                // which side's file it is.
                let issue = &live[self.rng.usize(..live.len())];
                let content = self.text("attached file");
                let file = self.world.path("attachment.tmp");
                std::fs::write(&file, &content).unwrap();
                let sha256 = format!("{:x}", sha2::Sha256::digest(content.as_bytes()));
                let name = format!("{site}-{}.txt", self.serial);
                tracker
                    .attach(
                        &issue.id,
                        &NewAttachment {
                            name: &name,
                            author: "bob",
                            path: &file,
                            size: content.len() as u64,
                            sha256: &sha256,
                        },
                    )
                    .unwrap();
                self.counts.attachments += 1;
            }
            11 if live.len() > 1 => {
                // Either site links or unlinks any two of its issues, copies
                // included: links converge whoever makes them.
                let a = &live[self.rng.usize(..live.len())];
                let b = &live[self.rng.usize(..live.len())];
                let link_type = ["Blocks", "Relates"][self.rng.usize(..2)];
                if a.id != b.id {
                    let change = LinkChange {
                        link_type: link_type.into(),
                        direction: LinkDirection::Outward,
                        other: b.id.clone(),
                    };
                    let linked = a.links.iter().any(|l| {
                        l.link_type == link_type
                            && l.direction == LinkDirection::Outward
                            && l.issue.id == b.id
                    });
                    let patch = if linked {
                        IssuePatch {
                            remove_links: vec![change],
                            ..Default::default()
                        }
                    } else {
                        IssuePatch {
                            add_links: vec![change],
                            ..Default::default()
                        }
                    };
                    tracker.update(&a.id, &patch, "ann").unwrap();
                    self.counts.links += 1;
                }
            }
            12 if own.len() > 1 => {
                // Only the owner places its issue (a parent is the owner's to
                // set), under another of its own (two owners each placing its
                // issue under the other's make a cycle, which the trackers
                // refuse: tests/cli/relations.rs has that case); a third of
                // the time it takes it out of the hierarchy.
                let child = own[self.rng.usize(..own.len())];
                let parent = own[self.rng.usize(..own.len())];
                let wanted =
                    (self.rng.u8(..3) > 0 && parent.id != child.id).then(|| parent.id.clone());
                let patch = IssuePatch {
                    parent: Some(wanted),
                    ..Default::default()
                };
                // A parent that is one of its own sub-tasks is refused.
                if tracker.update(&child.id, &patch, "ann").is_ok() {
                    self.counts.parents += 1;
                }
            }
            9 if own.len() > 3 => {
                let issue = own[self.rng.usize(..own.len())];
                tracker.delete(&issue.id, "ann").unwrap();
                self.counts.deletions += 1;
            }
            _ => {}
        }
    }

    fn command(&self, site: &str) -> Command {
        let mut cmd = Command::cargo_bin("ferry").unwrap();
        cmd.current_dir(self.world.path(site))
            .arg("sync")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("FERRY_USER", "tester")
            .env_remove("FERRY_DIR")
            .env_remove("FERRY_LOG")
            .env_remove("FERRY_NOW")
            .env_remove(FAILPOINT_ENV)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Runs `ferry sync` at `site` to completion, after killing it a few times.
    fn sync(&mut self, site: &str) {
        for _ in 0..self.rng.usize(0..=3) {
            if self.rng.bool() {
                let point = POINTS[self.rng.usize(..POINTS.len())];
                let spec = format!("{point}:{}", self.rng.u32(1..=3));
                let out = self
                    .command(site)
                    .env(FAILPOINT_ENV, &spec)
                    .output()
                    .unwrap();
                match out.status.signal() {
                    Some(9) => {
                        self.counts.kills_at_points += 1;
                        if point.starts_with("maintenance-") {
                            self.counts.kills_in_maintenance += 1;
                        }
                    }
                    _ => assert!(
                        out.status.code() == Some(0),
                        "sync at {site} with {spec} ended with {:?}:\n{}{}",
                        out.status,
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    ),
                }
            } else {
                let mut child = self
                    .command(site)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                let nanos = self.typical.as_nanos() as u64;
                std::thread::sleep(Duration::from_nanos(self.rng.u64(0..=nanos)));
                match child.try_wait().unwrap() {
                    Some(status) => assert!(
                        status.success(),
                        "sync at {site} failed with {status:?} before it could be killed"
                    ),
                    None => {
                        child.kill().unwrap();
                        child.wait().unwrap();
                        self.counts.kills_at_instants += 1;
                    }
                }
            }
        }
        self.clean_sync(site);
    }

    fn clean_sync(&mut self, site: &str) -> Duration {
        let started = Instant::now();
        let out = self.command(site).output().unwrap();
        let took = started.elapsed();
        assert_eq!(
            out.status.code(),
            Some(0),
            "a clean sync at {site} after kills failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.counts.clean_runs += 1;
        self.counts.maintenances += String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("maint"))
            .count();
        took
    }

    /// Checks both trackers against what the changes must have produced.
    fn check(&self) -> (usize, usize) {
        let mut all: BTreeMap<&str, Vec<Issue>> = BTreeMap::new();
        for (site, _) in SITES {
            all.insert(site, self.tracker(site).changed_since(None).unwrap());
        }
        // Issues deleted by their owner: relations to them are not compared
        // (a deletion unlinks at the owner, the copy stays at the peer).
        let deleted: std::collections::BTreeSet<Origin> = all
            .iter()
            .flat_map(|(site, issues)| {
                issues
                    .iter()
                    .filter(|i| i.deleted && i.origin.is_none())
                    .map(|i| Origin {
                        site: site.to_string(),
                        id: i.id.clone(),
                    })
            })
            .collect();
        let (mut issues_checked, mut comments_checked) = (0, 0);
        for (site, _) in SITES {
            let peer = SITES.iter().map(|s| s.0).find(|s| *s != site).unwrap();
            let theirs = &all[peer];
            for issue in all[site].iter().filter(|i| i.origin.is_none()) {
                let origin = Origin {
                    site: site.into(),
                    id: issue.id.clone(),
                };
                let copies: Vec<&Issue> = theirs
                    .iter()
                    .filter(|i| i.origin.as_ref() == Some(&origin))
                    .collect();
                // An issue deleted before its first sync was never shared.
                if issue.deleted && copies.is_empty() {
                    continue;
                }
                assert_eq!(
                    copies.len(),
                    1,
                    "{site}'s {} has {} copies at {peer}",
                    issue.key,
                    copies.len()
                );
                let copy = copies[0];
                issues_checked += 1;
                if issue.deleted {
                    assert!(
                        copy.labels.iter().any(|l| l == "peer-deleted"),
                        "{site} deleted {}, but {peer}'s {} does not say so",
                        issue.key,
                        copy.key
                    );
                    continue;
                }
                let (summary, description) = &self.expected[&(site.to_string(), issue.id.clone())];
                for (holder, seen) in [(site, issue), (peer, copy)] {
                    assert_eq!(
                        (&seen.summary, &seen.description),
                        (summary, description),
                        "{holder}'s {} lost {site}'s last edit of {}",
                        seen.key,
                        issue.key
                    );
                }
                comments_checked += check_comments(site, issue, peer, copy);
                comments_checked += check_comments(peer, copy, site, issue);
                check_attachments(site, issue, peer, copy);
                check_attachments(peer, copy, site, issue);
                check_relations(site, issue, peer, copy, &deleted);
            }
        }
        for (site, issues) in &all {
            for issue in issues {
                for comment in &issue.comments {
                    assert!(
                        comment.origin.is_none()
                            || !self.internal.iter().any(|note| comment.body.contains(note)),
                        "internal note {:?} reached {site}'s {}",
                        comment.body,
                        issue.key
                    );
                }
            }
        }
        (issues_checked, comments_checked)
    }
}

/// `issue` at `site` and its copy at `peer` have the same links and the same
/// parent, each named by its identity across sites, leaving out relations to
/// issues their owner deleted.
fn check_relations(
    site: &str,
    issue: &Issue,
    peer: &str,
    copy: &Issue,
    deleted: &std::collections::BTreeSet<Origin>,
) {
    let identity = |holder: &str, other: &RelatedIssue| {
        other.origin.clone().unwrap_or_else(|| Origin {
            site: holder.into(),
            id: other.id.clone(),
        })
    };
    let links = |holder: &str, i: &Issue| -> Vec<(String, LinkDirection, Origin)> {
        i.links
            .iter()
            .map(|l| (l.link_type.clone(), l.direction, identity(holder, &l.issue)))
            .filter(|(_, _, other)| !deleted.contains(other))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    assert_eq!(
        links(site, issue),
        links(peer, copy),
        "{site}'s {} and {peer}'s {} have different links",
        issue.key,
        copy.key
    );
    let parent = |holder: &str, i: &Issue| {
        i.parent
            .as_ref()
            .map(|p| identity(holder, p))
            .filter(|p| !deleted.contains(p))
    };
    assert_eq!(
        parent(site, issue),
        parent(peer, copy),
        "{site}'s {} and {peer}'s {} have different parents",
        issue.key,
        copy.key
    );
}

/// Every file attached to `issue` at `site` is exactly once on its copy at
/// `peer`, same name and content, and nothing is there twice.
fn check_attachments(site: &str, issue: &Issue, peer: &str, copy: &Issue) {
    let mut seen: Vec<(&str, &str)> = copy
        .attachments
        .iter()
        .map(|a| (a.name.as_str(), a.sha256.as_str()))
        .collect();
    seen.sort();
    let before = seen.len();
    seen.dedup();
    assert_eq!(
        before,
        seen.len(),
        "{peer}'s {} holds a duplicated attachment: {seen:?}",
        copy.key
    );
    for a in issue
        .attachments
        .iter()
        .filter(|a| a.name.starts_with(&format!("{site}-")))
    {
        assert!(
            seen.contains(&(a.name.as_str(), a.sha256.as_str())),
            "{site}'s {} attachment {} is missing on {peer}'s {}",
            issue.key,
            a.name,
            copy.key
        );
    }
}

/// Every public comment written on `issue` at `site` is exactly once on its copy
/// at `peer`, and nothing is there twice. Returns how many comments were checked.
fn check_comments(site: &str, issue: &Issue, peer: &str, copy: &Issue) -> usize {
    let mut seen = BTreeMap::new();
    for comment in &copy.comments {
        if let Some(origin) = &comment.origin {
            *seen.entry(origin.clone()).or_insert(0) += 1;
        }
    }
    assert!(
        seen.values().all(|n| *n == 1),
        "{peer}'s {} holds a duplicated comment: {seen:?}",
        copy.key
    );
    let mut checked = 0;
    for comment in issue.comments.iter().filter(|c| c.origin.is_none()) {
        let origin = Origin {
            site: site.into(),
            id: comment.id.clone(),
        };
        let copies = seen.get(&origin).copied().unwrap_or(0);
        let expected = usize::from(!comment.internal);
        assert_eq!(
            copies, expected,
            "comment {} of {site}'s {} ({:?}) is {copies} times on {peer}'s {}",
            comment.id, issue.key, comment.body, copy.key
        );
        checked += 1;
    }
    checked
}

#[test]
#[ignore = "kills ferry hundreds of times; .ci/run runs it"]
fn sync_survives_hundreds_of_kills() {
    torture(Channel::SharedRepo);
}

/// The same over bundle files only: every kill also lands between writing,
/// taking, applying and archiving bundles.
#[test]
#[ignore = "kills ferry hundreds of times; .ci/run runs it"]
fn sync_over_bundles_survives_hundreds_of_kills() {
    torture(Channel::Bundles);
}

/// How the two sites of a torture run exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Channel {
    SharedRepo,
    Bundles,
}

fn torture(channel: Channel) {
    let target: usize = std::env::var("FERRY_TORTURE_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let seed = std::env::var("FERRY_TORTURE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("torture: seed {seed} (replay with FERRY_TORTURE_SEED={seed})");

    println!("torture: channel {channel:?}");
    let world = World::new();
    match channel {
        Channel::SharedRepo => {
            world.site(
                "support",
                &[("engineering", "SUP=ENG", "labels = escalate")],
            );
            world.site(
                "engineering",
                &[("support", "ENG=SUP", "labels = escalate")],
            );
        }
        Channel::Bundles => {
            bundle_site(
                &world,
                "support",
                "engineering",
                "SUP=ENG",
                "labels = escalate",
            );
            bundle_site(
                &world,
                "engineering",
                "support",
                "ENG=SUP",
                "labels = escalate",
            );
        }
    }
    for (site, _) in SITES {
        std::fs::write(world.path(&format!("{site}/rules/incoming.rhai")), INCOMING).unwrap();
        // Thresholds a few rounds reach, so that kills land in repacks too.
        let config = world.path(&format!("{site}/ferry.yaml"));
        let mut text = std::fs::read_to_string(&config).unwrap();
        text.push_str("\nmaintenance:\n  packs: 6\n  loose_objects: 60\n");
        std::fs::write(&config, text).unwrap();
    }
    let mut t = Torture {
        world,
        rng: fastrand::Rng::with_seed(seed),
        counts: Counts::default(),
        typical: Duration::ZERO,
        internal: Vec::new(),
        expected: BTreeMap::new(),
        serial: 0,
    };
    for _ in 0..4 {
        t.change();
    }
    t.typical = t.clean_sync("support").max(t.clean_sync("engineering"));

    let started = Instant::now();
    let mut rounds = 0;
    while t.counts.kills() < target {
        rounds += 1;
        for _ in 0..t.rng.usize(1..=4) {
            t.change();
        }
        for (site, _) in SITES {
            t.sync(site);
        }
        assert!(
            rounds < 20 * target,
            "kills are not happening: {rounds} rounds"
        );
    }
    // Quiesce: a change needs at most two round trips to settle everywhere.
    for _ in 0..3 {
        for (site, _) in SITES {
            t.clean_sync(site);
        }
    }
    let (issues, comments) = t.check();
    if channel == Channel::Bundles {
        // However many runs were killed while replacing bundles, each outbox
        // ends with at most the one bundle of what is not acknowledged.
        for outbox in ["usb/support-to-engineering", "usb/engineering-to-support"] {
            let pending: Vec<_> = std::fs::read_dir(t.world.path(outbox))
                .unwrap()
                .filter_map(|e| e.ok().map(|e| e.file_name()))
                .filter(|n| n.to_string_lossy().ends_with(".bundle"))
                .collect();
            assert!(pending.len() <= 1, "{outbox}: {pending:?}");
        }
    }
    // Whatever the kills interrupted, git finds every repository whole.
    let mut repos = vec![
        "support/.ferry/exchange.git".to_string(),
        "engineering/.ferry/exchange.git".to_string(),
    ];
    if channel == Channel::SharedRepo {
        repos.push("exchange.git".into());
    }
    for repo in &repos {
        super::git(&t.world.path(repo), &["fsck", "--full", "--no-dangling"]);
    }
    assert!(t.counts.maintenances > 0, "no run repacked anything");
    let c = &t.counts;
    println!(
        "torture: {} kills ({} at fail points, {} of them in repacks, {} at random instants) \
         over {rounds} rounds and {} clean runs in {:.0?}",
        c.kills(),
        c.kills_at_points,
        c.kills_in_maintenance,
        c.kills_at_instants,
        c.clean_runs,
        started.elapsed()
    );
    println!(
        "torture: changes: {} creates, {} edits, {} comments, {} internal notes, {} attachments, \
         {} deletions, {} links or unlinks, {} parents",
        c.creates,
        c.edits,
        c.comments,
        c.internal_comments,
        c.attachments,
        c.deletions,
        c.links,
        c.parents
    );
    println!(
        "torture: checked {issues} shared issues and {comments} comments: 0 duplicates, 0 lost; \
         {} repacks by clean runs, git fsck --full clean",
        c.maintenances
    );
}

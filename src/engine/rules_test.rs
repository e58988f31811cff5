//! `ferry rules test`: an edited rule script tried on what was really exchanged,
//! before it goes live.
//!
//! Incoming: the replicas of the peer's last N applied commits are run again
//! through the candidate script, exactly as a review would run a new commit (same
//! lookups, same conflict settlement, nothing written); what would change in the
//! tracker is the difference the edit makes, since the current script already
//! brought the tracker to its result. Outgoing: the local issues of this site's
//! last N commits are run through the candidate script and the result is compared
//! field by field with the replica on this site's branch.

use serde::Serialize;

use super::import::changed_fields;
use super::review::{PendingIssue, review_one};
use crate::config::Connection;
use crate::exchange::{applied_ref, own_branch};
use crate::replica::Replica;
use crate::rules::{OutgoingContext, RuleScript};
use crate::site::Site;

/// What the candidate scripts would do differently on one connection.
#[derive(Debug, Serialize)]
pub struct RulesTest {
    /// The peer.
    pub peer: String,
    /// The peer's replicas replayed through the incoming script.
    pub incoming: Vec<PendingIssue>,
    /// This site's issues replayed through the outgoing script.
    pub outgoing: Vec<OutgoingDifference>,
}

/// One local issue through the candidate outgoing script.
#[derive(Debug, Serialize)]
pub struct OutgoingDifference {
    /// Local key.
    pub key: String,
    /// Replica path on this site's branch.
    pub path: String,
    /// Replica fields that would differ from what was sent (empty: none).
    pub changed: Vec<String>,
    /// The script would stop sharing the issue.
    pub unshared: bool,
    /// The script fails on it.
    pub error: Option<String>,
}

impl RulesTest {
    /// Whether the candidate scripts failed on anything.
    pub fn has_errors(&self) -> bool {
        self.outgoing.iter().any(|o| o.error.is_some())
            || self
                .incoming
                .iter()
                .any(|i| matches!(i.verdict, super::Verdict::Error { .. }))
    }
}

/// Replays the last `last` commits of each direction of `connection` through the
/// candidate scripts.
pub fn rules_test(
    site: &Site,
    connection: &Connection,
    incoming: &RuleScript,
    outgoing: &RuleScript,
    last: usize,
) -> anyhow::Result<RulesTest> {
    let me = site.name();
    let peer = connection.peer.as_str();
    let mut test = RulesTest {
        peer: peer.to_string(),
        incoming: Vec::new(),
        outgoing: Vec::new(),
    };
    if let Some(applied) = site.exchange.resolve(&applied_ref(peer))? {
        let ack = site.exchange.peer_ack(me, peer)?;
        for (path, blob) in recent_replicas(site, applied, last)? {
            // The replay sees the change set the exchange had: the replica as
            // it was before the newest commit that changed it.
            let previous = match before_last_change(site, applied, &path)? {
                Some(bytes) => Replica::parse(&path, &bytes).ok(),
                None => None,
            };
            test.incoming.push(review_one(
                site, connection, incoming, ack, &path, blob, previous,
            )?);
        }
    }
    if let Some(head) = site.exchange.resolve(&own_branch(me, peer))? {
        let format = super::export::writing_format(site, peer, Some(head))?;
        for (path, blob) in recent_replicas(site, head, last)? {
            let sent = Replica::parse(&path, &site.exchange.read_blob(blob)?)?;
            let Some(issue) = site.tracker.get(&sent.id)? else {
                continue;
            };
            let mut difference = OutgoingDifference {
                key: issue.key.clone(),
                path: path.clone(),
                changed: Vec::new(),
                unshared: false,
                error: None,
            };
            if !issue.deleted {
                let shared = super::export::shared_relatives(
                    site,
                    peer,
                    &[(&issue, path.clone())],
                    &Default::default(),
                )?;
                let context = OutgoingContext {
                    site: me,
                    peer,
                    format,
                    shared: &shared,
                };
                match outgoing.run_outgoing(&issue, &context) {
                    Ok(Some(replica)) => difference.changed = changed_fields(Some(&sent), &replica),
                    Ok(None) => difference.unshared = true,
                    Err(e) => difference.error = Some(e.to_string()),
                }
            }
            test.outgoing.push(difference);
        }
    }
    Ok(test)
}

/// The content of `path` just before the newest commit up to `tip` that
/// changed it; `None` when that commit created it.
fn before_last_change(site: &Site, tip: git2::Oid, path: &str) -> anyhow::Result<Option<Vec<u8>>> {
    for commit in site.exchange.commits_between(None, tip)?.iter().rev() {
        let parent = site.exchange.repo().find_commit(*commit)?.parent_id(0).ok();
        let changed = site
            .exchange
            .diff_replicas(parent, *commit)?
            .iter()
            .any(|change| change.path == path);
        if changed {
            return Ok(match parent {
                Some(parent) => match site.exchange.find_replica(parent, path)? {
                    Some((_, blob)) => Some(site.exchange.read_blob(blob)?),
                    None => None,
                },
                None => None,
            });
        }
    }
    Ok(None)
}

/// The replicas (path, blob at `tip`) that the last `last` commits up to `tip`
/// wrote, in path order.
fn recent_replicas(
    site: &Site,
    tip: git2::Oid,
    last: usize,
) -> anyhow::Result<Vec<(String, git2::Oid)>> {
    let commits = site.exchange.commits_between(None, tip)?;
    let mut paths = std::collections::BTreeSet::new();
    for commit in commits.iter().rev().take(last) {
        let parent = site.exchange.repo().find_commit(*commit)?.parent_id(0).ok();
        for change in site.exchange.diff_replicas(parent, *commit)? {
            if change.path.starts_with("issues/") {
                paths.insert(change.path);
            }
        }
    }
    let files = site.exchange.replicas(tip)?;
    Ok(paths
        .into_iter()
        .filter_map(|path| files.get(&path).map(|blob| (path, *blob)))
        .collect())
}

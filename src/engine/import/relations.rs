//! Relations on import: links between issues and parents, as a peer's replicas
//! ask for them.
//!
//! A replica names the other end of each relation by its identity across sites
//! (the site that owns the original and its id there). A relation is made here
//! only when both ends are shared on the connection: the replica's own issue,
//! and an other end that maps to a local issue through the ledger (one of this
//! site's issues shared with the peer, the peer's issue linked to its local
//! copy, or a third site's issue both hold a copy of). An other end that has
//! not arrived yet makes the relation wait.
//!
//! The ledger's `relations` table keeps, per local issue, what the peer's
//! replica asks for, after the incoming rule (so in this site's link types).
//! Importing a replica compares what it asks for now with what it asked before:
//!
//! - a relation it no longer asks for is removed from the tracker if it was
//!   made for this replica (by the import, or found already there when the
//!   import went to make it), and forgotten: unlinking on one side unlinks on
//!   the other, and a link made here that no replica asked for is never
//!   touched;
//! - a new one is recorded as waiting, in the transaction that marks the
//!   replica applied.
//!
//! A link is one relation between two issues, which either site may make or
//! remove; both replicas carry it, and a set converges whatever the order. A
//! parent is one value per issue, which two sites changing it at once would
//! swap back and forth for ever; so it is the issue's owner's to set: it is
//! taken only from a replica its owner wrote (one without `origin`). A
//! sub-task a site makes under a copy is its own issue, and reaches the owner;
//! a copy moved under another parent keeps that place here only.
//!
//! Then, once every replica of the range is in, [`settle`] makes each waiting
//! relation whose other end is here now, whichever end arrived first, and
//! records it as made once the tracker holds it. It runs on every import, one
//! with nothing new included: the other end may have come through another
//! connection, and a run killed anywhere leaves at worst a made relation still
//! recorded as waiting, which the next run makes again (making a relation that
//! exists changes nothing) and then records as made, so that unlinking on the
//! peer's side still reaches it.

use std::collections::BTreeSet;

use super::batch::{Batch, Subject};
use super::{ImportFailure, StepKind, fatal};
use crate::config::Connection;
use crate::engine::conflict::Baseline;
use crate::engine::{IssueError, issue_error};
use crate::failpoint;
use crate::ledger::{KeptRelation, Relation};
use crate::model::{Issue, LinkDirection, Origin};
use crate::replica::ReplicaLink;
use crate::site::Site;
use crate::tracker::{IssuePatch, LinkChange, TrackerError};

/// What an import did about relations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelationCounts {
    /// Relations made in the tracker.
    pub made: usize,
    /// Relations removed from the tracker.
    pub removed: usize,
    /// Relations still waiting for their other end.
    pub waiting: usize,
}

/// The relations the incoming rule wants for the local issue.
pub(super) fn wanted(links: &[ReplicaLink], parent: Option<&Origin>) -> BTreeSet<Relation> {
    links
        .iter()
        .map(|link| Relation {
            link: Some((link.link_type.clone(), link.direction)),
            other: link.issue.clone(),
        })
        .chain(parent.map(|parent| Relation {
            link: None,
            other: parent.clone(),
        }))
        .collect()
}

/// `wanted` without the links that were removed here after this site told
/// the peer of them: a peer's replica written before it heard of the removal
/// still carries them, and making them again would undo the removal (see
/// [`crate::engine::conflict::LINKS`]). `me` is this site.
pub(super) fn not_removed_here(
    me: &str,
    local: &Issue,
    baseline: &Baseline,
    wanted: BTreeSet<Relation>,
) -> BTreeSet<Relation> {
    wanted
        .into_iter()
        .filter(|relation| {
            let Some((link_type, direction)) = &relation.link else {
                return true;
            };
            let here = local.links.iter().any(|l| {
                &l.link_type == link_type
                    && l.direction == *direction
                    && l.issue.identity(me) == relation.other
            });
            here || !baseline.shares_link(link_type, *direction, &relation.other)
        })
        .collect()
}

/// Follows what the replica at `subject` asks of `local` now (`wanted`): removes
/// the relations this import made that it no longer asks for, and records the
/// new ones as waiting (made by [`settle`]). A replica not written by the
/// issue's owner (`from_owner` false) has no say on the parent: what is kept
/// of one stays as it is. Returns how many were removed.
pub(super) fn apply(
    site: &mut Site,
    batch: &mut Batch,
    subject: &Subject,
    local: &Issue,
    wanted: BTreeSet<Relation>,
    from_owner: bool,
    author: &str,
) -> Result<usize, ImportFailure> {
    let peer = batch.peer().to_string();
    let mut kept = site.ledger.relations(&peer, &local.id).map_err(fatal)?;
    kept.retain(|k| from_owner || k.relation.link.is_some());
    let before: BTreeSet<&Relation> = kept.iter().map(|k| &k.relation).collect();
    let mut patch = IssuePatch::default();
    let mut forget = Vec::new();
    for gone in kept.iter().filter(|k| !wanted.contains(&k.relation)) {
        if let Some(other) = &gone.made_with {
            match &gone.relation.link {
                Some((link_type, direction)) => patch.remove_links.push(LinkChange {
                    link_type: link_type.clone(),
                    direction: *direction,
                    other: other.clone(),
                }),
                // Only the parent this import set: one set here since then stays.
                None if local.parent.as_ref().is_some_and(|p| &p.id == other) => {
                    patch.parent = Some(None);
                }
                None => {}
            }
        }
        forget.push(gone.relation.clone());
    }
    let removed = patch.remove_links.len() + usize::from(patch.parent.is_some());
    if removed > 0 {
        let id = local.id.clone();
        batch.write(site, subject, StepKind::Unlink, Some(&id), |t| {
            t.update(&id, &patch, author)
        })?;
    }
    let new: Vec<Relation> = wanted
        .into_iter()
        .filter(|relation| !before.contains(relation))
        .collect();
    if forget.is_empty() && new.is_empty() {
        return Ok(removed);
    }
    let (issue, path) = (local.id.clone(), subject.path.to_string());
    batch.later(site, None, &local.id, move |ledger| {
        for relation in &forget {
            ledger.forget_relation(&peer, &issue, relation)?;
        }
        for relation in &new {
            ledger.want_relation(&peer, &issue, relation, &path)?;
        }
        Ok(())
    })?;
    Ok(removed)
}

/// Makes the relations of `connection`'s replicas that wait for their other end
/// and can be made now: one tracker batch, then one ledger transaction. A
/// relation the tracker refuses stays waiting, with an issue error naming it.
pub(super) fn settle(
    site: &mut Site,
    connection: &Connection,
    counts: &mut RelationCounts,
    errors: &mut Vec<IssueError>,
) -> anyhow::Result<()> {
    let peer = connection.peer.as_str();
    let waiting = site.ledger.waiting_relations(peer)?;
    if waiting.is_empty() {
        return Ok(());
    }
    let me = site.name().to_string();
    let author = site.config.site.sync_user.clone();
    let mut made: Vec<(KeptRelation, String)> = Vec::new();
    let mut failed = Vec::new();
    // Links written, each once however many replicas asked for it (both ends
    // of a link do).
    let mut written = BTreeSet::new();
    let deferred = site.tracker.begin_batch()?;
    let outcome = (|| -> anyhow::Result<()> {
        for row in &waiting {
            let Some(other) = local_end(site, peer, &me, &row.relation.other)? else {
                continue;
            };
            // The local issue is gone: nothing to relate any more.
            let Some(local) = site.tracker.get(&row.local_id)?.filter(|i| !i.deleted) else {
                continue;
            };
            let there = match &row.relation.link {
                Some((link_type, direction)) => local.links.iter().any(|l| {
                    &l.link_type == link_type && l.direction == *direction && l.issue.id == other
                }),
                None => local.parent.as_ref().is_some_and(|p| p.id == other),
            };
            if there {
                made.push((row.clone(), other));
                continue;
            }
            let patch = match &row.relation.link {
                Some((link_type, direction)) => IssuePatch {
                    add_links: vec![LinkChange {
                        link_type: link_type.clone(),
                        direction: *direction,
                        other: other.clone(),
                    }],
                    ..IssuePatch::default()
                },
                None => IssuePatch {
                    parent: Some(Some(other.clone())),
                    ..IssuePatch::default()
                },
            };
            match site.tracker.update(&row.local_id, &patch, &author) {
                Ok(_) => {
                    written.insert(same_relation(row, &other));
                    made.push((row.clone(), other));
                }
                Err(e @ TrackerError::Unavailable(_)) => return Err(e.into()),
                Err(TrackerError::NotFound(_)) => continue,
                Err(e) => failed.push((row, e.to_string())),
            }
        }
        Ok(())
    })();
    if let Err(e) = outcome {
        if deferred && let Err(rollback) = site.tracker.rollback_batch() {
            tracing::warn!("rolling back the relations of an import: {rollback}");
        }
        return Err(e);
    }
    site.tracker.commit_batch()?;
    if !written.is_empty() {
        failpoint::hit("after-relate");
    }
    site.ledger.in_transaction(|ledger| {
        for (row, other) in &made {
            ledger.relation_made(peer, &row.local_id, &row.relation, other)?;
        }
        Ok(())
    })?;
    // A replica whose relations are all made now has no relation error left
    // (unless its own import waits for a retry, whose errors stay).
    let failing: BTreeSet<&str> = failed.iter().map(|(row, _)| row.path.as_str()).collect();
    let pending = site.ledger.pending(peer)?;
    let settled: BTreeSet<&str> = made
        .iter()
        .map(|(row, _)| row.path.as_str())
        .filter(|path| !failing.contains(path) && !pending.iter().any(|p| p == path))
        .collect();
    for path in settled {
        site.ledger.resolve_subject(peer, path)?;
    }
    for (row, message) in failed {
        let message = match &row.relation.link {
            Some((link_type, direction)) => format!(
                "the {} link {link_type:?} to {} it asks for could not be made, and waits: \
                 {message} (does {} map the link type to one of this site's?)",
                direction.as_str(),
                row.relation.other,
                connection.settings.incoming.display()
            ),
            None => format!(
                "the parent {} it asks for could not be set, and waits: {message}",
                row.relation.other
            ),
        };
        errors.push(issue_error(site, connection, &row.path, message)?);
    }
    counts.made += written.len();
    counts.waiting = waiting.len() - made.len();
    Ok(())
}

/// What a relation is in the tracker, whichever end's replica asked for it:
/// a link as (source, type, target), a parent as (sub-task, parent).
fn same_relation(row: &KeptRelation, other: &str) -> (String, String, String) {
    let local = row.local_id.clone();
    match &row.relation.link {
        Some((link_type, LinkDirection::Outward)) => (local, link_type.clone(), other.into()),
        Some((link_type, LinkDirection::Inward)) => (other.into(), link_type.clone(), local),
        None => (local, String::new(), other.into()),
    }
}

/// The local issue `other` (an issue's identity across sites) maps to on the
/// connection with `peer`, when it is shared there and live: one of this
/// site's own issues shared with the peer, the local copy of one of the
/// peer's issues, or the local copy of a third site's issue that is connected
/// with the peer too. `None` while it has not arrived (or is not shared).
fn local_end(
    site: &Site,
    peer: &str,
    me: &str,
    other: &Origin,
) -> Result<Option<String>, ImportFailure> {
    let candidate = if other.site == me {
        Some(other.id.clone())
    } else if other.site == peer {
        site.ledger.local_for(peer, &other.id).map_err(fatal)?
    } else {
        site.tracker.find_by_origin(other)?.map(|issue| issue.id)
    };
    let Some(id) = candidate else {
        return Ok(None);
    };
    if !site.ledger.is_connected(peer, &id).map_err(fatal)? {
        return Ok(None);
    }
    Ok(site
        .tracker
        .get(&id)?
        .filter(|issue| !issue.deleted)
        .map(|issue| issue.id))
}

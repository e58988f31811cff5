//! Review: what the peer's fetched, not yet applied commits would do here.
//!
//! A dry run of the import: the same pending range, the same lookups, the same
//! incoming rule, and nothing written (no tracker change, no ledger change, no
//! ref moved). Reviewers read it before anything enters their tracker.

use git2::Oid;
use serde::Serialize;

use super::conflict::{self, Settlement};
use super::import::{
    ImportFailure, changed_fields, find_local, new_comments, patch_for, peer_changes,
    pending_range, previous_replica,
};
use super::load_rule;
use crate::config::Connection;
use crate::exchange::{applied_ref, approved_ref, peer_branch};
use crate::ledger::ReviewVerdict;
use crate::model::{Attachment, Comment, FieldValue};
use crate::replica::Replica;
use crate::rules::IncomingInput;
use crate::site::Site;
use crate::words::short_id;

/// One field that differs between the previously applied replica and the new one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    /// Replica field name (`status`, `labels`, `fields.Customer`...).
    pub field: String,
    /// Value in the previously applied replica (absent for a new issue).
    pub old: Option<FieldValue>,
    /// Value in the new replica (absent when removed).
    pub new: Option<FieldValue>,
}

/// What the incoming rule would do with one replica.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Verdict {
    /// Create a local issue in this project.
    Create {
        /// Local project.
        project: String,
    },
    /// Change these local fields (local names; old → new in `changes`).
    Update {
        /// Local field changes.
        changes: Vec<FieldChange>,
        /// Comments that would be added.
        comments: usize,
        /// The local issue would be deleted.
        delete: bool,
    },
    /// Nothing would change locally.
    Nothing,
    /// The rule skips this replica.
    Skip,
    /// The replica or the rule fails; the import would report this error.
    Error {
        /// The error.
        message: String,
    },
}

/// One pending replica.
#[derive(Debug, Clone, Serialize)]
pub struct PendingIssue {
    /// Replica path.
    pub path: String,
    /// The peer's key (when the replica parses).
    pub remote_key: Option<String>,
    /// The local issue it maps to, if any.
    pub local_key: Option<String>,
    /// The peer deleted the issue.
    pub deleted: bool,
    /// The replica as received, for a new issue (shown in full).
    pub new_issue: Option<Replica>,
    /// Replica fields that changed since the last applied version.
    pub changes: Vec<FieldChange>,
    /// Description before and after, when it changed (for a word diff).
    pub description: Option<(String, String)>,
    /// Comments this site does not have yet.
    pub added_comments: Vec<Comment>,
    /// Attachments this site does not have yet (as far as it knows without
    /// reading any content: a review changes nothing).
    pub added_attachments: Vec<Attachment>,
    /// Attachments the peer removed whose copy is here.
    pub removed_attachments: Vec<Attachment>,
    /// What the incoming rule would do.
    pub verdict: Verdict,
    /// Values the rule's mappings (`map_value`, `lookup`) could not place: an
    /// unknown user, a status with no mapping.
    pub unmapped: Vec<String>,
}

/// The pending changes of one connection.
#[derive(Debug, Clone, Serialize)]
pub struct Review {
    /// The peer.
    pub peer: String,
    /// Last applied commit of the peer's branch.
    pub applied: Option<String>,
    /// Fetched head of the peer's branch.
    pub head: Option<String>,
    /// Commits between them (oldest first).
    pub commits: Vec<String>,
    /// The key each of them is signed with (SHA-256 fingerprint), by commit.
    pub signers: std::collections::BTreeMap<String, String>,
    /// Pending replicas.
    pub issues: Vec<PendingIssue>,
    /// Paths the peer wrote outside `issues/` (refused on import).
    pub refused_paths: Vec<String>,
    /// The connection imports only approved commits (`review.required`).
    pub review_required: bool,
    /// The newest approval, if any.
    pub approved: Option<ReviewVerdict>,
    /// Rejections no later approval has superseded.
    pub rejected: Vec<ReviewVerdict>,
}

/// Computes what importing the connection's fetched commits would do.
pub fn review(site: &Site, connection: &Connection) -> anyhow::Result<Review> {
    let me = site.name();
    let peer = connection.peer.as_str();
    let head = site.exchange.resolve(&peer_branch(me, peer))?;
    let applied = site.exchange.resolve(&applied_ref(peer))?;
    let mut review = Review {
        peer: peer.to_string(),
        applied: applied.map(|o| o.to_string()),
        head: head.map(|o| o.to_string()),
        commits: Vec::new(),
        signers: Default::default(),
        issues: Vec::new(),
        refused_paths: Vec::new(),
        review_required: connection.settings.review.required,
        approved: site.ledger.last_approval(peer)?,
        rejected: site.ledger.open_rejections(peer)?,
    };
    let Some(head) = head else {
        return Ok(review);
    };
    let commits = site.exchange.commits_between(applied, head)?;
    review.commits = commits.iter().map(Oid::to_string).collect();
    review.signers = commits
        .iter()
        .filter_map(|c| {
            crate::signing::signer(site.exchange.repo(), *c).map(|key| (c.to_string(), key))
        })
        .collect();
    let range = pending_range(site, peer, applied, head)?;
    review.refused_paths = range.outside;
    let rules = load_rule(&site.config, &connection.settings.incoming)?;
    let ack = site.exchange.peer_ack(me, peer)?;
    for (path, blob) in range.replicas {
        let Some(blob) = blob else { continue };
        let previous = previous_replica(site, peer, &path)?;
        review.issues.push(review_one(
            site, connection, &rules, ack, &path, blob, previous,
        )?);
    }
    Ok(review)
}

pub(super) fn review_one(
    site: &Site,
    connection: &Connection,
    rules: &crate::rules::RuleScript,
    ack: Option<Oid>,
    path: &str,
    blob: Oid,
    previous: Option<Replica>,
) -> anyhow::Result<PendingIssue> {
    let me = site.name();
    let peer = connection.peer.as_str();
    let mut pending = PendingIssue {
        path: path.to_string(),
        remote_key: None,
        local_key: None,
        deleted: false,
        new_issue: None,
        changes: Vec::new(),
        description: None,
        added_comments: Vec::new(),
        added_attachments: Vec::new(),
        removed_attachments: Vec::new(),
        verdict: Verdict::Nothing,
        unmapped: Vec::new(),
    };
    let bytes = site.exchange.read_blob(blob)?;
    let replica = match Replica::parse(path, &bytes) {
        Ok(r) => r,
        Err(e) => {
            pending.verdict = Verdict::Error {
                message: e.to_string(),
            };
            return Ok(pending);
        }
    };
    let local = match find_local(site, peer, me, &replica, &replica.effective_origin()) {
        Ok(local) => local,
        // A replica claiming an issue it may not take: the import refuses it.
        Err(ImportFailure::Issue(message)) => {
            pending.verdict = Verdict::Error { message };
            return Ok(pending);
        }
        Err(ImportFailure::Fatal(e)) => return Err(e),
    };
    pending.remote_key = Some(replica.key.clone());
    pending.local_key = local.as_ref().map(|l| l.key.clone());
    pending.deleted = replica.deleted;
    pending.changes = field_changes(previous.as_ref(), &replica);
    let old_description = previous
        .as_ref()
        .and_then(|p| p.description.clone())
        .unwrap_or_default();
    let new_description = replica.description.clone().unwrap_or_default();
    if old_description != new_description {
        pending.description = Some((old_description, new_description));
    }
    if local.is_none() {
        pending.new_issue = Some(replica.clone());
    }
    pending.added_comments = new_comments(me, &replica, local.as_ref());
    (pending.added_attachments, pending.removed_attachments) = super::attachments::changes(
        site,
        peer,
        &replica,
        previous.as_ref(),
        local.as_ref(),
        false,
    )?;
    let Some(local_project) = connection.local_project(&replica.project) else {
        pending.verdict = Verdict::Error {
            message: format!(
                "{peer}'s project {} is not mapped by this connection",
                replica.project
            ),
        };
        return Ok(pending);
    };
    let baseline = match &local {
        Some(local) => conflict::baseline(site, peer, ack, &local.id)?,
        None => conflict::Baseline::default(),
    };
    let changed = peer_changes(
        changed_fields(previous.as_ref(), &replica),
        &replica,
        baseline.told(),
    );
    let input = IncomingInput {
        site: me,
        peer,
        replica: &replica,
        previous: previous.as_ref(),
        local: local.as_ref(),
        local_project,
        added_comments: &pending.added_comments,
        added_attachments: &pending.added_attachments,
        removed_attachments: &pending.removed_attachments,
        changed_fields: &changed,
        conflicts: &[],
    };
    let outcome = rules.run_incoming(&input);
    if let Ok(Some(result)) = &outcome {
        pending.unmapped.clone_from(&result.unmapped);
    }
    pending.verdict = match outcome {
        Err(e) => Verdict::Error {
            message: e.to_string(),
        },
        Ok(None) => Verdict::Skip,
        Ok(Some(result)) => match &local {
            None => Verdict::Create {
                project: result.issue.project.clone(),
            },
            Some(local) => {
                // The same three-way settlement the import would make.
                let mut result = result;
                match conflict::settle(connection, rules, &input, local, &baseline, &result.issue) {
                    Ok(Settlement::Apply { target, .. }) => result.issue = *target,
                    Ok(Settlement::Parked(message)) => {
                        pending.verdict = Verdict::Error { message };
                        return Ok(pending);
                    }
                    Ok(Settlement::Skip) => {
                        pending.verdict = Verdict::Skip;
                        return Ok(pending);
                    }
                    Err(e) => {
                        pending.verdict = Verdict::Error {
                            message: e.to_string(),
                        };
                        return Ok(pending);
                    }
                }
                let patch = patch_for(&result.issue, Some(local));
                let local_now = serde_json::to_value(crate::rules::TargetIssue::from(local))?;
                let wanted = serde_json::to_value(&result.issue)?;
                let changes = if patch.is_empty() {
                    Vec::new()
                } else {
                    object_changes(&local_now, &wanted)
                };
                if changes.is_empty() && result.new_comments.is_empty() && !result.delete_issue {
                    Verdict::Nothing
                } else {
                    Verdict::Update {
                        changes,
                        comments: result.new_comments.len(),
                        delete: result.delete_issue,
                    }
                }
            }
        },
    };
    Ok(pending)
}

/// Field-level differences between two replicas, comments and bookkeeping left out
/// (comments are listed on their own, `updated` changes with everything).
pub(super) fn field_changes(previous: Option<&Replica>, replica: &Replica) -> Vec<FieldChange> {
    let old = previous
        .map(serde_json::to_value)
        .transpose()
        .ok()
        .flatten()
        .unwrap_or(serde_json::Value::Object(Default::default()));
    let new = serde_json::to_value(replica).unwrap_or_default();
    object_changes(&old, &new)
        .into_iter()
        .filter(|c| !matches!(c.field.as_str(), "comments" | "updated" | "ferry"))
        .collect()
}

/// Top-level differences of two JSON objects; custom `fields` are compared one by
/// one so a reviewer sees `fields.Customer`, not the whole map.
fn object_changes(old: &serde_json::Value, new: &serde_json::Value) -> Vec<FieldChange> {
    let empty = serde_json::Map::new();
    let old = old.as_object().unwrap_or(&empty);
    let new = new.as_object().unwrap_or(&empty);
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut changes = Vec::new();
    for key in keys {
        let (o, n) = (old.get(key), new.get(key));
        if o == n {
            continue;
        }
        if key == "fields" {
            for mut inner in object_changes(
                o.unwrap_or(&serde_json::Value::Null),
                n.unwrap_or(&serde_json::Value::Null),
            ) {
                inner.field = format!("fields.{}", inner.field);
                changes.push(inner);
            }
            continue;
        }
        let present = |v: Option<&serde_json::Value>| v.filter(|v| !v.is_null()).cloned();
        if present(o) != present(n) {
            changes.push(FieldChange {
                field: key.clone(),
                old: present(o),
                new: present(n),
            });
        }
    }
    changes
}

/// A word diff of two texts as runs of kept, removed and added words, each run
/// whole, for the terminal and the browser report to mark in their own way
/// (git's `--word-diff=plain` brackets, `<del>` and `<ins>`).
pub fn word_runs(old: &str, new: &str) -> Vec<(similar::ChangeTag, String)> {
    let mut runs: Vec<(similar::ChangeTag, String)> = Vec::new();
    for change in similar::TextDiff::from_words(old, new).iter_all_changes() {
        match runs.last_mut() {
            Some((tag, run)) if *tag == change.tag() => run.push_str(change.value()),
            _ => runs.push((change.tag(), change.value().to_string())),
        }
    }
    runs
}

/// What an approval did.
#[derive(Debug)]
pub enum Approval {
    /// The commit was approved already, by an approval up to `up_to`.
    AlreadyApproved {
        /// The newest approved commit.
        up_to: Oid,
    },
    /// Approved; the rejections the approval goes past, now superseded.
    Approved {
        /// Rejections of commits this approval includes.
        superseded: Vec<ReviewVerdict>,
    },
}

/// Approves `peer`'s fetched commits up to `commit` for import, by `by`:
/// the approved ref moves there, the verdict is recorded, and rejections of
/// commits it includes are superseded (their connection errors resolved).
pub fn approve(site: &Site, peer: &str, commit: Oid, by: &str) -> anyhow::Result<Approval> {
    let approved = approved_ref(peer);
    if let Some(up_to) = site.exchange.resolve(&approved)?
        && site.exchange.is_ancestor(commit, up_to)?
    {
        return Ok(Approval::AlreadyApproved { up_to });
    }
    let mut superseded = Vec::new();
    for rejection in site.ledger.open_rejections(peer)? {
        let Ok(rejected) = Oid::from_str(&rejection.commit) else {
            continue;
        };
        if site.exchange.is_ancestor(rejected, commit)? {
            site.ledger.supersede_rejection(peer, &rejection.commit)?;
            site.ledger
                .resolve_subject(peer, &review_subject(rejected))?;
            superseded.push(rejection);
        }
    }
    site.exchange
        .set_ref(&approved, commit, &format!("ferry review approve by {by}"))?;
    site.ledger
        .record_verdict(peer, &commit.to_string(), "approved", by, None)?;
    Ok(Approval::Approved { superseded })
}

/// Rejects `peer`'s commit `commit` for import, by `by`, with `reason`: it and
/// every later commit stay out of this tracker, and the rejection stands as a
/// connection-level error until a later approval. Returns the approval that
/// already includes the commit (`Some(up_to)`) instead, when there is one.
pub fn reject(
    site: &Site,
    peer: &str,
    commit: Oid,
    reason: &str,
    by: &str,
) -> anyhow::Result<Option<Oid>> {
    if let Some(up_to) = site.exchange.resolve(&approved_ref(peer))?
        && site.exchange.is_ancestor(commit, up_to)?
    {
        return Ok(Some(up_to));
    }
    site.ledger
        .record_verdict(peer, &commit.to_string(), "rejected", by, Some(reason))?;
    site.ledger.record_error(
        crate::failure::Level::Connection,
        Some(peer),
        Some(&review_subject(commit)),
        &format!(
            "{by} rejected {peer}'s commit {} in review: {reason}; it and every later commit \
             stay out of this tracker until {peer} sends a replacement that is approved \
             (or a reviewer approves past it)",
            short_id(commit),
        ),
    )?;
    Ok(None)
}

/// The error subject of a rejected commit.
fn review_subject(commit: Oid) -> String {
    format!("review {}", short_id(commit))
}

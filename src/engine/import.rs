//! Import: the peer's new commits → changed replicas → incoming rule → tracker.
//!
//! The git tree diff between the last applied commit and the peer's head names the
//! replicas to look at; imports that failed before are retried with them. Each
//! replica blob is recorded as applied once its changes are in the tracker, and the
//! applied ref only moves after every replica of the range has been handled, so a
//! run that dies halfway resumes where it stopped: replicas already applied are
//! skipped by blob id, and a create retried after a crash finds the issue it made
//! through its origin marker instead of making a second one. Replicas are
//! imported in batches, each committed to the tracker and the ledger at once
//! (see [`batch`]).

use std::collections::HashMap;

use git2::Oid;

use self::batch::{Batch, Subject};
use self::group::{Group, PendingCreate};
use self::one::{Imported, Range, import_one};
use super::conflict::{self, Settled};
use super::{IssueError, issue_error, load_rule};
use crate::config::Connection;
use crate::exchange::{applied_ref, approved_ref, peer_branch};
use crate::failpoint;
use crate::ledger::{NewStep, Step};
use crate::model::{Comment, Issue, Origin};
use crate::replica::{MAX_REPLICA_BYTES, Replica, parse_stored_path};
use crate::rules::TargetIssue;
use crate::site::Site;
use crate::tracker::{IssuePatch, NewComment, NewIssueWithComments, TrackerError};
use crate::words::short_id;

mod batch;
mod group;
mod one;
mod relations;
#[cfg(test)]
mod tests;

pub use relations::RelationCounts;

/// What happened to one replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportAction {
    /// A local issue was created.
    Created,
    /// The local issue was changed.
    Updated,
    /// The replica asked for nothing that was not already so.
    Unchanged,
    /// The incoming rule skipped it, or it concerns an issue deleted here.
    Skipped,
    /// The local issue was deleted.
    Deleted,
}

/// One imported replica.
#[derive(Debug, Clone)]
pub struct ImportedIssue {
    /// The replica path.
    pub path: String,
    /// The peer's key.
    pub remote_key: String,
    /// The local key, when there is a local issue.
    pub local_key: Option<String>,
    /// What was done.
    pub action: ImportAction,
    /// Comments added.
    pub comments_added: usize,
    /// Attachments uploaded.
    pub attachments_added: usize,
    /// Attachment copies removed.
    pub attachments_removed: usize,
    /// Fields both sites had changed, and how each was settled.
    pub conflicts: Vec<Settled>,
    /// Links (or the parent) removed because the replica no longer asks for them.
    pub relations_removed: usize,
}

/// What one import did.
#[derive(Debug, Clone, Default)]
pub struct ImportReport {
    /// The peer commit now applied (`None`: the peer has shared nothing yet).
    pub applied: Option<Oid>,
    /// The peer commit applied before.
    pub previous: Option<Oid>,
    /// Replicas handled.
    pub issues: Vec<ImportedIssue>,
    /// Replicas that failed (queued for retry).
    pub errors: Vec<IssueError>,
    /// With `review.required`: fetched commits left out because no reviewer has
    /// approved them yet.
    pub awaiting_review: usize,
    /// Links and parents made, removed, and still waiting for their other end.
    pub relations: RelationCounts,
}

/// Imports what the peer changed since the last applied commit.
pub fn import(site: &mut Site, connection: &Connection) -> anyhow::Result<ImportReport> {
    let me = site.name().to_string();
    let peer = connection.peer.clone();
    let mut report = ImportReport::default();
    let Some(fetched) = site.exchange.resolve(&peer_branch(&me, &peer))? else {
        return Ok(report);
    };
    let applied = site.exchange.resolve(&applied_ref(&peer))?;
    report.previous = applied;
    // With review required, import stops at the last approved commit.
    let head = if connection.settings.review.required {
        // An approval older than what is applied (review switched on later) is
        // already passed.
        let approved = match (site.exchange.resolve(&approved_ref(&peer))?, applied) {
            (Some(approved), Some(applied)) if site.exchange.is_ancestor(approved, applied)? => {
                None
            }
            (approved, _) => approved,
        };
        let gate = approved.or(applied);
        report.awaiting_review = site.exchange.commits_between(gate, fetched)?.len();
        match gate {
            Some(gate) => gate,
            None => return Ok(report),
        }
    } else {
        fetched
    };
    report.applied = Some(head);
    if applied == Some(head) && site.ledger.due_retries(&peer)?.is_empty() {
        // Nothing to import, but a relation may wait for an issue that came
        // another way, or a killed run may have made one without recording it.
        relations::settle(site, connection, &mut report.relations, &mut report.errors)?;
        return Ok(report);
    }
    let rules = load_rule(&site.config, &connection.settings.incoming)?;
    let ack = site.exchange.peer_ack(&me, &peer)?;
    let short = short_id(head);

    let range = pending_range(site, &peer, applied, head)?;
    tracing::info!(
        %peer,
        from = ?applied.map(short_id),
        to = %short_id(head),
        replicas = range.replicas.len(),
        "import"
    );
    for path in &range.outside {
        let message =
            format!("commit {short} of {peer}'s branch holds {path:?}, outside issues/; ignored");
        report
            .errors
            .push(issue_error(site, connection, path, message)?);
    }

    let mut batch = Batch::open(site, &peer)?;
    let applying = Range {
        connection,
        rules: &rules,
        ack,
        head,
        // A server tracker takes new issues in groups (see `group`); a tracker
        // that batches its writes gains nothing from it.
        group_size: match batch.deferred() {
            true => 1,
            false => site.tracker.create_group(),
        },
    };
    let applied_all = apply_range(site, &applying, range.replicas, &mut batch, &mut report)
        .and_then(|()| batch.flush(site, false));
    if let Err(e) = applied_all {
        batch.abandon(site);
        return Err(e);
    }
    no_longer_shared(site, &peer, &range.removed)?;
    // Every replica of the range is in: relations whose other end arrived now
    // (in this range or an earlier one) are made.
    report.relations.removed = report.issues.iter().map(|i| i.relations_removed).sum();
    relations::settle(site, connection, &mut report.relations, &mut report.errors)?;
    site.ledger.checkpoint()?;
    failpoint::hit("before-applied-ref");
    site.exchange.set_ref(
        &applied_ref(&peer),
        head,
        &format!("ferry import from {peer}"),
    )?;
    Ok(report)
}

/// The peer stopped sharing these replicas' issues: the local copy (or the
/// original) stays, gets an internal comment saying so (visible here, never
/// sent), and is recorded as unshared by the peer, so it is no longer exported
/// to it; its replica coming back shares it again (see [`import_one`]). A
/// crash between the comment and the ledger only repeats the comment.
fn no_longer_shared(site: &mut Site, peer: &str, removed: &[String]) -> anyhow::Result<()> {
    for path in removed {
        let Ok((_, remote_id, _)) = parse_stored_path(path) else {
            continue;
        };
        // Forgotten, so the same replica coming back is imported again.
        site.ledger.mark_applied(peer, path, "")?;
        let Some(local_id) = site.ledger.local_for(peer, &remote_id)? else {
            continue;
        };
        if site
            .ledger
            .pick_for(peer, &local_id)?
            .is_some_and(|pick| !pick.shared)
        {
            continue;
        }
        let Some(issue) = site.tracker.get(&local_id)? else {
            continue;
        };
        if issue.deleted {
            continue;
        }
        let note = NewComment {
            author: "ferry".into(),
            body: format!(
                "No longer shared by {peer}: this issue stays, but changes no longer \
                 travel between the two sites until {peer} shares it again."
            ),
            internal: true,
            origin: None,
        };
        site.tracker.add_comment(&local_id, &note)?;
        site.ledger.pick(peer, &local_id, false, true)?;
        tracing::info!(%peer, key = %issue.key, "no longer shared by the peer");
    }
    Ok(())
}

/// Imports the replicas of a range, in batches (see [`batch`]); the last batch
/// is left for the caller to commit.
fn apply_range(
    site: &mut Site,
    range: &Range,
    replicas: Vec<(String, Option<Oid>)>,
    batch: &mut Batch,
    report: &mut ImportReport,
) -> anyhow::Result<()> {
    let connection = range.connection;
    let peer = connection.peer.clone();
    let short = short_id(range.head);
    // What a killed run left open, read once: each replica says what it resumes.
    let mut interrupted: HashMap<String, Vec<Step>> = HashMap::new();
    for step in site.ledger.interrupted_steps(&peer, None)? {
        interrupted.entry(step.path.clone()).or_default().push(step);
    }
    let progress = crate::progress::bar(replicas.len(), format!("import {peer}"));
    let group_size = range.group_size;
    let mut group = Group::default();
    let mut origins: HashMap<String, Origin> = HashMap::new();
    for (n, (path, blob)) in replicas.iter().enumerate() {
        progress.inc(1);
        if range.grouping() && n % group_size == 0 {
            let ahead = &replicas[n..replicas.len().min(n + group_size)];
            origins = prefetch_origins(site, &peer, ahead)?;
        }
        if batch.full() {
            batch.flush(site, true)?;
        }
        let Some(blob) = *blob else {
            // Was pending, and the peer has stopped sharing it since.
            site.ledger.mark_applied(&peer, path, "")?;
            continue;
        };
        // Its lookup must see the creates of the group it could be about.
        if origins.get(path).is_some_and(|o| group.has(o)) {
            flush_group(site, connection, short.as_str(), &mut group, report)?;
        }
        let blob_id = blob.to_string();
        let subject = Subject {
            path,
            blob: &blob_id,
        };
        tracing::debug!(%peer, %path, blob = %short_id(blob), "import replica");
        batch.enter();
        match import_one(site, range, &subject, blob, batch, &mut interrupted) {
            Ok(Imported::Done(done)) => {
                batch.applied(&subject);
                report.issues.push(*done);
            }
            Ok(Imported::Deferred(create)) => {
                group.push(*create);
                if group.len() >= group_size {
                    flush_group(site, connection, short.as_str(), &mut group, report)?;
                }
            }
            Err(ImportFailure::Issue(message)) => {
                fail_replica(site, connection, &short, path, message, report)?;
            }
            Err(ImportFailure::Fatal(e)) => return Err(e),
        }
    }
    flush_group(site, connection, short.as_str(), &mut group, report)
}

/// Records that the replica at `path` failed, to be tried again.
fn fail_replica(
    site: &mut Site,
    connection: &Connection,
    short: &str,
    path: &str,
    message: String,
    report: &mut ImportReport,
) -> anyhow::Result<()> {
    let retry = site
        .ledger
        .retry_later(&connection.peer, path, &site.config.site.retry)?;
    let message = format!("commit {short}: {message}");
    let mut error = issue_error(site, connection, path, message)?;
    error.message += &if retry.parked {
        format!(
            " (parked after {} tries; `ferry retry` queues it again)",
            retry.tries
        )
    } else {
        format!(" (try {}; retried on a later run)", retry.tries)
    };
    report.errors.push(error);
    Ok(())
}

/// Looks up ahead the origins of the replicas in `ahead` that no link names
/// (the ones an import looks up by origin), and returns them by path. A
/// replica that does not parse is left to its import to report.
fn prefetch_origins(
    site: &Site,
    peer: &str,
    ahead: &[(String, Option<Oid>)],
) -> anyhow::Result<HashMap<String, Origin>> {
    let me = site.name();
    let mut origins = HashMap::new();
    for (path, blob) in ahead {
        let Some(blob) = blob else {
            continue;
        };
        if site.exchange.blob_size(*blob)? > MAX_REPLICA_BYTES {
            continue;
        }
        let Ok(replica) = Replica::parse(path, &site.exchange.read_blob(*blob)?) else {
            continue;
        };
        if site.ledger.local_for(peer, &replica.id)?.is_some() {
            continue;
        }
        let origin = replica.effective_origin();
        if origin.site != me {
            origins.insert(path.clone(), origin);
        }
    }
    let wanted: Vec<Origin> = origins.values().cloned().collect();
    site.tracker.prefetch_origins(&wanted)?;
    Ok(origins)
}

/// Creates the new issues waiting in `group` (see `group`): journaled, made
/// together, then each linked, its baseline kept and marked applied.
fn flush_group(
    site: &mut Site,
    connection: &Connection,
    short: &str,
    group: &mut Group,
    report: &mut ImportReport,
) -> anyhow::Result<()> {
    let pending = group.take();
    if pending.is_empty() {
        return Ok(());
    }
    let peer = connection.peer.clone();
    let steps: Vec<NewStep> = pending
        .iter()
        .map(|p| NewStep {
            path: p.path.clone(),
            blob: p.blob.clone(),
            kind: StepKind::Create.name(),
            target: None,
        })
        .collect();
    let steps = site.ledger.begin_steps(&peer, &steps)?;
    let news: Vec<NewIssueWithComments> = pending.iter().map(|p| p.new.clone()).collect();
    let mut results = site.tracker.create_many(&news).into_iter();
    let mut stop = None;
    for (create, step) in pending.into_iter().zip(steps) {
        // Not tried (the tracker became unavailable): its step stays open, and
        // the next run looks the issue up by origin before making it.
        let Some(created) = results.next() else {
            // Only an unavailable tracker may leave some untried; anything else
            // must not let the applied ref pass them.
            stop = stop.or_else(|| {
                Some(anyhow::anyhow!(
                    "the tracker said nothing of the new issue of {}",
                    create.path
                ))
            });
            break;
        };
        let PendingCreate {
            path,
            blob,
            remote_id,
            remote_key,
            remote_target,
            wanted,
            mut done,
            ..
        } = create;
        let issue = match created.issue {
            Ok(issue) => issue,
            Err(e) => {
                site.ledger.finish_step(step)?;
                match ImportFailure::from(e) {
                    ImportFailure::Issue(message) => {
                        fail_replica(site, connection, short, &path, message, report)?;
                    }
                    ImportFailure::Fatal(e) => stop = stop.or(Some(e)),
                }
                continue;
            }
        };
        failpoint::hit("after-create");
        let mut failure = None;
        for comment in created.comments {
            match comment {
                Ok(_) => {
                    failpoint::hit("after-comment");
                    done.comments_added += 1;
                }
                Err(e) => failure = Some(ImportFailure::from(e)),
            }
        }
        done.local_key = Some(issue.key.clone());
        let applied = failure.is_none();
        site.ledger.in_transaction(|ledger| {
            ledger.link(&peer, &remote_id, &remote_key, &issue.id)?;
            for relation in &wanted {
                ledger.want_relation(&peer, &issue.id, relation, &path)?;
            }
            ledger.finish_step(step)?;
            if applied {
                conflict::record_import(
                    ledger,
                    &peer,
                    &issue,
                    &remote_target,
                    &conflict::Baseline::default(),
                )?;
                ledger.mark_applied(&peer, &path, &blob)?;
                ledger.resolve_subject(&peer, &path)?;
            }
            Ok(())
        })?;
        match failure {
            None => {
                failpoint::hit("after-mark-applied");
                report.issues.push(done);
            }
            Some(ImportFailure::Issue(message)) => {
                fail_replica(site, connection, short, &path, message, report)?;
            }
            Some(ImportFailure::Fatal(e)) => stop = stop.or(Some(e)),
        }
    }
    match stop {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// What a peer's new commits ask of this site.
pub(super) struct PendingRange {
    /// Replica paths to apply, with their blob at the head (`None`: a retry whose
    /// replica the peer has removed since); already-applied blobs are left out.
    pub replicas: Vec<(String, Option<Oid>)>,
    /// Paths outside `issues/` and `site.yaml`, which no replica may use.
    pub outside: Vec<String>,
    /// Replicas the peer removed (it stopped sharing them), not moved elsewhere.
    pub removed: Vec<String>,
}

/// The replicas between the applied commit and the peer's head, plus the retries.
pub(super) fn pending_range(
    site: &Site,
    peer: &str,
    applied: Option<Oid>,
    head: Oid,
) -> anyhow::Result<PendingRange> {
    // Path → blob at the head: the diff names it already, so only retries are
    // looked up (a lookup reads the project's tree, some 40 KB in a large site,
    // too large for libgit2's object cache: once per replica it was the cost of
    // the site, not of the change).
    let mut paths = std::collections::BTreeMap::new();
    let mut outside = Vec::new();
    let mut removed = Vec::new();
    for change in site.exchange.diff_replicas(applied, head)? {
        // Attachment content is read when a replica asks for it (and was checked
        // for its layout when the commit was admitted).
        if change.path == "site.yaml" || change.path.starts_with("attachments/") {
            continue;
        }
        if !change.path.starts_with("issues/") {
            outside.push(change.path);
            continue;
        }
        // A removed replica means the peer stopped sharing the issue; only a
        // tombstone (`deleted: true`) means it was deleted.
        match change.new {
            Some(blob) => {
                paths.insert(change.path, Some(blob));
            }
            None => removed.push(change.path),
        }
    }
    for path in site.ledger.due_retries(peer)? {
        if let std::collections::btree_map::Entry::Vacant(entry) = paths.entry(path) {
            let blob = site.exchange.find_replica(head, entry.key())?;
            entry.insert(blob.map(|(_, blob)| blob));
        }
    }
    // A replica that moved (its issue went to another project) is not removed.
    let kept: std::collections::HashSet<String> = paths
        .keys()
        .filter_map(|path| parse_stored_path(path).ok().map(|(_, id, _)| id))
        .collect();
    removed.retain(|path| parse_stored_path(path).is_ok_and(|(_, id, _)| !kept.contains(&id)));
    let mut replicas = Vec::new();
    for (path, blob) in paths {
        let applied_blob = site.ledger.applied_blob(peer, &path)?;
        if blob.is_some() && applied_blob == blob.map(|b| b.to_string()) {
            continue;
        }
        replicas.push((path, blob));
    }
    Ok(PendingRange {
        replicas,
        outside,
        removed,
    })
}

/// Why one replica did not import: its own problem, or one that stops the run.
pub(super) enum ImportFailure {
    Issue(String),
    Fatal(anyhow::Error),
}

impl From<TrackerError> for ImportFailure {
    fn from(e: TrackerError) -> Self {
        match e {
            TrackerError::Unavailable(_) => ImportFailure::Fatal(e.into()),
            other => ImportFailure::Issue(other.to_string()),
        }
    }
}

impl From<ImportFailure> for anyhow::Error {
    fn from(failure: ImportFailure) -> Self {
        match failure {
            ImportFailure::Issue(message) => anyhow::anyhow!(message),
            ImportFailure::Fatal(e) => e,
        }
    }
}

fn fatal<E: Into<anyhow::Error>>(e: E) -> ImportFailure {
    ImportFailure::Fatal(e.into())
}

/// The tracker writes an import is made of.
#[derive(Debug, Clone, Copy)]
enum StepKind {
    Create,
    Update,
    Comment,
    Attach,
    RemoveAttachment,
    Delete,
    Unlink,
}

impl StepKind {
    /// The name the ledger's journal uses.
    fn name(self) -> &'static str {
        match self {
            StepKind::Create => "create",
            StepKind::Update => "update",
            StepKind::Comment => "comment",
            StepKind::Attach => "attach",
            StepKind::RemoveAttachment => "remove-attachment",
            StepKind::Delete => "delete",
            StepKind::Unlink => "unlink",
        }
    }

    /// The fail point right after the write.
    fn failpoint(self) -> &'static str {
        match self {
            StepKind::Create => "after-create",
            StepKind::Update => "after-update",
            StepKind::Comment => "after-comment",
            StepKind::Attach => "after-attach",
            StepKind::RemoveAttachment => "after-remove-attachment",
            StepKind::Delete => "after-delete",
            StepKind::Unlink => "after-unlink",
        }
    }
}

/// How a replica found its local issue.
pub(super) enum Found {
    /// Through the ledger's link of the peer's issue, which this site made
    /// itself: the replica owns the issue.
    Linked(Issue),
    /// Through the origin the replica names: only a claim, which
    /// [`vet_claim`] accepts or refuses.
    Claimed(Issue),
}

impl Found {
    /// The local issue, however it was found.
    pub(super) fn issue(&self) -> &Issue {
        match self {
            Found::Linked(issue) | Found::Claimed(issue) => issue,
        }
    }
}

/// The local issue a replica is about: one we already linked to the peer's
/// issue, our own issue coming back, or one a previous (perhaps interrupted) run
/// created with this origin. What the replica says of its origin is the peer's
/// word, so an issue found that way is a [`Found::Claimed`] to vet.
pub(super) fn locate(
    site: &Site,
    peer: &str,
    me: &str,
    replica: &Replica,
    origin: &Origin,
) -> Result<Option<Found>, ImportFailure> {
    if let Some(id) = site.ledger.local_for(peer, &replica.id).map_err(fatal)?
        && let Some(issue) = site.tracker.get(&id)?
    {
        return Ok(Some(Found::Linked(issue)));
    }
    let claimed = if origin.site == me {
        site.tracker.get(&origin.id)?
    } else {
        site.tracker.find_by_origin(origin)?
    };
    Ok(claimed.map(Found::Claimed))
}

/// Whether the peer's replica may take the local issue it claims through its
/// origin. A signature only proves the peer wrote the replica, not that the
/// issue it names is the peer's business: a peer, or whoever holds its key,
/// could otherwise name any local issue, overwrite it and, once linked, receive
/// it and its public comments with the next export. So the claim holds only for
///
/// - an issue this site exported to this very peer (the ledger's `shared`
///   records), which the peer then legitimately holds a copy of;
/// - an issue this site made from the peer's own issue (its origin is the
///   peer's: found by the marker of `origin`, which names the peer);
/// - the issue a create of this replica, interrupted by a killed run, made
///   (`resuming_create`): the journal says this site made it for this peer;
///
/// and never for an issue already linked to another of the peer's issues: one
/// local issue is one of the peer's issues, and the one linked first (by this
/// site, through an import it did) keeps it. Two new replicas claiming the
/// same issue in one range cannot be told apart by their signatures (the same
/// key made both); the first in path order links, the other is refused, and
/// either way the peer only reaches an issue it was already given.
pub(super) fn vet_claim(
    site: &Site,
    peer: &str,
    replica: &Replica,
    origin: &Origin,
    local: &Issue,
    resuming_create: bool,
) -> Result<(), ImportFailure> {
    let path = replica.path();
    if let Some((_, other)) = site
        .ledger
        .remote_for(peer, &local.id)
        .map_err(fatal)?
        .filter(|(remote_id, _)| remote_id != &replica.id)
    {
        return Err(ImportFailure::Issue(format!(
            "{path}: refused: it claims the local issue {} through its origin, but that \
             issue is already linked to {peer}'s {other}; only that replica may change it",
            local.key
        )));
    }
    let allowed = resuming_create
        || origin.site == peer
        || site.ledger.is_shared(peer, &local.id).map_err(fatal)?;
    if allowed {
        return Ok(());
    }
    Err(ImportFailure::Issue(format!(
        "{path}: refused: it claims the local issue {} through its origin ({}:{}), but that \
         issue was never shared with {peer}; nothing was changed and it is not linked",
        local.key, origin.site, origin.id
    )))
}

/// [`locate`] and [`vet_claim`] together, for callers with no batch to commit in
/// between.
pub(super) fn find_local(
    site: &Site,
    peer: &str,
    me: &str,
    replica: &Replica,
    origin: &Origin,
) -> Result<Option<Issue>, ImportFailure> {
    match locate(site, peer, me, replica, origin)? {
        None => Ok(None),
        Some(Found::Linked(issue)) => Ok(Some(issue)),
        Some(Found::Claimed(issue)) => {
            vet_claim(site, peer, replica, origin, &issue, false)?;
            Ok(Some(issue))
        }
    }
}

pub(super) fn previous_replica(
    site: &Site,
    peer: &str,
    path: &str,
) -> anyhow::Result<Option<Replica>> {
    let Some(blob) = site.ledger.applied_blob(peer, path)? else {
        return Ok(None);
    };
    let Ok(oid) = Oid::from_str(&blob) else {
        return Ok(None);
    };
    let bytes = site.exchange.read_blob(oid)?;
    Ok(Replica::parse(path, &bytes).ok())
}

/// Where a replica comment was first written: its own origin marker, or the peer
/// that owns the replica.
fn comment_origin(replica: &Replica, comment: &Comment) -> Origin {
    comment.origin.clone().unwrap_or_else(|| Origin {
        site: replica.site.clone(),
        id: comment.id.clone(),
    })
}

/// The replica's comments this site does not have: never an echo of a comment that
/// originated here, never one already copied (by this peer or through another).
pub(super) fn new_comments(me: &str, replica: &Replica, local: Option<&Issue>) -> Vec<Comment> {
    replica
        .comments
        .iter()
        .filter(|c| {
            let origin = comment_origin(replica, c);
            origin.site != me
                && !local.is_some_and(|l| {
                    l.comments
                        .iter()
                        .any(|lc| lc.origin.as_ref() == Some(&origin))
                })
        })
        .cloned()
        .collect()
}

/// Names of the replica fields that differ from the previously applied replica.
pub(super) fn changed_fields(previous: Option<&Replica>, replica: &Replica) -> Vec<String> {
    let (Ok(serde_json::Value::Object(new)), prev) = (
        serde_json::to_value(replica),
        previous.map(serde_json::to_value),
    ) else {
        return Vec::new();
    };
    let old = match prev {
        Some(Ok(serde_json::Value::Object(old))) => old,
        _ => Default::default(),
    };
    let mut keys: Vec<&String> = new.keys().chain(old.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| new.get(*k) != old.get(*k))
        .cloned()
        .collect()
}

/// `changed` without the fields whose value in the replica is the one this
/// site last told the peer (`told`, see [`conflict::Baseline::told`], in the
/// names of [`conflict::field_values`]): the peer holding what this site sent is this
/// site's own change coming back, not the peer's. A rule that maps a field
/// only when it changed (the template's status map) then leaves it alone: a
/// many-to-one map would otherwise turn the echo of this site's Reopened into
/// its Open.
pub(super) fn peer_changes(
    changed: Vec<String>,
    replica: &Replica,
    told: &conflict::FieldValues,
) -> Vec<String> {
    let Ok(serde_json::Value::Object(values)) = serde_json::to_value(replica) else {
        return changed;
    };
    changed
        .into_iter()
        .filter(|field| {
            // A value the replica leaves out is no value, as in `told`.
            let sent = values.get(field).unwrap_or(&serde_json::Value::Null);
            told.get(field) != Some(sent)
        })
        .collect()
}

/// The changes that turn `local` into what the rule wants; everything for a create.
pub(super) fn patch_for(target: &TargetIssue, local: Option<&Issue>) -> IssuePatch {
    fn differs<T: PartialEq + Clone>(want: &T, have: Option<&T>) -> Option<T> {
        (have != Some(want)).then(|| want.clone())
    }
    let mut labels = target.labels.clone();
    crate::model::normalize_set(&mut labels);
    let mut components = target.components.clone();
    crate::model::normalize_set(&mut components);
    let mut patch = IssuePatch {
        issue_type: differs(&target.issue_type, local.map(|l| &l.issue_type)),
        summary: differs(&target.summary, local.map(|l| &l.summary)),
        description: differs(&target.description, local.map(|l| &l.description)),
        status: differs(&target.status, local.map(|l| &l.status)),
        priority: differs(&target.priority, local.map(|l| &l.priority)),
        // Trackers set a resolution with the status change that needs it
        // (Jira's transition screens); alone it would be a change that some
        // trackers cannot store, so it travels with a status change only.
        // The workflow step takes the resolution the rule wants, not the one
        // the issue had (a reopened issue's old one).
        resolution: (local.map(|l| &l.status) != Some(&target.status))
            .then(|| target.resolution.clone()),
        assignee: differs(&target.assignee, local.map(|l| &l.assignee)),
        reporter: differs(&target.reporter, local.map(|l| &l.reporter)),
        labels: differs(&labels, local.map(|l| &l.labels)),
        components: differs(&components, local.map(|l| &l.components)),
        fields: Default::default(),
        // Relations follow the ledger, not the target (see `relations`).
        add_links: Vec::new(),
        remove_links: Vec::new(),
        parent: None,
    };
    for (name, value) in &target.fields {
        if local.and_then(|l| l.fields.get(name)) != Some(value) {
            patch.fields.insert(name.clone(), value.clone());
        }
    }
    if let Some(local) = local {
        for name in local.fields.keys() {
            if !target.fields.contains_key(name) {
                patch.fields.insert(name.clone(), serde_json::Value::Null);
            }
        }
    }
    patch
}

//! Importing one replica, in the order its steps must happen: read and check
//! the peer's bytes, find the local issue they are about, decide with the
//! incoming rule and the conflict policy, then write (the issue, its relations,
//! comments and attachments) through the batch's journal.

use std::collections::{BTreeSet, HashMap};

use git2::Oid;

use super::batch::{Batch, Subject};
use super::group::PendingCreate;
use super::{
    Found, ImportAction, ImportFailure, ImportedIssue, StepKind, changed_fields, comment_origin,
    fatal, locate, new_comments, patch_for, peer_changes, previous_replica, relations, vet_claim,
};
use crate::attachment::safe_file_name;
use crate::config::Connection;
use crate::engine::attachments;
use crate::engine::conflict::{self, Settlement};
use crate::failpoint;
use crate::ledger::{KnownAttachment, Relation, Step};
use crate::model::{Attachment, Comment, Issue, Origin};
use crate::replica::{MAX_REPLICA_BYTES, Replica};
use crate::rules::{IncomingInput, IncomingResult, RuleScript, TargetComment};
use crate::site::Site;
use crate::tracker::{NewAttachment, NewComment, NewIssue, NewIssueWithComments};

/// What every replica of one range shares.
pub(super) struct Range<'a> {
    /// The connection the replicas came through.
    pub connection: &'a Connection,
    /// Its incoming rule.
    pub rules: &'a RuleScript,
    /// The last commit of this site's branch the peer acknowledged: the
    /// baseline of the three-way merge (see `conflict`).
    pub ack: Option<Oid>,
    /// The peer commit being applied, where attachment content is read.
    pub head: Oid,
    /// New issues are made this many at a time (see `group`); 1: each at once.
    pub group_size: usize,
}

impl Range<'_> {
    /// Whether new issues wait for their group's writes.
    pub fn grouping(&self) -> bool {
        self.group_size > 1
    }
}

/// What importing one replica came to.
pub(super) enum Imported {
    /// Done (or skipped).
    Done(Box<ImportedIssue>),
    /// A new issue waiting for its group's writes.
    Deferred(Box<PendingCreate>),
}

/// Imports the replica `blob` at `subject`: reads it, finds its local issue,
/// asks the rule, and writes what it decided.
pub(super) fn import_one(
    site: &mut Site,
    range: &Range,
    subject: &Subject,
    blob: Oid,
    batch: &mut Batch,
    interrupted: &mut HashMap<String, Vec<Step>>,
) -> Result<Imported, ImportFailure> {
    let path = subject.path;
    let peer = range.connection.peer.as_str();
    let replica = read_replica(site, peer, path, blob)?;
    let resumed = Resumed::take(interrupted, path);
    let previous = previous_replica(site, peer, path).map_err(fatal)?;
    let Some(local_project) = range.connection.local_project(&replica.project) else {
        return Err(ImportFailure::Issue(format!(
            "{path}: {peer}'s project {} is not mapped by this connection; add it with --project LOCAL={}",
            replica.project, replica.project
        )));
    };
    let origin = replica.effective_origin();
    let local = find_target(site, batch, peer, &replica, &origin, resumed.create)?;
    let mut done = ImportedIssue {
        path: path.to_string(),
        remote_key: replica.key.clone(),
        local_key: local.as_ref().map(|i| i.key.clone()),
        action: ImportAction::Unchanged,
        comments_added: 0,
        attachments_added: 0,
        attachments_removed: 0,
        conflicts: Vec::new(),
        relations_removed: 0,
    };
    let skipped = |mut done: ImportedIssue| {
        done.action = ImportAction::Skipped;
        Ok(Imported::Done(Box::new(done)))
    };
    if !taken_here(site, batch, peer, &replica, local.as_ref())? {
        return skipped(done);
    }
    let seen = Seen {
        replica: &replica,
        previous: previous.as_ref(),
        local: local.as_ref(),
        local_project,
    };
    let Some(decision) = decide(site, range, &seen, resumed.upload, &mut done)? else {
        return skipped(done);
    };

    let comments = comments_to_add(
        peer,
        &replica,
        &decision.result.new_comments,
        &decision.added_comments,
        blob,
    )?;
    let relations = wanted_relations(site.name(), &replica, &decision, local.as_ref());
    let author = site.config.site.sync_user.clone();
    let local = match local {
        Some(local) => update(site, batch, subject, local, &decision, &author, &mut done)?,
        None => {
            failpoint::hit("before-create");
            let new = NewIssue {
                project: decision.result.issue.project.clone(),
                patch: patch_for(&decision.result.issue, None),
                author: author.clone(),
                origin: Some(origin),
            };
            if range.grouping() && !decision.uploads() && !decision.result.delete_issue {
                done.action = ImportAction::Created;
                done.comments_added = 0;
                return Ok(Imported::Deferred(Box::new(PendingCreate {
                    path: path.to_string(),
                    blob: subject.blob.to_string(),
                    remote_id: replica.id.clone(),
                    remote_key: replica.key.clone(),
                    new: NewIssueWithComments {
                        issue: new,
                        comments,
                    },
                    remote_target: decision.remote_target,
                    wanted: relations,
                    done,
                })));
            }
            let created = batch.write(site, subject, StepKind::Create, None, |t| t.create(&new))?;
            link(site, batch, peer, &replica, &created.id)?;
            done.action = ImportAction::Created;
            created
        }
    };
    done.local_key = Some(local.key.clone());
    done.relations_removed = relations::apply(
        site,
        batch,
        subject,
        &local,
        relations,
        replica.origin.is_none(),
        &author,
    )?;
    write_additions(
        site, range, batch, subject, &local, comments, &decision, &author, &mut done,
    )?;
    finish(
        site, batch, subject, peer, &local, decision, &author, &mut done,
    )?;
    Ok(Imported::Done(Box::new(done)))
}

/// The peer's replica at `path`, refused as that issue's error when it is over
/// the size limit, does not parse, or says another site wrote it.
pub(super) fn read_replica(
    site: &Site,
    peer: &str,
    path: &str,
    blob: Oid,
) -> Result<Replica, ImportFailure> {
    let size = site.exchange.blob_size(blob).map_err(fatal)?;
    if size > MAX_REPLICA_BYTES {
        return Err(ImportFailure::Issue(format!(
            "{path}: replica is {size} bytes, over the limit of {MAX_REPLICA_BYTES}"
        )));
    }
    let bytes = site.exchange.read_blob(blob).map_err(fatal)?;
    let replica = Replica::parse(path, &bytes).map_err(|e| ImportFailure::Issue(e.to_string()))?;
    if replica.site != peer {
        return Err(ImportFailure::Issue(format!(
            "{path}: replica says it was written by {:?}, but it is on {peer}'s branch",
            replica.site
        )));
    }
    Ok(replica)
}

/// What a killed run left open for one replica, as far as this import cares.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Resumed {
    /// A create was under way: the issue it may have made is this replica's.
    pub create: bool,
    /// An upload was under way: a copy may be in the tracker unrecorded.
    pub upload: bool,
}

impl Resumed {
    /// Takes the open steps of `path` out of `interrupted`, warning once.
    pub fn take(interrupted: &mut HashMap<String, Vec<Step>>, path: &str) -> Resumed {
        let steps = interrupted.remove(path).unwrap_or_default();
        let Some(first) = steps.first() else {
            return Resumed::default();
        };
        // One line per replica: a batch killed before its bookkeeping leaves
        // every write of hundreds of replicas open.
        let kinds: Vec<&str> = steps.iter().map(|step| step.kind.as_str()).collect();
        tracing::warn!(
            "{path}: resuming after a run that died during its {} (started {}); \
             each write is looked up by origin marker, not repeated",
            kinds.join(", "),
            first.started_at
        );
        let any = |kind: StepKind| steps.iter().any(|step| step.kind == kind.name());
        Resumed {
            create: any(StepKind::Create),
            upload: any(StepKind::Attach),
        }
    }
}

/// The local issue the replica is about, with its claim vetted (see
/// [`vet_claim`]); the batch's bookkeeping is committed first when it concerns
/// the same issue, so the ledger answers for it.
fn find_target(
    site: &mut Site,
    batch: &mut Batch,
    peer: &str,
    replica: &Replica,
    origin: &Origin,
    resuming_create: bool,
) -> Result<Option<Issue>, ImportFailure> {
    if batch.touches(Some(&replica.id), None) {
        batch.flush(site, true).map_err(fatal)?;
    }
    let me = site.name().to_string();
    let found = locate(site, peer, &me, replica, origin)?;
    if let Some(found) = &found
        && batch.touches(None, Some(&found.issue().id))
    {
        batch.flush(site, true).map_err(fatal)?;
    }
    Ok(match found {
        None => None,
        Some(Found::Linked(issue)) => Some(issue),
        Some(Found::Claimed(issue)) => {
            vet_claim(site, peer, replica, origin, &issue, resuming_create)?;
            Some(issue)
        }
    })
}

/// Whether this site takes the replica's changes: links the local issue to the
/// peer's, and says no for an issue deleted here, one unshared here by hand
/// (`ferry unshare`: not until it is shared again), or a tombstone of an issue
/// this site never had. An issue the peer had unshared is shared again by its
/// replica coming back.
pub(super) fn taken_here(
    site: &mut Site,
    batch: &mut Batch,
    peer: &str,
    replica: &Replica,
    local: Option<&Issue>,
) -> Result<bool, ImportFailure> {
    let Some(local) = local else {
        return Ok(!replica.deleted);
    };
    link(site, batch, peer, replica, &local.id)?;
    let pick = site.ledger.pick_for(peer, &local.id).map_err(fatal)?;
    let unshared = pick.as_ref().is_some_and(|p| !p.shared && !p.by_peer);
    if pick.is_some_and(|p| !p.shared && p.by_peer) {
        site.ledger
            .pick(peer, &local.id, true, true)
            .map_err(fatal)?;
    }
    Ok(!local.deleted && !unshared)
}

/// What the import looks at for one replica.
pub(super) struct Seen<'a> {
    /// The replica.
    pub replica: &'a Replica,
    /// The replica applied last time.
    pub previous: Option<&'a Replica>,
    /// The local issue, when there is one.
    pub local: Option<&'a Issue>,
    /// The local project the connection maps the replica's project to.
    pub local_project: &'a str,
}

/// What the rule and the conflict policy decided for one replica.
pub(super) struct Decision {
    /// The rule's result, conflicts settled.
    pub result: IncomingResult,
    /// The issue as the rule wanted it before conflicts were settled: what the
    /// peer's copy is taken to say, for the next baseline.
    pub remote_target: crate::rules::TargetIssue,
    /// What both sites last agreed on (see `conflict`).
    pub baseline: conflict::Baseline,
    /// The peer's comments not here yet.
    pub added_comments: Vec<Comment>,
    /// The peer's attachments not here yet.
    pub added_attachments: Vec<Attachment>,
    /// Attachments the peer removed whose copy is here.
    pub removed_attachments: Vec<Attachment>,
}

impl Decision {
    /// Whether the rule asked for an upload, which a deferred create cannot do.
    fn uploads(&self) -> bool {
        self.result
            .new_attachments
            .iter()
            .any(|id| self.added_attachments.iter().any(|a| &a.id == id))
    }
}

/// Runs the incoming rule on what the replica changed, then settles the fields
/// both sites changed by the connection's policy; `None` when the rule or the
/// policy skips the replica. `resuming_upload` adopts the copies a killed run
/// uploaded without recording them.
pub(super) fn decide(
    site: &Site,
    range: &Range,
    seen: &Seen,
    resuming_upload: bool,
    done: &mut ImportedIssue,
) -> Result<Option<Decision>, ImportFailure> {
    let (replica, local) = (seen.replica, seen.local);
    let me = site.name();
    let peer = range.connection.peer.as_str();
    let added_comments = new_comments(me, replica, local);
    let baseline = match local {
        Some(local) => conflict::baseline(site, peer, range.ack, &local.id).map_err(fatal)?,
        None => conflict::Baseline::default(),
    };
    let changed_fields = peer_changes(
        changed_fields(seen.previous, replica),
        replica,
        baseline.told(),
    );
    let (added_attachments, removed_attachments) =
        attachments::changes(site, peer, replica, seen.previous, local, true).map_err(fatal)?;
    if resuming_upload && let Some(local) = local {
        // The upload went through but the run died before remembering the copy
        // as the peer's; remember it now, or it would travel back.
        let present: Vec<&Attachment> = replica
            .attachments
            .iter()
            .filter(|a| !added_attachments.contains(a))
            .collect();
        attachments::adopt_copies(site, peer, local, &present).map_err(fatal)?;
    }
    let input = IncomingInput {
        site: me,
        peer,
        replica,
        previous: seen.previous,
        local,
        local_project: seen.local_project,
        added_comments: &added_comments,
        added_attachments: &added_attachments,
        removed_attachments: &removed_attachments,
        changed_fields: &changed_fields,
        conflicts: &[],
    };
    let mut result = match range.rules.run_incoming(&input) {
        Ok(Some(result)) => result,
        Ok(None) => return Ok(None),
        Err(e) => return Err(ImportFailure::Issue(format!("{}: {e}", replica.key))),
    };
    // Three-way against what both sites last shared (see `conflict`): fields only
    // this site changed stay, conflicts go to the connection's policy.
    let remote_target = result.issue.clone();
    if let Some(local) = local {
        let settlement = conflict::settle(
            range.connection,
            range.rules,
            &input,
            local,
            &baseline,
            &result.issue,
        )
        .map_err(|e| ImportFailure::Issue(format!("{}: {e}", replica.key)))?;
        match settlement {
            Settlement::Apply { target, settled } => {
                result.issue = *target;
                done.conflicts = settled;
            }
            Settlement::Parked(message) => return Err(ImportFailure::Issue(message)),
            Settlement::Skip => return Ok(None),
        }
    }
    Ok(Some(Decision {
        result,
        remote_target,
        baseline,
        added_comments,
        added_attachments,
        removed_attachments,
    }))
}

/// The relations the issue is to have here: the rule's links, and the parent
/// only from the replica its owner wrote (see `relations`); none for an issue
/// to delete; never one this site removed since it last told the peer.
fn wanted_relations(
    me: &str,
    replica: &Replica,
    decision: &Decision,
    local: Option<&Issue>,
) -> BTreeSet<Relation> {
    let from_owner = replica.origin.is_none();
    let parent = decision.result.parent.as_ref().filter(|_| from_owner);
    let wanted = match decision.result.delete_issue {
        // A deleted issue leaves its relations behind; the rows go with it.
        true => Default::default(),
        false => relations::wanted(&decision.result.links, parent),
    };
    match local {
        Some(local) => relations::not_removed_here(me, local, &decision.baseline, wanted),
        None => wanted,
    }
}

/// Writes what the rule wants of an existing local issue, when it differs.
fn update(
    site: &mut Site,
    batch: &mut Batch,
    subject: &Subject,
    local: Issue,
    decision: &Decision,
    author: &str,
    done: &mut ImportedIssue,
) -> Result<Issue, ImportFailure> {
    let patch = patch_for(&decision.result.issue, Some(&local));
    if patch.is_empty() {
        return Ok(local);
    }
    done.action = ImportAction::Updated;
    let id = local.id.clone();
    batch.write(site, subject, StepKind::Update, Some(&id), |t| {
        t.update(&id, &patch, author)
    })
}

/// Adds the comments, uploads the attachments and removes the copies the rule
/// asked for, counting each in `done`.
#[allow(clippy::too_many_arguments)]
fn write_additions(
    site: &mut Site,
    range: &Range,
    batch: &mut Batch,
    subject: &Subject,
    local: &Issue,
    comments: Vec<NewComment>,
    decision: &Decision,
    author: &str,
    done: &mut ImportedIssue,
) -> Result<(), ImportFailure> {
    for new in comments {
        batch.write(site, subject, StepKind::Comment, Some(&local.id), |t| {
            t.add_comment(&local.id, &new)
        })?;
        done.comments_added += 1;
    }
    for id in &decision.result.new_attachments {
        let Some(wanted) = decision.added_attachments.iter().find(|a| &a.id == id) else {
            continue;
        };
        upload(site, batch, subject, range.head, local, wanted, author)?;
        done.attachments_added += 1;
    }
    for id in &decision.result.remove_attachments {
        let Some(gone) = decision.removed_attachments.iter().find(|a| &a.id == id) else {
            continue;
        };
        let Some(copy) = attachments::find_local_copy(site, local, gone, true).map_err(fatal)?
        else {
            continue;
        };
        batch.write(
            site,
            subject,
            StepKind::RemoveAttachment,
            Some(&local.id),
            |t| t.delete_attachment(&local.id, &copy.id, author),
        )?;
        done.attachments_removed += 1;
    }
    let added = done.comments_added + done.attachments_added + done.attachments_removed;
    if done.action == ImportAction::Unchanged && added > 0 {
        done.action = ImportAction::Updated;
    }
    Ok(())
}

/// Keeps the new baseline of the issue once the batch is in, or deletes it
/// when the rule says so.
#[allow(clippy::too_many_arguments)]
fn finish(
    site: &mut Site,
    batch: &mut Batch,
    subject: &Subject,
    peer: &str,
    local: &Issue,
    decision: Decision,
    author: &str,
    done: &mut ImportedIssue,
) -> Result<(), ImportFailure> {
    if decision.result.delete_issue {
        batch.write(site, subject, StepKind::Delete, Some(&local.id), |t| {
            t.delete(&local.id, author)
        })?;
        done.action = ImportAction::Deleted;
        return Ok(());
    }
    let (owner, issue) = (peer.to_string(), local.clone());
    let (remote_target, baseline) = (decision.remote_target, decision.baseline);
    batch.later(site, None, &local.id, move |ledger| {
        conflict::record_import(ledger, &owner, &issue, &remote_target, &baseline)
    })
}

/// The comments the incoming rule adds, each with its origin: the peer's
/// comment it copies, or (a note of the rule's own) this version of the
/// replica, so that a retried import finds it instead of writing it twice.
fn comments_to_add(
    peer: &str,
    replica: &Replica,
    wanted: &[TargetComment],
    added_comments: &[Comment],
    blob: Oid,
) -> Result<Vec<NewComment>, ImportFailure> {
    let mut notes = 0;
    let mut out = Vec::with_capacity(wanted.len());
    for comment in wanted {
        let origin = match &comment.source {
            Some(id) => {
                let Some(source) = added_comments.iter().find(|c| &c.id == id) else {
                    return Err(ImportFailure::Issue(format!(
                        "{}: the incoming rule added a comment from {id:?}, which is not one of the new comments",
                        replica.key
                    )));
                };
                comment_origin(replica, source)
            }
            None => {
                notes += 1;
                Origin {
                    site: peer.to_string(),
                    id: format!("note-{}-{notes}", &blob.to_string()[..12]),
                }
            }
        };
        out.push(NewComment {
            author: comment.author.clone(),
            body: comment.body.clone(),
            internal: comment.internal,
            origin: Some(origin),
        });
    }
    Ok(out)
}

/// Uploads one of the peer's attachments to the local issue: the content is
/// copied out of the peer's commit and verified first, and a failed upload is
/// tried once more before the issue fails. The copy is remembered as the peer's,
/// so it is never sent back.
fn upload(
    site: &mut Site,
    batch: &mut Batch,
    subject: &Subject,
    head: Oid,
    local: &Issue,
    wanted: &Attachment,
    author: &str,
) -> Result<(), ImportFailure> {
    let name = safe_file_name(&wanted.name);
    let scratch = site.config.state_dir().join("tmp");
    let file = match attachments::checked_copy(site, head, wanted, &scratch).map_err(fatal)? {
        Ok(file) => file,
        Err(problem) => return Err(ImportFailure::Issue(format!("{}: {problem}", local.key))),
    };
    let new = NewAttachment {
        name: &name,
        author,
        path: file.path(),
        size: wanted.size,
        sha256: &wanted.sha256,
    };
    let mut attempt = 1;
    let attached = loop {
        match batch.write(site, subject, StepKind::Attach, Some(&local.id), |t| {
            t.attach(&local.id, &new)
        }) {
            Ok(attached) => break attached,
            Err(ImportFailure::Issue(message)) if attempt < 2 => {
                tracing::warn!(
                    "{}: uploading attachment {name} failed, trying once more: {message}",
                    local.key
                );
                attempt += 1;
            }
            Err(ImportFailure::Issue(message)) => {
                return Err(ImportFailure::Issue(format!(
                    "{}: uploading attachment {name} failed twice: {message}",
                    local.key
                )));
            }
            Err(fatal) => return Err(fatal),
        }
    };
    let (issue, known) = (
        local.id.clone(),
        KnownAttachment {
            sha256: wanted.sha256.clone(),
            size: wanted.size,
            peer: Some(batch.peer().to_string()),
        },
    );
    batch.later(site, None, &local.id, move |ledger| {
        ledger.record_attachment(&issue, &attached.id, &known)
    })
}

/// Links the peer's issue of `replica` to the local issue `local_id`, once the
/// batch's writes are in the tracker.
pub(super) fn link(
    site: &mut Site,
    batch: &mut Batch,
    peer: &str,
    replica: &Replica,
    local_id: &str,
) -> Result<(), ImportFailure> {
    let (owner, remote_id, remote_key, local) = (
        peer.to_string(),
        replica.id.clone(),
        replica.key.clone(),
        local_id.to_string(),
    );
    batch.later(site, Some(&replica.id), local_id, move |ledger| {
        ledger.link(&owner, &remote_id, &remote_key, &local)
    })
}

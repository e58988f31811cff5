//! Attachments across the exchange: content out on export, content in on import.
//!
//! Content travels in the exchange repository addressed by its SHA-256
//! (`attachments/<ab>/<sha256>`, see [`crate::attachment`]), next to the replicas
//! that list it, so a file attached to many issues is stored once per branch and an
//! unchanged attachment is never read or written again. The hash is always ferry's
//! own, computed from the bytes as they stream: on export from what the tracker
//! hands out, on import from what the repository holds, before anything reaches the
//! tracker. A mismatch is retried once (a flaky read, a half-written file), then it
//! is an issue-level error like any other.
//!
//! Which local attachment is which peer attachment is decided by content and name
//! (SHA-256 and file name), not by ids: that is what makes a retried upload after a
//! crash find the attachment it made, and what keeps a copy from travelling back to
//! the site it came from.

use std::collections::BTreeSet;
use std::io::Write;

use git2::Oid;

use crate::attachment::{HashingWriter, content_path, copy_hashing, is_sha256, safe_file_name};
use crate::config::Connection;
use crate::exchange::{Content, FileWrite, StoredContent};
use crate::ledger::KnownAttachment;
use crate::model::{Attachment, Issue};
use crate::replica::Replica;
use crate::site::Site;
use crate::tracker::TrackerError;

/// How many times content is read before a mismatch is an error: once, and once
/// more.
const ATTEMPTS: usize = 2;

/// What the export of one issue's attachments found wrong with one of them: the
/// issue fails, the run goes on.
pub(super) type IssueFailure = String;

/// Content this export run has already put into the object database, by SHA-256:
/// an attachment on many issues is read once.
#[derive(Default)]
pub(super) struct Shipped(BTreeSet<String>);

/// Completes the replica's attachments from the issue and puts content the
/// branch does not hold yet into `writes`.
///
/// Only attachments the issue really has are shared, with the issue's metadata
/// (the rule can drop attachments, not invent or alter them); an attachment
/// copied from this very peer is not sent back; one over the connection's
/// `attachments.max_bytes` is left out, and the log says so.
pub(super) fn export(
    site: &Site,
    connection: &Connection,
    issue: &Issue,
    head: Option<Oid>,
    replica: &mut Replica,
    shipped: &mut Shipped,
    writes: &mut Vec<FileWrite>,
) -> anyhow::Result<Result<(), IssueFailure>> {
    let peer = connection.peer.as_str();
    let wanted: BTreeSet<String> = replica.attachments.iter().map(|a| a.id.clone()).collect();
    let mut shared = Vec::new();
    for attachment in issue.attachments.iter().filter(|a| wanted.contains(&a.id)) {
        let known = site.ledger.attachment(&issue.id, &attachment.id)?;
        if known.as_ref().and_then(|k| k.peer.as_deref()) == Some(peer) {
            continue;
        }
        if let Some(limit) = connection.settings.attachments.max_bytes
            && attachment.size > limit
        {
            tracing::warn!(
                "{}: attachment {} ({} bytes) not sent to {peer}: over the connection's \
                 limit of {limit} bytes (attachments.max_bytes)",
                issue.key,
                attachment.name,
                attachment.size
            );
            continue;
        }
        let claimed = if is_sha256(&attachment.sha256) {
            Some(attachment.sha256.clone())
        } else {
            known
                .filter(|k| k.size == attachment.size)
                .map(|k| k.sha256)
        };
        let on_branch = match (&claimed, head) {
            (Some(sha256), _) if shipped.0.contains(sha256) => true,
            (Some(sha256), Some(head)) => site.exchange.has_path(head, &content_path(sha256))?,
            _ => false,
        };
        let sha256 = match claimed {
            Some(sha256) if on_branch => sha256,
            claimed => {
                let stored = match read_from_tracker(site, issue, attachment, claimed.as_deref())? {
                    Ok(stored) => stored,
                    Err(failure) => return Ok(Err(failure)),
                };
                site.ledger.record_attachment(
                    &issue.id,
                    &attachment.id,
                    &KnownAttachment {
                        sha256: stored.sha256.clone(),
                        size: stored.size,
                        peer: None,
                    },
                )?;
                let sha256 = stored.sha256.clone();
                if shipped.0.insert(sha256.clone()) {
                    writes.push(FileWrite {
                        path: content_path(&sha256),
                        content: Some(Content::Stored(stored)),
                    });
                }
                sha256
            }
        };
        shared.push(Attachment {
            sha256,
            ..attachment.clone()
        });
    }
    replica.attachments = shared;
    replica.normalize();
    Ok(Ok(()))
}

/// Streams one attachment from the tracker into the object database, checking
/// the hash the tracker claims (when it claims one); a mismatch is read again
/// once.
fn read_from_tracker(
    site: &Site,
    issue: &Issue,
    attachment: &Attachment,
    claimed: Option<&str>,
) -> anyhow::Result<Result<StoredContent, IssueFailure>> {
    let mut problem = String::new();
    for attempt in 1..=ATTEMPTS {
        let mut writer = site.exchange.store_content();
        match site
            .tracker
            .read_attachment(&issue.id, &attachment.id, &mut writer)
        {
            Ok(_) => {}
            Err(TrackerError::Unavailable(message)) => {
                return Err(TrackerError::Unavailable(message).into());
            }
            Err(e) => {
                problem = e.to_string();
                tracing::warn!(
                    "{}: reading attachment {} failed (attempt {attempt} of {ATTEMPTS}): {problem}",
                    issue.key,
                    attachment.name
                );
                continue;
            }
        }
        let stored = writer.finish()?;
        match claimed {
            Some(claimed) if claimed != stored.sha256 => {
                problem = format!(
                    "the tracker says its SHA-256 is {claimed}, but its content ({} bytes) hashes to {}",
                    stored.size, stored.sha256
                );
                tracing::warn!(
                    "{}: attachment {}: {problem} (attempt {attempt} of {ATTEMPTS})",
                    issue.key,
                    attachment.name
                );
            }
            _ => return Ok(Ok(stored)),
        }
    }
    Ok(Err(format!(
        "{}: attachment {} could not be read after {ATTEMPTS} attempts: {problem}",
        issue.key, attachment.name
    )))
}

/// Writes the content with `sha256` from the peer's commit into a file in
/// `dir`, hashing it on the way; `Ok(Err)` when it is missing or does not hash
/// to `sha256` twice in a row.
pub(super) fn checked_copy(
    site: &Site,
    commit: Oid,
    attachment: &Attachment,
    dir: &std::path::Path,
) -> anyhow::Result<Result<tempfile::NamedTempFile, IssueFailure>> {
    if !is_sha256(&attachment.sha256) {
        return Ok(Err(format!(
            "attachment {:?} has no valid SHA-256 ({:?}) in the replica",
            attachment.name, attachment.sha256
        )));
    }
    std::fs::create_dir_all(dir)?;
    let mut problem = String::new();
    for attempt in 1..=ATTEMPTS {
        let Some(mut reader) = site.exchange.open_content(commit, &attachment.sha256)? else {
            return Ok(Err(format!(
                "attachment {:?}: the peer's commit {} holds no content at {}",
                attachment.name,
                crate::words::short_id(commit),
                content_path(&attachment.sha256)
            )));
        };
        let mut file = tempfile::NamedTempFile::new_in(dir)?;
        let (size, sha256) = copy_hashing(&mut reader, &mut file)?;
        file.as_file_mut().flush()?;
        if sha256 == attachment.sha256 && size == attachment.size {
            return Ok(Ok(file));
        }
        problem = format!(
            "its content at {} is {size} bytes hashing to {sha256}, but the replica says {} bytes with {}",
            content_path(&attachment.sha256),
            attachment.size,
            attachment.sha256
        );
        tracing::warn!(
            "attachment {:?}: {problem} (attempt {attempt} of {ATTEMPTS})",
            attachment.name
        );
    }
    Ok(Err(format!(
        "attachment {:?} failed verification after {ATTEMPTS} attempts: {problem}",
        attachment.name
    )))
}

/// The attachment a local issue already has for a peer's attachment: same file
/// name (as the tracker would store it) and same content. Hashes come from the
/// tracker, else from the ledger, else from reading the attachment (once; the
/// ledger then remembers).
pub(super) fn find_local_copy(
    site: &Site,
    local: &Issue,
    wanted: &Attachment,
    may_read: bool,
) -> anyhow::Result<Option<Attachment>> {
    let name = safe_file_name(&wanted.name);
    for candidate in &local.attachments {
        if candidate.name != name && candidate.name != wanted.name {
            continue;
        }
        if let Some(sha256) = local_hash(site, local, candidate, may_read)?
            && sha256 == wanted.sha256
        {
            return Ok(Some(candidate.clone()));
        }
    }
    Ok(None)
}

/// The SHA-256 of a local attachment, computing and remembering it when neither
/// the tracker nor the ledger knows it.
fn local_hash(
    site: &Site,
    local: &Issue,
    attachment: &Attachment,
    may_read: bool,
) -> anyhow::Result<Option<String>> {
    if is_sha256(&attachment.sha256) {
        return Ok(Some(attachment.sha256.clone()));
    }
    if let Some(known) = site.ledger.attachment(&local.id, &attachment.id)? {
        return Ok(Some(known.sha256));
    }
    if !may_read {
        return Ok(None);
    }
    let mut sink = HashingWriter::new(std::io::sink());
    match site
        .tracker
        .read_attachment(&local.id, &attachment.id, &mut sink)
    {
        Ok(_) => {}
        Err(TrackerError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let (_, size, sha256) = sink.finish();
    site.ledger.record_attachment(
        &local.id,
        &attachment.id,
        &KnownAttachment {
            sha256: sha256.clone(),
            size,
            peer: None,
        },
    )?;
    Ok(Some(sha256))
}

/// What changed in the replica's attachments, as an incoming rule sees it: the
/// ones not here yet, and the ones the peer removed since `previous` of which a
/// copy it gave this site is here. With `may_read` false (a review, which changes
/// nothing) local attachments whose hash neither the tracker nor the ledger
/// knows count as absent instead of being read.
pub(super) fn changes(
    site: &Site,
    peer: &str,
    replica: &Replica,
    previous: Option<&Replica>,
    local: Option<&Issue>,
    may_read: bool,
) -> anyhow::Result<(Vec<Attachment>, Vec<Attachment>)> {
    let Some(local) = local else {
        return Ok((replica.attachments.clone(), Vec::new()));
    };
    let mut added = Vec::new();
    for wanted in &replica.attachments {
        if find_local_copy(site, local, wanted, may_read)?.is_none() {
            added.push(wanted.clone());
        }
    }
    let mut removed = Vec::new();
    let still = |a: &Attachment| {
        replica
            .attachments
            .iter()
            .any(|b| b.sha256 == a.sha256 && b.name == a.name)
    };
    for gone in previous
        .iter()
        .flat_map(|p| &p.attachments)
        .filter(|a| !still(a))
    {
        if let Some(copy) = find_local_copy(site, local, gone, may_read)?
            && site
                .ledger
                .attachment(&local.id, &copy.id)?
                .is_some_and(|k| k.peer.as_deref() == Some(peer))
        {
            removed.push(gone.clone());
        }
    }
    Ok((added, removed))
}

/// Marks the local copies of `present` (attachments of the peer's replica that
/// are already here) as the peer's, where the ledger does not know where they
/// came from: what an upload interrupted before its ledger write leaves.
pub(super) fn adopt_copies(
    site: &Site,
    peer: &str,
    local: &Issue,
    present: &[&Attachment],
) -> anyhow::Result<()> {
    for wanted in present {
        let Some(copy) = find_local_copy(site, local, wanted, true)? else {
            continue;
        };
        if site
            .ledger
            .attachment(&local.id, &copy.id)?
            .is_none_or(|known| known.peer.is_none())
        {
            site.ledger.record_attachment(
                &local.id,
                &copy.id,
                &KnownAttachment {
                    sha256: wanted.sha256.clone(),
                    size: wanted.size,
                    peer: Some(peer.to_string()),
                },
            )?;
        }
    }
    Ok(())
}

//! Relink: rebuild a lost ledger from the exchange repo and the tracker.
//!
//! After the ledger is lost (disk, a careless `rm`), or the tracker was restored
//! from a backup, importing as if from scratch would create every shared issue a
//! second time. Everything the ledger's id map holds can be read back instead:
//!
//! - **links**: every replica on the peer's branch names its issue's origin (its
//!   `origin`, or the peer and its id). An origin of this site is a local issue by
//!   id; any other origin is found in the tracker by the origin marker sync left
//!   on the issue it created ([`crate::tracker::Tracker::find_by_origin`]).
//! - **shared issues**: every replica on this site's own branch is a local issue
//!   this site shares (replicas are keyed by the local id).
//! - **applied positions**: the applied ref of the local exchange clone survives a
//!   lost ledger; without it, the `ack` in this site's own `site.yaml` says which
//!   peer commit the site had applied when it last exported. Replicas at that
//!   commit whose issue exists here are recorded as applied; those whose issue
//!   does not (a tracker restored from an older backup) are queued, so the next
//!   import creates them, once.
//! - **conflict baselines**: each linked issue's current values (the tracker holds
//!   what was applied), so conflict detection works again from the next import.
//!
//! The export cursor is left unset: the next export re-reads every issue, writes
//! byte-identical replicas and so commits only what really changed. Nothing is
//! fetched: the peer's commits after the applied position stay pending for the
//! next import, as they would have without the loss. (When the exchange clone is
//! lost too, `ferry pull` first; with no applied position known, the next import
//! applies every replica again, onto the issues found here.)

use git2::Oid;

use super::conflict;
use super::import::{ImportFailure, find_local};
use crate::config::Connection;
use crate::exchange::{applied_ref, own_branch, peer_branch};
use crate::replica::{Replica, parse_replica_path};
use crate::rules::TargetIssue;
use crate::site::Site;

/// What a relink rebuilt for one connection.
#[derive(Debug, Clone, Default)]
pub struct RelinkReport {
    /// The peer.
    pub peer: String,
    /// Peer issues linked to a local issue.
    pub linked: usize,
    /// Local issues recorded as shared with the peer.
    pub shared: usize,
    /// The peer commit now recorded as applied, if any.
    pub applied: Option<Oid>,
    /// Replicas recorded as applied at that commit.
    pub applied_replicas: usize,
    /// Replica paths whose issue is not here; the next import creates them.
    pub queued: Vec<String>,
    /// Replicas that could not be read, with why; left to the import to report.
    pub unreadable: Vec<String>,
    /// Replicas whose origin names a local issue they may not take, with why;
    /// not linked, and refused again by the import.
    pub refused: Vec<String>,
}

/// Rebuilds the ledger's links, shared issues, applied positions and baselines for
/// one connection.
pub fn relink(site: &mut Site, connection: &Connection) -> anyhow::Result<RelinkReport> {
    let me = site.name().to_string();
    let peer = connection.peer.as_str();
    let mut report = RelinkReport {
        peer: peer.to_string(),
        ..Default::default()
    };

    if let Some(own) = site.exchange.resolve(&own_branch(&me, peer))? {
        let mut shared = Vec::new();
        for path in site.exchange.files(own, "issues/")?.keys() {
            let Ok((_, id)) = parse_replica_path(path) else {
                continue;
            };
            if site.tracker.get(&id)?.is_some() {
                shared.push(id);
            }
        }
        report.shared += shared.len();
        site.ledger.mark_shared(peer, &shared)?;
    }

    let applied = match site.exchange.resolve(&applied_ref(peer))? {
        Some(applied) => Some(applied),
        None => own_ack(site, &me, peer)?,
    };
    let Some(head) = site.exchange.resolve(&peer_branch(&me, peer))? else {
        return Ok(report);
    };
    let applied_files = match applied {
        Some(applied) => site.exchange.replicas(applied)?,
        None => Default::default(),
    };
    for (path, blob) in site.exchange.replicas(head)? {
        let replica = match Replica::parse(&path, &site.exchange.read_blob(blob)?) {
            Ok(replica) => replica,
            Err(e) => {
                report.unreadable.push(format!("{path}: {e}"));
                continue;
            }
        };
        let origin = replica.effective_origin();
        // The same trust as an import: a replica links only to an issue this
        // site shared with the peer (recorded above from its own branch) or made
        // from the peer's issue, and one local issue to one of the peer's.
        let local = match find_local(site, peer, &me, &replica, &origin) {
            Ok(local) => local,
            Err(ImportFailure::Issue(why)) => {
                report.refused.push(why);
                continue;
            }
            Err(ImportFailure::Fatal(e)) => return Err(e),
        };
        let Some(local) = local else {
            site.ledger.queue_import(peer, &path)?;
            report.queued.push(path);
            continue;
        };
        site.ledger
            .link(peer, &replica.id, &replica.key, &local.id)?;
        report.linked += 1;
        site.ledger.merge_baseline(
            peer,
            &local.id,
            &conflict::field_values(&TargetIssue::from(&local)),
            None,
        )?;
        if let Some(applied_blob) = applied_files.get(&path) {
            site.ledger
                .mark_applied(peer, &path, &applied_blob.to_string())?;
            report.applied_replicas += 1;
        }
    }
    if let Some(applied) = applied {
        site.exchange
            .set_ref(&applied_ref(peer), applied, &format!("ferry relink {peer}"))?;
        report.applied = Some(applied);
    }
    Ok(report)
}

/// The peer commit this site had applied when it last exported: the `ack` of the
/// `site.yaml` on its own branch.
fn own_ack(site: &Site, me: &str, peer: &str) -> anyhow::Result<Option<Oid>> {
    let Some(own) = site.exchange.resolve(&own_branch(me, peer))? else {
        return Ok(None);
    };
    let Some((_, bytes)) = site.exchange.read_file(own, "site.yaml")? else {
        return Ok(None);
    };
    let file = crate::replica::SiteFile::parse(&bytes)?;
    let Some(ack) = file.ack else {
        return Ok(None);
    };
    let ack = Oid::from_str(&ack)?;
    // The ack must be a commit of the peer's branch we hold.
    let known = match site.exchange.resolve(&peer_branch(me, peer))? {
        Some(head) => ack == head || site.exchange.is_ancestor(ack, head)?,
        None => false,
    };
    Ok(known.then_some(ack))
}

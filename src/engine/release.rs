//! The release gate: with `release: {required: true}` on a connection, what
//! this site exports for the peer leaves only once a person released it.
//!
//! Exports are committed to `refs/ferry/outgoing/<peer>`; this site's branch
//! for the peer (`refs/heads/<site>/<peer>`), which `push` and bundles send as
//! ever, is what was released. A release adds to it one commit holding what
//! the officer read: the tree of the approved export, as one change from the
//! last release. The exports in between never leave, so no intermediate state
//! the officer did not see (a text exported and changed again before the
//! release) is in what leaves; the outgoing history is then rebuilt on top of
//! the release. So the transports need no gate of their own, and nothing that
//! was not released can be in what leaves.
//!
//! A rejection must keep the rejected commit's content out of every later
//! release too, and every later commit has it as an ancestor. So the
//! unreleased commits (which never left, so the peer cannot tell) are replaced
//! by one commit on top of the released branch whose tree is the outgoing
//! head's with every path the rejected commit changed set back to its
//! released version; the replaced history stays under
//! `refs/ferry/rejected/<peer>/<n>`, which nothing sends. The issues it
//! changed are then *held*: a later export of one of them leaves only with a
//! release that names it (`--including KEY`), so that a status change never
//! carries a rejected description out unread. `docs/design/release-gate.md`
//! has the reasoning.

use anyhow::{Context, bail};
use git2::Oid;
use serde::Serialize;

use super::FieldChange;
use super::review::field_changes;
use crate::config::{AckRelease, Connection};
use crate::exchange::{
    Content, Exchange, ExchangeError, FileWrite, outgoing_ref, own_branch, rejected_ref,
};
use crate::ledger::{Held, ReviewVerdict};
use crate::model::{Attachment, Comment};
use crate::replica::{Replica, parse_stored_path};
use crate::site::Site;

/// Where exports for `connection` are committed: the outgoing ref behind the
/// gate, else this site's branch itself.
pub fn export_ref(me: &str, connection: &Connection) -> String {
    if connection.settings.release.required {
        outgoing_ref(&connection.peer)
    } else {
        own_branch(me, &connection.peer)
    }
}

/// Brings the refs in line with the connection's setting before an export.
/// Behind the gate, the outgoing history starts at the released branch.
/// Without it (the gate was turned off), what waited leaves with the next
/// push: the branch moves to the outgoing head, and the outgoing ref goes.
pub fn prepare(site: &Site, connection: &Connection) -> anyhow::Result<()> {
    let me = site.name();
    let peer = &connection.peer;
    let (branch, outgoing) = (own_branch(me, peer), outgoing_ref(peer));
    let released = site.exchange.resolve(&branch)?;
    let waiting = site.exchange.resolve(&outgoing)?;
    match (connection.settings.release.required, waiting) {
        (true, None) => {
            if let Some(released) = released {
                site.exchange
                    .update_ref(&outgoing, None, released, "ferry: release gate on")?;
            }
        }
        (false, Some(waiting)) => {
            if let Some(released) = released
                && !site.exchange.is_ancestor(released, waiting)?
            {
                bail!(
                    "{peer}: the release gate is off, but {outgoing} does not continue \
                     {branch}; turn release.required on again and release or reject what waits"
                );
            }
            site.exchange
                .update_ref(&branch, released, waiting, "ferry: release gate off")?;
            site.exchange.delete_ref(&outgoing)?;
        }
        (true, Some(_)) => {
            realign(site, connection)?;
        }
        (false, None) => {}
    }
    Ok(())
}

/// Before a push behind the gate: finishes a release a killed run recorded
/// but did not make, and (with `acks: auto`) releases the commits that carry
/// only the acknowledgement of the peer's commits, up to the first that
/// carries anything else. Returns how many commits wait for release.
pub fn settle(site: &Site, connection: &Connection) -> anyhow::Result<usize> {
    if !connection.settings.release.required {
        return Ok(0);
    }
    let peer = &connection.peer;
    let branch = own_branch(site.name(), peer);
    let Some(mut waiting) = realign(site, connection)? else {
        return Ok(0);
    };
    let mut released = site.exchange.resolve(&branch)?;
    let approved = site
        .ledger
        .releases(peer)?
        .into_iter()
        .rev()
        .find(|v| v.verdict == "approved");
    if let Some(approved) = approved
        && let Ok(commit) = Oid::from_str(&approved.commit)
        && released != Some(commit)
        && on_the_way(site, released, commit, waiting)?
    {
        let (made, rebuilt) = release_to(site, connection, released, commit, waiting)?;
        released = Some(made);
        waiting = rebuilt;
    }
    if connection.settings.release.acks == AckRelease::Auto {
        for commit in site.exchange.commits_between(released, waiting)? {
            let only_ack = site
                .exchange
                .diff_paths(released, commit)?
                .iter()
                .all(|change| change.path == "site.yaml");
            if !only_ack {
                break;
            }
            site.exchange.update_ref(
                &branch,
                released,
                commit,
                "ferry: released an acknowledgement",
            )?;
            released = Some(commit);
        }
    }
    Ok(site.exchange.commits_between(released, waiting)?.len())
}

/// The error subject that tells a connection's exports wait for release.
const WAITING: &str = "release";

/// Keeps the notice that exports wait for release: recorded (and so mailed,
/// once) when commits start to wait, resolved when none does. A connection
/// error like a rejected review's: something a person must do.
pub fn notice(site: &Site, connection: &Connection, waiting: usize) -> anyhow::Result<()> {
    let peer = &connection.peer;
    if waiting == 0 {
        site.ledger.resolve_subject(peer, WAITING)?;
    } else if !site.ledger.has_open_subject(peer, WAITING)? {
        site.ledger.record_error(
            crate::failure::Level::Connection,
            Some(peer),
            Some(WAITING),
            &format!(
                "{waiting} commit{} of exports for {peer} wait{} for release: `ferry release` \
                 shows them, `ferry release approve` lets them go",
                crate::words::plural(waiting),
                if waiting == 1 { "s" } else { "" }
            ),
        )?;
    }
    Ok(())
}

/// How many commits wait for release on `connection` (none without the gate).
/// `me` is this site; `status` reads it without opening the site.
pub fn waiting(
    exchange: &Exchange,
    me: &str,
    connection: &Connection,
) -> Result<usize, ExchangeError> {
    if !connection.settings.release.required {
        return Ok(0);
    }
    let peer = &connection.peer;
    let Some(waiting) = exchange.resolve(&outgoing_ref(peer))? else {
        return Ok(0);
    };
    let released = exchange.resolve(&own_branch(me, peer))?;
    Ok(exchange.commits_between(released, waiting)?.len())
}

/// Whether `commit` is after `released` (or nothing was released) and at or
/// before the outgoing head `waiting`.
fn on_the_way(
    site: &Site,
    released: Option<Oid>,
    commit: Oid,
    waiting: Oid,
) -> anyhow::Result<bool> {
    let after = match released {
        Some(released) => released != commit && site.exchange.is_ancestor(released, commit)?,
        None => true,
    };
    Ok(after && site.exchange.is_ancestor(commit, waiting)?)
}

/// The released commit, the outgoing head, and the commit `rev` names (the
/// head when `None`), checked to wait for release.
fn waiting_commit(
    site: &Site,
    connection: &Connection,
    rev: Option<&str>,
) -> anyhow::Result<(Option<Oid>, Oid, Oid)> {
    let peer = &connection.peer;
    if !connection.settings.release.required {
        bail!("{peer}: this connection has no release gate (release.required in its file)");
    }
    let Some(waiting) = realign(site, connection)? else {
        bail!("{peer}: nothing exported yet");
    };
    let released = site.exchange.resolve(&own_branch(site.name(), peer))?;
    let commit = match rev {
        None => waiting,
        Some(rev) => site
            .exchange
            .repo()
            .revparse_single(rev)
            .and_then(|o| o.peel_to_commit())
            .map(|c| c.id())
            .with_context(|| format!("{peer}: no commit {rev:?} in the exchange clone"))?,
    };
    if released == Some(commit) {
        bail!("{peer}: {commit} is released already");
    }
    if !on_the_way(site, released, commit, waiting)? {
        bail!(
            "{peer}: {commit} is not among the commits that wait for release \
             (`ferry release` lists them)"
        );
    }
    Ok((released, waiting, commit))
}

/// Releases this site's exports for the peer up to `rev` (the newest when
/// `None`). An issue a rejection holds must be named in `including` (its key
/// or replica path) when one of the released commits changes it. The ledger
/// row comes first, then the branch: a run killed between the two moves the
/// branch at its next push ([`settle`]). Returns the released commit.
pub fn approve(
    site: &Site,
    connection: &Connection,
    rev: Option<&str>,
    including: &[String],
    by: &str,
) -> anyhow::Result<Oid> {
    let peer = &connection.peer;
    let (released, _, commit) = waiting_commit(site, connection, rev)?;
    let changed = changed_paths(site, released, commit)?;
    let held: Vec<Held> = site
        .ledger
        .held(peer)?
        .into_iter()
        .filter(|h| changed.contains(&h.path))
        .collect();
    let unnamed: Vec<&Held> = held
        .iter()
        .filter(|h| !including.iter().any(|i| *i == h.key || *i == h.path))
        .collect();
    if !unnamed.is_empty() {
        let list: Vec<String> = unnamed
            .iter()
            .map(|h| format!("{} (rejected: {})", h.key, h.reason))
            .collect();
        bail!(
            "{peer}: this release holds issues a rejection held back: {}; read them \
             (`ferry release`) and name each with --including KEY to release them",
            list.join(", ")
        );
    }
    site.ledger
        .record_release(peer, &commit.to_string(), "approved", by, None)?;
    for h in &held {
        site.ledger.release_held(peer, &h.path)?;
    }
    crate::failpoint::hit("after-release-recorded");
    let waiting = site
        .exchange
        .resolve(&outgoing_ref(peer))?
        .unwrap_or(commit);
    Ok(release_to(site, connection, released, commit, waiting)?.0)
}

/// Releases `commit` (waiting on the outgoing history that ends at `waiting`):
/// one commit on this site's branch with `commit`'s tree, then the exports
/// after `commit` rebuilt on it. Returns the release and the outgoing head.
fn release_to(
    site: &Site,
    connection: &Connection,
    released: Option<Oid>,
    commit: Oid,
    waiting: Oid,
) -> anyhow::Result<(Oid, Oid)> {
    let peer = &connection.peer;
    let me = site.name();
    let replaced: Vec<String> = site
        .exchange
        .commits_between(released, commit)?
        .iter()
        .map(Oid::to_string)
        .collect();
    let writes = writes_between(site, released, commit, &[])?;
    let message = format!(
        "{me} → {peer}: released {} export{}",
        replaced.len(),
        crate::words::plural(replaced.len())
    );
    let made = site
        .exchange
        .commit(&own_branch(me, peer), &writes, &message, me)?
        .or(released)
        .unwrap_or(commit);
    site.ledger
        .reassign_exports(peer, &replaced, &made.to_string(), &[])?;
    // The exports after the release, on top of it.
    let rebuilt = if waiting == commit {
        site.exchange
            .update_ref(&outgoing_ref(peer), Some(waiting), made, "ferry: released")?;
        made
    } else {
        realign(site, connection)?.unwrap_or(made)
    };
    Ok((made, rebuilt))
}

/// The writes that turn `from`'s tree (nothing: the empty tree) into `to`'s,
/// but for the paths in `keep`, which stay as in `from`.
fn writes_between(
    site: &Site,
    from: Option<Oid>,
    to: Oid,
    keep: &[String],
) -> anyhow::Result<Vec<FileWrite>> {
    Ok(site
        .exchange
        .diff_paths(from, to)?
        .into_iter()
        .filter(|c| !keep.contains(&c.path))
        .map(|c| FileWrite {
            path: c.path,
            content: c.new.map(Content::Blob),
        })
        .collect())
}

/// Puts the outgoing history back on top of this site's branch when it does
/// not continue it (a release or a rejection replaced commits, or a run was
/// killed between moving one and the other): one commit on the branch with
/// the outgoing head's tree. Returns the outgoing head.
pub fn realign(site: &Site, connection: &Connection) -> anyhow::Result<Option<Oid>> {
    let peer = &connection.peer;
    let outgoing = outgoing_ref(peer);
    let Some(waiting) = site.exchange.resolve(&outgoing)? else {
        return Ok(None);
    };
    let released = site.exchange.resolve(&own_branch(site.name(), peer))?;
    let Some(released) = released else {
        return Ok(Some(waiting));
    };
    if site.exchange.is_ancestor(released, waiting)? {
        return Ok(Some(waiting));
    }
    let replaced: Vec<String> = site
        .exchange
        .commits_between(Some(released), waiting)?
        .iter()
        .map(Oid::to_string)
        .collect();
    let rebuilt = rebuild(site, peer, Some(released), waiting, &[])?.unwrap_or(released);
    site.exchange.update_ref(
        &outgoing,
        Some(waiting),
        rebuilt,
        "ferry: rebuilt on the release",
    )?;
    site.ledger
        .reassign_exports(peer, &replaced, &rebuilt.to_string(), &[])?;
    Ok(Some(rebuilt))
}

/// A commit on `released` (a root commit when nothing was released) with
/// `waiting`'s tree, but the paths in `keep` as in `released`; `released`
/// itself when that changes nothing.
fn rebuild(
    site: &Site,
    peer: &str,
    released: Option<Oid>,
    waiting: Oid,
    keep: &[String],
) -> anyhow::Result<Option<Oid>> {
    let scratch = format!("refs/ferry/rebuilding/{peer}");
    site.exchange.delete_ref(&scratch)?;
    if let Some(released) = released {
        site.exchange
            .set_ref(&scratch, released, "ferry: rebuilding")?;
    }
    let writes = writes_between(site, released, waiting, keep)?;
    let message = "ferry: the exports that wait for release";
    let rebuilt = site
        .exchange
        .commit(&scratch, &writes, message, site.name())?
        .or(released);
    site.exchange.delete_ref(&scratch)?;
    Ok(rebuilt)
}

/// What a rejection did.
#[derive(Debug, Clone, Serialize)]
pub struct Rejection {
    /// The rejected commit.
    pub commit: String,
    /// Where the replaced unreleased history is kept.
    pub kept_at: String,
    /// The outgoing head now (the released branch when nothing else waits).
    pub head: Option<String>,
    /// The issues held back, by key.
    pub held: Vec<String>,
}

/// Rejects one unreleased commit: its content never leaves, in it or in any
/// later commit (see the module documentation).
pub fn reject(
    site: &Site,
    connection: &Connection,
    rev: &str,
    reason: &str,
    by: &str,
) -> anyhow::Result<Rejection> {
    let peer = &connection.peer;
    let (released, waiting, commit) = waiting_commit(site, connection, Some(rev))?;
    let parent = site.exchange.repo().find_commit(commit)?.parent_id(0).ok();
    // Acknowledgements carry no tracker data: the newest stays.
    let rejected = changed_paths(site, parent, commit)?;
    let keys: Vec<(String, String)> = rejected
        .iter()
        .filter(|p| p.starts_with("issues/"))
        .map(|path| Ok((path.clone(), replica_key(site, commit, path)?)))
        .collect::<anyhow::Result<_>>()?;
    let mut n = 1;
    while site.exchange.resolve(&rejected_ref(peer, n))?.is_some() {
        n += 1;
    }
    let kept_at = rejected_ref(peer, n);
    site.exchange
        .update_ref(&kept_at, None, waiting, "ferry: rejected")?;
    site.ledger
        .record_release(peer, &commit.to_string(), "rejected", by, Some(reason))?;
    for (path, key) in &keys {
        site.ledger
            .hold(peer, path, key, &commit.to_string(), reason)?;
    }
    // The released tree with every change that waited but those of the
    // rejected commit's paths.
    let replaced: Vec<String> = site
        .exchange
        .commits_between(released, waiting)?
        .iter()
        .map(Oid::to_string)
        .collect();
    let rebuilt = rebuild(site, peer, released, waiting, &rejected)?;
    let outgoing = outgoing_ref(peer);
    match rebuilt {
        Some(rebuilt) => {
            site.exchange
                .update_ref(&outgoing, Some(waiting), rebuilt, "ferry: rejected")?;
            let dropped: Vec<String> = rejected
                .iter()
                .filter_map(|p| parse_stored_path(p).ok().map(|(_, id, _)| id))
                .collect();
            site.ledger
                .reassign_exports(peer, &replaced, &rebuilt.to_string(), &dropped)?;
        }
        None => site.exchange.delete_ref(&outgoing)?,
    }
    Ok(Rejection {
        commit: commit.to_string(),
        kept_at,
        head: rebuilt.map(|c| c.to_string()),
        held: keys.into_iter().map(|(_, key)| key).collect(),
    })
}

/// The paths `from..to` changes, but `site.yaml`.
fn changed_paths(site: &Site, from: Option<Oid>, to: Oid) -> anyhow::Result<Vec<String>> {
    Ok(site
        .exchange
        .diff_paths(from, to)?
        .into_iter()
        .map(|c| c.path)
        .filter(|p| p != "site.yaml")
        .collect())
}

/// The key in the replica at `path` in `commit`, or the path when it does not
/// parse.
fn replica_key(site: &Site, commit: Oid, path: &str) -> anyhow::Result<String> {
    let Some((_, bytes)) = site.exchange.read_file(commit, path)? else {
        return Ok(path.to_string());
    };
    Ok(Replica::parse(path, &bytes).map_or_else(|_| path.to_string(), |r| r.key))
}

/// One issue whose replica changes between what was released and what waits.
#[derive(Debug, Clone, Serialize)]
pub struct OutgoingIssue {
    /// The replica's path.
    pub path: String,
    /// The issue's key.
    pub key: String,
    /// The replica in full, for an issue the peer has not been sent yet.
    pub new_issue: Option<Replica>,
    /// The replica is gone from what waits (no longer shared).
    pub removed: bool,
    /// Fields that change (comments listed on their own).
    pub changes: Vec<FieldChange>,
    /// Description before and after, when it changes.
    pub description: Option<(String, String)>,
    /// Comments that would leave.
    pub added_comments: Vec<Comment>,
    /// Comments the peer has that would go.
    pub removed_comments: Vec<Comment>,
    /// Attachments that would leave.
    pub added_attachments: Vec<Attachment>,
    /// Attachments the peer has that would go.
    pub removed_attachments: Vec<Attachment>,
    /// Held back by a rejection: why.
    pub held: Option<String>,
    /// What the issue holds in the tracker now that the replica does not
    /// carry (the outgoing rule, and ferry's own guarantees, left it out).
    pub dropped: Dropped,
}

/// What of an issue stays here: counted, never shown, since what is shown may
/// be printed or archived where the peer's people read it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Dropped {
    /// Internal comments.
    pub internal_comments: usize,
    /// Other comments the rule left out.
    pub comments: usize,
    /// Attachments the rule or the size limit left out.
    pub attachments: usize,
    /// Custom fields the rule left out, by name.
    pub fields: Vec<String>,
}

/// What waits to leave on one connection.
#[derive(Debug, Clone, Serialize)]
pub struct Pending {
    /// The peer.
    pub peer: String,
    /// The last released commit.
    pub released: Option<String>,
    /// The newest export.
    pub head: Option<String>,
    /// The commits that wait, oldest first.
    pub commits: Vec<String>,
    /// The issues they change, held ones first.
    pub issues: Vec<OutgoingIssue>,
    /// Every release and rejection, oldest first.
    pub verdicts: Vec<ReviewVerdict>,
}

/// What waits for release on `connection`, as one change from what was
/// released.
pub fn pending(site: &Site, connection: &Connection) -> anyhow::Result<Pending> {
    let peer = &connection.peer;
    let released = site.exchange.resolve(&own_branch(site.name(), peer))?;
    let waiting = site.exchange.resolve(&outgoing_ref(peer))?;
    let held = site.ledger.held(peer)?;
    let mut out = Pending {
        peer: peer.clone(),
        released: released.map(|c| c.to_string()),
        head: waiting.map(|c| c.to_string()),
        commits: Vec::new(),
        issues: Vec::new(),
        verdicts: site.ledger.releases(peer)?,
    };
    let Some(waiting) = waiting.filter(|w| Some(*w) != released) else {
        return Ok(out);
    };
    out.commits = site
        .exchange
        .commits_between(released, waiting)?
        .iter()
        .map(Oid::to_string)
        .collect();
    for change in site.exchange.diff_paths(released, waiting)? {
        if !change.path.starts_with("issues/") {
            continue;
        }
        let read = |blob: Option<Oid>| -> anyhow::Result<Option<Replica>> {
            let Some(blob) = blob else { return Ok(None) };
            let bytes = site.exchange.read_blob(blob)?;
            Ok(Some(Replica::parse(&change.path, &bytes)?))
        };
        let (old, new) = (read(change.old)?, read(change.new)?);
        let Some(shown) = new.as_ref().or(old.as_ref()) else {
            continue;
        };
        let mut issue = OutgoingIssue {
            path: change.path.clone(),
            key: shown.key.clone(),
            new_issue: None,
            removed: new.is_none(),
            changes: Vec::new(),
            description: None,
            added_comments: Vec::new(),
            removed_comments: Vec::new(),
            added_attachments: Vec::new(),
            removed_attachments: Vec::new(),
            held: held
                .iter()
                .find(|h| h.path == change.path)
                .map(|h| h.reason.clone()),
            dropped: Dropped::default(),
        };
        if let Some(new) = &new
            && let Some(local) = site.tracker.get(&new.id)?
        {
            issue.dropped = dropped(&local, new);
        }
        if let Some(new) = &new {
            let old_comments = old.as_ref().map_or(&[][..], |o| &o.comments[..]);
            issue.added_comments = new
                .comments
                .iter()
                .filter(|c| !old_comments.contains(c))
                .cloned()
                .collect();
            issue.removed_comments = old_comments
                .iter()
                .filter(|c| !new.comments.contains(c))
                .cloned()
                .collect();
            let old_attachments = old.as_ref().map_or(&[][..], |o| &o.attachments[..]);
            issue.added_attachments = new
                .attachments
                .iter()
                .filter(|a| !old_attachments.iter().any(|o| o.sha256 == a.sha256))
                .cloned()
                .collect();
            issue.removed_attachments = old_attachments
                .iter()
                .filter(|o| !new.attachments.iter().any(|a| a.sha256 == o.sha256))
                .cloned()
                .collect();
            match &old {
                None => issue.new_issue = Some(new.clone()),
                Some(old) => {
                    issue.changes = field_changes(Some(old), new)
                        .into_iter()
                        .filter(|c| !matches!(c.field.as_str(), "attachments" | "description"))
                        .collect();
                    if old.description != new.description {
                        issue.description = Some((
                            old.description.clone().unwrap_or_default(),
                            new.description.clone().unwrap_or_default(),
                        ));
                    }
                }
            }
        }
        out.issues.push(issue);
    }
    out.issues.sort_by_key(|i| i.held.is_none());
    Ok(out)
}

impl Dropped {
    /// "2 internal comments, field Customer" (empty when nothing stays).
    pub fn describe(&self) -> String {
        let count = |n: usize, what: &str| {
            (n > 0).then(|| format!("{n} {what}{}", crate::words::plural(n)))
        };
        let mut parts: Vec<String> = [
            count(self.internal_comments, "internal comment"),
            count(self.comments, "other comment"),
            count(self.attachments, "attachment"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !self.fields.is_empty() {
            parts.push(format!(
                "field{} {}",
                crate::words::plural(self.fields.len()),
                self.fields.join(", ")
            ));
        }
        parts.join(", ")
    }
}

/// What `local` holds that its replica `sent` does not.
fn dropped(local: &crate::model::Issue, sent: &Replica) -> Dropped {
    let kept = |c: &&Comment| !sent.comments.iter().any(|s| s.id == c.id);
    Dropped {
        internal_comments: local
            .comments
            .iter()
            .filter(kept)
            .filter(|c| c.internal)
            .count(),
        comments: local
            .comments
            .iter()
            .filter(kept)
            .filter(|c| !c.internal)
            .count(),
        attachments: local
            .attachments
            .iter()
            .filter(|a| !sent.attachments.iter().any(|s| s.id == a.id))
            .count(),
        fields: local
            .fields
            .keys()
            .filter(|f| !sent.fields.contains_key(*f))
            .cloned()
            .collect(),
    }
}

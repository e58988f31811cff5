//! How commits travel between sites.
//!
//! A [`Channel`] moves exactly two branches of the exchange data for one
//! connection: it sends this site's own branch (`refs/heads/<site>/<peer>`) and
//! brings in the peer's branch for us (`refs/heads/<peer>/<site>`). Both
//! directions only ever fast-forward: a peer's branch whose history was rewritten
//! is refused before anything is imported, and our own branch is never
//! force-pushed. Two implementations: [`remote::GitRemote`], an intermediate git
//! repository both sites reach out to, and [`bundle::BundleChannel`], bundle files
//! carried between an outbox and an inbox folder (ARCHITECTURE.md, "How to add
//! a channel").
//!
//! Whatever the channel, the peer's new commits pass [`admit`] before the peer's
//! branch moves: one function, so every channel refuses the same commits: those
//! without a signature the connection trusts ([`crate::signing`]) and those whose
//! tree holds what no ferry writes.
pub mod bundle;
pub mod remote;
mod watchdog;

use std::path::{Path, PathBuf};

use git2::{FileMode, Oid};

use crate::config::ChannelSetting;
use crate::exchange::{Exchange, ExchangeError, TreeEntryId};
use crate::replica::{Format, MAX_REPLICA_BYTES, Replica, SITE_FILE, SiteFile, is_plain_name};
use crate::signing::{AdmitError as SignatureError, Trust};

/// A transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The channel could not be reached or refused the transfer.
    #[error("{channel}: {message}")]
    Failed {
        /// The channel (URL).
        channel: String,
        /// What happened.
        message: String,
    },
    /// The channel is a local path that does not exist.
    #[error(
        "exchange repository {} not found; create it with `git init --bare {}`",
        .path.display(), .path.display()
    )]
    NotFound {
        /// The resolved path.
        path: PathBuf,
    },
    /// The channel is a local folder, but not a bare repository.
    #[error(
        "channel {}: {}; a channel must be a bare repository: create one with \
         `git init --bare PATH` and name PATH in the connection file",
        .path.display(),
        if *.working_tree {
            "is a git repository with a working tree (pushing into it would leave its \
             checked-out files behind its branches)"
        } else {
            "is a folder, but not a git repository"
        }
    )]
    NotBare {
        /// The resolved path.
        path: PathBuf,
        /// Whether it is a repository with a working tree (else not one at all).
        working_tree: bool,
    },
    /// git failed while talking to the channel.
    #[error("{channel}: {action}: {source}{}", hint_suffix(*.hint))]
    Git {
        /// The channel (URL).
        channel: String,
        /// What ferry was attempting.
        action: String,
        /// The git error.
        source: git2::Error,
        /// What the user can check, for network and authentication failures.
        hint: Option<&'static str>,
    },
    /// The peer's branch on the channel is not a descendant of what this site
    /// already has: its history was rewritten (by the peer or by someone with
    /// write access to the channel). Nothing was imported.
    #[error(
        "{channel}: refusing {peer}'s branch {refname}: the channel has {fetched}, which \
         does not descend from {local} that this site already received (history was \
         rewritten); the local branch is unchanged, the fetched commit is kept in \
         refs/ferry/fetched/{peer} for inspection"
    )]
    Rewritten {
        /// The channel (URL).
        channel: String,
        /// The peer whose branch was rewritten.
        peer: String,
        /// The branch.
        refname: String,
        /// What this site had.
        local: Oid,
        /// What the channel offered.
        fetched: Oid,
    },
    /// This site's own branch on the channel holds a commit this site did not
    /// make: not signed by its key for this branch. Nothing was merged or pushed.
    #[error(
        "{channel}: this site's branch {} on the channel is at {}, and its commit {} was \
         not made by this site: {}; ferry builds only on its own signed history, so \
         nothing was merged and nothing was pushed. If another party wrote to the \
         channel, put the branch back to this site's own tip, from the site folder: \
         `git --git-dir .ferry/exchange.git push --force {channel} {}` (the peer refuses \
         such commits, so it loses nothing). If {} is this site's own, signed with a key \
         it no longer has (a lost state folder), build on it: \
         `ferry push --connection {} --adopt {}`",
        .found.refname, .found.tip, .found.commit, .found.reason,
        .found.refname.strip_prefix("refs/heads/").unwrap_or(&.found.refname),
        .found.tip, .found.peer, .found.tip
    )]
    ForeignOwnCommit {
        /// The channel (URL).
        channel: String,
        /// What was found (boxed: it is larger than the other variants).
        found: Box<ForeignCommit>,
    },
    /// The peer's branch, which this site already received commits of, is gone
    /// from the channel: nothing can arrive until it is back. A connection
    /// failure (exit 3), not a warning: the link is cut as surely as by an
    /// unreachable channel, and a warning would read like a quiet peer, which
    /// is how it went unnoticed.
    #[error(
        "{channel}: {peer}'s branch {refname} is gone from the channel, though this site \
         already received it up to {known}: deleted there, or the channel was replaced; \
         nothing can arrive from {peer} until it is back. Ask {peer} to run `ferry sync` \
         (its push puts the branch back), or restore the channel from a backup"
    )]
    PeerBranchGone {
        /// The channel (URL).
        channel: String,
        /// The peer.
        peer: String,
        /// The peer's branch for this site.
        refname: String,
        /// The last commit of it this site has.
        known: Oid,
    },
    /// `--adopt` named a commit the channel's copy of our branch is not at.
    #[error(
        "{channel}: --adopt {adopt}, but this site's branch {refname} on the channel is at \
         {tip}; nothing was merged (adopt exactly the tip the refusal named)"
    )]
    AdoptMismatch {
        /// The channel (URL).
        channel: String,
        /// This site's branch.
        refname: String,
        /// What the operator named.
        adopt: Oid,
        /// The channel's tip.
        tip: Oid,
    },
    /// The channel kept refusing our branch even after reconciling with it.
    #[error("{channel}: push of {refname} was rejected {attempts} times; last reason: {reason}")]
    Rejected {
        /// The channel (URL).
        channel: String,
        /// Our branch.
        refname: String,
        /// How many pushes were tried.
        attempts: u32,
        /// The last rejection message.
        reason: String,
    },
    /// The peer's commits failed [`admit`]; the peer's branch did not move.
    #[error("{channel}: {source}")]
    Refused {
        /// The channel.
        channel: String,
        /// What was wrong.
        source: Box<AdmitError>,
    },
    /// A bundle was refused, or could not be read; see [`bundle::BundleError`].
    #[error("{channel}: {source}")]
    Bundle {
        /// The channel (or the bundle file for `ferry bundle import`).
        channel: String,
        /// What was wrong.
        source: Box<bundle::BundleError>,
    },
    /// Bundles of a bundle channel's inbox were refused and moved aside; the others
    /// were processed.
    #[error(
        "{channel}: refused {} bundle{}, moved to {} with a .reason file each: {}",
        .refused.len(), crate::words::plural(.refused.len()), .rejected_dir.display(),
        .refused.join("; ")
    )]
    BundlesRefused {
        /// The channel.
        channel: String,
        /// Where the refused bundles went.
        rejected_dir: PathBuf,
        /// One `file: reason` per refused bundle.
        refused: Vec<String>,
    },
    /// The local exchange repository failed during a transfer.
    #[error("{channel}: {source}")]
    Exchange {
        /// The channel (URL).
        channel: String,
        /// The local error.
        source: ExchangeError,
    },
}

/// A commit on this site's own branch in a channel that this site did not make.
#[derive(Debug)]
pub struct ForeignCommit {
    /// The peer the branch is for.
    pub peer: String,
    /// This site's branch.
    pub refname: String,
    /// The channel's tip of the branch.
    pub tip: Oid,
    /// The first commit that is not this site's.
    pub commit: Oid,
    /// Why it is not.
    pub reason: String,
}

/// Renders an optional hint after an error message.
fn hint_suffix(hint: Option<&'static str>) -> String {
    hint.map(|h| format!(" (hint: {h})")).unwrap_or_default()
}

/// What a fetch brought.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FetchOutcome {
    /// The peer branch before.
    pub before: Option<Oid>,
    /// The peer branch after.
    pub after: Option<Oid>,
    /// What the operator should know and that is not an error, e.g. a bundle
    /// delivered twice.
    pub notes: Vec<String>,
    /// Bundles left in the inbox because their predecessor has not arrived:
    /// nothing they bring can be applied, so the link is as silent as if they
    /// had never come.
    pub waiting: Vec<WaitingBundle>,
}

/// A bundle in the inbox that needs a commit this site does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingBundle {
    /// Its file name in the inbox.
    pub file: String,
    /// The prerequisite commit it waits for.
    pub needs: Oid,
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// Nothing to push: the channel already had this commit (or there is none).
    UpToDate,
    /// The channel now has this commit.
    Pushed(Oid),
}

/// How commits travel between this site and one peer.
pub trait Channel {
    /// Brings the peer's branch for this site into the local exchange repo,
    /// fast-forward only, and only once `trust` admits every new commit.
    fn fetch(
        &self,
        exchange: &Exchange,
        site: &str,
        peer: &str,
        trust: &Trust,
    ) -> Result<FetchOutcome, TransportError>;
    /// Sends this site's branch for the peer, never forced. `adopt` is a tip of
    /// this site's branch on the channel the operator vouches for although this
    /// site's key did not sign it (see [`remote::GitRemote`]).
    fn push(
        &self,
        exchange: &Exchange,
        site: &str,
        peer: &str,
        adopt: Option<Oid>,
    ) -> Result<PushOutcome, TransportError>;
    /// Checks that the channel can be used for a sync without moving anything:
    /// reachable, the peer's branch readable (not gone once received, and its
    /// new commits signed as `trust` requires, as far as they can be read
    /// without fetching), this site's branch writable and holding only this
    /// site's commits. Says what it verified (for `ferry doctor`).
    fn check(
        &self,
        exchange: &Exchange,
        site: &str,
        peer: &str,
        trust: &Trust,
    ) -> Result<String, TransportError>;
    /// A human description (the URL as configured).
    fn describe(&self) -> String;
}

/// The channel for a connection's `channel` setting; relative paths are resolved
/// against the site folder.
/// `trust` is the connection's: a bundle channel that encrypts seals for its keys.
pub fn open_channel(setting: &ChannelSetting, site_root: &Path, trust: &Trust) -> Box<dyn Channel> {
    match setting {
        ChannelSetting::Git(url) => Box::new(remote::GitRemote::new(url, site_root)),
        ChannelSetting::Bundles(settings) => {
            Box::new(bundle::BundleChannel::new(settings, site_root, trust))
        }
    }
}

/// What a peer may send, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest replica or `site.yaml`.
    pub replica_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            replica_bytes: MAX_REPLICA_BYTES,
        }
    }
}

/// How many problems one refusal lists before it only counts the rest.
const MAX_LISTED_PROBLEMS: usize = 20;

/// The peer's commits were refused by [`admit`].
#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    /// A commit lacks a signature the connection trusts (see [`crate::signing`]).
    #[error(transparent)]
    Signature(Box<SignatureError>),
    /// The candidate is not a commit (a tag, tree or blob, or missing).
    #[error("refusing {peer}'s branch: {candidate} is not a commit this site has: {source}")]
    NotACommit {
        /// The peer.
        peer: String,
        /// The object offered.
        candidate: Oid,
        /// git's complaint.
        source: git2::Error,
    },
    /// The tree of the candidate holds what no ferry writes; nothing was applied.
    #[error(
        "refusing {peer}'s commit {candidate}: {}{}; nothing was applied, the peer's \
         branch is unchanged (the peer must send a corrected commit)",
        .problems.join("; "),
        if *.more > 0 { format!("; and {} more", .more) } else { String::new() }
    )]
    Hostile {
        /// The peer.
        peer: String,
        /// The refused commit.
        candidate: Oid,
        /// One `path: what is wrong` each, at most `MAX_LISTED_PROBLEMS`.
        problems: Vec<String>,
        /// How many more problems there were.
        more: usize,
    },
    /// The local repository failed while checking (e.g. an object is missing).
    #[error("checking {peer}'s commit {candidate}: {source}")]
    Exchange {
        /// The peer.
        peer: String,
        /// The commit being checked.
        candidate: Oid,
        /// The error.
        source: ExchangeError,
    },
}

/// Checks the peer's commits `before..candidate` before the peer's branch may move
/// to `candidate`; every channel calls it, before any ref moves.
///
/// Every new commit must be signed by a key `trust` holds, for this branch
/// ([`Trust::admit`]). `before` was admitted earlier, so only what changed since
/// is read: the tree of
/// `candidate` is then known to hold only
/// - `site.yaml` at the root, naming `peer` as its site and `site` as its peer;
/// - `issues/<project>/<id>.yaml` or `issues/<project>/<nn>/<mm>/<id>.yaml` replicas
///   (see [`crate::replica::Format`]) that parse, whose `site` is `peer` and
///   whose `project` and `id` match their path, each issue in one layout only;
/// - attachment content, `attachments/<ab>/<sha256>` files or folders of
///   numbered parts, no part larger than [`crate::exchange::PART_BYTES`];
///
/// all of them plain files (no symlinks, submodules or executables) with plain
/// names (no `..`, no hidden names), replicas no larger than `limits`. The
/// commits in between must all be present (a thin pack that lacks its base is
/// refused here); they are never read by the import, which only looks at trees
/// of the peer's head.
pub fn admit(
    exchange: &Exchange,
    site: &str,
    peer: &str,
    before: Option<Oid>,
    candidate: Oid,
    trust: &Trust,
    limits: &Limits,
) -> Result<(), AdmitError> {
    let repo = exchange.repo();
    // Signatures, signers and branch of every new commit first: an unsigned tree
    // is not even read.
    trust
        .admit(
            repo,
            before,
            candidate,
            &crate::exchange::peer_branch(site, peer),
        )
        .map_err(|e| AdmitError::Signature(Box::new(e)))?;
    let commit = repo
        .find_commit(candidate)
        .map_err(|source| AdmitError::NotACommit {
            peer: peer.to_string(),
            candidate,
            source,
        })?;
    let failed = |source: ExchangeError| AdmitError::Exchange {
        peer: peer.to_string(),
        candidate,
        source,
    };
    let git_failed =
        |context: String, source: git2::Error| failed(ExchangeError::Git { context, source });
    exchange
        .commits_between(before, candidate)
        .map_err(failed)?;
    let new_tree = commit
        .tree()
        .map_err(|e| git_failed(format!("reading the tree of {candidate}"), e))?;
    let old_tree = match before {
        Some(before) => Some(
            repo.find_commit(before)
                .and_then(|c| c.tree())
                .map_err(|e| git_failed(format!("reading the tree of {before}"), e))?,
        ),
        None => None,
    };
    let changes = exchange
        .diff_trees(old_tree.as_ref().map(|t| t.id()), new_tree.id())
        .map_err(failed)?;

    let mut problems = Vec::new();
    for change in changes {
        let Some(file) = change.new else {
            continue;
        };
        let path = String::from_utf8_lossy(&change.path).into_owned();
        let moved = match moved_replica(&new_tree, old_tree.as_ref(), &path, file.id) {
            Ok(moved) => moved,
            Err(problem) => {
                problems.push(format!("{path}: {problem}"));
                continue;
            }
        };
        if let Err(problem) = check_entry(exchange, site, peer, &change.path, file, limits, moved) {
            problems.push(format!("{path}: {problem}"));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    let more = problems.len().saturating_sub(MAX_LISTED_PROBLEMS);
    problems.truncate(MAX_LISTED_PROBLEMS);
    Err(AdmitError::Hostile {
        peer: peer.to_string(),
        candidate,
        problems,
        more,
    })
}

/// Whether the replica at `path` only moved from the other layout (the
/// admitted tree has the same blob at the other layout's path), so its content
/// was admitted already and a migration commit of 100 000 replicas is not
/// parsed again. Refuses a tree that stores one issue in both layouts: the
/// import would not know which is the replica.
fn moved_replica(
    new_tree: &git2::Tree<'_>,
    old_tree: Option<&git2::Tree<'_>>,
    path: &str,
    blob: Oid,
) -> Result<bool, String> {
    let Ok((project, id, format)) = crate::replica::parse_stored_path(path) else {
        return Ok(false);
    };
    let other_format = match format {
        Format::V1 => Format::V2,
        Format::V2 => Format::V1,
    };
    let other = crate::replica::stored_path(&project, &id, other_format);
    if new_tree.get_path(Path::new(&other)).is_ok() {
        return Err(format!(
            "the issue's replica is also stored at {other}; a branch stores each \
             replica once, in one layout"
        ));
    }
    Ok(old_tree
        .and_then(|tree| tree.get_path(Path::new(&other)).ok())
        .is_some_and(|entry| entry.id() == blob))
}

/// Why one entry of a peer's tree is refused, if it is. The content of a
/// replica that only `moved` to the other layout was checked when it was
/// admitted at its old path.
fn check_entry(
    exchange: &Exchange,
    site: &str,
    peer: &str,
    path: &[u8],
    file: TreeEntryId,
    limits: &Limits,
    moved: bool,
) -> Result<(), String> {
    let Ok(path) = std::str::from_utf8(path) else {
        return Err("a path that is not UTF-8".into());
    };
    let mode = file.mode;
    if mode == i32::from(FileMode::Link) {
        return Err("a symbolic link (mode 120000); only plain files are exchanged".into());
    }
    if mode == i32::from(FileMode::Commit) {
        return Err("a submodule (mode 160000); only plain files are exchanged".into());
    }
    if mode != i32::from(FileMode::Blob) {
        return Err(format!(
            "mode {mode:o}; only plain files (100644) are exchanged"
        ));
    }
    for component in path.split('/') {
        match component {
            "" => return Err("an empty path component (absolute path, or '//')".into()),
            "." | ".." => return Err(format!("a '{component}' component")),
            c if !is_plain_name(c) => {
                return Err(format!(
                    "{c:?} is not a plain name (letters, digits, '-', '_', '.', not starting with '.')"
                ));
            }
            _ => {}
        }
    }
    let parts: Vec<&str> = path.split('/').collect();
    let is_replica = parts.first() == Some(&"issues");
    match parts.as_slice() {
        [name] if *name == SITE_FILE => {}
        ["issues", _, _] | ["issues", _, _, _, _] if moved => return Ok(()),
        ["issues", _, _] | ["issues", _, _, _, _] => {}
        ["attachments", dir, sha256] | ["attachments", dir, sha256, _] => {
            if !crate::attachment::is_sha256(sha256) || !sha256.starts_with(dir) || dir.len() != 2 {
                return Err(
                    "not attachment content: attachments/<ab>/<sha256> names content by its \
                     lower-case hex SHA-256, <ab> being its first two digits"
                        .into(),
                );
            }
            if let [.., part] = parts.as_slice()
                && parts.len() == 4
                && (part.len() != 6 || !part.bytes().all(|b| b.is_ascii_digit()))
            {
                return Err(format!(
                    "{part:?} is not a part of attachment content (parts are numbered 000000, 000001, ...)"
                ));
            }
            // Content is read one part at a time: no part may be larger than
            // what ferry writes, or a peer could make this site load a huge blob.
            let size = exchange.blob_size(file.id).map_err(|e| e.to_string())?;
            if size > crate::exchange::PART_BYTES {
                return Err(format!(
                    "an attachment part of {size} bytes; parts are at most {} bytes",
                    crate::exchange::PART_BYTES
                ));
            }
            return Ok(());
        }
        _ => {
            return Err(
                "outside the exchange layout (site.yaml, issues/<project>/[<nn>/<mm>/]<id>.yaml, \
                 attachments/<ab>/<sha256>[/<part>])"
                    .into(),
            );
        }
    }
    let oid = file.id;
    let size = exchange.blob_size(oid).map_err(|e| e.to_string())?;
    if size > limits.replica_bytes {
        return Err(format!(
            "{size} bytes, over the limit of {} bytes",
            limits.replica_bytes
        ));
    }
    let bytes = exchange.read_blob(oid).map_err(|e| e.to_string())?;
    if is_replica {
        let replica = Replica::parse(path, &bytes).map_err(|e| {
            // ReplicaError names the path already; the caller names it too.
            let text = e.to_string();
            text.strip_prefix(&format!("{path}: "))
                .unwrap_or(&text)
                .to_string()
        })?;
        if replica.site != peer {
            return Err(format!(
                "the replica says it was written by site {:?}, but this is {peer}'s branch",
                replica.site
            ));
        }
    } else {
        let file = SiteFile::parse(&bytes).map_err(|e| e.to_string())?;
        if file.site != peer || file.peer != site {
            return Err(format!(
                "names site {:?} and peer {:?}, but this is {peer}'s branch for {site}",
                file.site, file.peer
            ));
        }
        if let Some(ack) = &file.ack
            && Oid::from_str(ack).is_err()
        {
            return Err(format!("`ack` {ack:?} is not a commit id"));
        }
    }
    Ok(())
}

/// Helpers for the transport tests.
#[cfg(test)]
pub(crate) mod testing {
    /// The bytes of a valid replica of `site` at `issues/<project>/<id>.yaml`.
    pub fn replica_yaml(site: &str, project: &str, id: &str, summary: &str) -> Vec<u8> {
        format!(
            "ferry: 1\nsite: {site}\nid: '{id}'\nkey: {project}-{id}\nproject: {project}\n\
             type: Bug\nsummary: {summary}\nstatus: Open\ncreated: 2026-11-20T10:00:00Z\n\
             updated: 2026-11-20T10:00:00Z\n"
        )
        .into_bytes()
    }
}

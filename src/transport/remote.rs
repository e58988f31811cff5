//! [`GitRemote`]: an intermediate git repository both sites reach out to.
//!
//! Any URL git2 understands works: a local path (relative to the site folder),
//! `file://`, `git://`, `ssh://` (or `user@host:path`) and `https://`. A server
//! URL is reached through an anonymous remote with explicit refspecs and no
//! tags, so nothing about the channel is stored in the exchange repo's config
//! and only the two branches of this connection ever move. A folder (a path or
//! `file://`) is opened directly and written by ferry itself, so that a
//! transfer costs what changed (see `GitRemote::open_folder`).
//!
//! Safety rules, both directions:
//! - fetch only fast-forwards the local copy of the peer's branch; a rewritten
//!   history, or a new commit without a trusted signature, is refused before
//!   anything can be imported from it;
//! - push is never forced. If the channel's copy of our branch moved (restored
//!   from a backup, or pushed by another machine of this site), we record a merge
//!   whose tree is ours and push that as a fast-forward. Ours wins because the
//!   branch is a snapshot of this site's own tracker, which is authoritative for
//!   it: whatever the channel holds is at best an older snapshot of the same data.
//!   Only this site's own history is merged, though: every commit the channel
//!   adds must be signed by this site's key for this branch (see
//!   `GitRemote::check_own_history`), or the push stops, names the commit and
//!   merges nothing.
use std::cell::RefCell;
use std::path::{Path, PathBuf};

use git2::{
    AutotagOption, Cred, CredentialType, Direction, ErrorClass, ErrorCode, FetchOptions, Oid,
    PushOptions, RemoteCallbacks, Repository,
};

use super::watchdog::Watchdog;
use super::{Channel, FetchOutcome, ForeignCommit, Limits, PushOutcome, TransportError, admit};
use crate::exchange::{Exchange, ExchangeError, own_branch, peer_branch};
use crate::failpoint;
use crate::pack;
use crate::signing::{AdmitError as SignatureError, Refusal, SignaturePolicy, Trust};

/// How many times a push is tried (each rejection reconciles first) before giving up.
const MAX_PUSH_ATTEMPTS: u32 = 3;

/// An intermediate git repository reached by URL or path.
pub struct GitRemote {
    /// The URL as configured, for messages.
    url: String,
    /// What git2 is given: the URL, or the local path resolved against the site.
    target: String,
    /// The directory to check before talking to a local channel.
    local_dir: Option<PathBuf>,
}

/// A transport libgit2 only has when git2 was built with the matching feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Optional {
    /// `ssh://`, `git+ssh://`, `user@host:path`: git2's `ssh` feature.
    Ssh,
    /// `https://`: git2's `https` feature.
    Https,
}

impl Optional {
    /// The transport `url` needs beyond what libgit2 always has, if any.
    fn of(url: &str) -> Option<Optional> {
        let scheme = url
            .split_once("://")
            .map(|(scheme, _)| scheme.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("ssh" | "git+ssh" | "ssh+git") => Some(Optional::Ssh),
            Some("https") => Some(Optional::Https),
            Some(_) => None,
            None => is_scp_like(url).then_some(Optional::Ssh),
        }
    }

    /// The protocol's name and the git2 feature that provides it.
    fn names(self) -> (&'static str, &'static str) {
        match self {
            Optional::Ssh => ("SSH", "ssh"),
            Optional::Https => ("HTTPS", "https"),
        }
    }

    /// Whether the linked libgit2 has it.
    fn available(self) -> bool {
        let version = git2::Version::get();
        match self {
            Optional::Ssh => version.ssh(),
            Optional::Https => version.https(),
        }
    }
}

/// What one push attempt did.
enum Attempt {
    /// The channel already had our tip.
    UpToDate,
    /// The channel accepted our tip.
    Accepted,
    /// The channel refused our tip, with the reason.
    Rejected(String),
}

impl GitRemote {
    /// A remote for `url`; relative paths are resolved against `site_root`.
    pub fn new(url: &str, site_root: &Path) -> GitRemote {
        let local_dir = folder(url, site_root);
        let target = match &local_dir {
            Some(path) if !url.starts_with("file://") => path.to_string_lossy().into_owned(),
            _ => url.to_string(),
        };
        GitRemote {
            url: url.to_string(),
            target,
            local_dir,
        }
    }

    /// The URL for messages, with any password in it masked.
    fn channel(&self) -> String {
        redact(&self.url)
    }

    /// Refuses early what cannot work, with a message that says what to do: a
    /// local channel that does not exist (instead of git2's generic "failed to
    /// resolve path"), or a protocol this build of libgit2 lacks (instead of
    /// "unsupported URL protocol").
    fn check_usable(&self) -> Result<(), TransportError> {
        if let Some(dir) = &self.local_dir
            && !dir.exists()
        {
            return Err(TransportError::NotFound { path: dir.clone() });
        }
        match Optional::of(&self.url) {
            Some(needed) if !needed.available() => {
                let (protocol, feature) = needed.names();
                Err(TransportError::Failed {
                    channel: self.channel(),
                    message: format!(
                        "this ferry was built without {protocol} support in libgit2 (git2's \
                         `{feature}` feature); use a path, file:// or git:// channel, or \
                         rebuild with the feature"
                    ),
                })
            }
            Some(Optional::Https) => {
                crate::git_runtime::load_ca_bundle().map_err(|e| self.git_err("starting TLS", e))
            }
            _ => Ok(()),
        }
    }

    /// On a channel that is a local folder, libgit2 pushes by writing the shared
    /// repository itself, so a run killed mid-push leaves `<branch>.lock` there and
    /// every later push of the branch fails. The lock of *our own* branch can only
    /// have been made by this site (each site writes only its own branches) and we
    /// hold the site lock, so it is stale and removed; locks of other refs are
    /// left for their owners. Servers (ssh, https, git://) clean up on their side.
    fn remove_own_stale_lock(&self, branch: &str) -> Result<(), TransportError> {
        let Some(dir) = &self.local_dir else {
            return Ok(());
        };
        let lock = dir.join(format!("{branch}.lock"));
        match std::fs::remove_file(&lock) {
            Ok(()) => {
                tracing::warn!(
                    channel = %self.channel(),
                    "removed {}, left by an interrupted push of this site",
                    lock.display()
                );
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(TransportError::Failed {
                channel: self.channel(),
                message: format!("cannot remove the stale lock {}: {e}", lock.display()),
            }),
        }
    }

    /// Wraps a git2 error with the channel, what was attempted, and a hint.
    fn git_err(&self, action: impl Into<String>, source: git2::Error) -> TransportError {
        TransportError::Git {
            channel: self.channel(),
            action: action.into(),
            hint: hint_for(&source),
            source,
        }
    }

    /// Wraps a local exchange error with the channel.
    fn ex_err(&self, source: ExchangeError) -> TransportError {
        TransportError::Exchange {
            channel: self.channel(),
            source,
        }
    }

    /// Fetches the channel's `src` into the local ref `dst` (forced: `dst` is a
    /// scratch ref) and returns what it points at, `None` when the channel has no
    /// `src`. `have` is a local commit the channel probably holds too: a folder
    /// channel then sends only what is new since (see [`GitRemote::open_folder`]).
    fn fetch_into(
        &self,
        repo: &Repository,
        src: &str,
        dst: &str,
        have: Option<Oid>,
    ) -> Result<Option<Oid>, TransportError> {
        let action = || format!("fetching {src}");
        // A refspec whose source is missing is silently skipped by libgit2, so a
        // stale scratch ref would look like a fresh fetch: clear it first.
        match repo.find_reference(dst) {
            Ok(mut stale) => stale.delete().map_err(|e| self.git_err(action(), e))?,
            Err(e) if e.code() == ErrorCode::NotFound => {}
            Err(e) => return Err(self.git_err(action(), e)),
        }
        if let Some(channel) = self.open_folder()? {
            let Some(theirs) = lookup(&channel, src).map_err(|e| self.git_err(action(), e))? else {
                return Ok(None);
            };
            pack::send(
                &channel,
                have.as_slice(),
                theirs,
                repo,
                pack::Source::Shared,
            )
            .map_err(|e| self.git_err(action(), e))?;
            failpoint::hit("fetch-after-pack");
            repo.reference(
                dst,
                theirs,
                true,
                &format!("ferry: fetch {src} from {}", self.channel()),
            )
            .map_err(|e| self.git_err(action(), e))?;
            return Ok(Some(theirs));
        }
        let mut remote = repo
            .remote_anonymous(&self.target)
            .map_err(|e| self.git_err(action(), e))?;
        // libgit2 indexes what the server sends; a pack it cannot index, or a
        // server that stops, would hold the run for ever (see watchdog.rs).
        let watchdog = Watchdog::start(self.channel());
        let mut callbacks = callbacks();
        callbacks.transfer_progress(|progress| {
            watchdog.report(
                progress.received_objects(),
                progress.total_objects(),
                progress.indexed_deltas(),
            );
            true
        });
        let mut options = FetchOptions::new();
        options
            .remote_callbacks(callbacks)
            .download_tags(AutotagOption::None)
            .update_fetchhead(false);
        remote
            .fetch(
                &[format!("+{src}:{dst}")],
                Some(&mut options),
                Some(&format!("ferry: fetch {src} from {}", self.channel())),
            )
            .map_err(|e| self.git_err(action(), e))?;
        match repo.refname_to_id(dst) {
            Ok(oid) => Ok(Some(oid)),
            Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
            Err(e) => Err(self.git_err(action(), e)),
        }
    }

    /// The channel's repository, opened directly when the channel is a folder on
    /// this machine; `None` for a URL, which goes through libgit2's transports.
    ///
    /// libgit2's local transport would serve a folder like a server: its
    /// packbuilder lists every object of the trees the other side already has
    /// as not to be sent, a walk of the whole tree, which at 100 000 replicas is
    /// the cost of the site. Opened directly, a fetch or push sends a pack of the
    /// objects a tree diff by id finds new ([`pack::send`]) and moves the ref
    /// itself, with the same rules as a server: fast-forward only, and a
    /// compare-and-swap under the ref's lock file.
    fn open_folder(&self) -> Result<Option<Repository>, TransportError> {
        let Some(dir) = &self.local_dir else {
            return Ok(None);
        };
        self.open_bare(dir).map(Some)
    }

    /// Opens the folder channel `dir`, saying what it is when it is not a bare
    /// repository (libgit2 only says "not a repository", even of a repository
    /// with a working tree).
    fn open_bare(&self, dir: &Path) -> Result<Repository, TransportError> {
        match Repository::open_bare(dir) {
            Ok(repo) => Ok(repo),
            Err(e) if e.code() == ErrorCode::NotFound && dir.is_dir() => {
                Err(TransportError::NotBare {
                    path: dir.to_path_buf(),
                    working_tree: Repository::open(dir).is_ok_and(|repo| !repo.is_bare()),
                })
            }
            Err(e) => {
                Err(self.git_err(format!("opening {} as a bare repository", dir.display()), e))
            }
        }
    }

    /// One push of `branch` (at `tip`) to a folder channel: stop if it already
    /// has `tip`; refuse what would not be a fast-forward of the channel's
    /// branch; send the new objects; move the channel's branch from what was
    /// read to `tip`, failing (a rejection, reconciled like any other) if another
    /// push moved it meanwhile.
    fn push_to_folder(
        &self,
        exchange: &Exchange,
        channel: &Repository,
        branch: &str,
        tip: Oid,
    ) -> Result<Attempt, TransportError> {
        let action = || format!("pushing {branch}");
        let theirs = lookup(channel, branch).map_err(|e| self.git_err(action(), e))?;
        if theirs == Some(tip) {
            return Ok(Attempt::UpToDate);
        }
        if let Some(theirs) = theirs {
            let ours = exchange
                .repo()
                .odb()
                .map_err(|e| self.git_err(action(), e))?;
            if !ours.exists(theirs)
                || !exchange
                    .is_ancestor(theirs, tip)
                    .map_err(|e| self.ex_err(e))?
            {
                return Ok(Attempt::Rejected(format!(
                    "{branch}: the channel has {theirs}, which {tip} does not descend from \
                     (not a fast-forward)"
                )));
            }
        }
        pack::send(
            exchange.repo(),
            theirs.as_slice(),
            tip,
            channel,
            pack::Source::Own,
        )
        .map_err(|e| self.git_err(action(), e))?;
        failpoint::hit("push-after-pack");
        self.move_folder_branch(channel, branch, theirs, tip)
    }

    /// Moves the folder channel's `branch` from `expected` (`None`: it must not
    /// exist) to `tip`: libgit2 takes the ref's lock file, as git's
    /// receive-pack does, and compares under it, so of two pushes racing only one
    /// moves the branch; the other is rejected and reconciles.
    fn move_folder_branch(
        &self,
        channel: &Repository,
        branch: &str,
        expected: Option<Oid>,
        tip: Oid,
    ) -> Result<Attempt, TransportError> {
        let reason = format!("ferry: push {branch}");
        let moved = match expected {
            Some(expected) => channel.reference_matching(branch, tip, true, expected, &reason),
            None => channel.reference(branch, tip, false, &reason),
        };
        match moved {
            Ok(_) => Ok(Attempt::Accepted),
            // Modified: another push moved it; Exists: another push created it;
            // NotFound: it was deleted meanwhile; Locked: another push holds it.
            Err(e)
                if matches!(
                    e.code(),
                    ErrorCode::Modified
                        | ErrorCode::Exists
                        | ErrorCode::NotFound
                        | ErrorCode::Locked
                ) =>
            {
                Ok(Attempt::Rejected(format!(
                    "{branch}: moved on the channel during the push ({})",
                    e.message()
                )))
            }
            Err(e) => Err(self.git_err(format!("pushing {branch}"), e)),
        }
    }

    /// One push of `branch` (at `tip`) over a single connection: list the
    /// channel's refs, stop if it already has `tip`, push otherwise.
    fn push_once(
        &self,
        exchange: &Exchange,
        branch: &str,
        tip: Oid,
    ) -> Result<Attempt, TransportError> {
        if let Some(channel) = self.open_folder()? {
            return self.push_to_folder(exchange, &channel, branch, tip);
        }
        let repo = exchange.repo();
        let action = || format!("pushing {branch}");
        // A server that stops answering would hold the run (see watchdog.rs).
        let watchdog = Watchdog::start(self.channel());
        let mut remote = repo
            .remote_anonymous(&self.target)
            .map_err(|e| self.git_err(action(), e))?;
        let mut connection = remote
            .connect_auth(Direction::Push, Some(callbacks()), None)
            .map_err(|e| self.git_err(action(), e))?;
        let theirs = connection
            .list()
            .map_err(|e| self.git_err(action(), e))?
            .iter()
            .find(|head| head.name() == branch)
            .map(|head| head.oid());
        if theirs == Some(tip) {
            return Ok(Attempt::UpToDate);
        }

        // A server reports a refused ref through this callback while the push
        // itself returns Ok; only a client-side refusal comes back as an Err.
        let refused = RefCell::new(None);
        let mut callbacks = callbacks();
        callbacks.push_transfer_progress(|_, _, _| watchdog.report(0, 0, 0));
        callbacks.push_update_reference(|name, status| {
            if let Some(reason) = status {
                *refused.borrow_mut() = Some(format!("{name}: {reason}"));
            }
            Ok(())
        });
        let mut options = PushOptions::new();
        options.remote_callbacks(callbacks);
        // No leading '+': never forced.
        let result = connection
            .remote()
            .push(&[format!("{branch}:{branch}")], Some(&mut options));
        drop(options);
        match result {
            Ok(()) => Ok(match refused.into_inner() {
                Some(reason) => Attempt::Rejected(reason),
                None => Attempt::Accepted,
            }),
            // libgit2 checks fast-forward itself before sending, and also refuses
            // when the channel's tip is a commit we do not have.
            Err(e) if e.code() == ErrorCode::NotFastForward => {
                Ok(Attempt::Rejected(e.message().to_string()))
            }
            Err(e) => Err(self.git_err(action(), e)),
        }
    }

    /// Checks that every commit `theirs` adds over `ours` in `repo` (the local
    /// clone, or a folder channel itself) is this site's own: signed by the key
    /// `exchange` signs with, and naming this site's branch for `peer` in its
    /// `Ferry-Branch` trailer, the same check a peer makes ([`Trust::admit`])
    /// with this site's key as the only trusted one.
    ///
    /// Why merging such a history is still safe, and why nothing else is: the
    /// merge exists for a channel restored from a backup, or this site pushing
    /// from another machine (the site folder and its key copied). Both only ever
    /// hold commits this site signed for this branch, and the merge keeps this
    /// site's tree, so what the peer receives is this site's snapshot with its
    /// own older snapshots in the history, all of which the peer admits. Anything
    /// else on the branch was written by someone who can write to the channel but
    /// does not hold this site's key: merged, it would sit in the history the
    /// peer checks, so the peer would refuse the branch on every run while this
    /// site reported success. Who holds this site's key can sign anything anyway;
    /// that is no reason to accept less from who does not.
    fn check_own_history(
        &self,
        exchange: &Exchange,
        repo: &Repository,
        site: &str,
        peer: &str,
        ours: Option<Oid>,
        theirs: Oid,
    ) -> Result<(), TransportError> {
        let branch = own_branch(site, peer);
        let Some(key) = exchange.signer() else {
            return Err(TransportError::Failed {
                channel: self.channel(),
                message: format!(
                    "cannot check {branch} on the channel: no signing key is loaded to tell \
                     this site's commits from others"
                ),
            });
        };
        let trust = Trust {
            peer: site.to_string(),
            file: key.path().to_path_buf(),
            policy: SignaturePolicy::Required,
            keys: vec![key.public_key()],
        };
        match trust.admit(repo, ours, theirs, &branch) {
            Ok(_) => Ok(()),
            Err(SignatureError::Refused { commit, reason, .. }) => {
                Err(TransportError::ForeignOwnCommit {
                    channel: self.channel(),
                    found: Box::new(ForeignCommit {
                        peer: peer.to_string(),
                        refname: branch,
                        tip: theirs,
                        commit,
                        reason: match reason {
                            Refusal::UnknownSigner { fingerprint, .. } => {
                                format!("it is signed by {fingerprint}, not by this site's key")
                            }
                            other => other.to_string(),
                        },
                    }),
                })
            }
            Err(other) => Err(TransportError::Failed {
                channel: self.channel(),
                message: format!("checking this site's branch {branch} on the channel: {other}"),
            }),
        }
    }

    /// The error for the peer's `branch`, received up to `known`, missing from
    /// the channel.
    fn peer_branch_gone(&self, peer: &str, branch: &str, known: Oid) -> TransportError {
        TransportError::PeerBranchGone {
            channel: self.channel(),
            peer: peer.to_string(),
            refname: branch.to_string(),
            known,
        }
    }

    /// For `ferry doctor`, what a sync would find wrong with the two branches,
    /// fetching nothing: the peer's branch gone after this site received it, or
    /// at `peer_tip` holding a commit `trust` refuses; this site's own branch on
    /// the channel (at `own`, `None` when absent) holding what
    /// [`GitRemote::check_own_history`] refuses. `channel` is the folder
    /// channel's repository; for a URL, only commits the local clone already
    /// has (a refused fetch keeps them) can be checked, and an unknown tip of
    /// this site's branch is reported as such.
    #[allow(clippy::too_many_arguments)]
    fn check_branches(
        &self,
        exchange: &Exchange,
        channel: Option<&Repository>,
        site: &str,
        peer: &str,
        own: Option<Oid>,
        peer_tip: Option<Oid>,
        trust: &Trust,
    ) -> Result<(), TransportError> {
        let incoming = peer_branch(site, peer);
        let known = exchange.resolve(&incoming).map_err(|e| self.ex_err(e))?;
        match (peer_tip, known) {
            (None, Some(known)) => return Err(self.peer_branch_gone(peer, &incoming, known)),
            (Some(tip), known) if known != Some(tip) => {
                self.check_peer_commits(exchange, channel, &incoming, tip, known, trust)?
            }
            _ => {}
        }
        let Some(theirs) = own else {
            return Ok(());
        };
        let branch = own_branch(site, peer);
        let ours = exchange.resolve(&branch).map_err(|e| self.ex_err(e))?;
        let local = exchange.repo();
        let known_here = local
            .odb()
            .map(|odb| odb.exists(theirs))
            .map_err(|e| self.git_err(format!("checking {branch}"), e))?;
        if known_here {
            if let Some(ours) = ours
                && exchange
                    .is_ancestor(theirs, ours)
                    .map_err(|e| self.ex_err(e))?
            {
                return Ok(());
            }
            return self.check_own_history(exchange, local, site, peer, ours, theirs);
        }
        let Some(channel) = channel else {
            return Err(TransportError::Failed {
                channel: self.channel(),
                message: format!(
                    "this site's branch {branch} on the channel is at {theirs}, a commit this \
                     site does not have (pushed from another machine of this site, restored \
                     from a backup, or written by someone else); the next `ferry sync` \
                     fetches it and builds on it only if this site signed it"
                ),
            });
        };
        // Walk the channel's own copy, up to what both have.
        let shared = match ours {
            Some(ours) => channel
                .odb()
                .map(|odb| odb.exists(ours))
                .map_err(|e| self.git_err(format!("checking {branch}"), e))?
                .then_some(ours),
            None => None,
        };
        self.check_own_history(exchange, channel, site, peer, shared, theirs)
    }

    /// The signatures of the commits the peer's branch `incoming` on the channel
    /// (at `tip`) adds over what this site has (`known`), as a fetch would
    /// check them, read from the local clone when a fetch brought them already,
    /// else from a folder channel; a tip that is neither is left to the next
    /// fetch. A connection that trusts no key is said by doctor's trust check.
    fn check_peer_commits(
        &self,
        exchange: &Exchange,
        channel: Option<&Repository>,
        incoming: &str,
        tip: Oid,
        known: Option<Oid>,
        trust: &Trust,
    ) -> Result<(), TransportError> {
        let has = |repo: &Repository, oid: Oid| {
            repo.odb()
                .map(|odb| odb.exists(oid))
                .map_err(|e| self.git_err(format!("checking {incoming}"), e))
        };
        let repo = if has(exchange.repo(), tip)? {
            exchange.repo()
        } else if let Some(channel) = channel {
            channel
        } else {
            return Ok(());
        };
        let hide = match known {
            Some(known) if has(repo, known)? => Some(known),
            _ => None,
        };
        match trust.admit(repo, hide, tip, incoming) {
            Ok(_) | Err(SignatureError::NoTrustedKey { .. }) => Ok(()),
            Err(refused @ SignatureError::Refused { .. }) => Err(TransportError::Refused {
                channel: self.channel(),
                source: Box::new(super::AdmitError::Signature(Box::new(refused))),
            }),
            Err(other) => Err(TransportError::Failed {
                channel: self.channel(),
                message: format!("checking the peer's branch {incoming}: {other}"),
            }),
        }
    }

    /// After a rejection: fetch the channel's copy of our branch and, unless it is
    /// already part of our history, merge it in keeping our tree, so that the next
    /// push is a fast-forward; but only once [`GitRemote::check_own_history`]
    /// found it to be this site's own, or the operator adopted exactly that tip.
    fn reconcile(
        &self,
        exchange: &Exchange,
        site: &str,
        peer: &str,
        branch: &str,
        tip: Oid,
        adopt: Option<Oid>,
    ) -> Result<(), TransportError> {
        let scratch = format!("refs/ferry/remote-own/{peer}");
        let Some(theirs) = self.fetch_into(exchange.repo(), branch, &scratch, Some(tip))? else {
            // The branch vanished from the channel meanwhile: a plain retry creates it.
            return Ok(());
        };
        if exchange
            .is_ancestor(theirs, tip)
            .map_err(|e| self.ex_err(e))?
        {
            // The channel is behind us (we lacked its objects, or it raced): retry.
            return Ok(());
        }
        match adopt {
            Some(adopt) if adopt == theirs => tracing::warn!(
                channel = %self.channel(),
                branch,
                theirs = %theirs,
                "adopting the channel's copy of our branch as this site's own, as asked"
            ),
            Some(adopt) => {
                return Err(TransportError::AdoptMismatch {
                    channel: self.channel(),
                    refname: branch.to_string(),
                    adopt,
                    tip: theirs,
                });
            }
            None => {
                self.check_own_history(exchange, exchange.repo(), site, peer, Some(tip), theirs)?
            }
        }
        let message = format!(
            "Merge {branch} as found on the channel ({theirs:.7}) \
             (remote moved; this site's snapshot wins)\n\n\
             The channel's copy of this branch was not an ancestor of ours (restored \
             from a backup, or pushed from another machine). This branch is a snapshot \
             of {site}'s own tracker, which is authoritative for it, so the tree is \
             ours unchanged; the other history is kept as second parent so the push is \
             a fast-forward and nothing is overwritten."
        );
        tracing::warn!(
            channel = %self.channel(),
            branch,
            ours = %tip,
            theirs = %theirs,
            "the channel's copy of our branch moved; merging it, our snapshot wins"
        );
        exchange
            .merge_keep_ours(branch, theirs, &message, site)
            .map_err(|e| self.ex_err(e))?;
        Ok(())
    }
}

impl Channel for GitRemote {
    fn fetch(
        &self,
        exchange: &Exchange,
        site: &str,
        peer: &str,
        trust: &Trust,
    ) -> Result<FetchOutcome, TransportError> {
        self.check_usable()?;
        let branch = peer_branch(site, peer);
        let scratch = format!("refs/ferry/fetched/{peer}");
        let before = exchange.resolve(&branch).map_err(|e| self.ex_err(e))?;
        let Some(fetched) = self.fetch_into(exchange.repo(), &branch, &scratch, before)? else {
            // A branch this site received before does not vanish by itself: the
            // link is cut, and saying "nothing new" would hide it for good.
            if let Some(known) = before {
                return Err(self.peer_branch_gone(peer, &branch, known));
            }
            // The peer has not shared anything with us yet.
            return Ok(FetchOutcome {
                before,
                after: before,
                notes: Vec::new(),
                waiting: Vec::new(),
            });
        };
        // A branch pointing at a tag, tree or blob is not something a peer's ferry
        // writes; refuse it before it becomes the peer branch.
        if let Err(source) = exchange.repo().find_commit(fetched) {
            return Err(self.git_err(
                format!("checking that {branch} on the channel is a commit ({fetched})"),
                source,
            ));
        }
        if let Some(local) = before
            && !exchange
                .is_ancestor(local, fetched)
                .map_err(|e| self.ex_err(e))?
        {
            return Err(TransportError::Rewritten {
                channel: self.channel(),
                peer: peer.to_string(),
                refname: branch,
                local,
                fetched,
            });
        }
        if before == Some(fetched) {
            return Ok(FetchOutcome {
                before,
                after: before,
                notes: Vec::new(),
                waiting: Vec::new(),
            });
        }
        admit(
            exchange,
            site,
            peer,
            before,
            fetched,
            trust,
            &Limits::default(),
        )
        .map_err(|source| TransportError::Refused {
            channel: self.channel(),
            source: Box::new(source),
        })?;
        exchange
            .update_ref(
                &branch,
                before,
                fetched,
                &format!("ferry: fast-forward from {}", self.channel()),
            )
            .map_err(|e| self.ex_err(e))?;
        Ok(FetchOutcome {
            before,
            after: Some(fetched),
            notes: Vec::new(),
            waiting: Vec::new(),
        })
    }

    fn push(
        &self,
        exchange: &Exchange,
        site: &str,
        peer: &str,
        adopt: Option<Oid>,
    ) -> Result<PushOutcome, TransportError> {
        self.check_usable()?;
        let branch = own_branch(site, peer);
        self.remove_own_stale_lock(&branch)?;
        let mut reason = String::new();
        for _ in 0..MAX_PUSH_ATTEMPTS {
            let Some(tip) = exchange.resolve(&branch).map_err(|e| self.ex_err(e))? else {
                return Ok(PushOutcome::UpToDate);
            };
            match self.push_once(exchange, &branch, tip)? {
                Attempt::UpToDate => return Ok(PushOutcome::UpToDate),
                Attempt::Accepted => return Ok(PushOutcome::Pushed(tip)),
                Attempt::Rejected(why) => {
                    tracing::info!(channel = %self.channel(), branch, reason = %why, "push rejected; reconciling");
                    reason = why;
                    self.reconcile(exchange, site, peer, &branch, tip, adopt)?;
                }
            }
        }
        Err(TransportError::Rejected {
            channel: self.channel(),
            refname: branch,
            attempts: MAX_PUSH_ATTEMPTS,
            reason,
        })
    }

    fn check(
        &self,
        exchange: &Exchange,
        site: &str,
        peer: &str,
        trust: &Trust,
    ) -> Result<String, TransportError> {
        self.check_usable()?;
        let branch = own_branch(site, peer);
        if let Some(dir) = &self.local_dir {
            // A folder channel is written by this process: a bare repository whose
            // refs folder we may write is all a push needs.
            let repo = self.open_bare(dir)?;
            let probe = dir
                .join("refs/heads")
                .join(format!(".ferry-doctor-{}", std::process::id()));
            std::fs::write(&probe, b"")
                .and_then(|()| std::fs::remove_file(&probe))
                .map_err(|e| TransportError::Failed {
                    channel: self.channel(),
                    message: format!(
                        "cannot write under {}: {e}",
                        dir.join("refs/heads").display()
                    ),
                })?;
            let action = || format!("reading {branch}");
            let own = lookup(&repo, &branch).map_err(|e| self.git_err(action(), e))?;
            let peer_tip =
                lookup(&repo, &peer_branch(site, peer)).map_err(|e| self.git_err(action(), e))?;
            self.check_branches(exchange, Some(&repo), site, peer, own, peer_tip, trust)?;
            return Ok(format!(
                "{} is a bare repository this site can write",
                dir.display()
            ));
        }
        let _watchdog = Watchdog::start(self.channel());
        let mut remote = exchange
            .repo()
            .remote_anonymous(&self.target)
            .map_err(|e| self.git_err("connecting", e))?;
        let incoming = peer_branch(site, peer);
        let (refs, own, peer_tip) = {
            let connection = remote
                .connect_auth(Direction::Fetch, Some(callbacks()), None)
                .map_err(|e| self.git_err("connecting to fetch", e))?;
            let heads = connection
                .list()
                .map_err(|e| self.git_err("listing refs", e))?;
            let tip = |name: &str| heads.iter().find(|h| h.name() == name).map(|h| h.oid());
            (heads.len(), tip(&branch), tip(&incoming))
        };
        // The server advertises receive-pack only to a client allowed to push;
        // whether this very branch is allowed is the server's rule, seen at push.
        remote
            .connect_auth(Direction::Push, Some(callbacks()), None)
            .map_err(|e| self.git_err(format!("connecting to push {branch}"), e))?;
        self.check_branches(exchange, None, site, peer, own, peer_tip, trust)?;
        Ok(format!(
            "reachable; fetch lists {refs} ref{}, push connects",
            if refs == 1 { "" } else { "s" }
        ))
    }

    fn describe(&self) -> String {
        self.url.clone()
    }
}

/// What `refname` points at in `repo`, `None` when there is no such ref.
/// The folder a channel URL names on this machine (a path, relative to
/// `site_root` unless absolute, or a `file://` URL); `None` for a server URL.
pub fn folder(url: &str, site_root: &Path) -> Option<PathBuf> {
    if let Some(path) = url.strip_prefix("file://") {
        Some(PathBuf::from(path))
    } else if url.contains("://") || is_scp_like(url) {
        None
    } else {
        Some(site_root.join(url))
    }
}

fn lookup(repo: &Repository, refname: &str) -> Result<Option<Oid>, git2::Error> {
    match repo.refname_to_id(refname) {
        Ok(oid) => Ok(Some(oid)),
        Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether `url` is git's scp-like ssh syntax (`user@host:path`, `host:path`): a
/// colon before any slash. One-letter hosts are taken as Windows drive letters.
fn is_scp_like(url: &str) -> bool {
    match (url.find(':'), url.find('/')) {
        (Some(colon), slash) => colon > 1 && slash.is_none_or(|slash| colon < slash),
        (None, _) => false,
    }
}

/// Masks the password of `scheme://user:password@host/…` so it never reaches a
/// log, an error e-mail or a commit.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => match rest[..at].split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***{}", &rest[at..]),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// A hint for failures the user can fix outside ferry (network, credentials).
fn hint_for(error: &git2::Error) -> Option<&'static str> {
    match (error.code(), error.class()) {
        (ErrorCode::Auth, _) => Some(
            "the channel refused the credentials: ssh:// uses the keys in ssh-agent, \
             https:// uses git's credential helpers",
        ),
        (ErrorCode::Certificate, _) | (_, ErrorClass::Ssl) => Some(
            "the server's TLS certificate or SSH host key was not accepted; check it is \
             the expected server and that its key is known",
        ),
        (_, ErrorClass::Net | ErrorClass::Ssh | ErrorClass::Http | ErrorClass::Os) => Some(
            "check that this machine can reach the channel (network, proxy, firewall) \
             and that the URL is right",
        ),
        _ => None,
    }
}

/// Callbacks shared by every connection: credentials from the URL's user name and
/// ssh-agent, with a bounded number of tries because libgit2 asks again after
/// every refused credential and would otherwise loop forever. (A password in an
/// `https://user:password@…` URL is used by libgit2 before this is asked.)
fn callbacks<'a>() -> RemoteCallbacks<'a> {
    let mut callbacks = RemoteCallbacks::new();
    let mut tries = 0;
    callbacks.credentials(move |_url, username, allowed| {
        tries += 1;
        if tries > 3 {
            return Err(git2::Error::new(
                ErrorCode::Auth,
                ErrorClass::Net,
                "no credentials were accepted (tried the URL's user and ssh-agent)",
            ));
        }
        let user = username.unwrap_or("git");
        if allowed.contains(CredentialType::USERNAME) {
            Cred::username(user)
        } else if allowed.contains(CredentialType::SSH_KEY) {
            Cred::ssh_key_from_agent(user)
        } else if allowed.contains(CredentialType::DEFAULT) {
            Cred::default()
        } else {
            Err(git2::Error::new(
                ErrorCode::Auth,
                ErrorClass::Net,
                "the channel asks for credentials ferry cannot supply \
                 (put user:password in the https URL, or use ssh-agent)",
            ))
        }
    });
    callbacks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::FileWrite;
    use crate::signing::{AdmitError, Refusal, SignaturePolicy, SiteKey};
    use crate::transport::testing::replica_yaml;
    use ssh_key::HashAlg;
    use std::net::{TcpListener, TcpStream};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    const SUPPORT: &str = "support";
    const ENGINEERING: &str = "engineering";

    /// A hermetic `git` CLI command: no user or system config, fixed identity.
    fn git_command(dir: &Path) -> Command {
        let mut command = Command::new("git");
        command
            .arg("-C")
            .arg(dir)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "Mallory")
            .env("GIT_AUTHOR_EMAIL", "mallory@example.invalid")
            .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
            .env("GIT_COMMITTER_NAME", "Mallory")
            .env("GIT_COMMITTER_EMAIL", "mallory@example.invalid")
            .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z");
        command
    }

    /// Runs the git CLI in `dir` and returns its trimmed stdout.
    fn git_cli(dir: &Path, args: &[&str]) -> String {
        let out = git_command(dir).args(args).output().expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// A commit made in `repo` by git itself, signed with support's key for its
    /// branch for engineering: support's own commit, made on another machine.
    fn own_commit_tree(
        repo: &Path,
        root: &Path,
        tree: &str,
        parent: &str,
        subject: &str,
    ) -> String {
        let key = root.join(SUPPORT).join("signing_key");
        git_cli(
            repo,
            &[
                "-c",
                "gpg.format=ssh",
                "-c",
                &format!("user.signingkey={}", key.display()),
                "commit-tree",
                "-S",
                tree,
                "-p",
                parent,
                "-m",
                &format!("{subject}\n\nFerry-Branch: {SUPPORT}/{ENGINEERING}"),
            ],
        )
    }

    /// [`git_cli`] with `input` on standard input (hash-object, mktree).
    fn git_cli_with_input(dir: &Path, args: &[&str], input: &str) -> String {
        use std::io::Write;
        let mut child = git_command(dir)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("git runs");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Two sites, each with its exchange repo, and a bare channel made by `git`.
    struct World {
        root: tempfile::TempDir,
        support: Exchange,
        engineering: Exchange,
        /// The key support signs with, as engineering trusts it.
        support_key: SiteKey,
        /// What engineering trusts on its connection to support.
        engineering_trusts: Trust,
        /// What support trusts on its connection to engineering.
        support_trusts: Trust,
    }

    /// A site's exchange, signing with a new key.
    fn signing_site(root: &Path, site: &str) -> (Exchange, SiteKey) {
        let key = SiteKey::generate(&root.join(site).join("signing_key"), site).unwrap();
        let mut exchange = Exchange::open_or_init(&root.join(site).join("exchange.git")).unwrap();
        exchange.sign_with(key.clone());
        (exchange, key)
    }

    /// A connection's trust in exactly `keys`.
    fn trusting(root: &Path, peer: &str, keys: &[&SiteKey]) -> Trust {
        Trust {
            peer: peer.to_string(),
            file: root.join(format!("{peer}.allowed_signers")),
            policy: SignaturePolicy::Required,
            keys: keys.iter().map(|k| k.public_key()).collect(),
        }
    }

    impl World {
        fn new() -> World {
            let root = tempfile::tempdir().unwrap();
            git_cli(root.path(), &["init", "--bare", "-q", "exchange.git"]);
            let (support, support_key) = signing_site(root.path(), SUPPORT);
            let (engineering, engineering_key) = signing_site(root.path(), ENGINEERING);
            let engineering_trusts = trusting(root.path(), SUPPORT, &[&support_key]);
            let support_trusts = trusting(root.path(), ENGINEERING, &[&engineering_key]);
            World {
                root,
                support,
                engineering,
                support_key,
                engineering_trusts,
                support_trusts,
            }
        }

        fn bare(&self) -> PathBuf {
            self.root.path().join("exchange.git")
        }

        /// The channel as a site configures it: relative to its own folder.
        fn channel(&self, site: &str) -> GitRemote {
            GitRemote::new("../exchange.git", &self.root.path().join(site))
        }
    }

    /// Support exports one issue revision to engineering.
    fn export(exchange: &Exchange, summary: &str) -> Oid {
        exchange
            .commit(
                &own_branch(SUPPORT, ENGINEERING),
                &[FileWrite {
                    path: "issues/SUP/1.yaml".into(),
                    content: Some(crate::exchange::Content::Bytes(replica_yaml(
                        SUPPORT, "SUP", "1", summary,
                    ))),
                }],
                &format!("export: {summary}"),
                SUPPORT,
            )
            .unwrap()
            .expect("a new commit")
    }

    #[test]
    fn push_then_fetch_carries_history() {
        let w = World::new();
        let branch = own_branch(SUPPORT, ENGINEERING);
        let c1 = export(&w.support, "v1");
        let c2 = export(&w.support, "v2");
        let to_channel = w.channel(SUPPORT);
        assert_eq!(to_channel.describe(), "../exchange.git");
        assert_eq!(
            to_channel
                .push(&w.support, SUPPORT, ENGINEERING, None)
                .unwrap(),
            PushOutcome::Pushed(c2)
        );
        assert_eq!(git_cli(&w.bare(), &["rev-parse", &branch]), c2.to_string());
        assert_eq!(
            to_channel
                .push(&w.support, SUPPORT, ENGINEERING, None)
                .unwrap(),
            PushOutcome::UpToDate
        );

        let from_channel = w.channel(ENGINEERING);
        let got = from_channel
            .fetch(&w.engineering, ENGINEERING, SUPPORT, &w.engineering_trusts)
            .unwrap();
        assert_eq!(
            got,
            FetchOutcome {
                before: None,
                after: Some(c2),
                notes: Vec::new(),
                waiting: Vec::new(),
            }
        );
        assert_eq!(w.engineering.commits_between(None, c2).unwrap(), [c1, c2]);
        let (_, bytes) = w
            .engineering
            .read_file(c2, "issues/SUP/1.yaml")
            .unwrap()
            .unwrap();
        assert_eq!(bytes, replica_yaml(SUPPORT, "SUP", "1", "v2"));
        // Nothing new: before = after.
        let again = from_channel
            .fetch(&w.engineering, ENGINEERING, SUPPORT, &w.engineering_trusts)
            .unwrap();
        assert_eq!(
            again,
            FetchOutcome {
                before: Some(c2),
                after: Some(c2),
                notes: Vec::new(),
                waiting: Vec::new(),
            }
        );

        // A later export fast-forwards.
        let c3 = export(&w.support, "v3");
        to_channel
            .push(&w.support, SUPPORT, ENGINEERING, None)
            .unwrap();
        let next = from_channel
            .fetch(&w.engineering, ENGINEERING, SUPPORT, &w.engineering_trusts)
            .unwrap();
        assert_eq!(
            next,
            FetchOutcome {
                before: Some(c2),
                after: Some(c3),
                notes: Vec::new(),
                waiting: Vec::new(),
            }
        );
        assert_eq!(w.engineering.resolve(&branch).unwrap(), Some(c3));
    }

    /// Support shares v1 and engineering fetches it: the known starting point of
    /// the refusal tests.
    fn fetched_once(w: &World) -> Oid {
        let c1 = export(&w.support, "v1");
        w.channel(SUPPORT)
            .push(&w.support, SUPPORT, ENGINEERING, None)
            .unwrap();
        w.channel(ENGINEERING)
            .fetch(&w.engineering, ENGINEERING, SUPPORT, &w.engineering_trusts)
            .unwrap();
        c1
    }

    /// The bare channel opened as an exchange that signs with `key`: what someone
    /// with write access to the channel and that key can make there.
    fn channel_signing_as(w: &World, key: &SiteKey) -> Exchange {
        let mut channel = Exchange::open_or_init(&w.bare()).unwrap();
        channel.sign_with(key.clone());
        channel
    }

    /// An unsigned commit on top of `parent` in the channel, made by the git CLI
    /// with a message naming the right branch.
    fn unsigned_commit(w: &World, parent: Oid) -> String {
        let tree = git_cli(&w.bare(), &["rev-parse", &format!("{parent}^{{tree}}")]);
        git_cli(
            &w.bare(),
            &[
                "commit-tree",
                &tree,
                "-p",
                &parent.to_string(),
                "-m",
                "forged\n\nFerry-Branch: support/engineering",
            ],
        )
    }

    /// Engineering fetches `tip` from the channel and must refuse it because of
    /// `culprit`; the peer branch stays at `known`, the tip is kept for inspection.
    fn assert_refused(w: &World, known: Oid, tip: &str, culprit: &str) -> Refusal {
        let branch = own_branch(SUPPORT, ENGINEERING);
        git_cli(&w.bare(), &["update-ref", &branch, tip]);
        let err = w
            .channel(ENGINEERING)
            .fetch(&w.engineering, ENGINEERING, SUPPORT, &w.engineering_trusts)
            .unwrap_err();
        let message = err.to_string();
        let TransportError::Refused { source, .. } = err else {
            panic!("not a refusal: {message}");
        };
        let crate::transport::AdmitError::Signature(signature) = *source else {
            panic!("not a signature refusal: {message}");
        };
        let AdmitError::Refused { commit, reason, .. } = *signature else {
            panic!("not a refused commit: {message}");
        };
        assert_eq!(commit.to_string(), culprit, "{message}");
        assert!(message.contains(culprit), "the commit is named: {message}");
        assert!(message.contains("nothing was imported"), "{message}");
        assert_eq!(w.engineering.resolve(&branch).unwrap(), Some(known));
        assert_eq!(
            w.engineering
                .resolve(&format!("refs/ferry/fetched/{SUPPORT}"))
                .unwrap()
                .map(|o| o.to_string())
                .as_deref(),
            Some(tip)
        );
        reason
    }

    #[test]
    fn an_unsigned_commit_is_refused() {
        let w = World::new();
        let c1 = fetched_once(&w);
        let forged = unsigned_commit(&w, c1);
        assert_eq!(assert_refused(&w, c1, &forged, &forged), Refusal::Unsigned);
    }

    #[test]
    fn a_commit_signed_by_an_untrusted_key_is_refused() {
        let w = World::new();
        let c1 = fetched_once(&w);
        let mallory = SiteKey::generate(&w.root.path().join("mallory"), "mallory").unwrap();
        let channel = channel_signing_as(&w, &mallory);
        let forged = channel
            .commit(
                &own_branch(SUPPORT, ENGINEERING),
                &[FileWrite {
                    path: "issues/SUP/1.yaml".into(),
                    content: Some(crate::exchange::Content::Bytes(b"forged".to_vec())),
                }],
                "export: forged",
                SUPPORT,
            )
            .unwrap()
            .unwrap()
            .to_string();
        let reason = assert_refused(&w, c1, &forged, &forged);
        let Refusal::UnknownSigner { fingerprint, .. } = reason else {
            panic!("{reason}");
        };
        assert_eq!(
            fingerprint,
            mallory
                .public_key()
                .fingerprint(HashAlg::Sha256)
                .to_string()
        );
    }

    #[test]
    fn a_tampered_commit_is_refused() {
        let w = World::new();
        let c1 = fetched_once(&w);
        let c2 = export(&w.support, "v2");
        w.channel(SUPPORT)
            .push(&w.support, SUPPORT, ENGINEERING, None)
            .unwrap();
        // The signature is kept, the message changed: what an edit of the object
        // on the server would look like.
        let raw = git_cli(&w.bare(), &["cat-file", "commit", &c2.to_string()]);
        let altered = raw.replace("export: v2", "export: v3");
        assert_ne!(raw, altered);
        let tampered = git_cli_with_input(
            &w.bare(),
            &["hash-object", "-t", "commit", "-w", "--stdin"],
            &format!("{altered}\n"),
        );
        assert_eq!(
            assert_refused(&w, c1, &tampered, &tampered),
            Refusal::BadSignature
        );
    }

    #[test]
    fn a_genuine_commit_for_another_branch_is_refused() {
        let w = World::new();
        let c1 = fetched_once(&w);
        // Support's own, correctly signed commit for another peer, moved onto the
        // branch it shares with engineering.
        let channel = channel_signing_as(&w, &w.support_key);
        let lab = own_branch(SUPPORT, "lab");
        channel.set_ref(&lab, c1, "test").unwrap();
        let other = channel
            .commit(
                &lab,
                &[FileWrite {
                    path: "issues/SUP/1.yaml".into(),
                    content: Some(crate::exchange::Content::Bytes(b"for the lab".to_vec())),
                }],
                "export: lab",
                SUPPORT,
            )
            .unwrap()
            .unwrap()
            .to_string();
        assert_eq!(
            assert_refused(&w, c1, &other, &other),
            Refusal::WrongBranch {
                named: Some("support/lab".into())
            }
        );
    }

    #[test]
    fn a_signed_merge_of_an_unsigned_commit_is_refused_by_the_unsigned_one() {
        let w = World::new();
        let c1 = fetched_once(&w);
        let unsigned = unsigned_commit(&w, c1);
        let channel = channel_signing_as(&w, &w.support_key);
        let merge = channel
            .merge_keep_ours(
                &own_branch(SUPPORT, ENGINEERING),
                Oid::from_str(&unsigned).unwrap(),
                "merge",
                SUPPORT,
            )
            .unwrap()
            .to_string();
        assert_eq!(assert_refused(&w, c1, &merge, &unsigned), Refusal::Unsigned);
    }

    #[test]
    fn trusting_no_key_admits_nothing_unless_signatures_are_off() {
        let w = World::new();
        let c1 = export(&w.support, "v1");
        w.channel(SUPPORT)
            .push(&w.support, SUPPORT, ENGINEERING, None)
            .unwrap();
        let nobody = trusting(w.root.path(), SUPPORT, &[]);
        let err = w
            .channel(ENGINEERING)
            .fetch(&w.engineering, ENGINEERING, SUPPORT, &nobody)
            .unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("ferry connection trust support KEY"),
            "{message}"
        );
        assert!(message.contains("signatures: off"), "{message}");
        assert_eq!(
            w.engineering
                .resolve(&own_branch(SUPPORT, ENGINEERING))
                .unwrap(),
            None
        );

        // A lab connection that opted out takes even an unsigned commit.
        let unsigned = unsigned_commit(&w, c1);
        git_cli(
            &w.bare(),
            &["update-ref", &own_branch(SUPPORT, ENGINEERING), &unsigned],
        );
        let off = Trust {
            policy: SignaturePolicy::Off,
            ..nobody
        };
        let got = w
            .channel(ENGINEERING)
            .fetch(&w.engineering, ENGINEERING, SUPPORT, &off)
            .unwrap();
        assert_eq!(got.after.map(|o| o.to_string()), Some(unsigned));
    }

    #[test]
    fn nothing_to_send_or_receive_yet() {
        let w = World::new();
        let channel = w.channel(SUPPORT);
        assert_eq!(
            channel
                .push(&w.support, SUPPORT, ENGINEERING, None)
                .unwrap(),
            PushOutcome::UpToDate
        );
        assert_eq!(
            channel
                .fetch(&w.support, SUPPORT, ENGINEERING, &w.support_trusts)
                .unwrap(),
            FetchOutcome {
                before: None,
                after: None,
                notes: Vec::new(),
                waiting: Vec::new(),
            }
        );
    }

    #[test]
    fn missing_local_channel_says_how_to_create_it() {
        let w = World::new();
        let channel = GitRemote::new("nowhere.git", w.root.path());
        let err = channel
            .fetch(&w.support, SUPPORT, ENGINEERING, &w.support_trusts)
            .unwrap_err();
        let expected = w.root.path().join("nowhere.git");
        assert_eq!(
            err.to_string(),
            format!(
                "exchange repository {} not found; create it with `git init --bare {}`",
                expected.display(),
                expected.display()
            )
        );
        assert!(matches!(
            channel.push(&w.support, SUPPORT, ENGINEERING, None),
            Err(TransportError::NotFound { .. })
        ));
    }

    #[test]
    fn file_url_works_too() {
        let w = World::new();
        let url = format!("file://{}", w.bare().display());
        let channel = GitRemote::new(&url, Path::new("/unused"));
        let c1 = export(&w.support, "v1");
        assert_eq!(
            channel
                .push(&w.support, SUPPORT, ENGINEERING, None)
                .unwrap(),
            PushOutcome::Pushed(c1)
        );
        let got = channel
            .fetch(&w.engineering, ENGINEERING, SUPPORT, &w.engineering_trusts)
            .unwrap();
        assert_eq!(got.after, Some(c1));
    }

    #[test]
    fn rewritten_peer_history_is_refused() {
        let w = World::new();
        let branch = own_branch(SUPPORT, ENGINEERING);
        let c1 = export(&w.support, "v1");
        w.channel(SUPPORT)
            .push(&w.support, SUPPORT, ENGINEERING, None)
            .unwrap();
        let from_channel = w.channel(ENGINEERING);
        from_channel
            .fetch(&w.engineering, ENGINEERING, SUPPORT, &w.engineering_trusts)
            .unwrap();

        // Someone rewrites the branch: a parentless commit with other content,
        // force-pushed with the real git CLI.
        let support_repo = w.support.repo().path().to_path_buf();
        let blob = git_cli_with_input(&support_repo, &["hash-object", "-w", "--stdin"], "forged");
        let tree = git_cli_with_input(
            &support_repo,
            &["mktree"],
            &format!("100644 blob {blob}\tforged.yaml\n"),
        );
        let forged = git_cli(&support_repo, &["commit-tree", &tree, "-m", "rewritten"]);
        git_cli(
            &support_repo,
            &[
                "push",
                "-q",
                "--force",
                &w.bare().display().to_string(),
                &format!("{forged}:{branch}"),
            ],
        );

        let err = from_channel
            .fetch(&w.engineering, ENGINEERING, SUPPORT, &w.engineering_trusts)
            .unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, TransportError::Rewritten { .. }), "{message}");
        assert!(message.contains(SUPPORT), "{message}");
        assert!(
            message.contains(&forged) && message.contains(&c1.to_string()),
            "{message}"
        );
        assert_eq!(w.engineering.resolve(&branch).unwrap(), Some(c1));
        // The forged history was fetched for inspection, complete, beside it.
        let local = w.engineering.repo().path().to_path_buf();
        assert_eq!(
            git_cli(&local, &["rev-parse", "refs/ferry/fetched/support"]),
            forged
        );
        git_cli(&local, &["fsck", "--full", "--strict"]);
    }

    #[test]
    fn moved_remote_is_merged_with_our_snapshot_winning() {
        let w = World::new();
        let branch = own_branch(SUPPORT, ENGINEERING);
        let c1 = export(&w.support, "v1");
        let channel = w.channel(SUPPORT);
        channel
            .push(&w.support, SUPPORT, ENGINEERING, None)
            .unwrap();

        // The channel moves behind our back (e.g. another machine of this site
        // pushed): a commit on top of c1 that this site does not have, made in the
        // bare repo by git and signed with this site's key.
        let bare = w.bare();
        let tree = git_cli(&bare, &["rev-parse", &format!("{c1}^{{tree}}")]);
        let theirs = own_commit_tree(&bare, w.root.path(), &tree, &c1.to_string(), "elsewhere");
        git_cli(&bare, &["update-ref", &branch, &theirs]);

        let c2 = export(&w.support, "v2");
        let PushOutcome::Pushed(merge) = channel
            .push(&w.support, SUPPORT, ENGINEERING, None)
            .unwrap()
        else {
            panic!("expected a push");
        };
        assert_ne!(merge, c2);
        assert_eq!(w.support.resolve(&branch).unwrap(), Some(merge));

        let parents = git_cli(&bare, &["log", "-1", "--format=%P", &branch]);
        assert_eq!(parents, format!("{c2} {theirs}"));
        let history = git_cli(&bare, &["log", "--format=%H", &branch]);
        assert!(
            history.contains(&c2.to_string()) && history.contains(&theirs),
            "{history}"
        );
        assert_eq!(
            git_cli(&bare, &["rev-parse", &format!("{branch}^{{tree}}")]),
            git_cli(&bare, &["rev-parse", &format!("{c2}^{{tree}}")])
        );
        let subject = git_cli(&bare, &["log", "-1", "--format=%s", &branch]);
        assert!(subject.contains("this site's snapshot wins"), "{subject}");
        git_cli(&bare, &["fsck", "--strict", "--no-dangling"]);
    }

    #[test]
    fn a_moved_remote_holding_a_commit_not_ours_is_not_merged() {
        let w = World::new();
        let branch = own_branch(SUPPORT, ENGINEERING);
        let c1 = export(&w.support, "v1");
        let channel = w.channel(SUPPORT);
        channel
            .push(&w.support, SUPPORT, ENGINEERING, None)
            .unwrap();
        let bare = w.bare();
        let tree = git_cli(&bare, &["rev-parse", &format!("{c1}^{{tree}}")]);
        let theirs = git_cli(
            &bare,
            &["commit-tree", &tree, "-p", &c1.to_string(), "-m", "planted"],
        );
        git_cli(&bare, &["update-ref", &branch, &theirs]);
        let c2 = export(&w.support, "v2");
        let err = channel
            .push(&w.support, SUPPORT, ENGINEERING, None)
            .unwrap_err();
        let TransportError::ForeignOwnCommit { found, .. } = &err else {
            panic!("{err}");
        };
        assert_eq!(
            (found.commit.to_string(), found.tip.to_string()),
            (theirs.clone(), theirs.clone())
        );
        assert!(err.to_string().contains("it is not signed"), "{err}");
        assert_eq!(w.support.resolve(&branch).unwrap(), Some(c2));
        assert_eq!(git_cli(&bare, &["rev-parse", &branch]), theirs);
    }

    /// Writes replica `id` of each of `projects` with `summary` on support's
    /// branch for engineering.
    fn export_many(exchange: &Exchange, projects: &[&str], ids: &[&str], summary: &str) -> Oid {
        let writes: Vec<FileWrite> = projects
            .iter()
            .flat_map(|project| {
                ids.iter().map(move |id| FileWrite {
                    path: format!("issues/{project}/{id}.yaml"),
                    content: Some(crate::exchange::Content::Bytes(replica_yaml(
                        SUPPORT, project, id, summary,
                    ))),
                })
            })
            .collect();
        exchange
            .commit(
                &own_branch(SUPPORT, ENGINEERING),
                &writes,
                &format!("export: {summary}"),
                SUPPORT,
            )
            .unwrap()
            .expect("a new commit")
    }

    /// The pack files of a repository.
    fn packs(repo: &Path) -> std::collections::BTreeSet<PathBuf> {
        std::fs::read_dir(repo.join("objects/pack"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "idx"))
            .collect()
    }

    /// The objects of the one pack `repo` gained since `before`, as git lists them.
    fn new_pack_objects(
        repo: &Path,
        before: &std::collections::BTreeSet<PathBuf>,
    ) -> std::collections::BTreeSet<String> {
        let new: Vec<PathBuf> = packs(repo).difference(before).cloned().collect();
        let [pack] = new.as_slice() else {
            panic!("expected one new pack in {}, got {new:?}", repo.display());
        };
        git_cli(repo, &["verify-pack", "-v", &pack.display().to_string()])
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .filter(|id| id.len() == 40 && id.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_string)
            .collect()
    }

    /// What git says `to` has that `from` has not: `git rev-list --objects`.
    fn git_new_objects(repo: &Path, from: Oid, to: Oid) -> std::collections::BTreeSet<String> {
        git_cli(
            repo,
            &[
                "rev-list",
                "--objects",
                &to.to_string(),
                &format!("^{from}"),
            ],
        )
        .lines()
        .map(|line| line.split_whitespace().next().unwrap().to_string())
        .collect()
    }

    #[test]
    fn folder_transfers_send_exactly_what_git_says_is_new() {
        let w = World::new();
        let branch = own_branch(SUPPORT, ENGINEERING);
        let projects = ["OPS", "SUP", "WEB"];
        let c1 = export_many(&w.support, &projects, &["1", "2", "3"], "v1");
        let to_channel = w.channel(SUPPORT);
        let from_channel = w.channel(ENGINEERING);
        to_channel
            .push(&w.support, SUPPORT, ENGINEERING, None)
            .unwrap();
        from_channel
            .fetch(&w.engineering, ENGINEERING, SUPPORT, &w.engineering_trusts)
            .unwrap();

        // Two commits: one replica changed in one project, then one added in
        // another; the other project's tree is never read.
        let _ = export_many(&w.support, &["SUP"], &["2"], "v2");
        let c3 = export_many(&w.support, &["WEB"], &["4"], "v3");
        let bare = w.bare();
        let before = packs(&bare);
        assert_eq!(
            to_channel
                .push(&w.support, SUPPORT, ENGINEERING, None)
                .unwrap(),
            PushOutcome::Pushed(c3)
        );
        let expected = git_new_objects(&bare, c1, c3);
        // 2 commits, 2 root trees, 2 issues/ trees, SUP's and WEB's trees, 2 blobs.
        assert_eq!(expected.len(), 10, "{expected:?}");
        assert_eq!(new_pack_objects(&bare, &before), expected);

        let local = w.engineering.repo().path().to_path_buf();
        let before = packs(&local);
        let got = from_channel
            .fetch(&w.engineering, ENGINEERING, SUPPORT, &w.engineering_trusts)
            .unwrap();
        assert_eq!(got.after, Some(c3));
        assert_eq!(new_pack_objects(&local, &before), expected);
        for repo in [&bare, &local] {
            git_cli(repo, &["fsck", "--full", "--strict", "--no-dangling"]);
            assert_eq!(git_cli(repo, &["rev-parse", &branch]), c3.to_string());
        }
    }

    #[test]
    fn a_push_that_lost_a_race_moves_nothing_and_then_reconciles() {
        let w = World::new();
        let branch = own_branch(SUPPORT, ENGINEERING);
        let c1 = export(&w.support, "v1");
        let remote = w.channel(SUPPORT);
        remote.push(&w.support, SUPPORT, ENGINEERING, None).unwrap();
        let bare = w.bare();
        let channel = Repository::open_bare(&bare).unwrap();

        // We read c1; then another push moves the branch before our
        // compare-and-swap: ours must fail and leave theirs.
        let tree = git_cli(&bare, &["rev-parse", &format!("{c1}^{{tree}}")]);
        let theirs = own_commit_tree(&bare, w.root.path(), &tree, &c1.to_string(), "x");
        git_cli(&bare, &["update-ref", &branch, &theirs]);
        let c2 = export(&w.support, "v2");
        pack::send(w.support.repo(), &[c1], c2, &channel, pack::Source::Own).unwrap();
        assert!(matches!(
            remote.move_folder_branch(&channel, &branch, Some(c1), c2),
            Ok(Attempt::Rejected(_))
        ));
        assert_eq!(git_cli(&bare, &["rev-parse", &branch]), theirs);

        // A branch created meanwhile, or locked by a push in progress, neither.
        let lab = own_branch(SUPPORT, "lab");
        git_cli(&bare, &["update-ref", &lab, &c1.to_string()]);
        assert!(matches!(
            remote.move_folder_branch(&channel, &lab, None, c2),
            Ok(Attempt::Rejected(_))
        ));
        assert_eq!(git_cli(&bare, &["rev-parse", &lab]), c1.to_string());
        let lock = bare.join(format!("{branch}.lock"));
        std::fs::write(&lock, format!("{c1}\n")).unwrap();
        let theirs_oid = Oid::from_str(&theirs).unwrap();
        assert!(matches!(
            remote.move_folder_branch(&channel, &branch, Some(theirs_oid), c2),
            Ok(Attempt::Rejected(_))
        ));
        assert_eq!(git_cli(&bare, &["rev-parse", &branch]), theirs);
        std::fs::remove_file(&lock).unwrap();

        // The push itself reconciles: both histories stay.
        let PushOutcome::Pushed(merge) =
            remote.push(&w.support, SUPPORT, ENGINEERING, None).unwrap()
        else {
            panic!("expected a push");
        };
        for kept in [theirs.clone(), c2.to_string()] {
            git_cli(
                &bare,
                &["merge-base", "--is-ancestor", &kept, &merge.to_string()],
            );
        }
        git_cli(&bare, &["fsck", "--full", "--strict", "--no-dangling"]);
    }

    #[test]
    fn pushes_racing_from_two_clones_lose_no_commit() {
        let w = World::new();
        let branch = own_branch(SUPPORT, ENGINEERING);
        export(&w.support, "v0");
        w.channel(SUPPORT)
            .push(&w.support, SUPPORT, ENGINEERING, None)
            .unwrap();
        let root = w.root.path().to_path_buf();
        // Two machines of one site: one key.
        let key = root.join(SUPPORT).join("signing_key");
        // Both push at the same moment each round.
        let start = std::sync::Arc::new(std::sync::Barrier::new(2));
        let pushers: Vec<_> = ["first", "second"]
            .into_iter()
            .map(|name| {
                let root = root.clone();
                let branch = branch.clone();
                let start = start.clone();
                let key = key.clone();
                std::thread::spawn(move || {
                    let mut exchange =
                        Exchange::open_or_init(&root.join(name).join("exchange.git")).unwrap();
                    exchange.sign_with(SiteKey::load(&key).unwrap());
                    let remote = GitRemote::new("../exchange.git", &root.join(name));
                    remote
                        .fetch_into(exchange.repo(), &branch, &branch, None)
                        .unwrap();
                    let mut tips = Vec::new();
                    for round in 0..6 {
                        let tip = export(&exchange, &format!("{name} {round}"));
                        tips.push(tip);
                        start.wait();
                        // push() without its removal of a stale lock, which
                        // assumes one pusher per branch (the site lock).
                        for _ in 0..50 {
                            let tip = exchange.resolve(&branch).unwrap().unwrap();
                            match remote.push_once(&exchange, &branch, tip).unwrap() {
                                Attempt::Accepted | Attempt::UpToDate => break,
                                Attempt::Rejected(_) => remote
                                    .reconcile(&exchange, SUPPORT, ENGINEERING, &branch, tip, None)
                                    .unwrap(),
                            }
                        }
                    }
                    tips
                })
            })
            .collect();
        let tips: Vec<Oid> = pushers
            .into_iter()
            .flat_map(|pusher| pusher.join().unwrap())
            .collect();
        let bare = w.bare();
        let head = git_cli(&bare, &["rev-parse", &branch]);
        for tip in tips {
            git_cli(
                &bare,
                &["merge-base", "--is-ancestor", &tip.to_string(), &head],
            );
        }
        git_cli(&bare, &["fsck", "--full", "--strict", "--no-dangling"]);
    }

    /// A `git daemon` serving a folder, killed when dropped.
    struct Daemon {
        child: Child,
        port: u16,
    }

    impl Daemon {
        fn start(base: &Path) -> Daemon {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let child = git_command(base)
                .args([
                    "daemon",
                    "--reuseaddr",
                    &format!("--base-path={}", base.display()),
                    "--export-all",
                    "--enable=receive-pack",
                    "--informative-errors",
                    "--listen=127.0.0.1",
                    &format!("--port={port}"),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("git daemon starts");
            let daemon = Daemon { child, port };
            let deadline = Instant::now() + Duration::from_secs(20);
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "git daemon did not listen on {port}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            daemon
        }
    }

    impl Drop for Daemon {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[test]
    fn through_a_real_git_server() {
        let w = World::new();
        let daemon = Daemon::start(w.root.path());
        let url = format!("git://127.0.0.1:{}/exchange.git", daemon.port);
        let channel = GitRemote::new(&url, Path::new("/unused"));
        assert_eq!(channel.describe(), url);

        let c1 = export(&w.support, "v1");
        assert_eq!(
            channel
                .push(&w.support, SUPPORT, ENGINEERING, None)
                .unwrap(),
            PushOutcome::Pushed(c1)
        );
        assert_eq!(
            channel
                .push(&w.support, SUPPORT, ENGINEERING, None)
                .unwrap(),
            PushOutcome::UpToDate
        );
        let got = channel
            .fetch(&w.engineering, ENGINEERING, SUPPORT, &w.engineering_trusts)
            .unwrap();
        assert_eq!(
            got,
            FetchOutcome {
                before: None,
                after: Some(c1),
                notes: Vec::new(),
                waiting: Vec::new(),
            }
        );

        // A server-side refusal arrives through push_update_reference, not as an
        // Err from push(): it must still be reported, after bounded retries.
        let hook = w.bare().join("hooks/pre-receive");
        std::fs::write(&hook, "#!/bin/sh\necho 'frozen by policy' >&2\nexit 1\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
        export(&w.support, "v2");
        let err = channel
            .push(&w.support, SUPPORT, ENGINEERING, None)
            .unwrap_err();
        assert!(
            matches!(
                err,
                TransportError::Rejected {
                    attempts: MAX_PUSH_ATTEMPTS,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            git_cli(&w.bare(), &["rev-parse", &own_branch(SUPPORT, ENGINEERING)]),
            c1.to_string()
        );
    }

    #[test]
    fn unreachable_server_names_the_channel_and_hints() {
        let w = World::new();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("git://127.0.0.1:{port}/exchange.git");
        let err = GitRemote::new(&url, Path::new("/unused"))
            .fetch(&w.engineering, ENGINEERING, SUPPORT, &w.engineering_trusts)
            .unwrap_err();
        let message = err.to_string();
        assert!(message.starts_with(&url), "{message}");
        assert!(
            message.contains("fetching refs/heads/support/engineering"),
            "{message}"
        );
        assert!(message.contains("hint:"), "{message}");
    }

    #[test]
    fn url_classification_and_redaction() {
        let site = Path::new("/sites/support");
        let local = GitRemote::new("../exchange.git", site);
        assert_eq!(local.target, "/sites/support/../exchange.git");
        assert_eq!(
            local.local_dir,
            Some(PathBuf::from("/sites/support/../exchange.git"))
        );
        assert_eq!(GitRemote::new("/srv/x.git", site).target, "/srv/x.git");
        for remote in [
            "ssh://git@host/x.git",
            "git@host:x.git",
            "https://host/x.git",
        ] {
            let channel = GitRemote::new(remote, site);
            assert_eq!(channel.target, remote);
            assert_eq!(channel.local_dir, None);
        }
        assert_eq!(
            redact("https://ann:s3cret@host/x.git"),
            "https://ann:***@host/x.git"
        );
        assert_eq!(redact("ssh://git@host/x.git"), "ssh://git@host/x.git");
        assert_eq!(Optional::of("ssh://git@host/x.git"), Some(Optional::Ssh));
        assert_eq!(Optional::of("git@host:x.git"), Some(Optional::Ssh));
        assert_eq!(Optional::of("HTTPS://host/x.git"), Some(Optional::Https));
        assert_eq!(Optional::of("git://host/x.git"), None);
        assert_eq!(Optional::of("../exchange.git"), None);
    }

    #[test]
    fn missing_protocol_support_is_explained() {
        let w = World::new();
        for (url, needed) in [
            ("ssh://git@127.0.0.1:1/x.git", Optional::Ssh),
            ("https://127.0.0.1:1/x.git", Optional::Https),
        ] {
            if needed.available() {
                continue;
            }
            let err = GitRemote::new(url, Path::new("/unused"))
                .fetch(&w.support, SUPPORT, ENGINEERING, &w.support_trusts)
                .unwrap_err();
            let message = err.to_string();
            assert!(message.starts_with(url), "{message}");
            assert!(message.contains("built without"), "{message}");
        }
    }
}

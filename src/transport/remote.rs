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
mod tests;

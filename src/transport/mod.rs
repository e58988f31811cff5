//! How commits travel between sites.
//!
//! A [`Channel`] moves exactly two branches of the exchange data for one
//! connection: it sends this site's own branch (`refs/heads/<site>/<peer>`) and
//! brings in the peer's branch for us (`refs/heads/<peer>/<site>`). Both
//! directions only ever fast-forward: a peer's branch whose history was rewritten
//! is refused before anything is imported, and our own branch is never
//! force-pushed. Every new commit of the peer's branch must carry a signature the
//! connection trusts ([`crate::signing`]) before the branch moves. The only implementation today is [`remote::GitRemote`], an
//! intermediate git repository both sites reach out to (DESIGN.md, Transport).
pub mod remote;

use std::path::{Path, PathBuf};

use git2::Oid;

use crate::exchange::{Exchange, ExchangeError};
use crate::signing::{AdmitError, Trust};

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
    /// The peer's new commits failed the signature check; the peer branch did not
    /// move. The fetched tip stays in `refs/ferry/fetched/<peer>` for inspection.
    #[error("{channel}: {source}")]
    Refused {
        /// The channel (URL).
        channel: String,
        /// Which commit, and why (boxed: it is much larger than the others).
        source: Box<AdmitError>,
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

/// Renders an optional hint after an error message.
fn hint_suffix(hint: Option<&'static str>) -> String {
    hint.map(|h| format!(" (hint: {h})")).unwrap_or_default()
}

/// What a fetch brought.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOutcome {
    /// The peer branch before.
    pub before: Option<Oid>,
    /// The peer branch after.
    pub after: Option<Oid>,
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
    /// Sends this site's branch for the peer, never forced.
    fn push(
        &self,
        exchange: &Exchange,
        site: &str,
        peer: &str,
    ) -> Result<PushOutcome, TransportError>;
    /// Checks that the channel can be used for a sync without moving anything:
    /// reachable, the peer's branch readable, this site's branch writable. Says
    /// what it verified (for `ferry doctor`).
    fn check(&self, exchange: &Exchange, site: &str, peer: &str) -> Result<String, TransportError>;
    /// A human description (the URL as configured).
    fn describe(&self) -> String;
}

/// The channel for a connection's `channel` setting; relative paths are resolved
/// against the site folder.
pub fn open_channel(url: &str, site_root: &Path) -> Box<dyn Channel> {
    Box::new(remote::GitRemote::new(url, site_root))
}

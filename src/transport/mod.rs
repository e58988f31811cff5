//! PLACEHOLDER API (helper replaces): how commits travel between sites.
pub mod remote;

use std::path::Path;

use git2::Oid;

use crate::exchange::Exchange;

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
    /// Brings the peer's branch for this site into the local exchange repo.
    fn fetch(
        &self,
        exchange: &Exchange,
        site: &str,
        peer: &str,
    ) -> Result<FetchOutcome, TransportError>;
    /// Sends this site's branch for the peer.
    fn push(
        &self,
        exchange: &Exchange,
        site: &str,
        peer: &str,
    ) -> Result<PushOutcome, TransportError>;
    /// A human description (the URL).
    fn describe(&self) -> String;
}

/// The channel for a connection's `channel` setting; relative paths are resolved
/// against the site folder.
pub fn open_channel(url: &str, site_root: &Path) -> Box<dyn Channel> {
    Box::new(remote::GitRemote::new(url, site_root))
}

//! PLACEHOLDER API (helper replaces): the local exchange repository.
use std::collections::BTreeMap;
use std::path::Path;

use git2::{Oid, Repository};

/// An exchange repo operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// git2 failed; `context` says what ferry was doing.
    #[error("{context}: {source}")]
    Git {
        /// What ferry was doing.
        context: String,
        /// The git error.
        source: git2::Error,
    },
}

/// One path that differs between two commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathChange {
    /// Path inside the tree.
    pub path: String,
    /// Blob before, `None` when added.
    pub old: Option<Oid>,
    /// Blob after, `None` when removed.
    pub new: Option<Oid>,
}

/// A file to write (`Some`) or remove (`None`) in a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileWrite {
    /// Path inside the tree.
    pub path: String,
    /// New content, or `None` to remove.
    pub content: Option<Vec<u8>>,
}

/// A site's bare clone of the exchange data.
pub struct Exchange {
    repo: Repository,
}

/// `refs/heads/<site>/<peer>`: what `site` shares with `peer`.
pub fn own_branch(site: &str, peer: &str) -> String {
    format!("refs/heads/{site}/{peer}")
}
/// `refs/heads/<peer>/<site>`: what `peer` shares with `site`.
pub fn peer_branch(site: &str, peer: &str) -> String {
    own_branch(peer, site)
}
/// `refs/ferry/applied/<peer>`: the last commit of the peer's branch imported here.
pub fn applied_ref(peer: &str) -> String {
    format!("refs/ferry/applied/{peer}")
}

impl Exchange {
    /// Opens the bare repository at `path`, creating it if needed.
    pub fn open_or_init(path: &Path) -> Result<Exchange, ExchangeError> {
        let repo = Repository::init_bare(path).map_err(|source| ExchangeError::Git {
            context: "init".into(),
            source,
        })?;
        Ok(Exchange { repo })
    }
    /// The underlying repository.
    pub fn repo(&self) -> &Repository {
        &self.repo
    }
    /// The commit a reference points at.
    pub fn resolve(&self, _refname: &str) -> Result<Option<Oid>, ExchangeError> {
        Ok(None)
    }
    /// Points a reference at a commit.
    pub fn set_ref(&self, _refname: &str, _oid: Oid, _reason: &str) -> Result<(), ExchangeError> {
        Ok(())
    }
    /// Blob paths (recursive) under `prefix` in a commit's tree.
    pub fn files(
        &self,
        _commit: Oid,
        _prefix: &str,
    ) -> Result<BTreeMap<String, Oid>, ExchangeError> {
        Ok(BTreeMap::new())
    }
    /// A file of a commit, with its blob id.
    pub fn read_file(
        &self,
        _commit: Oid,
        _path: &str,
    ) -> Result<Option<(Oid, Vec<u8>)>, ExchangeError> {
        Ok(None)
    }
    /// A blob's size.
    pub fn blob_size(&self, _oid: Oid) -> Result<usize, ExchangeError> {
        Ok(0)
    }
    /// A blob's content.
    pub fn read_blob(&self, _oid: Oid) -> Result<Vec<u8>, ExchangeError> {
        Ok(Vec::new())
    }
    /// Paths that differ between two commits (`from = None`: everything in `to`).
    pub fn diff_paths(
        &self,
        _from: Option<Oid>,
        _to: Oid,
    ) -> Result<Vec<PathChange>, ExchangeError> {
        Ok(Vec::new())
    }
    /// Commits `writes` on top of `refname`; `None` when the tree would not change.
    pub fn commit(
        &self,
        _refname: &str,
        _writes: &[FileWrite],
        _message: &str,
        _site: &str,
    ) -> Result<Option<Oid>, ExchangeError> {
        Ok(None)
    }
    /// Whether `ancestor` is `descendant` or one of its ancestors.
    pub fn is_ancestor(&self, _ancestor: Oid, _descendant: Oid) -> Result<bool, ExchangeError> {
        Ok(false)
    }
    /// Commits reachable from `to` and not from `from`, oldest first.
    pub fn commits_between(&self, _from: Option<Oid>, _to: Oid) -> Result<Vec<Oid>, ExchangeError> {
        Ok(Vec::new())
    }
}

//! The local exchange repository: a site's bare git clone of the exchange data.
//!
//! Every replica a site shares and every replica it receives lives in this repo as
//! git objects (see ARCHITECTURE.md and docs/reference.md, "Replica format"): the site writes only its
//! own branches (`refs/heads/<site>/<peer>`), receives the peers' branches through a
//! [`crate::transport::Channel`], and remembers what it imported under
//! `refs/ferry/…`. Everything here is plain git, so the real `git` CLI can inspect,
//! verify and repair it.
//!
//! Design choices worth knowing:
//! - Commits are made without a work tree or index: the new tree is computed from
//!   the parent's tree by ferry itself (`tree.rs`, checked against libgit2's
//!   `TreeUpdateBuilder` by a property test), so one export run touching ten
//!   replicas out of a hundred thousand only writes the trees on those ten
//!   paths.
//! - No empty commits, ever: a commit whose tree equals its parent's is not made,
//!   so a commit always means "something changed" to the peer.
//! - Refs move with compare-and-swap against the value read before the work
//!   started, so two writers (two runs, or a run and an admin) are detected instead
//!   of one silently discarding the other's commit.
//! - The author identity is derived from the site name, never from the user's git
//!   configuration: what a commit claims must not depend on who ran cron.
//! - Every commit is signed with the site's key the way git signs with
//!   `gpg.format=ssh`, and names its branch in a trailer the signature covers
//!   (see [`crate::signing`]); without a key, ferry makes no commit at all.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use git2::{ErrorCode, FileMode, ObjectType, Oid, Repository, Signature, Sort, Tree};
use sha2::{Digest, Sha256};

use crate::pack;
use crate::replica::{
    Format, SITE_FILE, SiteFile, canonical_path, parse_replica_path, stored_path,
};
use crate::signing::{KeyError, SiteKey, with_branch_trailer};

mod blobs;
mod content;
mod tree;

pub use blobs::{NewBlobs, blob_id};
pub use content::{ContentReader, ContentWriter, PART_BYTES};

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
    /// Another writer moved a ref between the moment ferry read it and the moment
    /// ferry tried to move it; nothing was overwritten.
    #[error(
        "{refname} was moved by another writer while ferry was updating it \
         (expected {expected}); nothing was overwritten, run again"
    )]
    Concurrent {
        /// The ref that moved.
        refname: String,
        /// The value ferry had read (`none` when it did not exist).
        expected: String,
    },
    /// A path to write is not a safe, normalised path inside the tree.
    #[error("invalid exchange path {path:?}: {reason}")]
    InvalidPath {
        /// The offending path.
        path: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// An object expected to be a blob is something else.
    #[error("object {oid} is a {kind}, not a blob")]
    NotABlob {
        /// The object id.
        oid: Oid,
        /// Its actual kind.
        kind: String,
    },
    /// A tree holds a path that is not UTF-8; ferry only writes UTF-8 paths, so
    /// such a tree was not made by ferry.
    #[error("tree {tree} holds a non-UTF-8 path {path:?}")]
    NonUtf8Path {
        /// The tree containing the entry.
        tree: Oid,
        /// The path, lossily decoded.
        path: String,
    },
    /// A commit was to be made but no signing key was given to the exchange.
    #[error(
        "cannot commit on {refname}: no signing key is loaded, and ferry signs every \
         commit it makes"
    )]
    NoSigningKey {
        /// The branch.
        refname: String,
    },
    /// Signing a commit failed.
    #[error("signing a commit on {refname}: {source}")]
    Sign {
        /// The branch.
        refname: String,
        /// The key error (boxed: it is much larger than the other variants).
        source: Box<KeyError>,
    },
    /// `FERRY_NOW` is set but is not an RFC 3339 timestamp.
    #[error(transparent)]
    InvalidNow(#[from] crate::clock::InvalidNow),
    /// The folder exists, holds files, and is not a git repository: ferry refuses
    /// to turn an arbitrary folder into one.
    #[error(
        "{path} exists and is not a bare git repository; ferry will not initialise \
         one over existing files"
    )]
    NotARepository {
        /// The folder.
        path: String,
    },
    /// A file operation on the repository failed.
    #[error("{context}: {source}")]
    Io {
        /// What ferry was doing.
        context: String,
        /// The I/O error.
        source: std::io::Error,
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

/// An entry of a tree: its object and mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeEntryId {
    /// The object.
    pub id: Oid,
    /// The git file mode (`0o100644`, `0o120000`, `0o40000`...).
    pub mode: i32,
}

impl TreeEntryId {
    fn is_tree(self) -> bool {
        self.mode == i32::from(FileMode::Tree)
    }
}

/// One entry that is not a tree and differs between two trees
/// ([`Exchange::diff_trees`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeChange {
    /// The path from the root, as the tree spells it (a peer's tree may hold
    /// names that are not UTF-8).
    pub path: Vec<u8>,
    /// The entry before, `None` when added.
    pub old: Option<TreeEntryId>,
    /// The entry after, `None` when removed.
    pub new: Option<TreeEntryId>,
}

/// A file to write (`Some`) or remove (`None`) in a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileWrite {
    /// Path inside the tree.
    pub path: String,
    /// New content, or `None` to remove.
    pub content: Option<Content>,
}

/// What a [`FileWrite`] puts at its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// A file with these bytes.
    Bytes(Vec<u8>),
    /// Attachment content already in the object database
    /// ([`Exchange::store_content`]): one blob, or a tree of parts.
    Stored(StoredContent),
    /// A blob already in the object database, or gathered in the
    /// [`NewBlobs`] given to [`Exchange::commit_with`].
    Blob(Oid),
}

/// Attachment content written into the object database, not yet in any tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredContent {
    /// The blob, or the tree of parts.
    pub oid: Oid,
    /// True when `oid` is a tree of parts.
    pub parts: bool,
    /// Size in bytes.
    pub size: u64,
    /// Lower-case hex SHA-256 of the content.
    pub sha256: String,
}

/// A site's bare clone of the exchange data.
///
/// `Exchange` is `Send` (git2's `Repository` is), so a run may hand it to a worker
/// thread; it is not `Sync`, like the repository it wraps.
pub struct Exchange {
    repo: Repository,
    /// The key every commit is signed with; reading needs none.
    signer: Option<SiteKey>,
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

/// The last commit of the peer's branch a reviewer approved for import (with
/// `review.required` on the connection).
pub fn approved_ref(peer: &str) -> String {
    format!("refs/ferry/approved/{peer}")
}

/// Where exports for the peer are committed while the connection's release
/// gate holds them (`release.required`); this site's branch for the peer is
/// then what a release officer released, the only history that leaves.
pub fn outgoing_ref(peer: &str) -> String {
    format!("refs/ferry/outgoing/{peer}")
}

/// The branch a commit made on `refname` is for (its signed trailer): the
/// release gate's outgoing ref, and the ref a rejection rebuilds on, hold
/// commits for this site's branch for the peer, which they leave on once
/// released.
fn branch_for(refname: &str, site: &str) -> String {
    ["refs/ferry/outgoing/", "refs/ferry/rebuilding/"]
        .iter()
        .find_map(|prefix| refname.strip_prefix(prefix))
        .map_or_else(|| refname.to_string(), |peer| own_branch(site, peer))
}

/// Where the unreleased exports a rejection replaced are kept (`n`th
/// rejection): a ref no push or bundle names.
pub fn rejected_ref(peer: &str, n: usize) -> String {
    format!("refs/ferry/rejected/{peer}/{n}")
}

/// Wraps a git2 error with what ferry was doing; `context` is only built on error.
fn git<T>(
    result: Result<T, git2::Error>,
    context: impl FnOnce() -> String,
) -> Result<T, ExchangeError> {
    result.map_err(|source| ExchangeError::Git {
        context: context(),
        source,
    })
}

/// A short commit id for messages, like `git log --oneline` prints.
fn short(oid: Oid) -> String {
    let mut s = oid.to_string();
    s.truncate(7);
    s
}

/// The commit time: `FERRY_NOW` (RFC 3339) when set, so tests and demos produce
/// byte-identical commits; the clock otherwise.
fn now() -> Result<git2::Time, ExchangeError> {
    Ok(match crate::clock::fixed()? {
        Some(at) => commit_time(at),
        None => git2::Time::new(chrono::Utc::now().timestamp(), 0),
    })
}

/// A commit time with the UTC offset `FERRY_NOW` gave.
fn commit_time(at: chrono::DateTime<chrono::FixedOffset>) -> git2::Time {
    git2::Time::new(at.timestamp(), at.offset().local_minus_utc() / 60)
}

/// The identity of a site's commits: `<site> (ferry) <<site>@ferry.invalid>`.
///
/// `.invalid` is reserved (RFC 2606), so the address can never reach anyone; the
/// site name is what a reviewer needs to see.
fn site_signature(site: &str) -> Result<Signature<'static>, ExchangeError> {
    let time = now()?;
    git(
        Signature::new(
            &format!("{site} (ferry)"),
            &format!("{site}@ferry.invalid"),
            &time,
        ),
        || format!("building the commit identity for site {site:?}"),
    )
}

/// Refuses paths that are not plain relative paths: git2 panics on NUL bytes,
/// libgit2 would create odd entries for empty components, and `..` or `.git`
/// components are what a malicious tree uses to escape a checkout.
fn check_path(path: &str) -> Result<(), ExchangeError> {
    let invalid = |reason| {
        Err(ExchangeError::InvalidPath {
            path: path.to_string(),
            reason,
        })
    };
    if path.is_empty() {
        return invalid("empty path");
    }
    if path.contains('\0') {
        return invalid("contains a NUL byte");
    }
    if path.contains('\\') {
        return invalid("contains a backslash");
    }
    for component in path.split('/') {
        match component {
            "" => return invalid("empty component (leading, trailing or double '/')"),
            "." | ".." => return invalid("'.' or '..' component"),
            c if c.eq_ignore_ascii_case(".git") => return invalid("'.git' component"),
            _ => {}
        }
    }
    Ok(())
}

/// The empty tree, written so it can serve as the baseline of a root commit.
fn empty_tree(repo: &Repository) -> Result<Tree<'_>, ExchangeError> {
    let context = || "writing the empty tree".to_string();
    let builder = git(repo.treebuilder(None), context)?;
    let oid = git(builder.write(), context)?;
    git(repo.find_tree(oid), context)
}

/// Whether a tree entry mode is a blob (file, executable or symlink), the only
/// entries the exchange data consists of; gitlinks and trees are not files.
fn is_blob_mode(mode: i32) -> bool {
    mode == i32::from(FileMode::Blob)
        || mode == i32::from(FileMode::BlobExecutable)
        || mode == i32::from(FileMode::Link)
}

impl Exchange {
    /// Opens the bare repository at `path`, creating it if it does not exist (or is
    /// an empty folder).
    ///
    /// A new repository gets `core.logAllRefUpdates=always` in its own config, so
    /// every move of a ferry ref (`refs/ferry/applied/…` included) is kept in the
    /// reflog for audit. Nothing outside the repository is configured.
    pub fn open_or_init(path: &Path) -> Result<Exchange, ExchangeError> {
        bound_mapped_memory();
        let has_files = path
            .read_dir()
            .map(|mut entries| entries.next().is_some())
            .unwrap_or(false);
        if has_files {
            return match Repository::open_bare(path) {
                Ok(repo) if repo.is_bare() => {
                    keep_big_objects_out_of_delta_search(&repo, path)?;
                    Ok(Exchange { repo, signer: None })
                }
                Ok(_) => Err(ExchangeError::NotARepository {
                    path: path.display().to_string(),
                }),
                Err(e) if e.code() == ErrorCode::NotFound => Err(ExchangeError::NotARepository {
                    path: path.display().to_string(),
                }),
                Err(source) => Err(ExchangeError::Git {
                    context: format!("opening the exchange repository {}", path.display()),
                    source,
                }),
            };
        }
        let context = || format!("creating the exchange repository {}", path.display());
        let repo = git(Repository::init_bare(path), context)?;
        let mut config = git(repo.config(), context)?;
        git(config.set_str("core.logAllRefUpdates", "always"), context)?;
        keep_big_objects_out_of_delta_search(&repo, path)?;
        Ok(Exchange { repo, signer: None })
    }

    /// Signs every commit made from now on with `key`.
    pub fn sign_with(&mut self, key: SiteKey) {
        self.signer = Some(key);
    }

    /// The key this site signs with (it also opens what peers encrypt to it).
    pub fn signer(&self) -> Option<&SiteKey> {
        self.signer.as_ref()
    }

    /// Writes a commit signed with the site key, its message ending with the
    /// trailer naming `refname`, and returns its id; no ref moves.
    ///
    /// The signed payload is exactly the commit without its `gpgsig` header, which
    /// is what `git verify-commit` checks.
    fn signed_commit(
        &self,
        refname: &str,
        author: &Signature<'_>,
        message: &str,
        tree: &Tree<'_>,
        parents: &[&git2::Commit<'_>],
    ) -> Result<Oid, ExchangeError> {
        let key = self
            .signer
            .as_ref()
            .ok_or_else(|| ExchangeError::NoSigningKey {
                refname: refname.to_string(),
            })?;
        let context = || format!("creating a commit on {refname}");
        let message = with_branch_trailer(message, refname);
        let buffer = git(
            self.repo
                .commit_create_buffer(author, author, &message, tree, parents),
            context,
        )?;
        let content = std::str::from_utf8(&buffer).map_err(|_| ExchangeError::Git {
            context: context(),
            source: git2::Error::from_str("libgit2 built a commit that is not UTF-8"),
        })?;
        let signature = key
            .sign(content.as_bytes())
            .map_err(|source| ExchangeError::Sign {
                refname: refname.to_string(),
                source: Box::new(source),
            })?;
        git(self.repo.commit_signed(content, &signature, None), context)
    }

    /// The same repository, seeing also the objects below `objects` (a folder laid
    /// out like `objects/`, e.g. a quarantine holding a pack not yet accepted).
    /// Refs and config are shared; the extra objects are visible only through the
    /// returned handle.
    pub fn with_alternate(&self, objects: &Path) -> Result<Exchange, ExchangeError> {
        let context = || {
            format!(
                "opening {} with the objects of {}",
                self.repo.path().display(),
                objects.display()
            )
        };
        let repo = git(Repository::open_bare(self.repo.path()), context)?;
        let odb = git(repo.odb(), context)?;
        let Some(dir) = objects.to_str() else {
            return Err(ExchangeError::Git {
                context: context(),
                source: git2::Error::from_str("the folder's path is not UTF-8"),
            });
        };
        git(odb.add_disk_alternate(dir), context)?;
        drop(odb);
        // A view for reading what a quarantine holds: it never commits, so it
        // needs no signing key.
        Ok(Exchange { repo, signer: None })
    }

    /// Removes the `*.lock` files a killed writer left in this repository (ref
    /// locks, and top-level ones such as `packed-refs.lock`, `shallow.lock`,
    /// `config.lock`), and the packs a killed run was writing (ferry's
    /// `tmp_pack_*`/`tmp_idx_*`, libgit2's indexer's `pack_git2_*`, in
    /// `objects/pack`, and a maintenance's `tmp_maint_*` folder), and returns
    /// their paths.
    ///
    /// git and libgit2 take a lock by creating `<file>.lock` and release it by
    /// renaming; a process killed in between leaves the lock behind, and every
    /// later write of that ref fails with "failed to lock file" until someone
    /// deletes it. Only call this on a site's private clone while holding the site
    /// lock: then no other writer exists, so every lock file is stale by
    /// definition. Never on a shared repository.
    pub fn remove_stale_files(&self) -> Result<Vec<PathBuf>, ExchangeError> {
        let root = self.repo.path();
        let mut removed = Vec::new();
        let top_level = walkdir::WalkDir::new(root).min_depth(1).max_depth(1);
        let refs = walkdir::WalkDir::new(root.join("refs"));
        let packs = walkdir::WalkDir::new(root.join("objects").join("pack")).max_depth(1);
        let files = top_level
            .into_iter()
            .chain(refs)
            .chain(packs)
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .map(walkdir::DirEntry::into_path);
        for path in files {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default();
            let pack_in_the_making = ["tmp_pack_", "tmp_idx_", "pack_git2_"]
                .iter()
                .any(|prefix| name.starts_with(prefix));
            if path.extension().is_some_and(|e| e == "lock") || pack_in_the_making {
                std::fs::remove_file(&path).map_err(|source| ExchangeError::Io {
                    context: format!("removing the stale file {}", path.display()),
                    source,
                })?;
                removed.push(path);
            }
        }
        // The folder a killed maintenance was writing its pack in.
        let pack_dir = root.join("objects").join("pack");
        for entry in std::fs::read_dir(&pack_dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if name
                .to_string_lossy()
                .starts_with(crate::maintenance::TEMP_PREFIX)
                && path.is_dir()
            {
                std::fs::remove_dir_all(&path).map_err(|source| ExchangeError::Io {
                    context: format!("removing the stale folder {}", path.display()),
                    source,
                })?;
                removed.push(path);
            }
        }
        Ok(removed)
    }

    /// The underlying repository.
    pub fn repo(&self) -> &Repository {
        &self.repo
    }

    /// The commit a reference points at, `None` when the reference does not exist.
    pub fn resolve(&self, refname: &str) -> Result<Option<Oid>, ExchangeError> {
        match self.repo.refname_to_id(refname) {
            Ok(oid) => Ok(Some(oid)),
            Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
            Err(source) => Err(ExchangeError::Git {
                context: format!("resolving {refname}"),
                source,
            }),
        }
    }

    /// Points a reference at a commit unconditionally, with `reason` in the reflog.
    ///
    /// For moves that must not lose a concurrent update, use [`Exchange::update_ref`].
    pub fn set_ref(&self, refname: &str, oid: Oid, reason: &str) -> Result<(), ExchangeError> {
        git(self.repo.reference(refname, oid, true, reason), || {
            format!("setting {refname} to {}", short(oid))
        })?;
        Ok(())
    }

    /// Removes a reference; one that does not exist is no error.
    pub fn delete_ref(&self, refname: &str) -> Result<(), ExchangeError> {
        match self.repo.find_reference(refname) {
            Ok(mut reference) => git(reference.delete(), || format!("deleting {refname}")),
            Err(e) if e.code() == ErrorCode::NotFound => Ok(()),
            Err(source) => Err(ExchangeError::Git {
                context: format!("reading {refname}"),
                source,
            }),
        }
    }

    /// Moves `refname` from `expected` (`None`: it must not exist) to `new`, failing
    /// with [`ExchangeError::Concurrent`] if someone else moved it meanwhile.
    pub fn update_ref(
        &self,
        refname: &str,
        expected: Option<Oid>,
        new: Oid,
        reason: &str,
    ) -> Result<(), ExchangeError> {
        let result = match expected {
            Some(current) => self
                .repo
                .reference_matching(refname, new, true, current, reason),
            None => self.repo.reference(refname, new, false, reason),
        };
        match result {
            Ok(_) => Ok(()),
            // Modified: the ref holds another value; Exists: it was created
            // meanwhile; NotFound: it was deleted meanwhile (libgit2 reports a
            // vanished ref this way for the matching variant).
            Err(e)
                if matches!(
                    e.code(),
                    ErrorCode::Modified | ErrorCode::Exists | ErrorCode::NotFound
                ) =>
            {
                Err(ExchangeError::Concurrent {
                    refname: refname.to_string(),
                    expected: expected.map_or_else(|| "none".to_string(), short),
                })
            }
            Err(source) => Err(ExchangeError::Git {
                context: format!("moving {refname} to {}", short(new)),
                source,
            }),
        }
    }

    /// The root tree of a commit.
    fn tree_of(&self, commit: Oid) -> Result<Tree<'_>, ExchangeError> {
        let context = || format!("reading the tree of commit {}", short(commit));
        let commit = git(self.repo.find_commit(commit), context)?;
        git(commit.tree(), context)
    }

    /// Blob paths (recursive) under `prefix` in a commit's tree, with their blob
    /// ids; `""` lists everything. Paths are full paths from the root.
    pub fn files(&self, commit: Oid, prefix: &str) -> Result<BTreeMap<String, Oid>, ExchangeError> {
        let prefix = prefix.trim_matches('/');
        let mut out = BTreeMap::new();
        if prefix.is_empty() {
            self.collect_blobs(&self.tree_of(commit)?, "", &mut out)?;
            return Ok(out);
        }
        let Some(entry) = self.entry_at(commit, prefix)? else {
            return Ok(out);
        };
        match entry.kind() {
            Some(ObjectType::Tree) => {
                let tree = git(self.repo.find_tree(entry.id()), || {
                    format!("reading tree {prefix} at {}", short(commit))
                })?;
                self.collect_blobs(&tree, &format!("{prefix}/"), &mut out)?;
            }
            Some(ObjectType::Blob) if is_blob_mode(entry.filemode()) => {
                out.insert(prefix.to_string(), entry.id());
            }
            _ => {}
        }
        Ok(out)
    }

    /// Adds every blob below `tree` to `out`, each path prefixed with `base`.
    fn collect_blobs(
        &self,
        tree: &Tree<'_>,
        base: &str,
        out: &mut BTreeMap<String, Oid>,
    ) -> Result<(), ExchangeError> {
        for entry in tree.iter() {
            let Ok(name) = entry.name() else {
                return Err(ExchangeError::NonUtf8Path {
                    tree: tree.id(),
                    path: format!("{base}{}", String::from_utf8_lossy(entry.name_bytes())),
                });
            };
            let path = format!("{base}{name}");
            match entry.kind() {
                Some(ObjectType::Tree) => {
                    let sub = git(self.repo.find_tree(entry.id()), || {
                        format!("reading tree {path} ({})", short(entry.id()))
                    })?;
                    self.collect_blobs(&sub, &format!("{path}/"), out)?;
                }
                Some(ObjectType::Blob) if is_blob_mode(entry.filemode()) => {
                    out.insert(path, entry.id());
                }
                // Gitlinks (submodules) point at commits that are not here: not files.
                _ => {}
            }
        }
        Ok(())
    }

    /// The replicas of a commit by [`crate::replica::replica_path`], whichever layout stores
    /// them, with their blob ids. A path under `issues/` that is no replica path
    /// keeps its own name, so the caller sees it and refuses it.
    pub fn replicas(&self, commit: Oid) -> Result<BTreeMap<String, Oid>, ExchangeError> {
        Ok(self
            .files(commit, "issues/")?
            .into_iter()
            .map(|(path, blob)| (canonical_path(&path).unwrap_or(path), blob))
            .collect())
    }

    /// The blob of the replica named `path` ([`crate::replica::replica_path`]) in a commit, in
    /// either layout, with where it is stored.
    pub fn find_replica(
        &self,
        commit: Oid,
        path: &str,
    ) -> Result<Option<(String, Oid)>, ExchangeError> {
        let Ok((project, id)) = parse_replica_path(path) else {
            return Ok(None);
        };
        let tree = self.tree_of(commit)?;
        for format in [Format::V2, Format::V1] {
            let stored = stored_path(&project, &id, format);
            match tree.get_path(Path::new(&stored)) {
                Ok(entry)
                    if entry.kind() == Some(ObjectType::Blob) && is_blob_mode(entry.filemode()) =>
                {
                    return Ok(Some((stored, entry.id())));
                }
                Ok(_) => {}
                Err(e) if e.code() == ErrorCode::NotFound => {}
                Err(source) => {
                    return Err(ExchangeError::Git {
                        context: format!("looking up {stored} at {}", short(commit)),
                        source,
                    });
                }
            }
        }
        Ok(None)
    }

    /// The format a branch's tree is written in: [`Format::V2`] when a project
    /// tree holds trees (buckets), [`Format::V1`] when it holds replicas, `None`
    /// when it holds no replica at all. Reading the first entry of each project
    /// is enough: ferry moves a branch from one layout to the other in one commit.
    pub fn layout(&self, commit: Oid) -> Result<Option<Format>, ExchangeError> {
        let Some(issues) = self.entry_at(commit, "issues")? else {
            return Ok(None);
        };
        let context = || format!("reading the issues tree of {}", short(commit));
        let issues = git(self.repo.find_tree(issues.id()), context)?;
        for project in issues.iter() {
            if project.kind() != Some(ObjectType::Tree) {
                continue;
            }
            let tree = git(self.repo.find_tree(project.id()), context)?;
            match tree.iter().next().map(|entry| entry.kind()) {
                Some(Some(ObjectType::Tree)) => return Ok(Some(Format::V2)),
                Some(Some(ObjectType::Blob)) => return Ok(Some(Format::V1)),
                _ => {}
            }
        }
        Ok(None)
    }

    /// [`Exchange::diff_paths`] with replicas named by [`crate::replica::replica_path`]: a
    /// replica that only moved to the other layout (same blob) is no change, and
    /// one that moved and changed is one modification, not a removal and an
    /// addition.
    pub fn diff_replicas(
        &self,
        from: Option<Oid>,
        to: Oid,
    ) -> Result<Vec<PathChange>, ExchangeError> {
        let mut merged: BTreeMap<String, (Option<Oid>, Option<Oid>)> = BTreeMap::new();
        for change in self.diff_paths(from, to)? {
            let path = canonical_path(&change.path).unwrap_or(change.path);
            let entry = merged.entry(path).or_default();
            entry.0 = entry.0.or(change.old);
            entry.1 = entry.1.or(change.new);
        }
        Ok(merged
            .into_iter()
            .filter(|(_, (old, new))| old != new)
            .map(|(path, (old, new))| PathChange { path, old, new })
            .collect())
    }

    /// The newest format the peer's `site.yaml` (at the head of its branch for
    /// `site`) announces it reads; `None` when the peer has written no branch.
    /// Its commits were admitted, so the file parses; should it not, the
    /// oldest format is the one every peer reads.
    pub fn peer_format(&self, site: &str, peer: &str) -> Result<Option<Format>, ExchangeError> {
        let Some(head) = self.resolve(&peer_branch(site, peer))? else {
            return Ok(None);
        };
        let Some((_, bytes)) = self.read_file(head, SITE_FILE)? else {
            return Ok(None);
        };
        Ok(Some(
            SiteFile::parse(&bytes).map_or(Format::V1, |file| Format::announced(file.ferry)),
        ))
    }

    /// The commit of this site's branch that the peer says it has applied: the
    /// `ack` of the `site.yaml` at the head of the peer's branch for `site`, as
    /// written (callers decide how far to trust it). `None` when there is no such
    /// branch, file or ack, or when the file does not parse: a broken `site.yaml`
    /// only costs the ack.
    pub fn peer_ack(&self, site: &str, peer: &str) -> Result<Option<Oid>, ExchangeError> {
        let Some(head) = self.resolve(&peer_branch(site, peer))? else {
            return Ok(None);
        };
        let Some((_, bytes)) = self.read_file(head, SITE_FILE)? else {
            return Ok(None);
        };
        Ok(SiteFile::parse(&bytes)
            .ok()
            .and_then(|file| file.ack)
            .and_then(|ack| Oid::from_str(&ack).ok()))
    }

    /// A file of a commit, with its blob id; `None` when there is no file at `path`
    /// (nothing there, or a directory).
    pub fn read_file(
        &self,
        commit: Oid,
        path: &str,
    ) -> Result<Option<(Oid, Vec<u8>)>, ExchangeError> {
        let Some(entry) = self.entry_at(commit, path)? else {
            return Ok(None);
        };
        if entry.kind() != Some(ObjectType::Blob) {
            return Ok(None);
        }
        let blob = git(self.repo.find_blob(entry.id()), || {
            format!("reading {path} at {}", short(commit))
        })?;
        Ok(Some((entry.id(), blob.content().to_vec())))
    }

    /// A blob's content.
    pub fn read_blob(&self, oid: Oid) -> Result<Vec<u8>, ExchangeError> {
        let blob = git(self.repo.find_blob(oid), || {
            format!("reading blob {}", short(oid))
        })?;
        Ok(blob.content().to_vec())
    }

    /// True when a commit's tree has an entry (file or folder) at `path`.
    pub fn has_path(&self, commit: Oid, path: &str) -> Result<bool, ExchangeError> {
        Ok(self.entry_at(commit, path)?.is_some())
    }

    /// The entry (file or folder) at `path` in a commit's tree, if any.
    fn entry_at(
        &self,
        commit: Oid,
        path: &str,
    ) -> Result<Option<git2::TreeEntry<'static>>, ExchangeError> {
        match self.tree_of(commit)?.get_path(Path::new(path)) {
            Ok(entry) => Ok(Some(entry)),
            Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
            Err(source) => Err(ExchangeError::Git {
                context: format!("looking up {path} at {}", short(commit)),
                source,
            }),
        }
    }

    /// A blob's size in bytes, read from the object header only, so callers can
    /// refuse an oversized blob from a peer before it is loaded into memory.
    pub fn blob_size(&self, oid: Oid) -> Result<usize, ExchangeError> {
        let context = || format!("reading the header of blob {}", short(oid));
        let odb = git(self.repo.odb(), context)?;
        let (size, kind) = git(odb.read_header(oid), context)?;
        if kind != ObjectType::Blob {
            return Err(ExchangeError::NotABlob {
                oid,
                kind: kind.str().to_string(),
            });
        }
        Ok(size)
    }

    /// Paths that differ between two commits (`from = None`: everything in `to`),
    /// sorted by path, at blob level.
    ///
    /// Renames are deliberately not detected: a replica's path is its identity, so a
    /// move is a removal of one replica and the addition of another.
    pub fn diff_paths(&self, from: Option<Oid>, to: Oid) -> Result<Vec<PathChange>, ExchangeError> {
        let old_tree = from.map(|c| self.tree_of(c)).transpose()?;
        let new_tree = self.tree_of(to)?;
        let side = |entry: Option<TreeEntryId>| {
            entry
                .filter(|entry| is_blob_mode(entry.mode))
                .map(|entry| entry.id)
        };
        let mut changes = Vec::new();
        for change in self.diff_trees(old_tree.map(|t| t.id()), new_tree.id())? {
            let (old, new) = (side(change.old), side(change.new));
            if old.is_none() && new.is_none() {
                continue;
            }
            let path = String::from_utf8(change.path).map_err(|e| ExchangeError::NonUtf8Path {
                tree: new_tree.id(),
                path: String::from_utf8_lossy(e.as_bytes()).into_owned(),
            })?;
            changes.push(PathChange { path, old, new });
        }
        Ok(changes)
    }

    /// Every entry that is not a tree and differs between the trees `old` (`None`:
    /// the empty tree) and `new`, sorted by path.
    ///
    /// Subtrees with the same id on both sides are not read, so the cost follows
    /// the change, not the tree: libgit2's `diff_tree_to_tree` walks every entry
    /// of both trees, some 10 000 trees at 100 000 issues for one changed replica.
    pub fn diff_trees(&self, old: Option<Oid>, new: Oid) -> Result<Vec<TreeChange>, ExchangeError> {
        let mut changes = Vec::new();
        self.diff_subtrees(old, Some(new), &mut Vec::new(), &mut changes)?;
        changes.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(changes)
    }

    fn diff_subtrees(
        &self,
        old: Option<Oid>,
        new: Option<Oid>,
        prefix: &mut Vec<u8>,
        changes: &mut Vec<TreeChange>,
    ) -> Result<(), ExchangeError> {
        if old == new {
            return Ok(());
        }
        let entries = |tree: Option<Oid>| -> Result<BTreeMap<Vec<u8>, TreeEntryId>, ExchangeError> {
            let Some(tree) = tree else {
                return Ok(BTreeMap::new());
            };
            let tree = git(self.repo.find_tree(tree), || {
                format!("reading tree {}", short(tree))
            })?;
            Ok(tree
                .iter()
                .map(|entry| {
                    (
                        entry.name_bytes().to_vec(),
                        TreeEntryId {
                            id: entry.id(),
                            mode: entry.filemode(),
                        },
                    )
                })
                .collect())
        };
        let (old, new) = (entries(old)?, entries(new)?);
        let names: std::collections::BTreeSet<&Vec<u8>> = old.keys().chain(new.keys()).collect();
        for name in names {
            let (before, after) = (old.get(name).copied(), new.get(name).copied());
            if before == after {
                continue;
            }
            let tree = |entry: Option<TreeEntryId>| entry.filter(|e| e.is_tree()).map(|e| e.id);
            let file = |entry: Option<TreeEntryId>| entry.filter(|e| !e.is_tree());
            let len = prefix.len();
            prefix.extend_from_slice(name);
            if tree(before).is_some() || tree(after).is_some() {
                prefix.push(b'/');
                self.diff_subtrees(tree(before), tree(after), prefix, changes)?;
                prefix.pop();
            }
            let (before, after) = (file(before), file(after));
            if before.is_some() || after.is_some() {
                changes.push(TreeChange {
                    path: prefix.clone(),
                    old: before,
                    new: after,
                });
            }
            prefix.truncate(len);
        }
        Ok(())
    }

    /// Commits `writes` on top of `refname`; `None` when the tree would not change.
    ///
    /// Writes apply in order, so for one path the last write wins; removing a path
    /// that does not exist is a no-op, removing a directory removes its contents,
    /// and directories left empty disappear. A missing `refname` gets a root commit.
    /// The ref moves by compare-and-swap against the commit read at the start, so a
    /// concurrent writer yields [`ExchangeError::Concurrent`], never a lost commit.
    pub fn commit(
        &self,
        refname: &str,
        writes: &[FileWrite],
        message: &str,
        site: &str,
    ) -> Result<Option<Oid>, ExchangeError> {
        self.commit_with(NewBlobs::default(), refname, writes, message, site)
    }

    /// [`Exchange::commit`] of writes that name blobs gathered in `blobs`
    /// ([`Content::Blob`]): they are written with the commit's trees, in one
    /// pack when there are many.
    pub fn commit_with(
        &self,
        mut blobs: NewBlobs,
        refname: &str,
        writes: &[FileWrite],
        message: &str,
        site: &str,
    ) -> Result<Option<Oid>, ExchangeError> {
        let parent = self.resolve(refname)?;
        let mut last: BTreeMap<&str, Option<&Content>> = BTreeMap::new();
        for write in writes {
            check_path(&write.path)?;
            last.insert(&write.path, write.content.as_ref());
        }
        let mut new = Vec::new();
        let mut entries: BTreeMap<&str, Option<(Oid, FileMode)>> = BTreeMap::new();
        for (path, content) in last {
            let entry = match content {
                Some(Content::Bytes(bytes)) => {
                    let oid = blob_id(bytes);
                    new.push((oid, bytes.clone()));
                    Some((oid, FileMode::Blob))
                }
                Some(Content::Blob(oid)) => Some((*oid, FileMode::Blob)),
                Some(Content::Stored(stored)) if stored.parts => Some((stored.oid, FileMode::Tree)),
                Some(Content::Stored(stored)) => Some((stored.oid, FileMode::Blob)),
                None => None,
            };
            entries.insert(path, entry);
        }
        blobs.add(self, new)?;
        let Some(oid) = self.build_commit(refname, parent, &entries, message, site, blobs)? else {
            return Ok(None);
        };
        self.update_ref(
            refname,
            parent,
            oid,
            &format!("ferry: {}", first_line(message)),
        )?;
        Ok(Some(oid))
    }

    /// Writes the tree of `entries` (path → blob or tree, `None` removes) on top of
    /// `parent`'s, with `objects` (see `tree.rs`), and the signed commit, and
    /// returns the commit; `None` when the tree would not change. Only the trees
    /// on changed paths are written.
    fn build_commit(
        &self,
        refname: &str,
        parent: Option<Oid>,
        entries: &BTreeMap<&str, Option<(Oid, FileMode)>>,
        message: &str,
        site: &str,
        mut objects: NewBlobs,
    ) -> Result<Option<Oid>, ExchangeError> {
        let repo = &self.repo;
        let parent_commit = parent
            .map(|oid| {
                git(repo.find_commit(oid), || {
                    format!("reading {refname} at {}", short(oid))
                })
            })
            .transpose()?;
        let base_tree = match &parent_commit {
            Some(commit) => git(commit.tree(), || {
                format!("reading the tree of {refname} at {}", short(commit.id()))
            })?,
            None => empty_tree(repo)?,
        };
        let odb = git(repo.odb(), || "opening the object database".to_string())?;
        let changes: Vec<tree::Change<'_>> = entries
            .iter()
            .map(|(path, entry)| (path.split('/').collect(), *entry))
            .collect();
        let mut made = Vec::new();
        let tree_id = match tree::updated(&odb, Some(base_tree.id()), &changes, &mut made)? {
            Some(oid) => oid,
            None => empty_tree(repo)?.id(),
        };
        objects.add_trees(self, made)?;
        self.write_blobs(objects)?;
        // A root commit is compared with the empty tree: no empty commits, ever.
        if tree_id == base_tree.id() {
            return Ok(None);
        }
        let tree = git(repo.find_tree(tree_id), || {
            format!("reading new tree {}", short(tree_id))
        })?;
        let signature = site_signature(site)?;
        let parents: Vec<&git2::Commit<'_>> = parent_commit.iter().collect();
        self.signed_commit(
            &branch_for(refname, site),
            &signature,
            message,
            &tree,
            &parents,
        )
        .map(Some)
    }

    /// Records that `refname` (ours) supersedes `theirs`: a merge commit with our
    /// tree unchanged and parents `[our tip, theirs]`, moved in by compare-and-swap.
    ///
    /// Used when a channel's copy of our own branch moved behind our back; the
    /// branch is a snapshot of this site's tracker, so our tree is the truth and the
    /// other history is kept only so the push is a fast-forward.
    pub fn merge_keep_ours(
        &self,
        refname: &str,
        theirs: Oid,
        message: &str,
        site: &str,
    ) -> Result<Oid, ExchangeError> {
        let ours = self.resolve(refname)?.ok_or_else(|| ExchangeError::Git {
            context: format!("merging {} into {refname}", short(theirs)),
            source: git2::Error::from_str("the branch does not exist"),
        })?;
        let context = || format!("merging {} into {refname}", short(theirs));
        let our_commit = git(self.repo.find_commit(ours), context)?;
        let their_commit = git(self.repo.find_commit(theirs), context)?;
        let tree = git(our_commit.tree(), context)?;
        let signature = site_signature(site)?;
        let oid = self.signed_commit(
            refname,
            &signature,
            message,
            &tree,
            &[&our_commit, &their_commit],
        )?;
        self.update_ref(
            refname,
            Some(ours),
            oid,
            &format!("ferry: {}", first_line(message)),
        )?;
        Ok(oid)
    }

    /// Whether `ancestor` is `descendant` or one of its ancestors.
    pub fn is_ancestor(&self, ancestor: Oid, descendant: Oid) -> Result<bool, ExchangeError> {
        if ancestor == descendant {
            return Ok(true);
        }
        git(self.repo.graph_descendant_of(descendant, ancestor), || {
            format!(
                "checking whether {} descends from {}",
                short(descendant),
                short(ancestor)
            )
        })
    }

    /// Commits reachable from `to` and not from `from`, oldest first (`from = None`:
    /// all ancestors of `to`, `to` included).
    pub fn commits_between(&self, from: Option<Oid>, to: Oid) -> Result<Vec<Oid>, ExchangeError> {
        let context = || {
            format!(
                "listing commits from {} to {}",
                from.map_or_else(|| "the root".to_string(), short),
                short(to)
            )
        };
        let mut walk = git(self.repo.revwalk(), context)?;
        git(walk.set_sorting(Sort::TOPOLOGICAL | Sort::REVERSE), context)?;
        git(walk.push(to), context)?;
        if let Some(from) = from {
            git(walk.hide(from), context)?;
        }
        walk.map(|oid| git(oid, context)).collect()
    }
}

/// How much of its pack files libgit2 may map at once, and in what windows.
/// Its defaults (1 GiB windows, 8 GiB in all) make every page of a pack that is
/// read count as this process's memory; a bundle or fetch carrying large
/// attachments would then cost its size in memory. Set once per process.
fn bound_mapped_memory() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: these only set libgit2's global limits, before any pack is
        // mapped by this process (the first exchange opened calls this).
        unsafe {
            let _ = git2::opts::set_mwindow_size(MAPPED_WINDOW_BYTES);
            let _ = git2::opts::set_mwindow_mapped_limit(MAPPED_LIMIT_BYTES);
        }
        // Like git, do not re-hash every object read: objects are named by their
        // hash when they arrive (libgit2's indexer computes the ids of a fetched
        // pack from its content) and zlib checks each stream. Re-hashing on read
        // made reading a changed 40 KB project tree cost twice its inflating.
        git2::opts::strict_hash_verification(false);
    });
}

/// libgit2's pack window size (see [`bound_mapped_memory`]).
const MAPPED_WINDOW_BYTES: usize = 16 << 20;
/// libgit2's limit on mapped pack windows (see [`bound_mapped_memory`]).
const MAPPED_LIMIT_BYTES: usize = 32 << 20;

/// Keeps libgit2's pack builder (a push, a full bundle) from loading
/// attachment parts into its delta window: random-looking megabytes do not
/// delta anyway, and trying costs minutes and hundreds of megabytes. Replicas
/// are far below the threshold and keep their deltas.
///
/// libgit2 (1.9) reads its big-file threshold from `pack.deltaCacheSize`, not
/// from `pack.bigFileThreshold` (a slip in `packbuilder_config`), so both are
/// set: the first for the libgit2 ferry links, the second for git itself and a
/// libgit2 that reads the right key. Written only when they differ, so opening
/// a repository does not rewrite its config every run.
fn keep_big_objects_out_of_delta_search(
    repo: &Repository,
    path: &Path,
) -> Result<(), ExchangeError> {
    let context = || format!("configuring the exchange repository {}", path.display());
    let mut config = git(repo.config(), context)?;
    let want = BIG_OBJECT_BYTES as i64;
    for key in ["pack.bigFileThreshold", "pack.deltaCacheSize"] {
        if config.get_i64(key).ok() != Some(want) {
            git(config.set_i64(key, want), context)?;
        }
    }
    Ok(())
}

/// Objects larger than this are stored whole in packs, never delta-compressed.
const BIG_OBJECT_BYTES: usize = 1 << 20;

/// The first line of a message, for reflog entries.
fn first_line(message: &str) -> &str {
    message.lines().next().unwrap_or("")
}

#[cfg(test)]
mod tests;

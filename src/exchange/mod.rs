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

mod tree;

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
    #[error("FERRY_NOW={value:?} is not an RFC 3339 timestamp: {source}")]
    InvalidNow {
        /// The variable's value.
        value: String,
        /// The parse error.
        source: chrono::ParseError,
    },
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
    match std::env::var("FERRY_NOW") {
        Ok(value) => parse_now(&value),
        Err(_) => {
            let now = chrono::Utc::now();
            Ok(git2::Time::new(now.timestamp(), 0))
        }
    }
}

/// Parses a `FERRY_NOW` value, keeping its UTC offset in the commit.
fn parse_now(value: &str) -> Result<git2::Time, ExchangeError> {
    let at = chrono::DateTime::parse_from_rfc3339(value).map_err(|source| {
        ExchangeError::InvalidNow {
            value: value.to_string(),
            source,
        }
    })?;
    Ok(git2::Time::new(
        at.timestamp(),
        at.offset().local_minus_utc() / 60,
    ))
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

/// From this many new blobs on, a commit writes its objects as one pack.
const PACK_THRESHOLD: usize = 64;

/// Blobs a commit will hold that the exchange lacks, gathered as they are made
/// and written with the commit's trees by [`Exchange::commit_with`]: loose when few; from
/// `PACK_THRESHOLD` on, compressed on every core as they come and appended to
/// a pack file, so that a large export holds neither the blobs nor the pack.
///
/// One loose file per blob would leave 100 000 files in `objects/` after a
/// first export of 100 000 replicas, slow to write and slow for every later git
/// command. The pack is written without deltas (like `git fast-import`:
/// replicas are small and a delta search costs more than it saves here) and
/// indexed here: every id is known already, where libgit2's indexer would
/// inflate and hash every object again. A pack the ref never reaches (a crash
/// before the commit) is only unreachable objects.
#[derive(Default)]
pub struct NewBlobs {
    /// Objects not written yet: all of them while there are few. Blobs, and
    /// the trees of the commit they are for (see `tree.rs`).
    whole: Vec<(Oid, ObjectType, Vec<u8>)>,
    /// The pack being written, once there are many.
    pack: Option<PackFile>,
    seen: std::collections::HashSet<Oid>,
}

/// A pack in the making, in a temporary file of `objects/pack`.
struct PackFile {
    file: tempfile::NamedTempFile,
    /// Bytes written so far, the header included.
    written: u64,
    /// Id, offset and CRC-32 of each entry, as the index lists them.
    entries: Vec<(Oid, u64, u32)>,
}

impl NewBlobs {
    /// Adds the blobs among `blobs` (each with its id, [`blob_id`]) that the
    /// exchange does not have yet.
    pub fn add(
        &mut self,
        exchange: &Exchange,
        blobs: Vec<(Oid, Vec<u8>)>,
    ) -> Result<(), ExchangeError> {
        let odb = git(exchange.repo.odb(), || {
            "opening the object database".to_string()
        })?;
        for (oid, bytes) in blobs {
            // A miss makes libgit2 rescan the pack folder unless told not to:
            // 100 000 rescans for a first export.
            if self.seen.insert(oid) && !odb.exists_ext(oid, git2::OdbLookupFlags::NO_REFRESH) {
                self.whole.push((oid, ObjectType::Blob, bytes));
            }
        }
        self.pack_if_many(exchange)
    }

    /// Adds the trees a commit made (each with its id), to be written with
    /// the blobs.
    fn add_trees(
        &mut self,
        exchange: &Exchange,
        trees: Vec<(Oid, Vec<u8>)>,
    ) -> Result<(), ExchangeError> {
        for (oid, bytes) in trees {
            if self.seen.insert(oid) {
                self.whole.push((oid, ObjectType::Tree, bytes));
            }
        }
        self.pack_if_many(exchange)
    }

    /// Starts or extends the pack once there are [`PACK_THRESHOLD`] objects.
    fn pack_if_many(&mut self, exchange: &Exchange) -> Result<(), ExchangeError> {
        if self.pack.is_some() || self.whole.len() >= PACK_THRESHOLD {
            self.append_to_pack(exchange)?;
        }
        Ok(())
    }

    /// Compresses the whole objects on every core and appends them to the pack.
    fn append_to_pack(&mut self, exchange: &Exchange) -> Result<(), ExchangeError> {
        use rayon::prelude::*;
        use std::io::Write;
        let dir = exchange.repo.path().join("objects").join("pack");
        let io = |source| ExchangeError::Io {
            context: format!("writing a pack in {}", dir.display()),
            source,
        };
        let pack = match &mut self.pack {
            Some(pack) => pack,
            None => {
                let mut file = tempfile::Builder::new()
                    .prefix("tmp_pack_")
                    .tempfile_in(&dir)
                    .map_err(io)?;
                // The count is filled in when the pack is finished.
                file.write_all(&pack::pack_header(0)).map_err(io)?;
                self.pack.insert(PackFile {
                    file,
                    written: 12,
                    entries: Vec::new(),
                })
            }
        };
        let whole = std::mem::take(&mut self.whole);
        // One compressor per thread, reset between blobs: setting one up costs
        // more than compressing a replica.
        let compressed: Vec<(Oid, Vec<u8>)> = whole
            .par_iter()
            .map_init(
                || flate2::Compress::new(flate2::Compression::fast(), true),
                |compressor, (oid, kind, bytes)| (*oid, pack_entry(compressor, *kind, bytes)),
            )
            .collect();
        drop(whole);
        for (oid, entry) in compressed {
            pack.file.write_all(&entry).map_err(io)?;
            pack.entries
                .push((oid, pack.written, crc32fast::hash(&entry)));
            pack.written += entry.len() as u64;
        }
        Ok(())
    }
}

/// Fills in the object count of a pack written with a zero count and appends
/// its SHA-1 trailer; returns the checksum (the pack's name) and the file.
fn finish_pack(
    mut file: tempfile::NamedTempFile,
    count: u32,
) -> std::io::Result<([u8; 20], tempfile::NamedTempFile)> {
    use sha1::Digest;
    use std::io::{Read, Seek, SeekFrom, Write};
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&pack::pack_header(count))?;
    file.seek(SeekFrom::Start(0))?;
    let mut hasher = sha1::Sha1::new();
    let mut buffer = vec![0; 1 << 20];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    let checksum: [u8; 20] = hasher.finalize().into();
    file.seek(SeekFrom::End(0))?;
    file.write_all(&checksum)?;
    Ok((checksum, file))
}

/// The index (version 2, `gitformat-pack`) of a pack whose entries are at
/// these offsets with these CRC-32s.
fn pack_index(mut entries: Vec<(Oid, u64, u32)>, pack_checksum: &[u8; 20]) -> Vec<u8> {
    use sha1::Digest;
    entries.sort_unstable_by_key(|(oid, _, _)| *oid);
    let mut index = Vec::with_capacity(8 + 256 * 4 + entries.len() * 28 + 40);
    index.extend_from_slice(b"\xfftOc");
    index.extend_from_slice(&2u32.to_be_bytes());
    let mut fanout = [0u32; 256];
    for (oid, _, _) in &entries {
        fanout[usize::from(oid.as_bytes()[0])] += 1;
    }
    let mut total = 0;
    for count in fanout {
        total += count;
        index.extend_from_slice(&total.to_be_bytes());
    }
    for (oid, _, _) in &entries {
        index.extend_from_slice(oid.as_bytes());
    }
    for (_, _, crc) in &entries {
        index.extend_from_slice(&crc.to_be_bytes());
    }
    // Offsets from 2 GiB on go to a table of 8-byte offsets.
    let mut large = Vec::new();
    for (_, offset, _) in &entries {
        let small = match u32::try_from(*offset) {
            Ok(small) if small < 0x8000_0000 => small,
            _ => {
                large.push(*offset);
                0x8000_0000 | (large.len() as u32 - 1)
            }
        };
        index.extend_from_slice(&small.to_be_bytes());
    }
    for offset in large {
        index.extend_from_slice(&offset.to_be_bytes());
    }
    index.extend_from_slice(pack_checksum);
    let checksum = sha1::Sha1::digest(&index);
    index.extend_from_slice(&checksum);
    index
}

/// The id git gives a blob of these bytes. Plain SHA-1 (with the CPU's SHA
/// instructions where it has them): libgit2's collision-detecting SHA-1 guards
/// what is read from elsewhere, these are bytes ferry itself made.
pub fn blob_id(bytes: &[u8]) -> Oid {
    object_id(ObjectType::Blob, bytes)
}

/// The id git gives an object of this kind and these bytes (see [`blob_id`]).
fn object_id(kind: ObjectType, bytes: &[u8]) -> Oid {
    use sha1::Digest;
    let mut hasher = sha1::Sha1::new();
    hasher.update(format!("{kind} {}\0", bytes.len()));
    hasher.update(bytes);
    Oid::from_bytes(&hasher.finalize()).expect("a SHA-1 is 20 bytes")
}

/// The pack entry of one blob or tree (undeltified, zlib at its fastest level).
fn pack_entry(compressor: &mut flate2::Compress, kind: ObjectType, blob: &[u8]) -> Vec<u8> {
    let mut entry = Vec::with_capacity(blob.len() / 2 + 64);
    pack::object_header(&mut entry, pack::type_code(kind), blob.len());
    compressor.reset();
    loop {
        let consumed = compressor.total_in() as usize;
        entry.reserve(blob.len() / 4 + 64);
        let status = compressor
            .compress_vec(&blob[consumed..], &mut entry, flate2::FlushCompress::Finish)
            .expect("compressing into memory does not fail");
        if status == flate2::Status::StreamEnd {
            return entry;
        }
    }
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

    /// Writes attachment content into the object database as it streams through
    /// the returned writer: parts of [`PART_BYTES`] each (a single blob when the
    /// content fits in one), so no step ever holds more than one part in memory,
    /// whatever the size of the file. [`ContentWriter::finish`] says where it is.
    pub fn store_content(&self) -> ContentWriter<'_> {
        ContentWriter {
            repo: &self.repo,
            buffer: Vec::new(),
            parts: Vec::new(),
            hasher: Sha256::new(),
            size: 0,
        }
    }

    /// The attachment content with this SHA-256 in a commit's tree
    /// (`attachments/<ab>/<sha256>`, see [`crate::attachment::content_path`]),
    /// as a reader that loads one part at a time; `None` when the commit holds no
    /// such content. Nothing is verified here: callers hash what they read.
    pub fn open_content(
        &self,
        commit: Oid,
        sha256: &str,
    ) -> Result<Option<ContentReader<'_>>, ExchangeError> {
        let path = crate::attachment::content_path(sha256);
        let Some(entry) = self.entry_at(commit, &path)? else {
            return Ok(None);
        };
        let parts = match entry.kind() {
            Some(ObjectType::Blob) => vec![entry.id()],
            Some(ObjectType::Tree) => {
                let tree = git(self.repo.find_tree(entry.id()), || {
                    format!("reading {path} at {}", short(commit))
                })?;
                // Parts are named by number with a fixed width: name order is
                // content order.
                let mut parts: Vec<(String, Oid)> = tree
                    .iter()
                    .filter(|e| e.kind() == Some(ObjectType::Blob))
                    .map(|e| (String::from_utf8_lossy(e.name_bytes()).into_owned(), e.id()))
                    .collect();
                parts.sort();
                parts.into_iter().map(|(_, oid)| oid).collect()
            }
            _ => return Ok(None),
        };
        Ok(Some(ContentReader {
            repo: &self.repo,
            path,
            parts: parts.into_iter(),
            current: None,
            offset: 0,
        }))
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

    /// Writes `blobs` into the object database (see [`NewBlobs`]).
    fn write_blobs(&self, mut blobs: NewBlobs) -> Result<(), ExchangeError> {
        use std::os::unix::fs::PermissionsExt;
        if blobs.pack.is_none() {
            let odb = git(self.repo.odb(), || {
                "opening the object database".to_string()
            })?;
            for (oid, kind, bytes) in &blobs.whole {
                git(odb.write(*kind, bytes), || format!("writing {kind} {oid}"))?;
            }
            return Ok(());
        }
        blobs.append_to_pack(self)?;
        let pack = blobs.pack.take().expect("appended to above");
        let dir = self.repo.path().join("objects").join("pack");
        let io = |source| ExchangeError::Io {
            context: format!("writing a pack in {}", dir.display()),
            source,
        };
        let count = u32::try_from(pack.entries.len()).map_err(|_| ExchangeError::Git {
            context: format!("writing {} blobs", pack.entries.len()),
            source: git2::Error::from_str("too many objects for one pack"),
        })?;
        let (checksum, file) = finish_pack(pack.file, count).map_err(io)?;
        let index = pack_index(pack.entries, &checksum);
        let name = dir.join(format!(
            "pack-{}",
            Oid::from_bytes(&checksum).expect("a SHA-1 is 20 bytes")
        ));
        let mut index_file = tempfile::Builder::new()
            .prefix("tmp_idx_")
            .tempfile_in(&dir)
            .map_err(io)?;
        std::io::Write::write_all(&mut index_file, &index).map_err(io)?;
        // Read-only, as git and libgit2 leave packs.
        for path in [file.path(), index_file.path()] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o444)).map_err(io)?;
        }
        // The pack first: an index is what makes a pack visible.
        file.persist(name.with_extension("pack"))
            .map_err(|e| io(e.error))?;
        index_file
            .persist(name.with_extension("idx"))
            .map_err(|e| io(e.error))?;
        let odb = git(self.repo.odb(), || {
            "opening the object database".to_string()
        })?;
        git(odb.refresh(), || "reading the new pack's index".to_string())?;
        Ok(())
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

/// Size of one part of stored attachment content. Big enough that a 100 MB file
/// is a dozen objects, small enough that reading, packing and sending one never
/// needs much memory.
pub const PART_BYTES: usize = 8 << 20;

/// Streams attachment content into the object database; see
/// [`Exchange::store_content`].
pub struct ContentWriter<'r> {
    repo: &'r Repository,
    buffer: Vec<u8>,
    parts: Vec<Oid>,
    hasher: Sha256,
    size: u64,
}

impl ContentWriter<'_> {
    fn flush_part(&mut self) -> std::io::Result<()> {
        let oid = self
            .repo
            .blob(&self.buffer)
            .map_err(|e| std::io::Error::other(format!("writing an attachment part: {e}")))?;
        self.parts.push(oid);
        self.buffer.clear();
        Ok(())
    }

    /// Writes what is left and returns where the content is.
    pub fn finish(mut self) -> Result<StoredContent, ExchangeError> {
        let sha256 = format!("{:x}", std::mem::take(&mut self.hasher).finalize());
        if self.parts.is_empty() {
            let oid = git(self.repo.blob(&self.buffer), || {
                format!("writing attachment {sha256}")
            })?;
            return Ok(StoredContent {
                oid,
                parts: false,
                size: self.size,
                sha256,
            });
        }
        if !self.buffer.is_empty() {
            self.flush_part().map_err(|source| ExchangeError::Io {
                context: format!("writing attachment {sha256}"),
                source,
            })?;
        }
        let context = || format!("writing the parts of attachment {sha256}");
        let mut tree = git(self.repo.treebuilder(None), context)?;
        for (i, part) in self.parts.iter().enumerate() {
            git(
                tree.insert(format!("{i:06}"), *part, FileMode::Blob.into()),
                context,
            )?;
        }
        let oid = git(tree.write(), context)?;
        Ok(StoredContent {
            oid,
            parts: true,
            size: self.size,
            sha256,
        })
    }
}

impl std::io::Write for ContentWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let room = PART_BYTES - self.buffer.len();
        let take = bytes.len().min(room);
        self.buffer.extend_from_slice(&bytes[..take]);
        self.hasher.update(&bytes[..take]);
        self.size += take as u64;
        if self.buffer.len() == PART_BYTES {
            self.flush_part()?;
        }
        Ok(take)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads stored attachment content one part at a time; see
/// [`Exchange::open_content`].
pub struct ContentReader<'r> {
    repo: &'r Repository,
    path: String,
    parts: std::vec::IntoIter<Oid>,
    current: Option<git2::Blob<'r>>,
    offset: usize,
}

impl std::io::Read for ContentReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if let Some(blob) = &self.current {
                let rest = &blob.content()[self.offset..];
                if !rest.is_empty() {
                    let n = out.len().min(rest.len());
                    out[..n].copy_from_slice(&rest[..n]);
                    self.offset += n;
                    return Ok(n);
                }
            }
            let Some(part) = self.parts.next() else {
                return Ok(0);
            };
            // The part before is dropped first: one part in memory at a time.
            self.current = None;
            self.current = Some(self.repo.find_blob(part).map_err(|e| {
                std::io::Error::other(format!("reading {} part {}: {e}", self.path, short(part)))
            })?);
            self.offset = 0;
        }
    }
}

/// The first line of a message, for reflog entries.
fn first_line(message: &str) -> &str {
    message.lines().next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_ids_are_gits() {
        for bytes in [
            &b""[..],
            b"x",
            &[0u8; 70_000],
            "ferry: 1\nsite: a\n".as_bytes(),
        ] {
            assert_eq!(
                blob_id(bytes),
                Oid::hash_object(ObjectType::Blob, bytes).unwrap()
            );
        }
    }

    /// Offsets from 2 GiB on are in the 8-byte table, referenced by position.
    #[test]
    fn a_pack_index_refers_to_large_offsets_through_its_table() {
        let small = Oid::from_bytes(&[1; 20]).unwrap();
        let large = Oid::from_bytes(&[2; 20]).unwrap();
        let index = pack_index(vec![(large, 5 << 31, 7), (small, 12, 9)], &[0; 20]);
        let offsets = 8 + 256 * 4 + 2 * 20 + 2 * 4;
        let word = |at: usize| u32::from_be_bytes(index[at..at + 4].try_into().unwrap());
        assert_eq!((word(offsets), word(offsets + 4)), (12, 0x8000_0000));
        let table = offsets + 8;
        let large_offset = u64::from_be_bytes(index[table..table + 8].try_into().unwrap());
        assert_eq!(large_offset, 5 << 31);
        assert_eq!(index.len(), table + 8 + 40);
    }
    use crate::signing::SiteKey;
    use std::process::Command;

    /// Runs the real git CLI, hermetically, and returns its stdout.
    fn git_cli(repo: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(args)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn write(path: &str, content: &str) -> FileWrite {
        FileWrite {
            path: path.into(),
            content: Some(Content::Bytes(content.as_bytes().to_vec())),
        }
    }

    fn remove(path: &str) -> FileWrite {
        FileWrite {
            path: path.into(),
            content: None,
        }
    }

    /// Opens (or creates) the exchange at `path`, signing with the key beside it.
    fn signing_exchange(path: &Path) -> Exchange {
        let key_file = path.with_extension("key");
        let key = match SiteKey::load(&key_file) {
            Ok(key) => key,
            Err(_) => SiteKey::generate(&key_file, "support").unwrap(),
        };
        let mut ex = Exchange::open_or_init(path).unwrap();
        ex.sign_with(key);
        ex
    }

    fn exchange() -> (tempfile::TempDir, Exchange) {
        let dir = tempfile::tempdir().unwrap();
        let ex = signing_exchange(&dir.path().join("exchange.git"));
        (dir, ex)
    }

    const BRANCH: &str = "refs/heads/support/engineering";

    #[test]
    fn commit_creates_nested_paths_that_git_agrees_with() {
        let (_dir, ex) = exchange();
        let c = ex
            .commit(
                BRANCH,
                &[
                    write("site.yaml", "site: support\n"),
                    write("issues/SUP/1.yaml", "id: 1\n"),
                    write("issues/SUP/2.yaml", "id: 2\n"),
                    write("attachments/9f/9f86", "bytes"),
                ],
                "export: 2 issues\n\nmore detail",
                "support",
            )
            .unwrap()
            .expect("a commit");
        assert_eq!(ex.resolve(BRANCH).unwrap(), Some(c));

        let files = ex.files(c, "").unwrap();
        let listed = git_cli(ex.repo().path(), &["ls-tree", "-r", &c.to_string()]);
        let from_git: BTreeMap<String, Oid> = listed
            .lines()
            .map(|line| {
                let (meta, path) = line.split_once('\t').unwrap();
                let oid = meta.split_whitespace().nth(2).unwrap();
                assert!(meta.starts_with("100644 blob "), "{line}");
                (path.to_string(), Oid::from_str(oid).unwrap())
            })
            .collect();
        assert_eq!(files, from_git);
        assert_eq!(files.len(), 4);

        let issues = ex.files(c, "issues/").unwrap();
        assert_eq!(
            issues.keys().collect::<Vec<_>>(),
            ["issues/SUP/1.yaml", "issues/SUP/2.yaml"]
        );
        assert!(ex.files(c, "nothing/here").unwrap().is_empty());

        let (oid, bytes) = ex.read_file(c, "issues/SUP/2.yaml").unwrap().unwrap();
        assert_eq!(bytes, b"id: 2\n");
        assert_eq!(ex.read_blob(oid).unwrap(), b"id: 2\n");
        assert_eq!(ex.blob_size(oid).unwrap(), 6);
        assert!(ex.read_file(c, "issues/SUP").unwrap().is_none());
        assert!(ex.read_file(c, "issues/SUP/3.yaml").unwrap().is_none());
        assert!(matches!(
            ex.blob_size(c),
            Err(ExchangeError::NotABlob { .. })
        ));

        git_cli(ex.repo().path(), &["fsck", "--strict", "--no-dangling"]);
        let authors = git_cli(ex.repo().path(), &["log", "--format=%an <%ae>", BRANCH]);
        assert_eq!(authors, "support (ferry) <support@ferry.invalid>\n");
    }

    #[test]
    fn many_new_blobs_go_into_one_pack_that_git_agrees_with() {
        let (_dir, ex) = exchange();
        let files = |round: usize, n: usize| -> Vec<FileWrite> {
            (0..n)
                .map(|i| {
                    write(
                        &format!("issues/P{}/{i}.yaml", i % 7),
                        &format!("id: {i}\nround: {round}\n"),
                    )
                })
                .collect()
        };
        let first = ex
            .commit(BRANCH, &files(1, 3 * PACK_THRESHOLD), "many", "support")
            .unwrap()
            .expect("a commit");
        // A handful on top goes the loose way; then many again, packed, on a parent.
        let mut few = files(2, 3);
        few.push(remove("issues/P1/8.yaml"));
        let second = ex.commit(BRANCH, &few, "few", "support").unwrap().unwrap();
        let third = ex
            .commit(
                BRANCH,
                &files(3, 2 * PACK_THRESHOLD),
                "many again",
                "support",
            )
            .unwrap()
            .unwrap();
        assert_eq!(ex.resolve(BRANCH).unwrap(), Some(third));

        let repo = ex.repo().path();
        git_cli(repo, &["fsck", "--strict", "--no-dangling"]);
        let counts = git_cli(repo, &["count-objects", "-v"]);
        let count = |name: &str| -> usize {
            let prefix = format!("{name}: ");
            counts
                .lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .unwrap()
                .parse()
                .unwrap()
        };
        // Every blob and tree of the two big commits is in their two packs (the
        // trees: the root, issues/ and the seven project trees each); loose are
        // the root commit's empty base tree, the commits, and the three blobs
        // and five trees of the small one.
        assert_eq!(count("packs"), 2, "{counts}");
        assert_eq!(count("in-pack"), 5 * PACK_THRESHOLD + 2 * 9, "{counts}");
        assert_eq!(count("count"), 1 + 1 + (3 + 5 + 1) + 1, "{counts}");
        for (commit, round) in [(first, 1), (third, 3)] {
            let listed = git_cli(repo, &["ls-tree", "-r", "--name-only", &commit.to_string()]);
            assert_eq!(listed.lines().count(), 3 * PACK_THRESHOLD);
            let (_, bytes) = ex.read_file(commit, "issues/P0/7.yaml").unwrap().unwrap();
            assert_eq!(bytes, format!("id: 7\nround: {round}\n").as_bytes());
        }
        assert!(ex.read_file(second, "issues/P1/8.yaml").unwrap().is_none());
        // Another handle sees the same, from the pack on disk.
        let reopened = Exchange::open_or_init(repo).unwrap();
        assert_eq!(
            reopened.files(third, "").unwrap(),
            ex.files(third, "").unwrap()
        );
    }

    #[test]
    fn identical_commit_is_not_made() {
        let (_dir, ex) = exchange();
        let writes = [write("issues/SUP/1.yaml", "id: 1\n")];
        let first = ex.commit(BRANCH, &writes, "one", "support").unwrap();
        assert!(first.is_some());
        assert_eq!(
            ex.commit(BRANCH, &writes, "again", "support").unwrap(),
            None
        );
        assert_eq!(
            ex.commit(BRANCH, &[remove("issues/SUP/404.yaml")], "noop", "support")
                .unwrap(),
            None
        );
        assert_eq!(ex.resolve(BRANCH).unwrap(), first);
    }

    #[test]
    fn empty_root_commit_is_not_made() {
        let (_dir, ex) = exchange();
        assert_eq!(ex.commit(BRANCH, &[], "hello", "support").unwrap(), None);
        assert_eq!(
            ex.commit(BRANCH, &[remove("a")], "hello", "support")
                .unwrap(),
            None
        );
        assert_eq!(ex.resolve(BRANCH).unwrap(), None);
    }

    #[test]
    fn remove_prunes_empty_directories() {
        let (_dir, ex) = exchange();
        ex.commit(
            BRANCH,
            &[write("site.yaml", "s"), write("issues/SUP/1.yaml", "1")],
            "add",
            "support",
        )
        .unwrap();
        let c = ex
            .commit(BRANCH, &[remove("issues/SUP/1.yaml")], "rm", "support")
            .unwrap()
            .unwrap();
        let listed = git_cli(ex.repo().path(), &["ls-tree", "-r", "-t", &c.to_string()]);
        assert_eq!(listed.lines().count(), 1, "{listed}");
        assert!(listed.ends_with("\tsite.yaml\n"));
        git_cli(ex.repo().path(), &["fsck", "--strict", "--no-dangling"]);
    }

    #[test]
    fn last_write_to_a_path_wins() {
        let (_dir, ex) = exchange();
        let c = ex
            .commit(
                BRANCH,
                &[write("a.yaml", "1"), remove("a.yaml"), write("b.yaml", "x")],
                "m",
                "support",
            )
            .unwrap()
            .unwrap();
        assert_eq!(
            ex.files(c, "").unwrap().keys().collect::<Vec<_>>(),
            ["b.yaml"]
        );
    }

    #[test]
    fn unsafe_paths_are_refused() {
        let (_dir, ex) = exchange();
        for bad in [
            "",
            "/abs",
            "a//b",
            "a/",
            "../x",
            "a/./b",
            ".git/config",
            "a\0b",
        ] {
            let err = ex
                .commit(BRANCH, &[write(bad, "x")], "m", "support")
                .unwrap_err();
            assert!(
                matches!(err, ExchangeError::InvalidPath { .. }),
                "{bad:?}: {err}"
            );
        }
        assert_eq!(ex.resolve(BRANCH).unwrap(), None);
    }

    #[test]
    fn diff_paths_reports_add_modify_remove_without_renames() {
        let (_dir, ex) = exchange();
        let a = ex
            .commit(
                BRANCH,
                &[
                    write("issues/SUP/1.yaml", "one"),
                    write("issues/SUP/2.yaml", "two"),
                    write(
                        "issues/SUP/3.yaml",
                        "three, long enough to look like a rename",
                    ),
                ],
                "a",
                "support",
            )
            .unwrap()
            .unwrap();
        let b = ex
            .commit(
                BRANCH,
                &[
                    write("issues/SUP/1.yaml", "ONE"),
                    remove("issues/SUP/2.yaml"),
                    remove("issues/SUP/3.yaml"),
                    write(
                        "issues/ENG/3.yaml",
                        "three, long enough to look like a rename",
                    ),
                    write("issues/SUP/4.yaml", "four"),
                ],
                "b",
                "support",
            )
            .unwrap()
            .unwrap();
        let files_a = ex.files(a, "").unwrap();
        let files_b = ex.files(b, "").unwrap();
        let changes = ex.diff_paths(Some(a), b).unwrap();
        let expected: Vec<PathChange> = [
            "issues/ENG/3.yaml",
            "issues/SUP/1.yaml",
            "issues/SUP/2.yaml",
            "issues/SUP/3.yaml",
            "issues/SUP/4.yaml",
        ]
        .iter()
        .map(|p| PathChange {
            path: p.to_string(),
            old: files_a.get(*p).copied(),
            new: files_b.get(*p).copied(),
        })
        .collect();
        assert_eq!(changes, expected);

        let everything = ex.diff_paths(None, a).unwrap();
        assert_eq!(everything.len(), 3);
        assert!(
            everything
                .iter()
                .all(|c| c.old.is_none() && c.new.is_some())
        );
        assert!(ex.diff_paths(Some(b), b).unwrap().is_empty());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        /// The tree diff that skips equal subtrees finds what git's own finds.
        #[test]
        fn the_tree_diff_agrees_with_git(
            first in proptest::collection::btree_map("[a-c]{1,2}(/[a-c]{1,2}){0,2}", "[xy]{1,2}", 0..12),
            second in proptest::collection::btree_map("[a-c]{1,2}(/[a-c]{1,2}){0,2}", "[xy]{1,2}", 0..12),
        ) {
            // A path cannot be a file and a folder in one tree; across the two
            // commits it may (a file that becomes a folder).
            let files_only = |mut files: BTreeMap<String, String>| {
                let folders: Vec<String> = files.keys().map(|p| format!("{p}/")).collect();
                files.retain(|p, _| !folders.iter().any(|f| p.starts_with(f.as_str())));
                files
            };
            let (first, second) = (files_only(first), files_only(second));
            let (dir, ex) = exchange();
            // The old files go in a commit of their own: one tree update
            // cannot turn a file into a folder.
            let commit = |files: &BTreeMap<String, String>, previous: &[String]| {
                let removals: Vec<FileWrite> = previous.iter().map(|p| remove(p)).collect();
                ex.commit(BRANCH, &removals, "rm", "support").unwrap();
                let mut writes: Vec<FileWrite> =
                    files.iter().map(|(path, content)| write(path, content)).collect();
                writes.push(write("site.yaml", &format!("{}", files.len())));
                ex.commit(BRANCH, &writes, "c", "support").unwrap();
                ex.resolve(BRANCH).unwrap()
            };
            let Some(a) = commit(&first, &[]) else { return Ok(()) };
            let Some(b) = commit(&second, &first.keys().cloned().collect::<Vec<_>>()) else {
                return Ok(());
            };
            let ours: Vec<String> = ex
                .diff_paths(Some(a), b)
                .unwrap()
                .into_iter()
                .map(|c| c.path)
                .collect();
            let repo = dir.path().join("exchange.git");
            let theirs: Vec<String> = git_cli(
                &repo,
                &["diff-tree", "-r", "--no-renames", "--name-only", &a.to_string(), &b.to_string()],
            )
            .lines()
            .map(str::to_string)
            .collect();
            proptest::prop_assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn a_replica_moved_to_the_other_layout_is_no_change() {
        let (_dir, ex) = exchange();
        let flat = ex
            .commit(
                BRANCH,
                &[
                    write("issues/SUP/142.yaml", "one"),
                    write("issues/SUP/7.yaml", "seven"),
                    write("issues/SUP/99.yaml", "gone"),
                ],
                "flat",
                "support",
            )
            .unwrap()
            .unwrap();
        assert_eq!(ex.layout(flat).unwrap(), Some(Format::V1));
        let fanned = ex
            .commit(
                BRANCH,
                &[
                    remove("issues/SUP/142.yaml"),
                    write("issues/SUP/42/01/142.yaml", "one"),
                    remove("issues/SUP/7.yaml"),
                    write("issues/SUP/07/00/7.yaml", "SEVEN"),
                    remove("issues/SUP/99.yaml"),
                    write("issues/SUP/08/00/8.yaml", "eight"),
                ],
                "fan out",
                "support",
            )
            .unwrap()
            .unwrap();
        assert_eq!(ex.layout(fanned).unwrap(), Some(Format::V2));
        let changes: Vec<(String, bool, bool)> = ex
            .diff_replicas(Some(flat), fanned)
            .unwrap()
            .into_iter()
            .map(|c| (c.path, c.old.is_some(), c.new.is_some()))
            .collect();
        assert_eq!(
            changes,
            [
                ("issues/SUP/7.yaml".to_string(), true, true),
                ("issues/SUP/8.yaml".to_string(), false, true),
                ("issues/SUP/99.yaml".to_string(), true, false),
            ]
        );
        let (stored, blob) = ex
            .find_replica(fanned, "issues/SUP/142.yaml")
            .unwrap()
            .unwrap();
        assert_eq!(stored, "issues/SUP/42/01/142.yaml");
        assert_eq!(ex.read_blob(blob).unwrap(), b"one");
        let (stored, _) = ex
            .find_replica(flat, "issues/SUP/142.yaml")
            .unwrap()
            .unwrap();
        assert_eq!(stored, "issues/SUP/142.yaml");
        assert!(
            ex.find_replica(fanned, "issues/SUP/99.yaml")
                .unwrap()
                .is_none()
        );
        assert_eq!(
            ex.replicas(fanned).unwrap().keys().collect::<Vec<_>>(),
            [
                "issues/SUP/142.yaml",
                "issues/SUP/7.yaml",
                "issues/SUP/8.yaml"
            ]
        );
    }

    #[test]
    fn concurrent_ref_move_is_detected() {
        let (_dir, ex) = exchange();
        let first = ex
            .commit(BRANCH, &[write("a", "1")], "a", "support")
            .unwrap()
            .unwrap();
        let second = ex
            .commit(BRANCH, &[write("a", "2")], "b", "support")
            .unwrap()
            .unwrap();
        // Someone else read `first` and now tries to move the ref on from there.
        let err = ex
            .update_ref(BRANCH, Some(first), first, "stale")
            .unwrap_err();
        assert!(matches!(err, ExchangeError::Concurrent { .. }), "{err}");
        assert_eq!(ex.resolve(BRANCH).unwrap(), Some(second));
        // Creating a ref that appeared meanwhile is detected too.
        let err = ex.update_ref(BRANCH, None, first, "stale").unwrap_err();
        assert!(matches!(err, ExchangeError::Concurrent { .. }), "{err}");
        // A genuine compare-and-swap succeeds.
        ex.update_ref(BRANCH, Some(second), first, "rewind")
            .unwrap();
        assert_eq!(ex.resolve(BRANCH).unwrap(), Some(first));
    }

    #[test]
    fn ancestry_and_history() {
        let (_dir, ex) = exchange();
        let ids: Vec<Oid> = (0..3)
            .map(|i| {
                ex.commit(BRANCH, &[write("n", &i.to_string())], "n", "support")
                    .unwrap()
                    .unwrap()
            })
            .collect();
        assert!(ex.is_ancestor(ids[0], ids[2]).unwrap());
        assert!(ex.is_ancestor(ids[2], ids[2]).unwrap());
        assert!(!ex.is_ancestor(ids[2], ids[0]).unwrap());
        assert_eq!(ex.commits_between(None, ids[2]).unwrap(), ids);
        assert_eq!(ex.commits_between(Some(ids[0]), ids[2]).unwrap(), &ids[1..]);
        assert!(ex.commits_between(Some(ids[2]), ids[2]).unwrap().is_empty());
    }

    #[test]
    fn merge_keep_ours_keeps_our_tree_and_both_parents() {
        let (_dir, ex) = exchange();
        let base = ex
            .commit(BRANCH, &[write("a", "1")], "a", "support")
            .unwrap()
            .unwrap();
        let theirs = ex
            .commit(BRANCH, &[write("a", "theirs")], "t", "support")
            .unwrap()
            .unwrap();
        ex.set_ref(BRANCH, base, "back").unwrap();
        let ours = ex
            .commit(BRANCH, &[write("a", "ours")], "o", "support")
            .unwrap()
            .unwrap();
        let merge = ex
            .merge_keep_ours(BRANCH, theirs, "merge", "support")
            .unwrap();
        let commit = ex.repo().find_commit(merge).unwrap();
        assert_eq!(commit.parent_ids().collect::<Vec<_>>(), [ours, theirs]);
        assert_eq!(ex.read_file(merge, "a").unwrap().unwrap().1, b"ours");
        assert_eq!(ex.resolve(BRANCH).unwrap(), Some(merge));
    }

    #[test]
    fn reopen_and_refuse_foreign_folders() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.git");
        let c = {
            let ex = signing_exchange(&path);
            ex.commit(BRANCH, &[write("a", "1")], "a", "support")
                .unwrap()
                .unwrap()
        };
        let ex = Exchange::open_or_init(&path).unwrap();
        assert_eq!(ex.resolve(BRANCH).unwrap(), Some(c));
        // The reflog is on, so the audit trail of ref moves exists.
        assert_eq!(ex.repo().reflog(BRANCH).unwrap().len(), 1);

        let foreign = dir.path().join("docs");
        std::fs::create_dir(&foreign).unwrap();
        std::fs::write(foreign.join("notes.txt"), "hi").unwrap();
        assert!(matches!(
            Exchange::open_or_init(&foreign),
            Err(ExchangeError::NotARepository { .. })
        ));
    }

    #[test]
    fn ferry_now_fixes_the_commit_time() {
        let t = parse_now("2026-11-22T09:30:00+02:00").unwrap();
        assert_eq!(t.seconds(), 1_795_332_600);
        assert_eq!(t.offset_minutes(), 120);
        assert!(matches!(
            parse_now("yesterday"),
            Err(ExchangeError::InvalidNow { .. })
        ));
    }

    /// Runs a command with the sealed git environment; returns (success, output).
    fn run(mut command: Command, stdin: Option<&[u8]>) -> (bool, String) {
        use std::io::Write;
        use std::process::Stdio;
        command
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("the command runs");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.unwrap_or_default())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// `git verify-commit` with `gpg.format=ssh` and an allowed signers file
    /// listing `signer`: whether it accepts `commit`, and what it said.
    fn git_verify(ex: &Exchange, signer: &SiteKey, commit: Oid) -> (bool, String) {
        let signers = ex.repo().path().join("allowed_signers");
        std::fs::write(
            &signers,
            format!("support namespaces=\"git\" {}\n", signer.public_line()),
        )
        .unwrap();
        let mut git = Command::new("git");
        git.arg("-C").arg(ex.repo().path()).args([
            "-c",
            "gpg.format=ssh",
            "-c",
            &format!("gpg.ssh.allowedSignersFile={}", signers.display()),
            "verify-commit",
            "-v",
            &commit.to_string(),
        ]);
        run(git, None)
    }

    #[test]
    fn every_commit_is_signed_the_way_git_verify_commit_accepts() {
        let (dir, ex) = exchange();
        let key = SiteKey::load(&dir.path().join("exchange.key")).unwrap();
        let base = ex
            .commit(BRANCH, &[write("a", "1")], "export: one\n\nbody", "support")
            .unwrap()
            .unwrap();
        let (ok, said) = git_verify(&ex, &key, base);
        assert!(ok, "{said}");
        assert!(said.contains("Good \"git\" signature"), "{said}");

        // The message names the branch, inside what the signature covers.
        let message = git_cli(ex.repo().path(), &["log", "-1", "--format=%B", BRANCH]);
        assert_eq!(
            message,
            "export: one\n\nbody\n\nFerry-Branch: support/engineering\n\n"
        );

        // ssh-keygen checks the SSHSIG itself, without any signers file.
        let (signature, payload) = ex.repo().extract_signature(&base, None).unwrap();
        let sig_file = dir.path().join("commit.sig");
        std::fs::write(&sig_file, &*signature).unwrap();
        let mut keygen = Command::new("ssh-keygen");
        keygen
            .args(["-Y", "check-novalidate", "-n", "git", "-s"])
            .arg(&sig_file);
        let (ok, said) = run(keygen, Some(&payload));
        assert!(ok, "{said}");

        // The merge a moved channel forces is signed too.
        let theirs = ex
            .commit(BRANCH, &[write("a", "theirs")], "t", "support")
            .unwrap()
            .unwrap();
        ex.set_ref(BRANCH, base, "back").unwrap();
        ex.commit(BRANCH, &[write("a", "ours")], "o", "support")
            .unwrap();
        let merge = ex
            .merge_keep_ours(BRANCH, theirs, "merge", "support")
            .unwrap();
        let (ok, said) = git_verify(&ex, &key, merge);
        assert!(ok, "{said}");

        // Another key is not this site's: git agrees it is not a good signature.
        let other = SiteKey::generate(&dir.path().join("other"), "other").unwrap();
        let (ok, said) = git_verify(&ex, &other, merge);
        assert!(!ok, "{said}");
        git_cli(ex.repo().path(), &["fsck", "--strict", "--no-dangling"]);
    }

    #[test]
    fn without_a_key_no_commit_is_made() {
        let dir = tempfile::tempdir().unwrap();
        let ex = Exchange::open_or_init(&dir.path().join("exchange.git")).unwrap();
        let err = ex
            .commit(BRANCH, &[write("a", "1")], "a", "support")
            .unwrap_err();
        assert!(matches!(err, ExchangeError::NoSigningKey { .. }), "{err}");
        assert!(err.to_string().contains(BRANCH), "{err}");
        assert_eq!(ex.resolve(BRANCH).unwrap(), None);
    }

    #[test]
    fn exchange_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<Exchange>();
    }
}

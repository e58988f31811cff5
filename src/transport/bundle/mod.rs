//! Git bundles: the air-gapped channel.
//!
//! A bundle is one file a person can carry (USB stick, data diode, e-mail): git's
//! own bundle format v2 (git's `gitformat-bundle`), a header naming the commits
//! the reader must already have (*prerequisites*) and the refs it brings, then a
//! packfile. ferry writes exactly one ref, this site's branch for the peer
//! (`refs/heads/<site>/<peer>`), and takes as prerequisite the last commit of that
//! branch the peer acknowledged (the `ack` in the peer's `site.yaml`), so a bundle
//! holds only what the peer has not confirmed yet. Because the prerequisite is an
//! acknowledgement and not "the previous bundle", a lost bundle heals itself: the
//! next one carries its commits too.
//!
//! git2 has no bundle support, so the header is written and parsed here; the pack
//! comes from libgit2's `PackBuilder` (self-contained) or, after the first,
//! [`crate::pack::write_thin`], and is read by [`index_from_peer`], which
//! also completes the thin packs `git bundle create` writes.
//!
//! Reading is defensive, since a bundle is whatever someone put in an inbox:
//! the size is checked before anything is read, the header before the pack, the
//! pack is indexed into a quarantine folder the repository only sees through an
//! alternate while [`super::admit`] checks the commits, and only then do the
//! objects join the repository and the peer's branch move (compare-and-swap). A
//! refused bundle leaves the refs and the odb as they were.
//!
//! [`BundleChannel`] (in `channel.rs`) makes an outbox and an inbox folder a
//! [`super::Channel`]: `push` writes a bundle into the outbox, `fetch` imports
//! every bundle of the inbox in order and moves each to `archive/`, or to
//! `rejected/` with a `.reason` file.
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Seek, Write};
use std::path::{Path, PathBuf};

use git2::Oid;

mod channel;

pub use channel::{BundleChannel, bundled_ref};

use super::{AdmitError, FetchOutcome, Limits, admit};
use crate::exchange::{Exchange, ExchangeError, own_branch, peer_branch};
use crate::pack::index::{PackError, PackLimits, index_from_peer};

use crate::seal;
use crate::signing::Trust;
use ssh_key::PublicKey;

/// The first line of a bundle ferry writes.
const SIGNATURE_V2: &str = "# v2 git bundle";
/// The first line of a v3 bundle, accepted on read when its object format is SHA-1.
const SIGNATURE_V3: &str = "# v3 git bundle";
/// A header longer than this is refused: ferry's have one or two lines.
const MAX_HEADER_BYTES: u64 = 64 * 1024;
/// File name extension of bundles in an inbox or outbox.
pub const EXTENSION: &str = "bundle";
/// Name prefix of the folder, inside the exchange repository, a bundle's pack is
/// indexed into before it is admitted.
const QUARANTINE_PREFIX: &str = "ferry-quarantine-";
/// Name prefix of a bundle being written (a dot file readers skip).
const TEMPORARY_PREFIX: &str = ".ferry-bundle-";
/// Below an inbox: bundles processed.
pub const ARCHIVE_DIR: &str = "archive";
/// Below an inbox: bundles refused, each with a `.reason` file.
pub const REJECTED_DIR: &str = "rejected";
/// Below an inbox: the bundle whose ref is being moved; a run that dies there
/// finds it on the next run and finishes the move.
pub const APPLYING_DIR: &str = "applying";

/// A bundle could not be written, read, or was refused.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A file could not be read or written.
    #[error("{action} {}: {source}", .path.display())]
    Io {
        /// What ferry was doing.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Larger than the configured limit; not read at all.
    #[error(
        "the bundle is {size} bytes, over the limit of {limit} bytes (raise `max_bytes` in \
         the connection's channel if it is genuine)"
    )]
    TooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The inbox entry (or the file named) is not a regular file.
    #[error(
        "{kind}, not a regular file: ferry reads bundles only from plain files and never \
         follows links"
    )]
    NotAFile {
        /// What it is.
        kind: NotAFile,
    },
    /// The header is not a git bundle header ferry can read.
    #[error("not a git bundle ferry can read: {0}")]
    Format(String),
    /// The bundle carries another ref than the peer's branch for this site.
    #[error("the bundle carries {found}; only {expected} may come from {peer}")]
    ForeignRef {
        /// The peer.
        peer: String,
        /// What the bundle holds.
        found: String,
        /// The only ref allowed.
        expected: String,
    },
    /// A prerequisite is not in this site's repository: an earlier bundle is missing.
    #[error(
        "the bundle needs commit {oid}, which this site does not have: import the earlier \
         bundle first, or ask {peer} for a full one (`ferry bundle create --full`)"
    )]
    MissingPrerequisite {
        /// The peer.
        peer: String,
        /// The missing commit.
        oid: Oid,
    },
    /// A prerequisite exists but is not part of the peer's branch here.
    #[error(
        "prerequisite {oid} is not part of {peer}'s branch as this site has it; the \
         bundle was made for another history"
    )]
    WrongPrerequisite {
        /// The peer.
        peer: String,
        /// The prerequisite.
        oid: Oid,
    },
    /// The bundle brings nothing new: its commit is already part of the peer's branch.
    #[error(
        "replay: the bundle's commit {tip} is already part of {peer}'s branch here (at \
         {head}); it was imported before, or it is older than what was imported"
    )]
    Replay {
        /// The peer.
        peer: String,
        /// The bundle's commit.
        tip: Oid,
        /// The peer's branch here.
        head: Oid,
    },
    /// The bundle's commit does not descend from what this site already has.
    #[error(
        "the bundle's commit {tip} does not descend from {head}, which this site already \
         received from {peer} (history was rewritten)"
    )]
    Rewritten {
        /// The peer.
        peer: String,
        /// The bundle's commit.
        tip: Oid,
        /// The peer's branch here.
        head: Oid,
    },
    /// The pack is truncated or corrupt, or lacks objects it refers to.
    #[error("the pack is truncated or corrupt: {0}")]
    Pack(git2::Error),
    /// The pack is malformed, asks for more than this site allows, or names
    /// objects that are nowhere (see [`index_from_peer`]).
    #[error(transparent)]
    BadPack(PackError),
    /// The commits failed [`admit`].
    #[error(transparent)]
    Refused(#[from] AdmitError),
    /// A sealed bundle arrived but this site has no signing key to open it with.
    #[error("{} is sealed, but this site has no signing key to open it", .file.display())]
    NoSiteKey {
        /// The bundle.
        file: PathBuf,
    },
    /// A sealed bundle does not open with this site's key.
    #[error("cannot open the sealed bundle: {0}")]
    Unseal(seal::SealError),
    /// The bundle could not be sealed for the peer.
    #[error("cannot seal the bundle for the peer: {0}")]
    Seal(seal::SealError),
    /// This site has nothing to put in a bundle for the peer.
    #[error("nothing exported for {peer} yet: run `ferry export --connection {peer}` first")]
    NothingExported {
        /// The peer.
        peer: String,
    },
    /// The local exchange repository failed.
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
}

impl BundleError {
    /// Whether the bundle itself is at fault (refuse it and move on), rather than
    /// this site (stop and let the next run retry).
    pub fn is_refusal(&self) -> bool {
        !matches!(
            self,
            BundleError::Io { .. }
                | BundleError::BadPack(PackError::Io { .. })
                | BundleError::Exchange(_)
                | BundleError::NothingExported { .. }
                | BundleError::NoSiteKey { .. }
                | BundleError::Seal(_)
        )
    }
}

fn git_error(context: impl Into<String>) -> impl FnOnce(git2::Error) -> BundleError {
    let context = context.into();
    move |source| BundleError::Exchange(ExchangeError::Git { context, source })
}

/// What a bundle's header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleHeader {
    /// Commits the reader must have.
    pub prerequisites: Vec<Oid>,
    /// The refs it brings, with their commits.
    pub refs: Vec<(String, Oid)>,
}

/// Parses a bundle header up to and including its blank line, leaving `reader`
/// at the first byte of the pack.
///
/// Errors name the line and what is wrong with it, never its bytes: a bundle is
/// whatever someone put in an inbox, and its text goes into reports, reason files
/// on the medium, the ledger and e-mail.
pub fn parse_header(reader: &mut impl BufRead) -> Result<BundleHeader, BundleError> {
    let mut limited = reader.take(MAX_HEADER_BYTES);
    let mut number = 0usize;
    let mut next_line = || -> Result<(usize, String), BundleError> {
        let mut line = Vec::new();
        limited
            .read_until(b'\n', &mut line)
            .map_err(|e| BundleError::Format(format!("cannot read the header: {e}")))?;
        if line.last() != Some(&b'\n') {
            return Err(BundleError::Format(
                "the header ends early or is too long (no blank line before the pack)".into(),
            ));
        }
        line.pop();
        number += 1;
        let text = String::from_utf8(line)
            .map_err(|_| BundleError::Format(format!("line {number} is not UTF-8")))?;
        Ok((number, text))
    };
    let (_, signature) = next_line()?;
    let v3 = match signature.as_str() {
        SIGNATURE_V2 => false,
        SIGNATURE_V3 => true,
        _ => {
            return Err(BundleError::Format(format!(
                "the first line is not {SIGNATURE_V2:?}"
            )));
        }
    };
    let oid = |text: &str, number: usize| {
        if text.len() != 40 {
            return Err(BundleError::Format(format!(
                "line {number}: not a SHA-1 object id (40 hex digits)"
            )));
        }
        Oid::from_str(text)
            .map_err(|_| BundleError::Format(format!("line {number}: not an object id")))
    };
    let mut header = BundleHeader {
        prerequisites: Vec::new(),
        refs: Vec::new(),
    };
    loop {
        let (number, line) = next_line()?;
        if line.is_empty() {
            break;
        }
        if let Some(capability) = line.strip_prefix('@') {
            // git aborts on capabilities it does not know; so does ferry.
            if !v3 || capability != "object-format=sha1" {
                let which = match capability.split_once('=').map_or(capability, |(k, _)| k) {
                    "object-format" if v3 => "@object-format other than sha1",
                    "filter" => "@filter (a partial bundle)",
                    _ if !v3 => "a capability in a v2 bundle",
                    _ => "an unknown capability",
                };
                return Err(BundleError::Format(format!(
                    "line {number}: {which} is not supported (only v3's @object-format=sha1)"
                )));
            }
        } else if let Some(rest) = line.strip_prefix('-') {
            let id = rest.split_once(' ').map_or(rest, |(id, _comment)| id);
            header.prerequisites.push(oid(id, number)?);
        } else {
            let Some((id, refname)) = line.split_once(' ') else {
                return Err(BundleError::Format(format!(
                    "line {number} is neither a prerequisite nor a ref"
                )));
            };
            header.refs.push((refname.to_string(), oid(id, number)?));
        }
    }
    if header.refs.is_empty() {
        return Err(BundleError::Format("the bundle holds no ref".into()));
    }
    Ok(header)
}

/// A ref name read from a bundle, fit for a message: git's own ref names as they
/// are (with anything a terminal would act on escaped), anything else only
/// described.
pub fn shown_ref(refname: &str) -> String {
    if refname.len() <= 200 && git2::Reference::is_valid_name(refname) {
        escaped(refname)
    } else {
        "a ref name git does not accept".to_string()
    }
}

/// `text` with the characters a terminal acts on escaped: C0 controls, DEL, C1
/// controls, and the bidirectional overrides and isolates that make text read
/// differently from what it is (the "Trojan Source" class).
pub fn escaped(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}') {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// What an inbox entry is, when it is not a regular file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAFile {
    /// A symbolic link (never followed: it could point at a secret).
    SymbolicLink,
    /// A folder.
    Folder,
    /// A FIFO: opening or reading one waits for a writer that may never come.
    Fifo,
    /// A Unix socket.
    Socket,
    /// A block device.
    BlockDevice,
    /// A character device.
    CharDevice,
}

impl NotAFile {
    /// What `file_type` is, or `None` for a regular file.
    pub fn of(file_type: fs::FileType) -> Option<NotAFile> {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_file() {
            None
        } else if file_type.is_symlink() {
            Some(NotAFile::SymbolicLink)
        } else if file_type.is_dir() {
            Some(NotAFile::Folder)
        } else if file_type.is_fifo() {
            Some(NotAFile::Fifo)
        } else if file_type.is_socket() {
            Some(NotAFile::Socket)
        } else if file_type.is_block_device() {
            Some(NotAFile::BlockDevice)
        } else {
            Some(NotAFile::CharDevice)
        }
    }
}

impl std::fmt::Display for NotAFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NotAFile::SymbolicLink => "a symbolic link",
            NotAFile::Folder => "a folder",
            NotAFile::Fifo => "a FIFO (named pipe)",
            NotAFile::Socket => "a socket",
            NotAFile::BlockDevice => "a block device",
            NotAFile::CharDevice => "a character device",
        })
    }
}

/// Opens the bundle file at `path` for reading, refusing anything but a regular
/// file: the name is looked at without following links, opened without following
/// them either (`O_NOFOLLOW`), without waiting for a FIFO's writer
/// (`O_NONBLOCK`, which a regular file's reads ignore) and without acquiring a
/// terminal (`O_NOCTTY`), and the file opened is checked once more, since the
/// name may have changed in between.
pub fn open_regular(path: &Path) -> Result<fs::File, BundleError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io_error = |source| BundleError::Io {
        action: "cannot open bundle",
        path: path.to_path_buf(),
        source,
    };
    let refuse = |kind| Err(BundleError::NotAFile { kind });
    let named = fs::symlink_metadata(path).map_err(io_error)?;
    if let Some(kind) = NotAFile::of(named.file_type()) {
        return refuse(kind);
    }
    let file = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return refuse(NotAFile::SymbolicLink),
        Err(e) => return Err(io_error(e)),
    };
    let opened = file.metadata().map_err(io_error)?;
    if let Some(kind) = NotAFile::of(opened.file_type()) {
        return refuse(kind);
    }
    Ok(file)
}

/// Reads only the header of the bundle at `path` (a regular file, see
/// [`open_regular`]).
pub fn read_header(path: &Path) -> Result<BundleHeader, BundleError> {
    parse_header(&mut BufReader::new(open_regular(path)?))
}

/// What a new bundle for the peer should hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// This site's branch for the peer.
    pub refname: String,
    /// Its commit.
    pub tip: Oid,
    /// What the peer acknowledged and need not be sent again (empty: a full bundle).
    pub prerequisites: Vec<Oid>,
}

/// The last commit of this site's branch that `peer` acknowledged, as its
/// `site.yaml` says on the branch this site received; `None` when it has not, or
/// when the ack is not part of the branch (then only a full bundle is safe).
pub fn acknowledged(
    exchange: &Exchange,
    site: &str,
    peer: &str,
) -> Result<Option<Oid>, BundleError> {
    let Some(ours) = exchange.resolve(&own_branch(site, peer))? else {
        return Ok(None);
    };
    match exchange.peer_ack(site, peer)? {
        Some(ack)
            if exchange.repo().find_commit(ack).is_ok() && exchange.is_ancestor(ack, ours)? =>
        {
            Ok(Some(ack))
        }
        _ => Ok(None),
    }
}

/// What a bundle for `peer` should hold: everything (`full`, or nothing
/// acknowledged yet) or only what the peer has not acknowledged. `None`: the
/// peer acknowledged this site's whole branch, nothing to send.
pub fn plan(
    exchange: &Exchange,
    site: &str,
    peer: &str,
    full: bool,
) -> Result<Option<Plan>, BundleError> {
    let refname = own_branch(site, peer);
    let tip = exchange
        .resolve(&refname)?
        .ok_or_else(|| BundleError::NothingExported {
            peer: peer.to_string(),
        })?;
    let ack = if full {
        None
    } else {
        acknowledged(exchange, site, peer)?
    };
    if ack == Some(tip) {
        return Ok(None);
    }
    Ok(Some(Plan {
        refname,
        tip,
        prerequisites: ack.into_iter().collect(),
    }))
}

/// Writes the bundle of `plan` to `out` atomically (a temporary file beside it,
/// renamed once complete, so a reader of the folder never sees half a bundle)
/// and returns the size of the file in bytes. With `seal_for` keys, the file is
/// the bundle encrypted to them (age, to the peer's ssh-ed25519 signing keys; see
/// [`crate::seal`] and [`open_sealed`]).
pub fn write(
    exchange: &Exchange,
    plan: &Plan,
    out: &Path,
    seal_for: &[PublicKey],
) -> Result<u64, BundleError> {
    let repo = exchange.repo();
    let mut header = format!("{SIGNATURE_V2}\n");
    for p in &plan.prerequisites {
        let subject = repo
            .find_commit(*p)
            .ok()
            .and_then(|c| c.summary().ok().flatten().map(str::to_string))
            .unwrap_or_default();
        header.push_str(&format!("-{p} {subject}\n"));
    }
    header.push_str(&format!("{} {}\n\n", plan.tip, plan.refname));

    let io_error = |source| BundleError::Io {
        action: "cannot write bundle",
        path: out.to_path_buf(),
        source,
    };
    let dir = match out.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMPORARY_PREFIX)
        .tempfile_in(dir)
        .map_err(io_error)?;
    // Header and pack stream into the file (through the cipher when sealed): a
    // bundle carrying large attachments is never held in memory.
    {
        let file = io::BufWriter::new(tmp.as_file_mut());
        if seal_for.is_empty() {
            let mut file = file;
            file.write_all(header.as_bytes()).map_err(io_error)?;
            write_pack(repo, plan, &mut file)?;
            file.flush().map_err(io_error)?;
        } else {
            let mut sealed = seal::encrypting_writer(seal_for, file).map_err(BundleError::Seal)?;
            sealed.write_all(header.as_bytes()).map_err(io_error)?;
            write_pack(repo, plan, &mut sealed)?;
            sealed
                .finish()
                .and_then(|mut f| f.flush())
                .map_err(io_error)?;
        }
    }
    tmp.as_file().sync_all().map_err(io_error)?;
    let size = tmp.as_file().metadata().map_err(io_error)?.len();
    tmp.persist(out).map_err(|e| io_error(e.error))?;
    Ok(size)
}

/// Writes the pack of `plan` into `out`: thin against the one prerequisite of
/// an incremental bundle (see `pack`), else libgit2's own, streamed chunk by
/// chunk.
fn write_pack(
    repo: &git2::Repository,
    plan: &Plan,
    out: &mut dyn Write,
) -> Result<(), BundleError> {
    let context = || format!("packing {} for a bundle", plan.refname);
    if let [base] = plan.prerequisites.as_slice() {
        return crate::pack::write_thin(repo, *base, plan.tip, out).map_err(git_error(context()));
    }
    let mut walk = repo.revwalk().map_err(git_error(context()))?;
    walk.push(plan.tip).map_err(git_error(context()))?;
    for p in &plan.prerequisites {
        walk.hide(*p).map_err(git_error(context()))?;
    }
    let mut builder = repo.packbuilder().map_err(git_error(context()))?;
    builder
        .insert_walk(&mut walk)
        .map_err(git_error(context()))?;
    let mut failed = None;
    let walked = builder.foreach(|chunk| match out.write_all(chunk) {
        Ok(()) => true,
        Err(e) => {
            failed = Some(e);
            false
        }
    });
    if let Some(e) = failed {
        return Err(BundleError::Io {
            action: "cannot write the pack of",
            path: PathBuf::from(&plan.refname),
            source: e,
        });
    }
    walked.map_err(git_error(context()))
}

/// The file name ending of an age-encrypted bundle.
pub const ENCRYPTED_SUFFIX: &str = ".bundle.age";

/// Whether `path` names an age-encrypted bundle.
pub fn is_encrypted(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(ENCRYPTED_SUFFIX))
}

/// Opens the sealed (age-encrypted) bundle at `path` with this site's signing
/// key into a file in `exchange`'s quarantine area, refusing more than
/// `max_bytes` of ciphertext or plaintext.
///
/// Sealing is confidentiality for a stick that can be lost, not authenticity
/// (anyone holding this site's public key can seal to it): what it opens is
/// checked exactly like a plain bundle.
pub fn open_sealed(
    exchange: &Exchange,
    path: &Path,
    max_bytes: u64,
) -> Result<tempfile::NamedTempFile, BundleError> {
    let key = exchange.signer().ok_or_else(|| BundleError::NoSiteKey {
        file: path.to_path_buf(),
    })?;
    let read_error = |source| BundleError::Io {
        action: "cannot read",
        path: path.to_path_buf(),
        source,
    };
    let sealed = open_regular(path)?;
    let size = sealed.metadata().map_err(read_error)?.len();
    if size > max_bytes {
        return Err(BundleError::TooLarge {
            size,
            limit: max_bytes,
        });
    }
    let plain =
        seal::decrypting_reader(key, io::BufReader::new(sealed)).map_err(BundleError::Unseal)?;
    let dir = exchange.repo().path();
    let io_error = |source| BundleError::Io {
        action: "cannot write the opened bundle in",
        path: dir.to_path_buf(),
        source,
    };
    let mut file = tempfile::Builder::new()
        .prefix(QUARANTINE_PREFIX)
        .tempfile_in(dir)
        .map_err(io_error)?;
    // One byte over the limit is enough to know the plain text is too large.
    let copied = io::copy(&mut plain.take(max_bytes + 1), &mut file).map_err(|e| {
        BundleError::Unseal(seal::SealError::Decrypt {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    })?;
    if copied > max_bytes {
        return Err(BundleError::TooLarge {
            size: copied,
            limit: max_bytes,
        });
    }
    Ok(file)
}

/// A bundle that passed every check, its objects still in quarantine.
pub struct Verified<'a> {
    exchange: &'a Exchange,
    quarantine: tempfile::TempDir,
    refname: String,
    before: Option<Oid>,
    tip: Oid,
}

impl Verified<'_> {
    /// The commit the peer's branch will move to.
    pub fn tip(&self) -> Oid {
        self.tip
    }

    /// Moves the objects into the repository, then the peer's branch to the
    /// bundle's commit (compare-and-swap against what was checked).
    pub fn apply(self) -> Result<FetchOutcome, BundleError> {
        let pack_dir = self.quarantine.path().join("pack");
        let target = self.exchange.repo().path().join("objects").join("pack");
        fs::create_dir_all(&target).map_err(|source| BundleError::Io {
            action: "cannot create",
            path: target.clone(),
            source,
        })?;
        let mut files: Vec<PathBuf> = fs::read_dir(&pack_dir)
            .and_then(|entries| entries.map(|e| e.map(|e| e.path())).collect())
            .map_err(|source| BundleError::Io {
                action: "cannot list the quarantine",
                path: pack_dir.clone(),
                source,
            })?;
        // The index last: git and libgit2 find a pack through its index.
        files.sort_by_key(|p| p.extension().is_some_and(|e| e == "idx"));
        for file in files {
            let to = target.join(file.file_name().unwrap_or_default());
            fs::rename(&file, &to).map_err(|source| BundleError::Io {
                action: "cannot move the pack into",
                path: to.clone(),
                source,
            })?;
        }
        let odb = self
            .exchange
            .repo()
            .odb()
            .map_err(git_error("opening the object database"))?;
        odb.refresh()
            .map_err(git_error("refreshing the object database"))?;
        self.exchange.update_ref(
            &self.refname,
            self.before,
            self.tip,
            "ferry: fast-forward from a bundle",
        )?;
        Ok(FetchOutcome {
            before: self.before,
            after: Some(self.tip),
            notes: Vec::new(),
            waiting: Vec::new(),
        })
    }
}

/// Checks the bundle at `path` as `peer`'s branch for `site`, in the order that
/// reads the least of a hostile file: size, header, ref, replay, prerequisites,
/// then the pack (into a quarantine), fast-forward, and [`admit`]. Nothing moves
/// until [`Verified::apply`].
pub fn verify<'a>(
    exchange: &'a Exchange,
    site: &str,
    peer: &str,
    path: &Path,
    max_bytes: u64,
    trust: &Trust,
    limits: &Limits,
) -> Result<Verified<'a>, BundleError> {
    let file = open_regular(path)?;
    let size = file
        .metadata()
        .map_err(|source| BundleError::Io {
            action: "cannot read",
            path: path.to_path_buf(),
            source,
        })?
        .len();
    if size > max_bytes {
        return Err(BundleError::TooLarge {
            size,
            limit: max_bytes,
        });
    }
    let mut reader = BufReader::new(file);
    let header = parse_header(&mut reader)?;
    let expected = peer_branch(site, peer);
    let tip = match header.refs.as_slice() {
        [(refname, tip)] if *refname == expected => *tip,
        refs => {
            let found: Vec<String> = refs.iter().map(|(r, _)| shown_ref(r)).collect();
            return Err(BundleError::ForeignRef {
                peer: peer.to_string(),
                found: found.join(", "),
                expected,
            });
        }
    };
    let before = exchange.resolve(&expected)?;
    if let Some(head) = before
        && (tip == head
            || (exchange.repo().find_commit(tip).is_ok() && exchange.is_ancestor(tip, head)?))
    {
        return Err(BundleError::Replay {
            peer: peer.to_string(),
            tip,
            head,
        });
    }
    for &oid in &header.prerequisites {
        if exchange.repo().find_commit(oid).is_err() {
            return Err(BundleError::MissingPrerequisite {
                peer: peer.to_string(),
                oid,
            });
        }
        let on_branch = match before {
            Some(head) => exchange.is_ancestor(oid, head)?,
            None => false,
        };
        if !on_branch {
            return Err(BundleError::WrongPrerequisite {
                peer: peer.to_string(),
                oid,
            });
        }
    }

    let repo_dir = exchange.repo().path();
    let quarantine = tempfile::Builder::new()
        .prefix(QUARANTINE_PREFIX)
        .tempdir_in(repo_dir)
        .map_err(|source| BundleError::Io {
            action: "cannot create a quarantine in",
            path: repo_dir.to_path_buf(),
            source,
        })?;
    let pack_dir = quarantine.path().join("pack");
    fs::create_dir(&pack_dir).map_err(|source| BundleError::Io {
        action: "cannot create",
        path: pack_dir.clone(),
        source,
    })?;
    let odb = exchange
        .repo()
        .odb()
        .map_err(git_error("opening the object database"))?;
    let pack_bytes = size.saturating_sub(reader.stream_position().unwrap_or(0));
    index_from_peer(
        &odb,
        &mut reader,
        &pack_dir,
        PackLimits::for_pack(pack_bytes, max_bytes),
    )
    .map_err(BundleError::BadPack)?;

    let seen = exchange.with_alternate(quarantine.path())?;
    if seen.repo().find_commit(tip).is_err() {
        return Err(BundleError::Pack(git2::Error::from_str(&format!(
            "the pack lacks the commit {tip} its header names"
        ))));
    }
    if let Some(head) = before
        && !seen.is_ancestor(head, tip)?
    {
        return Err(BundleError::Rewritten {
            peer: peer.to_string(),
            tip,
            head,
        });
    }
    admit(&seen, site, peer, before, tip, trust, limits)?;
    Ok(Verified {
        exchange,
        quarantine,
        refname: expected,
        before,
        tip,
    })
}

/// Removes the quarantine folders of bundles whose reading was interrupted (the
/// process was killed while indexing or checking) and returns their paths.
///
/// A quarantine only ever holds objects no ref points at, so removing one loses
/// nothing: the bundle is still in the inbox, or in `applying/`. Only call this
/// while holding the site lock, when no other run can be reading a bundle.
pub fn remove_quarantines(exchange: &Exchange) -> Result<Vec<PathBuf>, BundleError> {
    let dir = exchange.repo().path();
    let io_error = |source| BundleError::Io {
        action: "cannot clean up quarantines in",
        path: dir.to_path_buf(),
        source,
    };
    let mut removed = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error)? {
        let entry = entry.map_err(io_error)?;
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(QUARANTINE_PREFIX)
        {
            fs::remove_dir_all(entry.path()).map_err(io_error)?;
            removed.push(entry.path());
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::FileWrite;
    use crate::signing::{SignaturePolicy, SiteKey};
    use crate::transport::testing::replica_yaml;
    use std::process::Command;

    const SUPPORT: &str = "support";
    const ENGINEERING: &str = "engineering";

    /// Runs the real git CLI, hermetically, in `dir`; returns stdout, or panics.
    fn git_cli(dir: &Path, args: &[&str]) -> String {
        let out = git_run(dir, args);
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn git_run(dir: &Path, args: &[&str]) -> std::process::Output {
        Command::new("git")
            .current_dir(dir)
            .args(args)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .expect("git runs")
    }

    /// Support's and engineering's exchange repos in one temporary folder.
    struct World {
        root: tempfile::TempDir,
        /// Signs its commits with a key engineering trusts.
        support: Exchange,
        engineering: Exchange,
        /// What engineering trusts on its connection to support.
        trust: Trust,
    }

    impl World {
        fn new() -> World {
            let root = tempfile::tempdir().unwrap();
            let key = SiteKey::generate(&root.path().join("support_key"), SUPPORT).unwrap();
            let mut support = Exchange::open_or_init(&root.path().join("support.git")).unwrap();
            support.sign_with(key.clone());
            let engineering = Exchange::open_or_init(&root.path().join("engineering.git")).unwrap();
            let trust = Trust {
                peer: SUPPORT.to_string(),
                file: root.path().join("support.allowed_signers"),
                policy: SignaturePolicy::Required,
                keys: vec![key.public_key()],
            };
            World {
                root,
                support,
                engineering,
                trust,
            }
        }

        fn path(&self, name: &str) -> PathBuf {
            self.root.path().join(name)
        }

        /// Support exports issue `id` with `summary`.
        fn export(&self, id: &str, summary: &str) -> Oid {
            self.support
                .commit(
                    &own_branch(SUPPORT, ENGINEERING),
                    &[FileWrite {
                        path: format!("issues/SUP/{id}.yaml"),
                        content: Some(crate::exchange::Content::Bytes(replica_yaml(
                            SUPPORT, "SUP", id, summary,
                        ))),
                    }],
                    summary,
                    SUPPORT,
                )
                .unwrap()
                .unwrap()
        }

        /// Engineering takes the bundle at `path`.
        fn receive(&self, path: &Path) -> Result<FetchOutcome, BundleError> {
            verify(
                &self.engineering,
                ENGINEERING,
                SUPPORT,
                path,
                DEFAULT_MAX,
                &self.trust,
                &Limits::default(),
            )
            .and_then(Verified::apply)
        }

        fn peer_head(&self) -> Option<Oid> {
            self.engineering
                .resolve(&peer_branch(ENGINEERING, SUPPORT))
                .unwrap()
        }
    }

    const DEFAULT_MAX: u64 = crate::config::DEFAULT_MAX_BUNDLE_BYTES;

    fn plan_of(tip: Oid, prerequisites: &[Oid]) -> Plan {
        Plan {
            refname: own_branch(SUPPORT, ENGINEERING),
            tip,
            prerequisites: prerequisites.to_vec(),
        }
    }

    #[test]
    fn git_verifies_clones_and_fetches_ferry_bundles() {
        let w = World::new();
        let c1 = w.export("1", "first");
        let c2 = w.export("2", "second");
        let full = w.path("full.bundle");
        write(&w.support, &plan_of(c1, &[]), &full, &[]).unwrap();
        let text = std::fs::read(&full).unwrap();
        assert!(text.starts_with(
            format!("# v2 git bundle\n{c1} refs/heads/support/engineering\n\nPACK").as_bytes()
        ));

        // git agrees: a full bundle verifies anywhere, and clones.
        git_cli(w.root.path(), &["init", "-q", "--bare", "oracle.git"]);
        let oracle = w.path("oracle.git");
        let verified = git_run(&oracle, &["bundle", "verify", full.to_str().unwrap()]);
        assert!(verified.status.success(), "{verified:?}");
        git_cli(
            w.root.path(),
            &["clone", "-q", "--bare", full.to_str().unwrap(), "clone.git"],
        );
        assert_eq!(
            git_cli(&w.path("clone.git"), &["rev-parse", "support/engineering"]),
            c1.to_string()
        );

        // An incremental one names its prerequisite; git accepts it where the
        // prerequisite is present, and refuses it where it is not.
        let incremental = w.path("incremental.bundle");
        write(&w.support, &plan_of(c2, &[c1]), &incremental, &[]).unwrap();
        let header = read_header(&incremental).unwrap();
        assert_eq!(header.prerequisites, [c1]);
        assert_eq!(
            header.refs,
            [("refs/heads/support/engineering".to_string(), c2)]
        );
        let lacking = git_run(
            &oracle,
            &["bundle", "verify", incremental.to_str().unwrap()],
        );
        assert!(!lacking.status.success());
        git_cli(
            &w.path("clone.git"),
            &["bundle", "verify", incremental.to_str().unwrap()],
        );
        git_cli(
            &w.path("clone.git"),
            &[
                "fetch",
                "-q",
                incremental.to_str().unwrap(),
                "support/engineering:support/engineering",
            ],
        );
        assert_eq!(
            git_cli(&w.path("clone.git"), &["rev-parse", "support/engineering"]),
            c2.to_string()
        );
        git_cli(&w.path("clone.git"), &["fsck", "--strict"]);
        // The incremental pack holds only the new commit's objects.
        assert!(std::fs::metadata(&incremental).unwrap().len() < text.len() as u64 + 400);
    }

    #[test]
    fn ferry_reads_what_it_writes_incrementally() {
        let w = World::new();
        let c1 = w.export("1", "first");
        let full = w.path("1.bundle");
        write(&w.support, &plan_of(c1, &[]), &full, &[]).unwrap();
        let got = w.receive(&full).unwrap();
        assert_eq!((got.before, got.after), (None, Some(c1)));
        let c2 = w.export("2", "second");
        let next = w.path("2.bundle");
        write(&w.support, &plan_of(c2, &[c1]), &next, &[]).unwrap();
        let got = w.receive(&next).unwrap();
        assert_eq!((got.before, got.after), (Some(c1), Some(c2)));
        assert_eq!(w.peer_head(), Some(c2));
        let quarantines: Vec<_> = std::fs::read_dir(w.engineering.repo().path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("ferry-quarantine")
            })
            .collect();
        assert!(quarantines.is_empty(), "quarantine left behind");
        git_cli(w.engineering.repo().path(), &["fsck", "--strict"]);

        // Once more is a replay, and so is the older one.
        for old in [&next, &full] {
            let err = w.receive(old).unwrap_err();
            assert!(matches!(err, BundleError::Replay { .. }), "{err}");
        }
        assert_eq!(w.peer_head(), Some(c2));
    }

    /// A replica changed and changed back within one bundle. ferry's writer
    /// leaves out the version the reader has; older ferry sent it again, as a
    /// delta on the change whose base it is, and libgit2's `Indexer` looped
    /// for ever on that pack. Both bundles are taken.
    #[test]
    fn a_replica_changed_and_changed_back_in_one_bundle_is_taken() {
        for written_by_older_ferry in [false, true] {
            let w = World::new();
            // A summary of many lines, so that each change is a small delta.
            let long: String = (0..100).map(|i| format!("\n  line {i}")).collect();
            let long = format!("|-{long}");
            let c1 = w.export("1", &long);
            let full = w.path("1.bundle");
            write(&w.support, &plan_of(c1, &[]), &full, &[]).unwrap();
            w.receive(&full).unwrap();
            w.export("1", &format!("{long}\n  one more"));
            let c3 = w.export("1", &long);
            let bundle = w.path("2.bundle");
            if written_by_older_ferry {
                let repo = w.support.repo();
                let entries = crate::pack::new_objects(repo, &[c1], c3).unwrap();
                let reverted = repo
                    .find_commit(c1)
                    .unwrap()
                    .tree()
                    .unwrap()
                    .get_path(Path::new("issues/SUP/1.yaml"))
                    .unwrap()
                    .id();
                assert!(entries.iter().any(|e| e.oid == reverted));
                let mut bytes = format!(
                    "# v2 git bundle\n-{c1} ferry\n{c3} refs/heads/support/engineering\n\n"
                )
                .into_bytes();
                let levels = crate::pack::Levels {
                    trees: flate2::Compression::default(),
                    others: flate2::Compression::default(),
                };
                crate::pack::encode(repo, &entries, levels, &mut bytes).unwrap();
                std::fs::write(&bundle, bytes).unwrap();
            } else {
                write(&w.support, &plan_of(c3, &[c1]), &bundle, &[]).unwrap();
            }
            assert_eq!(w.receive(&bundle).unwrap().after, Some(c3));
            git_cli(w.engineering.repo().path(), &["fsck", "--strict"]);
        }
    }

    #[test]
    fn ferry_reads_what_git_writes_thin_and_v3() {
        let w = World::new();
        let c1 = w.export("1", "first");
        let big = "x".repeat(3000);
        w.export("2", &big);
        let c3 = w.export("2", &format!("{big}y"));
        let repo = w.support.repo().path();
        // A v3 bundle of the first commit (git writes v3 when asked).
        let tip = w
            .support
            .resolve(&own_branch(SUPPORT, ENGINEERING))
            .unwrap();
        w.support
            .set_ref(&own_branch(SUPPORT, ENGINEERING), c1, "test")
            .unwrap();
        let v3 = w.path("v3.bundle");
        git_cli(
            repo,
            &[
                "bundle",
                "create",
                "-q",
                "--version=3",
                v3.to_str().unwrap(),
                "refs/heads/support/engineering",
            ],
        );
        assert!(
            std::fs::read(&v3)
                .unwrap()
                .starts_with(b"# v3 git bundle\n@object-format=sha1\n")
        );
        assert_eq!(w.receive(&v3).unwrap().after, Some(c1));

        // A thin incremental bundle (deltas against the prerequisite's objects).
        w.support
            .set_ref(&own_branch(SUPPORT, ENGINEERING), tip.unwrap(), "test")
            .unwrap();
        let thin = w.path("thin.bundle");
        git_cli(
            repo,
            &[
                "bundle",
                "create",
                "-q",
                thin.to_str().unwrap(),
                &format!("{c1}..refs/heads/support/engineering"),
            ],
        );
        assert_eq!(read_header(&thin).unwrap().prerequisites, [c1]);
        assert_eq!(w.receive(&thin).unwrap().after, Some(c3));
        git_cli(w.engineering.repo().path(), &["fsck", "--strict"]);
    }

    #[test]
    fn headers_ferry_cannot_read_are_refused_by_what_is_wrong() {
        let id = "0123456789abcdef0123456789abcdef01234567";
        let cases: &[(&str, &str)] = &[
            ("", "ends early"),
            ("# v4 git bundle\n\nPACK", "is not \"# v2 git bundle\""),
            ("# v2 git bundle\n\nPACK", "holds no ref"),
            (
                &format!("# v2 git bundle\n{id} refs/heads/a/b\nPACK"),
                "ends early",
            ),
            (
                "# v2 git bundle\n0123 refs/heads/a/b\n\n",
                "not a SHA-1 object id",
            ),
            (
                &format!("# v2 git bundle\n{id}\n\n"),
                "neither a prerequisite nor a ref",
            ),
            (
                &format!("# v2 git bundle\n@object-format=sha1\n{id} refs/heads/a/b\n\n"),
                "line 2: a capability in a v2 bundle is not supported",
            ),
            (
                &format!("# v3 git bundle\n@object-format=sha256\n{id} refs/heads/a/b\n\n"),
                "line 2: @object-format other than sha1",
            ),
            (
                &format!("# v3 git bundle\n@filter=blob:none\n{id} refs/heads/a/b\n\n"),
                "line 2: @filter (a partial bundle)",
            ),
        ];
        for (text, expected) in cases {
            let err = parse_header(&mut text.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
        // Nothing of the file is quoted back: it may be anything.
        for text in [
            "SECRET\n\n".to_string(),
            format!("# v2 git bundle\nSECRET {id}\n\n"),
            format!("# v2 git bundle\n-SECRET\n{id} refs/heads/a/b\n\n"),
            "# v2 git bundle\nSECRET\n\n".to_string(),
            format!("# v3 git bundle\n@SECRET\n{id} refs/heads/a/b\n\n"),
        ] {
            let err = parse_header(&mut text.as_bytes()).unwrap_err().to_string();
            assert!(!err.contains("SECRET"), "{text:?}: {err}");
        }
        assert_eq!(shown_ref("refs/heads/a\u{202E}b"), "refs/heads/a\\u{202e}b");
        assert_eq!(
            shown_ref("refs/heads/a b"),
            "a ref name git does not accept"
        );
        let good = format!(
            "# v3 git bundle\n@object-format=sha1\n-{id} a subject\n{id} refs/heads/a/b\n\nPACK"
        );
        let mut reader = good.as_bytes();
        let header = parse_header(&mut reader).unwrap();
        assert_eq!(header.prerequisites, [Oid::from_str(id).unwrap()]);
        assert_eq!(reader, b"PACK", "left at the pack");
    }

    #[test]
    fn git_fetches_a_thin_bundle_of_deltas() {
        let w = World::new();
        // Many replicas, so the project tree is big enough to be sent as a delta,
        // and a long one, so its edit is a delta too.
        let long = "word ".repeat(2000);
        let writes: Vec<FileWrite> = (0..300)
            .map(|i| FileWrite {
                path: format!("issues/SUP/{i}.yaml"),
                content: Some(crate::exchange::Content::Bytes(replica_yaml(
                    SUPPORT,
                    "SUP",
                    &i.to_string(),
                    &long,
                ))),
            })
            .collect();
        let branch = own_branch(SUPPORT, ENGINEERING);
        let c1 = w
            .support
            .commit(&branch, &writes, "many", SUPPORT)
            .unwrap()
            .unwrap();
        let c2 = w.export("7", &format!("{long} and one more"));
        let full = w.path("full.bundle");
        write(&w.support, &plan_of(c1, &[]), &full, &[]).unwrap();
        let thin = w.path("thin.bundle");
        write(&w.support, &plan_of(c2, &[c1]), &thin, &[]).unwrap();
        let size = std::fs::metadata(&thin).unwrap().len();
        assert!(size < 1500, "deltas, not whole objects: {size} bytes");

        git_cli(
            w.root.path(),
            &["clone", "-q", "--bare", full.to_str().unwrap(), "clone.git"],
        );
        let clone = w.path("clone.git");
        git_cli(&clone, &["bundle", "verify", "-q", thin.to_str().unwrap()]);
        git_cli(
            &clone,
            &[
                "fetch",
                "-q",
                thin.to_str().unwrap(),
                "support/engineering:support/engineering",
            ],
        );
        git_cli(&clone, &["fsck", "--strict"]);
        assert_eq!(
            git_cli(&clone, &["rev-parse", "support/engineering"]),
            c2.to_string()
        );
        assert_eq!(
            git_cli(&clone, &["show", "support/engineering:issues/SUP/7.yaml"]).into_bytes(),
            replica_yaml(SUPPORT, "SUP", "7", &format!("{long} and one more")).trim_ascii_end()
        );
        // And ferry's own reader completes it the same way.
        w.receive(&full).unwrap();
        assert_eq!(w.receive(&thin).unwrap().after, Some(c2));
        git_cli(w.engineering.repo().path(), &["fsck", "--strict"]);
    }

    #[test]
    fn abandoned_quarantines_are_removed_and_nothing_else() {
        let w = World::new();
        let repo = w.engineering.repo().path().to_path_buf();
        std::fs::create_dir_all(repo.join("ferry-quarantine-abc/pack")).unwrap();
        std::fs::write(repo.join("ferry-quarantine-abc/pack/pack-1.pack"), "x").unwrap();
        let removed = remove_quarantines(&w.engineering).unwrap();
        assert_eq!(removed, [repo.join("ferry-quarantine-abc")]);
        assert!(!repo.join("ferry-quarantine-abc").exists());
        assert!(repo.join("objects").is_dir() && repo.join("refs").is_dir());
        assert!(remove_quarantines(&w.engineering).unwrap().is_empty());
    }
}

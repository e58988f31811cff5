//! Indexing a pack a peer sent, within limits, without trusting libgit2's
//! delta resolution with it.
//!
//! libgit2's `Indexer` resolves deltas in rounds. When a round makes no
//! progress it takes the base of the first unresolved `REF_DELTA` from the
//! object database and tries again; when that base is present already it
//! tries again all the same. A delta whose result it cannot store (an object
//! the pack holds already, or a tree or commit it cannot parse) makes no
//! progress and is never dropped, so `commit()` spins for ever, allocating as
//! it goes. One replica changed and changed back within one bundle was enough:
//! the second version is the object the first delta's base is, taken from the
//! object database. git's own `index-pack` accepts such a pack.
//!
//! So a peer's pack is read here: every object is rebuilt from its deltas in
//! Rust, with a limit on the size of any object and on all the bytes inflated
//! and built together, and libgit2 is given a pack of whole objects, each
//! once, which it stores, checks (connectivity against the object database)
//! and indexes without resolving anything. Whole objects of the peer's pack are
//! copied byte for byte; only those built from deltas are compressed again.
//!
//! Bases are found as git's `index-pack --fix-thin` finds them: an offset
//! delta's earlier in the pack, a ref delta's anywhere in the pack (before or
//! after it, whole or itself built from a delta) or, failing that, in the
//! object database (a thin pack's base the reader has). A delta whose base is
//! neither, or is itself (directly or through others), is refused.
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use flate2::Compression;
use flate2::bufread::ZlibDecoder;
use git2::{ObjectType, Odb, Oid};
use sha1::{Digest, Sha1};

use super::{
    OBJ_OFS_DELTA, OBJ_REF_DELTA, deflate, object_header, object_type, pack_header, type_code,
};

/// How much work and memory a pack may ask of this site.
#[derive(Debug, Clone, Copy)]
pub struct PackLimits {
    /// The largest object, whole or built from a delta.
    pub object_bytes: u64,
    /// All bytes inflated or built from deltas, together: a delta of a few
    /// bytes may build an object of megabytes, and a pack may hold many.
    pub expanded_bytes: u64,
}

impl PackLimits {
    /// Limits for a pack of `pack_bytes` bytes from a channel whose files may
    /// be up to `max_bytes` each: no object larger than that, and no more
    /// expansion than a pack of text and trees plausibly needs.
    pub fn for_pack(pack_bytes: u64, max_bytes: u64) -> PackLimits {
        const EXPANSION: u64 = 64;
        const FLOOR: u64 = 256 << 20;
        PackLimits {
            object_bytes: max_bytes,
            expanded_bytes: pack_bytes.saturating_mul(EXPANSION).max(FLOOR),
        }
    }
}

/// Why a peer's pack was refused.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// The bytes are not a pack git could read.
    #[error("the pack is truncated or corrupt: {0}")]
    Malformed(String),
    /// The pack asks for more than [`PackLimits`] allow.
    #[error("the pack is too large to read: {0}")]
    TooLarge(String),
    /// Reading the pack or writing what it holds failed.
    #[error("{action}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The error.
        source: io::Error,
    },
    /// libgit2 refused the rebuilt pack (a tree or commit it cannot parse, an
    /// object the pack's trees name that neither it nor this site has).
    #[error("the pack is refused: {0}")]
    Git(#[from] git2::Error),
}

fn malformed(what: impl Into<String>) -> PackError {
    PackError::Malformed(what.into())
}

/// What an entry of the pack is.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// A whole object of this type.
    Whole(ObjectType),
    /// A delta against the entry at this offset.
    Offset(u64),
    /// A delta against the object of this id.
    Ref(Oid),
}

/// One entry of the pack, where it is: its header starts at `offset`, its
/// zlib stream at `data`, and the next entry at `end`.
#[derive(Debug)]
struct Entry {
    offset: u64,
    data: u64,
    end: u64,
    /// The inflated size the header declares.
    size: u64,
    kind: Kind,
}

/// Reads the pack at `pack`'s position to its end (a bundle file, past its
/// header) and stores its objects in `pack_dir` through libgit2's `Indexer`,
/// checking them against `odb`, which also lends a thin pack its bases.
pub fn index_from_peer(
    odb: &Odb<'_>,
    pack: &mut BufReader<File>,
    pack_dir: &Path,
    limits: PackLimits,
) -> Result<(), PackError> {
    let start = pack.stream_position().map_err(read_error)?;
    let mut budget = Budget {
        left: limits.expanded_bytes,
    };
    let (entries, oids) = scan(pack, limits, &mut budget)?;
    let mut source = Source {
        file: pack,
        start,
        limits,
    };
    let mut spool = Spool::new(pack_dir)?;
    resolve(&mut source, &entries, &oids, odb, &mut spool, &mut budget)?;
    spool.index(odb, pack_dir)
}

/// What is left of [`PackLimits::expanded_bytes`].
struct Budget {
    left: u64,
}

impl Budget {
    fn spend(&mut self, bytes: u64) -> Result<(), PackError> {
        self.left = self.left.checked_sub(bytes).ok_or_else(|| {
            PackError::TooLarge(
                "it expands to more bytes than this site will inflate for one pack".into(),
            )
        })?;
        Ok(())
    }
}

fn read_error(source: io::Error) -> PackError {
    PackError::Io {
        action: "reading the pack",
        source,
    }
}

/// A reader that counts and hashes what is consumed: entry offsets, and the
/// trailer, which is the SHA-1 of every byte before it.
struct Tracked<'a, R> {
    inner: &'a mut R,
    position: u64,
    hash: Sha1,
}

impl<R: BufRead> Read for Tracked<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Tracked<'_, R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, n: usize) {
        // The buffer is filled already: this returns it without reading.
        if let Ok(buffered) = self.inner.fill_buf() {
            self.hash.update(&buffered[..n.min(buffered.len())]);
        }
        self.position += n as u64;
        self.inner.consume(n);
    }
}

fn byte(r: &mut impl Read) -> Result<u8, PackError> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => malformed("it ends before its last object"),
        _ => read_error(e),
    })?;
    Ok(b[0])
}

/// Reads the pack once, front to back: its header, each entry's header and
/// zlib stream (whole objects hashed on the way), its trailer. Returns the
/// entries and the ids of the whole ones.
fn scan<R: BufRead>(
    pack: &mut R,
    limits: PackLimits,
    budget: &mut Budget,
) -> Result<(Vec<Entry>, HashMap<u64, Oid>), PackError> {
    let mut r = Tracked {
        inner: pack,
        position: 0,
        hash: Sha1::new(),
    };
    let mut head = [0u8; 12];
    r.read_exact(&mut head)
        .map_err(|_| malformed("it is shorter than a pack header"))?;
    if &head[..4] != b"PACK" || !matches!(head[4..8], [0, 0, 0, 2] | [0, 0, 0, 3]) {
        return Err(malformed(
            "it does not start with a version 2 or 3 pack header",
        ));
    }
    let count = u32::from_be_bytes([head[8], head[9], head[10], head[11]]);
    let mut entries: Vec<Entry> = Vec::new();
    let mut starts = HashSet::new();
    let mut oids = HashMap::new();
    for _ in 0..count {
        let offset = r.position;
        let first = byte(&mut r)?;
        let code = (first >> 4) & 7;
        let mut size = u64::from(first & 0x0f);
        let mut shift = 4;
        let mut c = first;
        while c & 0x80 != 0 {
            c = byte(&mut r)?;
            if shift > 57 {
                return Err(malformed(format!(
                    "the object at byte {offset} has a size too large to encode"
                )));
            }
            size |= u64::from(c & 0x7f) << shift;
            shift += 7;
        }
        if size > limits.object_bytes {
            return Err(PackError::TooLarge(format!(
                "the object at byte {offset} has {size} bytes, more than the {} an object may have",
                limits.object_bytes
            )));
        }
        let kind = match code {
            OBJ_OFS_DELTA => {
                let mut c = byte(&mut r)?;
                let mut back = u64::from(c & 0x7f);
                while c & 0x80 != 0 {
                    c = byte(&mut r)?;
                    back = back
                        .checked_add(1)
                        .and_then(|b| b.checked_mul(128))
                        .map(|b| b | u64::from(c & 0x7f))
                        .ok_or_else(|| {
                            malformed(format!(
                                "the delta at byte {offset} names a base too far back"
                            ))
                        })?;
                }
                let base = offset
                    .checked_sub(back)
                    .filter(|base| back > 0 && starts.contains(base))
                    .ok_or_else(|| {
                        malformed(format!(
                            "the delta at byte {offset} names a base where no object starts"
                        ))
                    })?;
                Kind::Offset(base)
            }
            OBJ_REF_DELTA => {
                let mut id = [0u8; 20];
                r.read_exact(&mut id)
                    .map_err(|_| malformed("it ends before its last object"))?;
                Kind::Ref(Oid::from_bytes(&id)?)
            }
            other => Kind::Whole(object_type(other).ok_or_else(|| {
                malformed(format!(
                    "the object at byte {offset} has the unknown type {other}"
                ))
            })?),
        };
        let data = r.position;
        let mut hash = match kind {
            Kind::Whole(kind) => {
                let mut hash = Sha1::new();
                hash.update(format!("{} {size}\0", kind.str()).as_bytes());
                Some(hash)
            }
            _ => None,
        };
        inflate(&mut r, offset, size, budget, |bytes| {
            if let Some(hash) = &mut hash {
                hash.update(bytes);
            }
        })?;
        if let Some(hash) = hash {
            oids.insert(offset, Oid::from_bytes(&hash.finalize())?);
        }
        starts.insert(offset);
        entries.push(Entry {
            offset,
            data,
            end: r.position,
            size,
            kind,
        });
    }
    let digest = r.hash.clone().finalize();
    let mut trailer = [0u8; 20];
    r.read_exact(&mut trailer)
        .map_err(|_| malformed("it ends before its checksum"))?;
    if trailer[..] != digest[..] {
        return Err(malformed(
            "its checksum does not match its content (damaged or altered)",
        ));
    }
    if !r.fill_buf().map_err(read_error)?.is_empty() {
        return Err(malformed("bytes follow its checksum"));
    }
    Ok((entries, oids))
}

/// Inflates the zlib stream at `r`'s position, which must give exactly `size`
/// bytes, handing them to `sink` a piece at a time.
fn inflate<R: BufRead>(
    r: &mut R,
    offset: u64,
    size: u64,
    budget: &mut Budget,
    mut sink: impl FnMut(&[u8]),
) -> Result<(), PackError> {
    let mut decoder = ZlibDecoder::new(r);
    let mut buf = [0u8; 1 << 14];
    let mut total = 0u64;
    loop {
        let n = decoder
            .read(&mut buf)
            .map_err(|e| malformed(format!("the object at byte {offset} does not inflate: {e}")))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > size {
            return Err(malformed(format!(
                "the object at byte {offset} inflates to more than the {size} bytes it declares"
            )));
        }
        budget.spend(n as u64)?;
        sink(&buf[..n]);
    }
    if total != size {
        return Err(malformed(format!(
            "the object at byte {offset} inflates to {total} bytes, not the {size} it declares"
        )));
    }
    Ok(())
}

/// The pack's file, read again where [`resolve`] needs an entry's bytes.
struct Source<'a> {
    file: &'a mut BufReader<File>,
    start: u64,
    limits: PackLimits,
}

impl Source<'_> {
    fn seek(&mut self, at: u64) -> Result<(), PackError> {
        self.file
            .seek(SeekFrom::Start(self.start + at))
            .map_err(read_error)?;
        Ok(())
    }

    fn inflated(&mut self, entry: &Entry, budget: &mut Budget) -> Result<Vec<u8>, PackError> {
        self.seek(entry.data)?;
        // The size was checked against the limit in `scan`.
        let mut out = Vec::with_capacity(entry.size as usize);
        inflate(&mut *self.file, entry.offset, entry.size, budget, |bytes| {
            out.extend_from_slice(bytes)
        })?;
        Ok(out)
    }

    fn raw(&mut self, entry: &Entry, out: &mut impl Write) -> Result<(), PackError> {
        self.seek(entry.offset)?;
        let mut take = (&mut *self.file).take(entry.end - entry.offset);
        io::copy(&mut take, out).map_err(read_error)?;
        Ok(())
    }
}

/// An object whose deltas are being applied: its content and the entries
/// still to build from it.
struct Frame {
    kind: ObjectType,
    content: Vec<u8>,
    children: Vec<usize>,
}

/// Rebuilds every object of the pack, depth first from each base, and writes
/// each (once) to `spool`.
fn resolve(
    source: &mut Source<'_>,
    entries: &[Entry],
    oids: &HashMap<u64, Oid>,
    odb: &Odb<'_>,
    spool: &mut Spool,
    budget: &mut Budget,
) -> Result<(), PackError> {
    let index_of: HashMap<u64, usize> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.offset, i))
        .collect();
    let mut graph = Graph::default();
    for (i, entry) in entries.iter().enumerate() {
        match entry.kind {
            Kind::Offset(base) => graph.by_offset.entry(index_of[&base]).or_default().push(i),
            Kind::Ref(base) => graph.by_id.entry(base).or_default().push(i),
            Kind::Whole(_) => {}
        }
    }
    let mut resolver = Resolver {
        source,
        entries,
        spool,
        budget,
        graph,
        held: 0,
        resolved: 0,
    };
    for (i, entry) in entries.iter().enumerate() {
        let Kind::Whole(kind) = entry.kind else {
            continue;
        };
        let oid = oids[&entry.offset];
        resolver.resolved += 1;
        if resolver.spool.seen.insert(oid) {
            resolver.spool.copy(resolver.source, entry)?;
        }
        let children = resolver.graph.children(Some(i), oid);
        if !children.is_empty() {
            let content = resolver.source.inflated(entry, resolver.budget)?;
            resolver.build(kind, content, children)?;
        }
    }
    // Bases the pack lacks: a thin pack's, which this site must have. One may
    // be needed only once others are built, so look until none is found.
    loop {
        let thin: Vec<Oid> = resolver
            .graph
            .by_id
            .keys()
            .copied()
            .filter(|id| odb.exists(*id))
            .collect();
        if thin.is_empty() {
            break;
        }
        for id in thin {
            let children = resolver.graph.children(None, id);
            let (size, kind) = odb.read_header(id)?;
            if size as u64 > resolver.source.limits.object_bytes {
                return Err(PackError::TooLarge(format!(
                    "a delta's base, {id}, is larger than an object may be"
                )));
            }
            let object = odb.read(id)?;
            resolver.build(kind, object.data().to_vec(), children)?;
        }
    }
    let unresolved = entries.len() - resolver.resolved;
    if unresolved > 0 {
        let example = resolver
            .graph
            .by_id
            .keys()
            .next()
            .map_or_else(String::new, |id| format!(", such as {id}"));
        return Err(malformed(format!(
            "{unresolved} of its deltas have a base that is neither in the pack nor at this site{example}"
        )));
    }
    Ok(())
}

/// Which entries are deltas against which: by the index of an entry (offset
/// deltas) and by an object id (ref deltas).
#[derive(Default)]
struct Graph {
    by_offset: HashMap<usize, Vec<usize>>,
    by_id: HashMap<Oid, Vec<usize>>,
}

impl Graph {
    /// The deltas to build on the object `oid`, read from entry `entry`
    /// (`None` for a base the site has). Each delta is handed out once: an id
    /// the pack holds twice has its ref deltas built on the first.
    fn children(&mut self, entry: Option<usize>, oid: Oid) -> Vec<usize> {
        let mut children = entry
            .and_then(|i| self.by_offset.remove(&i))
            .unwrap_or_default();
        children.extend(self.by_id.remove(&oid).unwrap_or_default());
        children
    }
}

struct Resolver<'a, 'f> {
    source: &'a mut Source<'f>,
    entries: &'a [Entry],
    spool: &'a mut Spool,
    budget: &'a mut Budget,
    graph: Graph,
    /// Bytes of the objects on the stack of [`Resolver::build`].
    held: u64,
    /// Entries built (or read whole) so far.
    resolved: usize,
}

impl Resolver<'_, '_> {
    /// Applies to `content` the deltas in `children`, and to each result the
    /// deltas built on it, depth first with a stack (a chain may be as long as
    /// the pack).
    fn build(
        &mut self,
        kind: ObjectType,
        content: Vec<u8>,
        children: Vec<usize>,
    ) -> Result<(), PackError> {
        let limits = self.source.limits;
        self.held += content.len() as u64;
        let mut stack = vec![Frame {
            kind,
            content,
            children,
        }];
        while let Some(frame) = stack.last_mut() {
            let Some(i) = frame.children.pop() else {
                self.held -= frame.content.len() as u64;
                stack.pop();
                continue;
            };
            let entry = &self.entries[i];
            let delta = self.source.inflated(entry, self.budget)?;
            let content = apply(&frame.content, &delta, limits.object_bytes)
                .map_err(|why| malformed(format!("the delta at byte {}: {why}", entry.offset)))?;
            self.budget.spend(content.len() as u64)?;
            let kind = frame.kind;
            let oid = Oid::hash_object(kind, &content)?;
            self.resolved += 1;
            if self.spool.seen.insert(oid) {
                self.spool.write(kind, &content)?;
            }
            let children = self.graph.children(Some(i), oid);
            if !children.is_empty() {
                self.held += content.len() as u64;
                if self.held > limits.object_bytes {
                    return Err(PackError::TooLarge(
                        "its chains of deltas need more memory at once than an object may have"
                            .into(),
                    ));
                }
                stack.push(Frame {
                    kind,
                    content,
                    children,
                });
            }
        }
        Ok(())
    }
}

/// Reads a size of a delta's header: 7 bits a byte, low bits first.
fn delta_size(delta: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut n = 0u64;
    let mut shift = 0;
    loop {
        let b = *delta.get(*at).ok_or("it ends inside its header")?;
        *at += 1;
        if shift > 63 {
            return Err("its header holds a size too large".into());
        }
        n |= u64::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Ok(n);
        }
    }
}

/// Builds the object `delta` describes from `base` (gitformat-pack, "Deltified
/// representation"), refusing any instruction that reads outside the base or
/// the delta or writes past the size the delta declares.
pub(super) fn apply(base: &[u8], delta: &[u8], max: u64) -> Result<Vec<u8>, String> {
    let mut at = 0;
    let base_size = delta_size(delta, &mut at)?;
    if base_size != base.len() as u64 {
        return Err(format!(
            "it is for a base of {base_size} bytes, and its base has {}",
            base.len()
        ));
    }
    let size = delta_size(delta, &mut at)?;
    if size > max {
        return Err(format!(
            "it builds {size} bytes, more than an object may have"
        ));
    }
    let size = size as usize;
    let mut out = Vec::with_capacity(size);
    while at < delta.len() {
        let op = delta[at];
        at += 1;
        let piece = if op & 0x80 != 0 {
            let mut arg = |bits: u32, first_bit: u32| -> Result<usize, String> {
                let mut n = 0usize;
                for bit in 0..bits {
                    if op & (1 << (first_bit + bit)) != 0 {
                        let b = *delta.get(at).ok_or("it ends inside an instruction")?;
                        at += 1;
                        n |= usize::from(b) << (8 * bit);
                    }
                }
                Ok(n)
            };
            let offset = arg(4, 0)?;
            let len = match arg(3, 4)? {
                0 => 0x10000,
                len => len,
            };
            base.get(offset..offset.saturating_add(len))
                .ok_or("it copies from outside its base")?
        } else if op == 0 {
            return Err("it holds the reserved instruction 0".into());
        } else {
            let len = usize::from(op);
            let piece = delta
                .get(at..at + len)
                .ok_or("it ends inside an instruction")?;
            at += len;
            piece
        };
        if out.len() + piece.len() > size {
            return Err(format!("it builds more than the {size} bytes it declares"));
        }
        out.extend_from_slice(piece);
    }
    if out.len() != size {
        return Err(format!(
            "it builds {} bytes, not the {size} it declares",
            out.len()
        ));
    }
    Ok(out)
}

/// The rebuilt pack's entries, in a temporary file until their number (the
/// pack header's) is known.
struct Spool {
    file: io::BufWriter<File>,
    count: u32,
    seen: HashSet<Oid>,
}

impl Spool {
    fn new(dir: &Path) -> Result<Spool, PackError> {
        let file = tempfile::tempfile_in(dir).map_err(|source| PackError::Io {
            action: "creating a temporary file for the pack",
            source,
        })?;
        Ok(Spool {
            file: io::BufWriter::with_capacity(1 << 16, file),
            count: 0,
            seen: HashSet::new(),
        })
    }

    fn counted(&mut self) -> Result<(), PackError> {
        self.count = self
            .count
            .checked_add(1)
            .ok_or_else(|| PackError::TooLarge("too many objects".into()))?;
        Ok(())
    }

    fn copy(&mut self, source: &mut Source<'_>, entry: &Entry) -> Result<(), PackError> {
        source.raw(entry, &mut self.file)?;
        self.counted()
    }

    fn write(&mut self, kind: ObjectType, content: &[u8]) -> Result<(), PackError> {
        let mut header = Vec::with_capacity(16);
        object_header(&mut header, type_code(kind), content.len());
        self.file.write_all(&header).map_err(write_error)?;
        deflate(&mut self.file, content, Compression::fast())?;
        self.counted()
    }

    /// Streams header, entries and trailer into libgit2's `Indexer`, which
    /// writes the pack and its index into `pack_dir`.
    fn index(self, odb: &Odb<'_>, pack_dir: &Path) -> Result<(), PackError> {
        if self.count == 0 {
            return Ok(());
        }
        let mut file = self
            .file
            .into_inner()
            .map_err(|e| write_error(e.into_error()))?;
        file.seek(SeekFrom::Start(0)).map_err(write_error)?;
        // verify = true: trees and commits are parsed and what they name must
        // be in the pack or at this site. No entry is a delta, so the
        // indexer resolves nothing.
        let mut indexer = git2::Indexer::new(Some(odb), pack_dir, 0o444, true)?;
        let mut hash = Sha1::new();
        let head = pack_header(self.count);
        hash.update(head);
        indexer.write_all(&head).map_err(write_error)?;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = file.read(&mut buf).map_err(write_error)?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
            indexer.write_all(&buf[..n]).map_err(write_error)?;
        }
        indexer.write_all(&hash.finalize()).map_err(write_error)?;
        indexer.commit()?;
        Ok(())
    }
}

fn write_error(source: io::Error) -> PackError {
    PackError::Io {
        action: "writing the pack's objects",
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use git2::Repository;

    /// One entry of a hand-made pack.
    enum Make<'a> {
        Whole(ObjectType, &'a [u8]),
        Ref(Oid, Vec<u8>),
        /// A delta against the entry that many entries back (1: the one before).
        Offset(usize, Vec<u8>),
    }

    /// A pack of `entries`, with a correct trailer.
    fn pack(entries: &[Make<'_>]) -> Vec<u8> {
        let mut out = pack_header(entries.len() as u32).to_vec();
        let mut starts = Vec::new();
        for entry in entries {
            starts.push(out.len());
            let data: &[u8] = match entry {
                Make::Whole(kind, data) => {
                    object_header(&mut out, type_code(*kind), data.len());
                    data
                }
                Make::Ref(base, delta) => {
                    object_header(&mut out, OBJ_REF_DELTA, delta.len());
                    out.extend_from_slice(base.as_bytes());
                    delta
                }
                Make::Offset(back, delta) => {
                    object_header(&mut out, OBJ_OFS_DELTA, delta.len());
                    let base = starts[starts.len() - 1 - back];
                    let mut distance = (starts[starts.len() - 1] - base) as u64;
                    let mut bytes = vec![(distance & 0x7f) as u8];
                    distance >>= 7;
                    while distance > 0 {
                        distance -= 1;
                        bytes.push(0x80 | (distance & 0x7f) as u8);
                        distance >>= 7;
                    }
                    bytes.reverse();
                    out.extend_from_slice(&bytes);
                    delta
                }
            };
            deflate(&mut out, data, Compression::default()).unwrap();
        }
        let digest = Sha1::digest(&out);
        out.extend_from_slice(&digest);
        out
    }

    /// A delta that builds `target` from `base` by inserting it whole, after
    /// copying `copy` (offset, length) of the base.
    fn delta(base: &[u8], copy: Option<(u8, u8)>, target: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        super::super::varint(&mut out, base.len());
        let copied = copy.map_or(0, |(_, len)| usize::from(len));
        super::super::varint(&mut out, copied + target.len());
        if let Some((offset, len)) = copy {
            out.extend_from_slice(&[0x80 | 0x01 | 0x10, offset, len]);
        }
        for chunk in target.chunks(0x7f) {
            out.push(chunk.len() as u8);
            out.extend_from_slice(chunk);
        }
        out
    }

    fn blob_id(data: &[u8]) -> Oid {
        Oid::hash_object(ObjectType::Blob, data).unwrap()
    }

    struct Site {
        _dir: tempfile::TempDir,
        repo: Repository,
    }

    fn site(blobs: &[&[u8]]) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        for blob in blobs {
            repo.blob(blob).unwrap();
        }
        Site { _dir: dir, repo }
    }

    const ROOMY: PackLimits = PackLimits {
        object_bytes: 1 << 20,
        expanded_bytes: 16 << 20,
    };

    fn index(site: &Site, bytes: &[u8], limits: PackLimits) -> Result<(), PackError> {
        let file_dir = tempfile::tempdir().unwrap();
        let path = file_dir.path().join("pack");
        std::fs::write(&path, bytes).unwrap();
        let mut reader = BufReader::new(File::open(&path).unwrap());
        let odb = site.repo.odb().unwrap();
        index_from_peer(
            &odb,
            &mut reader,
            &site.repo.path().join("objects/pack"),
            limits,
        )
    }

    fn has(site: &Site, oid: Oid) -> bool {
        Repository::open_bare(site.repo.path())
            .unwrap()
            .odb()
            .unwrap()
            .exists(oid)
    }

    /// The pack that made libgit2's `Indexer` loop for ever: a blob the site
    /// has is the base of a change, and the change is changed back.
    #[test]
    fn an_object_changed_and_changed_back_is_stored_once() {
        let (old, new) = (
            b"status: Open\n".as_slice(),
            b"status: Open\nlinks: 2\n".as_slice(),
        );
        let site = site(&[old]);
        let bytes = pack(&[
            Make::Ref(blob_id(old), delta(old, Some((0, 13)), b"links: 2\n")),
            Make::Ref(blob_id(new), delta(new, Some((0, 13)), b"")),
        ]);
        index(&site, &bytes, ROOMY).unwrap();
        assert!(has(&site, blob_id(new)));
    }

    /// git's `index-pack` takes these; so does ferry, storing each object once.
    #[test]
    fn objects_sent_twice_and_bases_sent_after_their_deltas_are_taken() {
        let site = site(&[]);
        let (a, b) = (
            b"first version\n".as_slice(),
            b"first version\nand more\n".as_slice(),
        );
        let bytes = pack(&[
            Make::Ref(blob_id(a), delta(a, Some((0, 14)), b"and more\n")),
            Make::Whole(ObjectType::Blob, a),
            Make::Whole(ObjectType::Blob, a),
            Make::Offset(1, delta(a, Some((0, 14)), b"")),
            Make::Offset(4, delta(b, Some((0, 14)), b"and more\n")),
        ]);
        index(&site, &bytes, ROOMY).unwrap();
        assert!(has(&site, blob_id(a)) && has(&site, blob_id(b)));
    }

    fn refused(site: &Site, bytes: &[u8], limits: PackLimits, why: &str) {
        let error = index(site, bytes, limits).unwrap_err().to_string();
        assert!(error.contains(why), "{error}");
    }

    #[test]
    fn deltas_on_themselves_on_each_other_or_on_nothing_are_refused() {
        let site = site(&[]);
        let (a, b) = (b"a\n".as_slice(), b"b\n".as_slice());
        let neither = "have a base that is neither in the pack nor at this site";
        refused(
            &site,
            &pack(&[Make::Ref(blob_id(a), delta(a, None, a))]),
            ROOMY,
            neither,
        );
        let cycle = pack(&[
            Make::Ref(blob_id(b), delta(b, None, a)),
            Make::Ref(blob_id(a), delta(a, None, b)),
        ]);
        refused(&site, &cycle, ROOMY, neither);
        let nowhere = pack(&[Make::Ref(
            blob_id(b"elsewhere"),
            delta(b"elsewhere", None, a),
        )]);
        refused(&site, &nowhere, ROOMY, neither);
    }

    #[test]
    fn deltas_that_read_or_write_out_of_bounds_are_refused() {
        let base = b"0123456789".as_slice();
        let site = site(&[base]);
        let outside = pack(&[Make::Ref(blob_id(base), delta(base, Some((8, 4)), b""))]);
        refused(&site, &outside, ROOMY, "it copies from outside its base");
        let mut long = delta(base, None, b"xy");
        long.extend_from_slice(&[1, b'z']);
        refused(
            &site,
            &pack(&[Make::Ref(blob_id(base), long)]),
            ROOMY,
            "it builds more than the 2 bytes it declares",
        );
        let mut cut = delta(base, None, b"xyz");
        cut.truncate(cut.len() - 1);
        refused(
            &site,
            &pack(&[Make::Ref(blob_id(base), cut)]),
            ROOMY,
            "it ends inside an instruction",
        );
        let wrong_base = delta(b"another length", None, b"x");
        refused(
            &site,
            &pack(&[Make::Ref(blob_id(base), wrong_base)]),
            ROOMY,
            "its base has 10",
        );
    }

    #[test]
    fn objects_and_expansions_beyond_the_limits_are_refused() {
        let site = site(&[]);
        let big = vec![b'x'; 4096];
        let small = PackLimits {
            object_bytes: 1000,
            expanded_bytes: 1 << 20,
        };
        let whole = pack(&[Make::Whole(ObjectType::Blob, &big)]);
        refused(
            &site,
            &whole,
            small,
            "more than the 1000 an object may have",
        );

        // Each delta builds 4 KB from a copy instruction of 3 bytes: 300 of
        // them are 1.2 MB built from a pack of a few KB.
        let mut copies = Vec::new();
        super::super::varint(&mut copies, big.len());
        super::super::varint(&mut copies, big.len());
        copies.extend_from_slice(&[0x80 | 0x20, 0x10]);
        let mut entries = vec![Make::Whole(ObjectType::Blob, &big)];
        entries.extend((0..300).map(|_| Make::Ref(blob_id(&big), copies.clone())));
        let bomb = pack(&entries);
        let tight = PackLimits {
            object_bytes: 1 << 20,
            expanded_bytes: 1 << 20,
        };
        refused(
            &site,
            &bomb,
            tight,
            "more bytes than this site will inflate",
        );
        index(&site, &bomb, ROOMY).unwrap();
    }

    #[test]
    fn damaged_packs_are_refused() {
        let site = site(&[]);
        let good = pack(&[
            Make::Whole(ObjectType::Blob, b"one\n"),
            Make::Whole(ObjectType::Blob, b"two\n"),
        ]);
        let mut trailing = good.clone();
        trailing.push(0);
        refused(&site, &trailing, ROOMY, "bytes follow its checksum");
        let mut flipped = good.clone();
        flipped[good.len() - 21] ^= 1;
        refused(&site, &flipped, ROOMY, "truncated or corrupt");
        refused(
            &site,
            &good[..good.len() - 25],
            ROOMY,
            "truncated or corrupt",
        );
        let mut more = good.clone();
        more[11] = 3;
        refused(&site, &more, ROOMY, "truncated or corrupt");
        index(&site, &good, ROOMY).unwrap();

        // An offset delta must name where an earlier object starts.
        let mut bytes = pack(&[
            Make::Whole(ObjectType::Blob, b"one\n"),
            Make::Offset(1, delta(b"one\n", None, b"x")),
        ]);
        let second = pack(&[Make::Whole(ObjectType::Blob, b"one\n")]).len() - 20;
        assert_eq!(bytes[second] >> 4 & 7, OBJ_OFS_DELTA);
        bytes[second + 1] += 1;
        let body = bytes.len() - 20;
        let digest = Sha1::digest(&bytes[..body]);
        bytes[body..].copy_from_slice(&digest);
        refused(&site, &bytes, ROOMY, "names a base where no object starts");
    }

    /// A tree whose entries are nowhere is refused by libgit2's connectivity
    /// check, and a tree built from a delta that does not parse by its parser:
    /// errors, not a loop.
    #[test]
    fn trees_that_name_missing_objects_or_do_not_parse_are_refused() {
        let site = site(&[]);
        let mut tree = b"100644 a.yaml\0".to_vec();
        tree.extend_from_slice(blob_id(b"nowhere").as_bytes());
        let error = index(&site, &pack(&[Make::Whole(ObjectType::Tree, &tree)]), ROOMY);
        assert!(error.unwrap_err().to_string().contains("missing"));
        let empty_tree = site.repo.treebuilder(None).unwrap().write().unwrap();
        let garbage = pack(&[Make::Ref(empty_tree, delta(b"", None, b"garbage"))]);
        assert!(index(&site, &garbage, ROOMY).is_err());
    }
}

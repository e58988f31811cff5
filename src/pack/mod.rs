//! Thin packs, so an incremental bundle is proportional to the change.
//!
//! libgit2's `PackBuilder` only deltas an object against others in the same pack.
//! An incremental bundle would then carry every tree on a changed path whole: with
//! a thousand replicas in one project the `issues/<project>` tree alone is some
//! 36 KB, whatever changed. git writes bundles with `pack-objects --thin` instead:
//! an object may be a delta against one the reader already has (a prerequisite's),
//! and the reader completes the pack (`index-pack --fix-thin`; libgit2's `Indexer`
//! given the odb). This module writes such a pack for `base..tip`: each new tree
//! or blob is a delta against the object at the same path in its commit's
//! parent when that is smaller, commits and everything else are stored whole.
//! It finds those objects by comparing trees by id, so its cost is that of the
//! change; the folder channel of [`crate::transport::remote`] sends its pushes and fetches
//! with it too.
//!
//! The pack format (version 2) and the delta encoding are git's
//! (`gitformat-pack`): object headers with a type and a varint size, zlib
//! streams, `REF_DELTA` entries naming their base by id, a SHA-1 trailer.
//!
//! A pack from a peer is read by [`index::index_from_peer`], not handed to
//! libgit2's `Indexer` as it came.
pub mod index;

use std::collections::{HashMap, HashSet};
use std::io::Write;

use flate2::Compression;
use flate2::write::ZlibEncoder;
use git2::{ObjectType, Odb, Oid, Repository, Sort};
use sha1::{Digest, Sha1};

/// Pack entry types (gitformat-pack).
const OBJ_COMMIT: u8 = 1;
pub(crate) const OBJ_TREE: u8 = 2;
pub(crate) const OBJ_BLOB: u8 = 3;
const OBJ_TAG: u8 = 4;
const OBJ_OFS_DELTA: u8 = 6;
const OBJ_REF_DELTA: u8 = 7;

/// The pack entry type of a whole object.
pub(crate) fn type_code(kind: ObjectType) -> u8 {
    match kind {
        ObjectType::Commit => OBJ_COMMIT,
        ObjectType::Tree => OBJ_TREE,
        ObjectType::Blob => OBJ_BLOB,
        _ => OBJ_TAG,
    }
}

/// The object a whole entry's type stands for; `None` for a delta or an
/// unknown type.
fn object_type(code: u8) -> Option<ObjectType> {
    match code {
        OBJ_COMMIT => Some(ObjectType::Commit),
        OBJ_TREE => Some(ObjectType::Tree),
        OBJ_BLOB => Some(ObjectType::Blob),
        OBJ_TAG => Some(ObjectType::Tag),
        _ => None,
    }
}

/// The largest copy one delta instruction encodes here (git's own writer's limit).
const MAX_COPY: usize = 0x10000;
/// The largest literal one insert instruction carries.
const MAX_INSERT: usize = 0x7f;

/// One object to write: what it is, not its content, which is read from the
/// object database only when it is written (a pack may hold attachment content
/// far larger than memory should).
pub(crate) struct Entry {
    kind: u8,
    pub(crate) oid: Oid,
    /// Written as a delta against this object the reader has, when that pays.
    base: Option<Oid>,
    /// The object's bytes when they were read already (trees).
    data: Option<Vec<u8>>,
}

/// Writes a thin pack of every object reachable from `tip` and not from `base`
/// into `out`, one object at a time (see `new_objects`).
pub fn write_thin(
    repo: &Repository,
    base: Oid,
    tip: Oid,
    out: &mut dyn Write,
) -> Result<(), git2::Error> {
    let levels = Levels {
        trees: Compression::default(),
        others: Compression::default(),
    };
    let mut entries = new_objects(repo, &[base], tip)?;
    drop_thin_bases(&mut entries);
    encode(repo, &entries, levels, out)
}

/// Leaves out of a thin pack every object the reader is lent as a base: an
/// entry's base that no earlier entry sends is one the reader has (see
/// [`new_objects`]), and when a later entry sends that object again (a replica
/// changed and changed back within one bundle), a reader completing the pack
/// from its own objects meets it twice. libgit2's `Indexer`, which older ferry
/// reads bundles with, loops for ever on that.
fn drop_thin_bases(entries: &mut Vec<Entry>) {
    let mut sent = HashSet::new();
    let mut lent = HashSet::new();
    for entry in entries.iter() {
        if let Some(base) = entry.base
            && !sent.contains(&base)
        {
            lent.insert(base);
        }
        sent.insert(entry.oid);
    }
    entries.retain(|e| !lent.contains(&e.oid));
}

/// How hard the objects of a pack are compressed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Levels {
    /// Trees (and deltas of trees).
    pub trees: Compression,
    /// Everything else.
    pub others: Compression,
}

/// Who wrote the objects a [`send`] copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// This site's own repository: every object sent is read from it, and what
    /// is not sent is in the receiver's history already, so the receiver does
    /// not look up every entry of every tree sent (some 63 000 lookups for 100
    /// changed replicas at 100 000 issues, a quarter of a push).
    Own,
    /// A folder others write too: the receiver checks that every object the
    /// pack's trees and commits name is present.
    Shared,
}

/// Copies what `to` needs of `tip`'s history from `from`, two repositories on
/// this machine: a pack of the objects reachable from `tip` and not from
/// `haves` (commits both repositories hold; see [`new_objects`]), indexed into
/// `to`'s object database by libgit2's `Indexer`, which names each object by
/// hashing its content.
///
/// Nothing is copied when `to` has `tip` already. The pack appears in `to` at
/// once when indexed (a temporary file until then), so a copy killed half-way
/// leaves `to` as it was, but for that file; no ref moves here.
pub(crate) fn send(
    from: &Repository,
    haves: &[Oid],
    tip: Oid,
    to: &Repository,
    source: Source,
) -> Result<(), git2::Error> {
    let to_odb = to.odb()?;
    if to_odb.exists(tip) {
        return Ok(());
    }
    let from_odb = from.odb()?;
    let haves: Vec<Oid> = haves
        .iter()
        .filter_map(|&have| shared_ancestor(to, &from_odb, have))
        .collect();
    let mut entries = new_objects(from, &haves, tip)?;
    for entry in &mut entries {
        entry.base = None;
    }
    let verify = source == Source::Shared;
    let mut indexer = git2::Indexer::new(
        Some(&to_odb),
        &to.path().join("objects/pack"),
        0o444,
        verify,
    )?;
    {
        let mut out = std::io::BufWriter::with_capacity(1 << 16, &mut indexer);
        // A copy between folders of this machine is bound by CPU, not by bytes.
        // A project tree of a large site is mostly 20-byte ids: zlib shrinks
        // 38 KB to 24 KB at best, and compressing the changed trees cost more
        // than the rest of the transfer; stored, they also read back without
        // inflating. Replicas are text and compress well, quickly at level 1.
        let levels = Levels {
            trees: Compression::none(),
            others: Compression::fast(),
        };
        encode(from, &entries, levels, &mut out)?;
        out.flush().map_err(io_error)?;
    }
    indexer.commit()?;
    Ok(())
}

/// `have` (a commit of `to`), or the nearest of its first-parent ancestors that
/// `from` holds too, looking a few commits back: after a push was rejected,
/// `to`'s tip is new to the channel but its parent usually is not.
fn shared_ancestor(to: &Repository, from_odb: &Odb<'_>, have: Oid) -> Option<Oid> {
    const LOOK_BACK: usize = 32;
    let mut at = have;
    for _ in 0..LOOK_BACK {
        if from_odb.exists(at) {
            return Some(at);
        }
        at = to.find_commit(at).ok()?.parent_id(0).ok()?;
    }
    None
}

/// The objects reachable from `tip` and not from `haves`, as pack entries in
/// an order a reader can index (commits before their trees, parents first).
///
/// A reader is assumed to have everything reachable from each of `haves`. Each
/// new commit's tree is compared with its first parent's side by side, and only
/// where ids differ is a subtree read: trees are content-addressed, so an equal
/// id means an equal subtree, which the reader has or is sent with the parent.
/// The cost is that of the change, not of the tree (a walk of a whole
/// 100 000-replica tree to list what the reader has would be the cost of the
/// site). An object equal to one elsewhere in the reader's trees is sent again,
/// which is harmless. Each tree and blob names the object at the same path in
/// the parent's tree as its delta base: the reader has it, or it comes earlier
/// in the same pack.
pub(crate) fn new_objects(
    repo: &Repository,
    haves: &[Oid],
    tip: Oid,
) -> Result<Vec<Entry>, git2::Error> {
    let odb = repo.odb()?;
    let mut walk = repo.revwalk()?;
    walk.set_sorting(Sort::TOPOLOGICAL | Sort::REVERSE)?;
    walk.push(tip)?;
    for have in haves {
        walk.hide(*have)?;
    }
    let mut sent = HashSet::new();
    let mut entries = Vec::new();
    for commit in walk {
        let commit = repo.find_commit(commit?)?;
        entries.push(Entry {
            kind: OBJ_COMMIT,
            oid: commit.id(),
            base: None,
            data: None,
        });
        let old = match commit.parent_ids().next() {
            Some(parent) => Some(repo.find_commit(parent)?.tree_id()),
            None => None,
        };
        collect_tree(&odb, commit.tree_id(), old, &mut sent, &mut entries)?;
    }
    Ok(entries)
}

/// Adds the tree `oid` and what below it differs from `old` (the tree at the
/// same path in the parent), each with the object at the same path in `old` as
/// delta base candidate; subtrees equal to their counterpart in `old` are not
/// read.
///
/// Trees are read raw from the object database, once each: their bytes are
/// kept for the pack, and a project tree of a large site (some 40 KB) is too
/// large for libgit2's object cache, so reading it as a `Tree` and again for
/// the pack would inflate and hash it twice.
fn collect_tree(
    odb: &Odb<'_>,
    oid: Oid,
    old: Option<Oid>,
    sent: &mut HashSet<Oid>,
    entries: &mut Vec<Entry>,
) -> Result<(), git2::Error> {
    if old == Some(oid) || !sent.insert(oid) {
        return Ok(());
    }
    let data = odb.read(oid)?.data().to_vec();
    let old_data = match old {
        Some(old) => Some((old, odb.read(old)?.data().to_vec())),
        None => None,
    };
    let mut old_entries = match &old_data {
        Some((old, bytes)) => tree_entries(bytes, *old)?.collect(),
        None => Vec::new(),
    }
    .into_iter()
    .peekable();
    let mut below = Vec::new();
    for (mode, name, id) in tree_entries(&data, oid)? {
        // Both trees are in git's order, so the entry of the same name in `old`
        // is found walking along (a tree out of order only costs objects sent
        // again: an entry is skipped only when `old` has the same name and id).
        let key = || order_key(name, mode);
        while old_entries
            .next_if(|&(m, n, _)| order_key(n, m).lt(key()))
            .is_some()
        {}
        let old_entry = old_entries
            .next_if(|&(m, n, _)| order_key(n, m).eq(key()))
            .map(|(m, _, id)| (m, id));
        let old_kind = old_entry.map(|(mode, _)| mode_kind(mode));
        if old_entry.is_some_and(|(_, old_id)| old_id == id) && old_kind == Some(mode_kind(mode)) {
            continue;
        }
        match mode_kind(mode) {
            Some(ObjectType::Tree) => {
                let old_sub = old_entry
                    .filter(|_| old_kind == Some(Some(ObjectType::Tree)))
                    .map(|(_, id)| id);
                below.push((id, old_sub));
            }
            Some(ObjectType::Blob) if sent.insert(id) => {
                entries.push(Entry {
                    kind: OBJ_BLOB,
                    oid: id,
                    base: old_entry
                        .filter(|_| old_kind == Some(Some(ObjectType::Blob)))
                        .map(|(_, id)| id),
                    data: None,
                });
            }
            // Blobs sent already; gitlinks point outside the repository.
            _ => {}
        }
    }
    entries.push(Entry {
        kind: OBJ_TREE,
        oid,
        base: old,
        data: Some(data),
    });
    for (sub, old_sub) in below {
        collect_tree(odb, sub, old_sub, sent, entries)?;
    }
    Ok(())
}

/// The bytes git sorts a tree entry by: its name, followed by `/` for a tree.
fn order_key(name: &[u8], mode: u32) -> impl Iterator<Item = &u8> {
    let slash: &[u8] = if mode_kind(mode) == Some(ObjectType::Tree) {
        b"/"
    } else {
        b""
    };
    name.iter().chain(slash)
}

/// What a tree entry's mode names: a tree (`40000`), a gitlink (`160000`), or
/// a blob (files, executables, symbolic links).
fn mode_kind(mode: u32) -> Option<ObjectType> {
    match mode {
        0o040000 => Some(ObjectType::Tree),
        0o160000 => None,
        _ => Some(ObjectType::Blob),
    }
}

/// The entries of a raw tree object (`<octal mode> <name>\0<20-byte id>`
/// each, gitformat-tree): mode, name, id.
pub(crate) fn tree_entries(
    data: &[u8],
    tree: Oid,
) -> Result<impl Iterator<Item = (u32, &[u8], Oid)>, git2::Error> {
    let mut out = Vec::new();
    let mut rest = data;
    let malformed = || git2::Error::from_str(&format!("tree {tree} is malformed"));
    while !rest.is_empty() {
        let space = rest.iter().position(|&b| b == b' ').ok_or_else(malformed)?;
        let nul = rest.iter().position(|&b| b == 0).ok_or_else(malformed)?;
        if nul < space || rest.len() < nul + 21 {
            return Err(malformed());
        }
        let mode = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|m| u32::from_str_radix(m, 8).ok())
            .ok_or_else(malformed)?;
        let id = Oid::from_bytes(&rest[nul + 1..nul + 21])?;
        out.push((mode, &rest[space + 1..nul], id));
        rest = &rest[nul + 21..];
    }
    Ok(out.into_iter())
}

/// Writes the pack: header, entries (deltas where they pay), SHA-1 trailer.
pub(crate) fn encode(
    repo: &Repository,
    entries: &[Entry],
    levels: Levels,
    out: &mut dyn Write,
) -> Result<(), git2::Error> {
    let odb = repo.odb()?;
    let mut pack = Hashed {
        out,
        hasher: Sha1::new(),
    };
    let count = u32::try_from(entries.len())
        .map_err(|_| git2::Error::from_str("too many objects for one pack"))?;
    pack.write_all(&pack_header(count)).map_err(io_error)?;
    for entry in entries {
        let read;
        let data = match &entry.data {
            Some(data) => data.as_slice(),
            None => {
                read = odb.read(entry.oid)?;
                read.data()
            }
        };
        let delta = match entry.base {
            Some(base) => {
                let base_object = odb.read(base)?;
                let delta = delta(base_object.data(), data, entry.kind == OBJ_TREE);
                (delta.len() < data.len() / 2).then_some((base, delta))
            }
            None => None,
        };
        let mut header = Vec::with_capacity(32);
        match &delta {
            Some((base, delta)) => {
                object_header(&mut header, OBJ_REF_DELTA, delta.len());
                header.extend_from_slice(base.as_bytes());
            }
            None => object_header(&mut header, entry.kind, data.len()),
        }
        pack.write_all(&header).map_err(io_error)?;
        deflate(
            &mut pack,
            delta.as_ref().map_or(data, |(_, d)| d.as_slice()),
            if entry.kind == OBJ_TREE {
                levels.trees
            } else {
                levels.others
            },
        )?;
    }
    let digest = pack.hasher.finalize();
    pack.out.write_all(&digest).map_err(io_error)
}

fn io_error(e: std::io::Error) -> git2::Error {
    git2::Error::from_str(&format!("writing a pack: {e}"))
}

/// Hashes what it passes on: a pack's trailer is the SHA-1 of all before it.
struct Hashed<'a> {
    out: &'a mut dyn Write,
    hasher: Sha1,
}

impl Write for Hashed<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(bytes)?;
        self.hasher.update(&bytes[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// The start of a version 2 pack holding `count` objects.
pub(crate) fn pack_header(count: u32) -> [u8; 12] {
    let mut head = [0u8; 12];
    head[..4].copy_from_slice(b"PACK");
    head[4..8].copy_from_slice(&2u32.to_be_bytes());
    head[8..].copy_from_slice(&count.to_be_bytes());
    head
}

/// A pack object header: type and size, 4 bits then 7 per byte, low bits first.
pub(crate) fn object_header(out: &mut Vec<u8>, kind: u8, size: usize) {
    let mut byte = (kind << 4) | (size & 0x0f) as u8;
    let mut rest = size >> 4;
    while rest > 0 {
        out.push(byte | 0x80);
        byte = (rest & 0x7f) as u8;
        rest >>= 7;
    }
    out.push(byte);
}

fn deflate(out: &mut dyn Write, data: &[u8], level: Compression) -> Result<(), git2::Error> {
    let mut encoder = ZlibEncoder::new(out, level);
    encoder
        .write_all(data)
        .and_then(|()| encoder.finish().map(|_| ()))
        .map_err(|e| git2::Error::from_str(&format!("compressing a pack object: {e}")))
}

/// Splits an object into the records a delta matches: tree entries
/// (`mode name\0` and 20 id bytes), or lines of a blob.
fn records(data: &[u8], tree: bool) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < data.len() {
        let end = if tree {
            match data[start..].iter().position(|&b| b == 0) {
                Some(nul) => (start + nul + 1 + 20).min(data.len()),
                None => data.len(),
            }
        } else {
            match data[start..].iter().position(|&b| b == b'\n') {
                Some(nl) => start + nl + 1,
                None => data.len(),
            }
        };
        out.push(&data[start..end]);
        start = end;
    }
    out
}

/// A git delta turning `base` into `target`: records of `target` found in
/// `base` are copied (consecutive ones in one instruction), the rest inserted.
fn delta(base: &[u8], target: &[u8], tree: bool) -> Vec<u8> {
    let mut offsets: HashMap<&[u8], usize> = HashMap::new();
    let mut at = 0;
    for record in records(base, tree) {
        offsets.entry(record).or_insert(at);
        at += record.len();
    }
    let mut out = Vec::new();
    varint(&mut out, base.len());
    varint(&mut out, target.len());
    let mut copy: Option<(usize, usize)> = None;
    let mut literal: Vec<u8> = Vec::new();
    for record in records(target, tree) {
        match offsets.get(record) {
            Some(&offset) => {
                flush_insert(&mut out, &mut literal);
                copy = match copy {
                    Some((start, len)) if start + len == offset => {
                        Some((start, len + record.len()))
                    }
                    Some(previous) => {
                        flush_copy(&mut out, previous);
                        Some((offset, record.len()))
                    }
                    None => Some((offset, record.len())),
                };
            }
            None => {
                if let Some(previous) = copy.take() {
                    flush_copy(&mut out, previous);
                }
                literal.extend_from_slice(record);
            }
        }
    }
    if let Some(previous) = copy {
        flush_copy(&mut out, previous);
    }
    flush_insert(&mut out, &mut literal);
    out
}

/// The size varint of a delta header: 7 bits per byte, low bits first.
fn varint(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Copy instructions for `len` bytes of the base from `offset`.
fn flush_copy(out: &mut Vec<u8>, (mut offset, mut len): (usize, usize)) {
    while len > 0 {
        let size = len.min(MAX_COPY);
        let mut op = 0x80u8;
        let mut args = Vec::with_capacity(7);
        for i in 0..4 {
            let byte = ((offset >> (8 * i)) & 0xff) as u8;
            if byte != 0 {
                op |= 1 << i;
                args.push(byte);
            }
        }
        for i in 0..3 {
            let byte = ((size >> (8 * i)) & 0xff) as u8;
            if byte != 0 {
                op |= 1 << (4 + i);
                args.push(byte);
            }
        }
        out.push(op);
        out.extend_from_slice(&args);
        offset += size;
        len -= size;
    }
}

/// Insert instructions for the pending literal bytes.
fn flush_insert(out: &mut Vec<u8>, literal: &mut Vec<u8>) {
    for chunk in literal.chunks(MAX_INSERT) {
        out.push(chunk.len() as u8);
        out.extend_from_slice(chunk);
    }
    literal.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies a git delta with the reader's code, to check the writer's.
    fn apply(base: &[u8], delta: &[u8]) -> Vec<u8> {
        index::apply(base, delta, u64::MAX).unwrap()
    }

    /// A commit of `files` (path → content) on top of `parent`.
    fn commit(repo: &Repository, files: &[(&str, &str)], parent: Option<Oid>) -> Oid {
        let mut index = git2::Index::new().unwrap();
        for (path, content) in files {
            let blob = repo.blob(content.as_bytes()).unwrap();
            let mut entry = git2::IndexEntry {
                ctime: git2::IndexTime::new(0, 0),
                mtime: git2::IndexTime::new(0, 0),
                dev: 0,
                ino: 0,
                mode: 0o100644,
                uid: 0,
                gid: 0,
                file_size: 0,
                id: blob,
                flags: 0,
                flags_extended: 0,
                path: path.as_bytes().to_vec(),
            };
            entry.flags = (path.len() as u16) & 0xfff;
            index.add(&entry).unwrap();
        }
        let tree = repo.find_tree(index.write_tree_to(repo).unwrap()).unwrap();
        let who = git2::Signature::new("t", "t@example.invalid", &git2::Time::new(0, 0)).unwrap();
        let parents: Vec<_> = parent
            .map(|p| repo.find_commit(p).unwrap())
            .into_iter()
            .collect();
        let parents: Vec<_> = parents.iter().collect();
        repo.commit(None, &who, &who, "c", &tree, &parents).unwrap()
    }

    /// A replica changed and changed back between a bundle's prerequisite and
    /// its tip: the reader has the reverted version, which is the base of the
    /// first change, so it is not sent again, and libgit2's `Indexer` (older
    /// ferry's reader, given the object database) completes the pack instead
    /// of looping on the object met twice.
    #[test]
    fn a_thin_pack_never_sends_an_object_it_lends_as_a_base() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let old = "summary: Printer on fire\nstatus: Open\n".repeat(8);
        let new = format!("{old}links: [SUP-2]\n");
        let base = commit(&repo, &[("issues/1.yaml", &old)], None);
        let changed = commit(&repo, &[("issues/1.yaml", &new)], Some(base));
        let back = commit(&repo, &[("issues/1.yaml", &old)], Some(changed));
        let lent = repo.blob(old.as_bytes()).unwrap();
        let mut entries = new_objects(&repo, &[base], back).unwrap();
        assert!(
            entries.iter().any(|e| e.oid == lent),
            "the shape under test"
        );
        drop_thin_bases(&mut entries);
        assert!(entries.iter().all(|e| e.oid != lent));

        let mut pack = Vec::new();
        write_thin(&repo, base, back, &mut pack).unwrap();
        let reader_dir = tempfile::tempdir().unwrap();
        let reader = Repository::init_bare(reader_dir.path()).unwrap();
        send(&repo, &[], base, &reader, Source::Own).unwrap();
        let reader_path = reader_dir.path().to_path_buf();
        let (done, wait) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let reader = Repository::open_bare(&reader_path).unwrap();
            let odb = reader.odb().unwrap();
            let mut indexer =
                git2::Indexer::new(Some(&odb), &reader_path.join("objects/pack"), 0o444, true)
                    .unwrap();
            indexer.write_all(&pack).unwrap();
            let _ = done.send(indexer.commit().map(|_| ()));
        });
        let indexed = wait
            .recv_timeout(std::time::Duration::from_secs(120))
            .expect("libgit2's Indexer still indexing after two minutes");
        indexed.unwrap();
        let reader = Repository::open_bare(reader_dir.path()).unwrap();
        assert!(reader.find_commit(back).is_ok());
    }

    #[test]
    fn only_what_differs_by_id_is_new_whatever_the_names() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        // git orders a tree `a` as `a/`: after the files `a-c` and `a.b`, which
        // are new; `a` is not.
        let mut files = vec![("a/x", "1"), ("b", "2"), ("d/y", "3")];
        let c1 = commit(&repo, &files, None);
        files[1] = ("b", "changed");
        files.extend([("d/z", "new"), ("a-c", "new 2"), ("a.b", "new 3")]);
        let c2 = commit(&repo, &files, Some(c1));
        let got: HashSet<Oid> = new_objects(&repo, &[c1], c2)
            .unwrap()
            .iter()
            .map(|e| e.oid)
            .collect();
        let tree = repo.find_commit(c2).unwrap().tree().unwrap();
        let at = |path: &str| tree.get_path(std::path::Path::new(path)).unwrap().id();
        let expected: HashSet<Oid> = [
            c2,
            tree.id(),
            at("a-c"),
            at("a.b"),
            at("b"),
            at("d"),
            at("d/z"),
        ]
        .into();
        assert_eq!(got, expected);
        // From nothing: everything, each once.
        assert_eq!(new_objects(&repo, &[], c1).unwrap().len(), 1 + 3 + 3);
    }

    #[test]
    fn deltas_rebuild_the_target() {
        let base: Vec<u8> = (0..5000)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        let mut target = base.clone();
        target.splice(100..100, b"inserted\n".iter().copied());
        target.extend_from_slice(&[b'x'; 300]);
        let d = delta(&base, &target, false);
        assert_eq!(apply(&base, &d), target);
        assert!(d.len() < 400, "{}", d.len());
        // Unrelated content: all inserts, still exact.
        let other = b"nothing in common".repeat(20);
        assert_eq!(apply(&base, &delta(&base, &other, false)), other);
        assert_eq!(apply(b"", &delta(b"", b"abc", false)), b"abc");
        // Long copies are split at the instruction limit.
        let big: Vec<u8> = (0..3 * MAX_COPY / 50)
            .flat_map(|i| format!("{i:049}\n").into_bytes())
            .collect();
        let mut big_target = big.clone();
        big_target.extend_from_slice(b"end\n");
        let d = delta(&big, &big_target, false);
        assert_eq!(apply(&big, &d), big_target);
        assert!(d.len() < 40, "{}", d.len());
    }
}

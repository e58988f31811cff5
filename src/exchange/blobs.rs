//! New blobs of a commit, written as loose objects or, from
//! `PACK_THRESHOLD` on, as one pack ferry writes itself (with its index).

use super::*;

/// From this many new blobs on, a commit writes its objects as one pack.
pub(super) const PACK_THRESHOLD: usize = 64;

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
pub(super) struct PackFile {
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
    pub(super) fn add_trees(
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
    pub(super) fn pack_if_many(&mut self, exchange: &Exchange) -> Result<(), ExchangeError> {
        if self.pack.is_some() || self.whole.len() >= PACK_THRESHOLD {
            self.append_to_pack(exchange)?;
        }
        Ok(())
    }

    /// Compresses the whole objects on every core and appends them to the pack.
    pub(super) fn append_to_pack(&mut self, exchange: &Exchange) -> Result<(), ExchangeError> {
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
pub(super) fn finish_pack(
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
pub(super) fn pack_index(mut entries: Vec<(Oid, u64, u32)>, pack_checksum: &[u8; 20]) -> Vec<u8> {
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
pub(super) fn object_id(kind: ObjectType, bytes: &[u8]) -> Oid {
    use sha1::Digest;
    let mut hasher = sha1::Sha1::new();
    hasher.update(format!("{kind} {}\0", bytes.len()));
    hasher.update(bytes);
    Oid::from_bytes(&hasher.finalize()).expect("a SHA-1 is 20 bytes")
}

/// The pack entry of one blob or tree (undeltified, zlib at its fastest level).
pub(super) fn pack_entry(
    compressor: &mut flate2::Compress,
    kind: ObjectType,
    blob: &[u8],
) -> Vec<u8> {
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

impl Exchange {
    /// Writes `blobs` into the object database (see [`NewBlobs`]).
    pub(super) fn write_blobs(&self, mut blobs: NewBlobs) -> Result<(), ExchangeError> {
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
}

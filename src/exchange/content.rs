//! Attachment content in the exchange: streamed in and out in parts of
//! `PART_BYTES`, so no step holds a whole file.

use super::*;

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

impl Exchange {
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
}

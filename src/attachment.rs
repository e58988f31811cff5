//! Attachment content: hashing while copying, and file names every tracker and
//! file system accepts.
//!
//! Content is addressed by its SHA-256 everywhere ferry keeps it (the exchange
//! repository, the ledger), so the hash is computed by ferry itself from the bytes
//! it moves, in one pass with the copy: a tracker's own idea of the hash is never
//! trusted, and no file is read twice or held in memory whole.

use std::io::{Read, Write};

use sha2::{Digest, Sha256};

/// Size of the chunks content is copied in; bounds the memory a copy needs.
pub const CHUNK: usize = 1 << 16;

/// Copies `from` into `to` in fixed-size chunks, returning the byte count and the
/// lower-case hex SHA-256 of what passed.
pub fn copy_hashing(from: &mut dyn Read, to: &mut dyn Write) -> std::io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buffer[..n]);
        to.write_all(&buffer[..n])?;
        total += n as u64;
    }
    to.flush()?;
    Ok((total, format!("{:x}", hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_hashing_matches_known_digest_across_chunks() {
        let empty = copy_hashing(&mut &b""[..], &mut Vec::new()).unwrap();
        assert_eq!(
            empty,
            (
                0,
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into()
            )
        );
        let data = vec![b'a'; CHUNK * 3 + 7];
        let mut out = Vec::new();
        let (n, sha) = copy_hashing(&mut &data[..], &mut out).unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(out, data);
        assert_eq!(sha, format!("{:x}", Sha256::digest(&data)));
    }
}

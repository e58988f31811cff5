//! Attachment content: hashing while copying, and file names every tracker and
//! file system accepts.
//!
//! Content is addressed by its SHA-256 everywhere ferry keeps it (the exchange
//! repository, the ledger), so the hash is computed by ferry itself from the bytes
//! it moves, in one pass with the copy: a tracker's own idea of the hash is never
//! trusted, and no file is read twice or held in memory whole.

use std::io::{Read, Write};

use sha2::{Digest, Sha256};

/// Copies `from` into `to` (in small fixed-size chunks), returning the byte count and the
/// lower-case hex SHA-256 of what passed.
pub fn copy_hashing(from: &mut dyn Read, to: &mut dyn Write) -> std::io::Result<(u64, String)> {
    let mut writer = HashingWriter::new(to);
    std::io::copy(from, &mut writer)?;
    writer.flush()?;
    let (_, size, sha256) = writer.finish();
    Ok((size, sha256))
}

/// Where the content with this SHA-256 lives in a branch's tree:
/// `attachments/<first two hex digits>/<sha256>`, a file, or a folder of numbered
/// parts for content larger than [`crate::exchange::PART_BYTES`].
pub fn content_path(sha256: &str) -> String {
    format!("attachments/{}/{sha256}", &sha256[..2.min(sha256.len())])
}

/// True for a lower-case hex SHA-256.
pub fn is_sha256(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Names Windows refuses for a file whatever the extension.
const RESERVED_NAMES: &[&str] = &[
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
    "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

/// The longest file name (in bytes) every common file system and tracker takes.
const MAX_NAME_BYTES: usize = 200;

/// A file name every tracker and file system accepts, made from whatever name a
/// peer sent: the last path component only (so `../../etc/passwd` cannot climb),
/// no control characters or characters Windows refuses, no reserved device names,
/// no leading dots or trailing dots and spaces, at most `MAX_NAME_BYTES` (200) bytes
/// with the extension kept. The replica keeps the original name; only what is
/// handed to a tracker or written to disk goes through here.
pub fn safe_file_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    let mut safe: String = last
        .chars()
        .map(|c| {
            if c.is_control() || matches!(c, '<' | '>' | ':' | '"' | '|' | '?' | '*') {
                '_'
            } else {
                c
            }
        })
        .collect();
    safe = safe
        .trim_start_matches(['.', ' '])
        .trim_end_matches(['.', ' '])
        .to_string();
    let stem = safe.split('.').next().unwrap_or("");
    if RESERVED_NAMES
        .iter()
        .any(|r| r.eq_ignore_ascii_case(stem.trim_end()))
    {
        safe.insert(0, '_');
    }
    if safe.len() > MAX_NAME_BYTES {
        let extension = match safe.rfind('.') {
            Some(dot) if safe.len() - dot <= 16 => safe[dot..].to_string(),
            _ => String::new(),
        };
        let mut cut = MAX_NAME_BYTES - extension.len();
        while !safe.is_char_boundary(cut) {
            cut -= 1;
        }
        // Cut where it may, a name still must not end in a dot or a space.
        let stem = safe[..cut].trim_end_matches(['.', ' ']);
        safe = format!("{stem}{extension}");
    }
    if safe.is_empty() {
        safe = "attachment".into();
    }
    safe
}

/// A writer that hashes what passes through it on the way to `inner`.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Hashes what is written, and passes it to `inner`.
    pub fn new(inner: W) -> HashingWriter<W> {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    /// The writer, the byte count and the lower-case hex SHA-256 of what passed.
    pub fn finish(self) -> (W, u64, String) {
        (
            self.inner,
            self.size,
            format!("{:x}", self.hasher.finalize()),
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(bytes)?;
        self.hasher.update(&bytes[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
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
        let data = vec![b'a'; 200_000];
        let mut out = Vec::new();
        let (n, sha) = copy_hashing(&mut &data[..], &mut out).unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(out, data);
        assert_eq!(sha, format!("{:x}", Sha256::digest(&data)));
    }

    #[test]
    fn safe_file_names() {
        for (name, safe) in [
            ("trace.log", "trace.log"),
            ("../../etc/passwd", "passwd"),
            ("C:\\Users\\me\\dump.dmp", "dump.dmp"),
            ("a\nb\tc\u{7}.txt", "a_b_c_.txt"),
            ("what?<now>:\"x\"|*.png", "what__now___x___.png"),
            ("CON", "_CON"),
            ("con.txt", "_con.txt"),
            ("LPT1 .log", "_LPT1 .log"),
            ("console.log", "console.log"),
            (".bashrc", "bashrc"),
            ("report. . ", "report"),
            ("..", "attachment"),
            ("", "attachment"),
            ("dir/", "attachment"),
            ("日本語のファイル.pdf", "日本語のファイル.pdf"),
        ] {
            assert_eq!(safe_file_name(name), safe, "{name:?}");
        }
        // Cut inside a run of spaces, with no extension to keep.
        let spaced = format!("{} {}", "a".repeat(MAX_NAME_BYTES - 1), "b".repeat(40));
        assert_eq!(safe_file_name(&spaced), "a".repeat(MAX_NAME_BYTES - 1));
        let long = format!("{}.tar.gz", "é".repeat(300));
        let safe = safe_file_name(&long);
        assert!(
            safe.len() <= MAX_NAME_BYTES && safe.ends_with(".gz"),
            "{safe}"
        );
    }

    proptest::proptest! {
        #[test]
        fn safe_file_names_are_always_plain(name in "\\PC{0,300}") {
            let safe = safe_file_name(&name);
            proptest::prop_assert!(!safe.is_empty() && safe.len() <= MAX_NAME_BYTES);
            proptest::prop_assert!(!safe.contains(['/', '\\']) && !safe.chars().any(char::is_control));
            proptest::prop_assert!(!safe.starts_with('.') && !safe.ends_with(['.', ' ']));
            proptest::prop_assert_eq!(safe_file_name(&safe), safe.clone(), "idempotent");
        }
    }
}

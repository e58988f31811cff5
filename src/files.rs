//! The site's settings files, whoever reads them (`ferry.yaml` and the
//! connection files in `config`, trust files in `signing`, `notify.yaml` in
//! `notify`): one error type that names the file, and atomic writes. A leaf
//! module, so those three need not depend on one another.

use std::fs;
use std::path::{Path, PathBuf};

/// A configuration problem. Always names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid YAML or has the wrong shape; the message has line and
    /// column.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Parser message, with line and column.
        message: String,
    },
    /// Parsed, but a value is wrong.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// Writing a configuration file failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Writes `contents` to `path` atomically (temporary file, then rename), so a crash
/// or a full disk never leaves a half-written configuration behind.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), ConfigError> {
    let write = |source| ConfigError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(write)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(write)?;
    std::io::Write::write_all(&mut tmp, contents).map_err(write)?;
    tmp.as_file().sync_all().map_err(write)?;
    tmp.persist(path).map_err(|e| write(e.error))?;
    Ok(())
}

//! Free space on the disk that holds a site's state.
//!
//! A full disk makes SQLite and git fail with errors that read like damage
//! ("disk I/O error", "database or disk is full", a short write), and the advice
//! for damage (restore the ledger from a backup, relink) is wrong then: the files
//! are intact and only want space. Messages that would give that advice ask here
//! first.

use std::path::Path;

/// Below this much free space a disk counts as full: SQLite's journal and a git
/// pack need room to start at all.
pub const FULL_BELOW_MIB: u64 = 1;

/// Free space, in MiB, on the file system holding `dir` (for an unprivileged
/// user: the blocks reserved for root do not count).
pub fn free_mib(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a valid NUL-terminated string and `stat` is writable
    // memory of the right type; statvfs(3) initialises it on success.
    let rc = unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so `stat` is initialised.
    let stat = unsafe { stat.assume_init() };
    // The field types differ between platforms (u32 on some 32-bit ones).
    #[allow(clippy::useless_conversion)]
    let (blocks, size) = (u64::from(stat.f_bavail), u64::from(stat.f_frsize));
    Ok(blocks.saturating_mul(size) / (1024 * 1024))
}

/// What to do when the disk holding `dir` is full, or `None` when it is not (or
/// its free space cannot be measured: then the caller's own advice stands).
pub fn full_disk_advice(dir: &Path) -> Option<String> {
    let free = free_mib(dir).ok()?;
    (free < FULL_BELOW_MIB).then(|| {
        format!(
            "the disk holding {} is full ({free} MiB free): free some space and run \
             again; a full disk does not damage the ledger or the tracker, so do not \
             restore or relink them",
            dir.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_with_room_is_not_full() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_mib(dir.path()).unwrap() >= FULL_BELOW_MIB);
        assert_eq!(full_disk_advice(dir.path()), None);
    }

    #[test]
    fn a_missing_folder_gives_no_advice_of_its_own() {
        assert!(free_mib(Path::new("/nonexistent/ferry")).is_err());
        assert_eq!(full_disk_advice(Path::new("/nonexistent/ferry")), None);
    }
}

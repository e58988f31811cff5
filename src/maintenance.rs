//! Self-maintenance of the git repositories ferry writes: its private clone and
//! the folder channels it pushes to.
//!
//! Every export leaves loose objects in the clone (the trees and the commit it
//! made), every fetch and every push to a folder adds a pack; nothing in ferry
//! ever merged them, so a site syncing a change a minute grew its clone and its
//! channel without end until someone ran `git gc`. This module does what
//! `git gc` does, with the libgit2 ferry links (an air-gapped machine may have no
//! `git` CLI; ferry needs none anywhere else):
//!
//! 1. when the loose objects or the packs pass a threshold ([`Settings`]:
//!    git's own `gc.auto` and `gc.autoPackLimit`), every object reachable from a
//!    ref or a reflog entry is written into one new pack (libgit2's pack builder,
//!    deltas included), in a temporary folder;
//! 2. the new pack and its index are fsynced, renamed into `objects/pack` (the
//!    pack, then the index, which is what makes a pack visible, as git does),
//!    and the folder is fsynced;
//! 3. only then are loose objects removed: those the new pack holds, and those
//!    nothing reaches that have not been modified for [`Settings::prune_after_days`];
//! 4. the old packs whose objects the new pack holds (or whose file is older than
//!    the same grace) are *superseded*: listed in `ferry-maintenance/superseded`
//!    with the time, and removed by a later maintenance once [`PACK_GRACE`] has
//!    passed. A pack with an unreachable object younger than the grace stays.
//!
//! # What is guaranteed
//!
//! - *Nothing reachable is ever lost, whatever instant the process dies at*: an
//!   object is removed only when a copy of it is in a pack that is complete,
//!   fsynced and indexed, or when nothing reaches it and its file is older than
//!   the grace. A run killed anywhere leaves a repository `git fsck --full`
//!   accepts, with at worst a temporary folder (`objects/pack/tmp_maint_*`, removed
//!   by the next maintenance) and packs holding the same objects twice.
//! - *Concurrent writers*: a peer's push to a folder channel writes its pack and
//!   then moves its branch; between the two its objects are unreachable. They are
//!   younger than the grace (two weeks, like git's `gc.pruneExpire`), so they are
//!   kept, which also covers a push killed in between and finished by that site's
//!   next run days later. What no grace covers, as in git: an object unreachable
//!   for longer than the grace that a writer then references without writing it
//!   again.
//! - *Concurrent readers*: a peer fetching from the channel may have listed the
//!   pack folder just before the new pack appeared and open an old pack later.
//!   Old packs are therefore not removed by the maintenance that supersedes them
//!   but at least [`PACK_GRACE`] after (and a reader that misses a pack looks in
//!   the pack folder again, as git and libgit2 both do, and finds the new one).
//! - *Two maintainers*: both sites of a channel maintain it; a file lock
//!   (`ferry-maintenance/lock`, flock) lets one at a time work, the other skips
//!   (it finds the channel maintained). A `gc.pid` younger than 12 hours (a
//!   `git gc` running) also makes ferry skip.
//! - Packs with a `.keep` file are never touched, as in git.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use git2::{ObjectType, Oid, Repository};
use serde::{Deserialize, Serialize};

use crate::failpoint;

/// How long a superseded pack stays before it is removed: longer than any
/// reader takes between listing the pack folder and opening what it listed
/// (JGit's `gc.prunePackExpire` is the same hour).
pub const PACK_GRACE: Duration = Duration::from_secs(60 * 60);

/// A `gc.pid` younger than this means a `git gc` is running (git's own rule).
const GIT_GC_PID_FRESH: Duration = Duration::from_secs(12 * 60 * 60);

/// The folder of ferry's maintenance files inside a repository.
pub const STATE_DIR: &str = "ferry-maintenance";
/// The list of superseded packs, one `<unix seconds> <pack name>` per line.
const SUPERSEDED_FILE: &str = "superseded";
/// The file locked (flock) while a maintenance works.
const LOCK_FILE: &str = "lock";
/// Prefix of the temporary folder a new pack is written in.
pub const TEMP_PREFIX: &str = "tmp_maint_";

/// `maintenance:` of `ferry.yaml`: when a run compacts the clone and the folder
/// channels it pushes to.
///
/// ```yaml
/// maintenance:
///   auto: true
///   loose_objects: 6700
///   packs: 50
///   prune_after_days: 14
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Check at the end of every run that changed something (`false`: only
    /// `ferry maintenance` does it).
    #[serde(default = "default_auto")]
    pub auto: bool,
    /// Repack when there are more loose objects than this (git's `gc.auto`).
    #[serde(default = "default_loose")]
    pub loose_objects: u64,
    /// Repack when there are more packs than this (git's `gc.autoPackLimit`).
    #[serde(default = "default_packs")]
    pub packs: u64,
    /// Unreachable objects are removed once they have not been modified for this
    /// many days (git's `gc.pruneExpire`, two weeks).
    #[serde(default = "default_prune_days")]
    pub prune_after_days: u32,
}

/// git's `gc.auto`.
pub const DEFAULT_LOOSE_OBJECTS: u64 = 6700;
/// git's `gc.autoPackLimit`.
pub const DEFAULT_PACKS: u64 = 50;
/// git's `gc.pruneExpire` (`2.weeks.ago`).
pub const DEFAULT_PRUNE_DAYS: u32 = 14;

fn default_auto() -> bool {
    true
}
fn default_loose() -> u64 {
    DEFAULT_LOOSE_OBJECTS
}
fn default_packs() -> u64 {
    DEFAULT_PACKS
}
fn default_prune_days() -> u32 {
    DEFAULT_PRUNE_DAYS
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            auto: true,
            loose_objects: DEFAULT_LOOSE_OBJECTS,
            packs: DEFAULT_PACKS,
            prune_after_days: DEFAULT_PRUNE_DAYS,
        }
    }
}

impl Settings {
    /// Whether these are the defaults (then `ferry.yaml` need not say them).
    pub fn is_default(&self) -> bool {
        *self == Settings::default()
    }

    /// The grace of unreachable objects.
    pub fn prune_after(&self) -> Duration {
        Duration::from_secs(u64::from(self.prune_after_days) * 24 * 60 * 60)
    }

    /// Whether `storage` is above a threshold.
    pub fn exceeded(&self, storage: &Storage) -> bool {
        storage.loose_objects > self.loose_objects || storage.packs > self.packs
    }
}

/// What a repository's objects take.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Storage {
    /// Bytes of every file below `objects/`.
    pub bytes: u64,
    /// Packs in use (superseded ones not counted).
    pub packs: u64,
    /// Loose objects.
    pub loose_objects: u64,
    /// Packs superseded by a newer one, removed once [`PACK_GRACE`] has passed.
    pub superseded_packs: u64,
    /// Bytes of those (counted in `bytes` too).
    pub superseded_bytes: u64,
}

impl std::fmt::Display for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}, {} pack{}, {} loose object{}",
            human_bytes(self.bytes),
            self.packs,
            crate::words::plural(self.packs as usize),
            self.loose_objects,
            crate::words::plural(self.loose_objects as usize)
        )?;
        if self.superseded_packs > 0 {
            write!(
                f,
                " (of which {} in {} superseded pack{}, removed within the hour)",
                human_bytes(self.superseded_bytes),
                self.superseded_packs,
                crate::words::plural(self.superseded_packs as usize)
            )?;
        }
        Ok(())
    }
}

/// Bytes as people read them: `512 B`, `3.4 MB` (powers of 1000, like `du --si`).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A maintenance failed; nothing it had not finished was removed.
#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What ferry was doing.
        context: String,
        /// The error.
        source: std::io::Error,
    },
    /// libgit2 failed (a missing object, a corrupt pack).
    #[error("{context}: {source}")]
    Git {
        /// What ferry was doing.
        context: String,
        /// The error.
        source: git2::Error,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> MaintenanceError {
    let context = context.into();
    move |source| MaintenanceError::Io { context, source }
}

fn git(context: impl Into<String>) -> impl FnOnce(git2::Error) -> MaintenanceError {
    let context = context.into();
    move |source| MaintenanceError::Git { context, source }
}

/// Whether a maintenance must repack or only when a threshold is passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// At the end of a run: only above a threshold.
    Auto,
    /// `ferry maintenance`: always.
    Force,
}

/// What one maintenance of one repository did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Before.
    pub before: Storage,
    /// After.
    pub after: Storage,
    /// Objects in the new pack, when one was written.
    pub packed_objects: Option<u64>,
    /// Loose objects removed because the new pack holds them.
    pub loose_packed: u64,
    /// Unreachable loose objects removed (older than the grace).
    pub loose_pruned: u64,
    /// Packs the new one superseded (removed after [`PACK_GRACE`]).
    pub packs_superseded: u64,
    /// Superseded packs removed now, their grace over.
    pub packs_removed: u64,
    /// Why nothing was done, when something else holds the repository.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

impl Report {
    /// Whether anything changed on disk.
    pub fn changed(&self) -> bool {
        self.packed_objects.is_some()
            || self.loose_packed + self.loose_pruned + self.packs_removed > 0
    }
}

/// One pack of `objects/pack`.
#[derive(Debug, Clone)]
struct Pack {
    /// `pack-<40 hex>`.
    name: String,
    /// A `.keep` file protects it.
    kept: bool,
}

/// One loose object.
#[derive(Debug, Clone)]
struct Loose {
    oid: [u8; 20],
    path: PathBuf,
}

fn objects_dir(git_dir: &Path) -> PathBuf {
    git_dir.join("objects")
}

fn pack_dir(git_dir: &Path) -> PathBuf {
    git_dir.join("objects").join("pack")
}

/// The packs of a repository that have both an index and a pack file.
fn list_packs(git_dir: &Path) -> Result<Vec<Pack>, MaintenanceError> {
    let dir = pack_dir(git_dir);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(format!("listing {}", dir.display()))(e)),
    };
    let mut packs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io(format!("listing {}", dir.display())))?;
        let file = entry.file_name();
        let Some(name) = file.to_str().and_then(|n| n.strip_suffix(".idx")) else {
            continue;
        };
        if !is_pack_name(name) {
            continue;
        }
        if !dir.join(format!("{name}.pack")).exists() {
            // An index whose pack is gone (a removal half done): no pack.
            continue;
        }
        packs.push(Pack {
            name: name.to_string(),
            kept: dir.join(format!("{name}.keep")).exists(),
        });
    }
    packs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(packs)
}

fn is_pack_name(name: &str) -> bool {
    name.strip_prefix("pack-")
        .is_some_and(|hex| hex.len() == 40 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Every loose object (`objects/<2 hex>/<38 hex>`).
fn list_loose(git_dir: &Path) -> Result<Vec<Loose>, MaintenanceError> {
    let objects = objects_dir(git_dir);
    let mut loose = Vec::new();
    let entries = match fs::read_dir(&objects) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(loose),
        Err(e) => return Err(io(format!("listing {}", objects.display()))(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io(format!("listing {}", objects.display())))?;
        let name = entry.file_name();
        let Some(prefix) = name.to_str().filter(|n| is_hex(n, 2)) else {
            continue;
        };
        let dir = entry.path();
        let Ok(files) = fs::read_dir(&dir) else {
            continue;
        };
        for file in files.flatten() {
            let rest = file.file_name();
            let Some(rest) = rest.to_str().filter(|n| is_hex(n, 38)) else {
                continue;
            };
            let Ok(oid) = Oid::from_str(&format!("{prefix}{rest}")) else {
                continue;
            };
            let mut bytes = [0; 20];
            bytes.copy_from_slice(oid.as_bytes());
            loose.push(Loose {
                oid: bytes,
                path: file.path(),
            });
        }
    }
    Ok(loose)
}

fn is_hex(name: &str, len: usize) -> bool {
    name.len() == len && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Measures a repository's objects: bytes of every file below `objects/`, packs
/// in use, superseded packs, loose objects. Reads only; takes no lock.
pub fn measure(git_dir: &Path) -> Result<Storage, MaintenanceError> {
    let mut bytes = 0;
    for entry in walkdir::WalkDir::new(objects_dir(git_dir)) {
        let Ok(entry) = entry else {
            // A file removed while it was listed.
            continue;
        };
        if entry.file_type().is_file() {
            bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    let superseded = read_superseded(git_dir)?;
    let packs = list_packs(git_dir)?;
    let (mut superseded_packs, mut superseded_bytes) = (0, 0);
    let dir = pack_dir(git_dir);
    for pack in packs
        .iter()
        .filter(|p| superseded.iter().any(|(_, name)| *name == p.name))
    {
        superseded_packs += 1;
        for extension in PACK_FILES {
            superseded_bytes += fs::metadata(dir.join(format!("{}.{extension}", pack.name)))
                .map(|m| m.len())
                .unwrap_or(0);
        }
    }
    Ok(Storage {
        bytes,
        packs: packs.len() as u64 - superseded_packs,
        loose_objects: list_loose(git_dir)?.len() as u64,
        superseded_packs,
        superseded_bytes,
    })
}

/// The superseded packs, with the time each was superseded.
fn read_superseded(git_dir: &Path) -> Result<Vec<(SystemTime, String)>, MaintenanceError> {
    let path = git_dir.join(STATE_DIR).join(SUPERSEDED_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(format!("reading {}", path.display()))(e)),
    };
    Ok(text
        .lines()
        .filter_map(|line| {
            let (secs, name) = line.split_once(' ')?;
            let secs: u64 = secs.parse().ok()?;
            is_pack_name(name).then(|| {
                (
                    SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
                    name.to_string(),
                )
            })
        })
        .collect())
}

/// Replaces the list of superseded packs: a temporary file, fsynced, renamed,
/// and the folder fsynced.
fn write_superseded(
    git_dir: &Path,
    entries: &[(SystemTime, String)],
) -> Result<(), MaintenanceError> {
    let dir = git_dir.join(STATE_DIR);
    let path = dir.join(SUPERSEDED_FILE);
    let context = || format!("writing {}", path.display());
    let mut text = String::new();
    for (at, name) in entries {
        let secs = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        text.push_str(&format!("{secs} {name}\n"));
    }
    let mut file = tempfile::Builder::new()
        .prefix(".superseded")
        .tempfile_in(&dir)
        .map_err(io(context()))?;
    file.write_all(text.as_bytes()).map_err(io(context()))?;
    file.as_file().sync_all().map_err(io(context()))?;
    file.persist(&path).map_err(|e| io(context())(e.error))?;
    sync_dir(&dir)?;
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), MaintenanceError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("syncing the folder {}", dir.display())))
}

fn sync_file(path: &Path) -> Result<(), MaintenanceError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io(format!("syncing {}", path.display())))
}

/// The object ids a pack index lists, sorted (index versions 1 and 2).
fn index_ids(path: &Path) -> Result<Vec<[u8; 20]>, MaintenanceError> {
    let bytes = fs::read(path).map_err(io(format!("reading {}", path.display())))?;
    let malformed = || MaintenanceError::Io {
        context: format!("reading {}", path.display()),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not a pack index"),
    };
    let (fanout_at, entry_size, id_at) = if bytes.starts_with(b"\xfftOc") {
        // Version 2: header, fan-out, then the ids one after the other.
        (8, 20, 0)
    } else {
        // Version 1: fan-out, then a 4-byte offset and the id per entry.
        (0, 24, 4)
    };
    let count_at = fanout_at + 255 * 4;
    let count = bytes
        .get(count_at..count_at + 4)
        .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize)
        .ok_or_else(malformed)?;
    let table = fanout_at + 256 * 4;
    if bytes.len() < table + count * entry_size {
        return Err(malformed());
    }
    Ok((0..count)
        .map(|i| {
            let at = table + i * entry_size + id_at;
            bytes[at..at + 20].try_into().expect("20 bytes")
        })
        .collect())
}

/// Holds the maintenance lock of a repository.
struct Locked {
    _file: File,
}

/// Takes the maintenance lock, `None` when another process holds it.
fn lock(git_dir: &Path) -> Result<Option<Locked>, MaintenanceError> {
    let dir = git_dir.join(STATE_DIR);
    fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    let path = dir.join(LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(format!("opening {}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(Locked { _file: file })),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => Err(io(format!("locking {}", path.display()))(e)),
    }
}

/// Removes the temporary folders of killed maintenances, and their
/// unfinished lists of superseded packs (under the lock, so none is in use).
fn remove_temporary(git_dir: &Path) -> Result<(), MaintenanceError> {
    let state = git_dir.join(STATE_DIR);
    for entry in fs::read_dir(&state).into_iter().flatten().flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(".superseded")
        {
            remove_if_present(&entry.path())?;
        }
    }
    let dir = pack_dir(git_dir);
    let Ok(entries) = fs::read_dir(&dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            let path = entry.path();
            fs::remove_dir_all(&path)
                .map_err(io(format!("removing the stale folder {}", path.display())))?;
            tracing::warn!(
                "removed {}, left by an interrupted maintenance",
                path.display()
            );
        }
    }
    Ok(())
}

/// The files of a pack that go with it, the index first: without its index a
/// pack is invisible to git and libgit2.
const PACK_FILES: [&str; 6] = ["idx", "pack", "rev", "bitmap", "mtimes", "promisor"];

fn remove_if_present(path: &Path) -> Result<bool, MaintenanceError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io(format!("removing {}", path.display()))(e)),
    }
}

/// Removes the superseded packs whose grace is over; returns how many.
///
/// A pack modified after it was superseded (git and libgit2 touch a pack when
/// they are asked to write an object it holds, so that a prune spares it) is
/// taken off the list and kept.
fn expire_superseded(git_dir: &Path, now: SystemTime) -> Result<u64, MaintenanceError> {
    let entries = read_superseded(git_dir)?;
    if entries.is_empty() {
        return Ok(0);
    }
    let dir = pack_dir(git_dir);
    let listed = entries.len();
    let mut kept = Vec::new();
    let mut removed = 0;
    for (at, name) in entries {
        let pack = dir.join(format!("{name}.pack"));
        let Ok(meta) = fs::metadata(&pack) else {
            // Gone; its index too, unless a removal was cut short.
            remove_if_present(&dir.join(format!("{name}.idx")))?;
            continue;
        };
        if now.duration_since(at).unwrap_or_default() < PACK_GRACE {
            kept.push((at, name));
            continue;
        }
        // Written again since (git and libgit2 touch a pack rather than write
        // an object it holds a second time): someone needs it; the next
        // repack looks at it afresh.
        if dir.join(format!("{name}.keep")).exists()
            || meta
                .modified()
                .is_ok_and(|modified| modified > at + Duration::from_secs(1))
        {
            continue;
        }
        for (i, extension) in PACK_FILES.iter().enumerate() {
            remove_if_present(&dir.join(format!("{name}.{extension}")))?;
            if i == 0 {
                failpoint::hit("maintenance-removing-pack");
            }
        }
        removed += 1;
    }
    if removed > 0 {
        // A multi-pack index names packs that are gone now; git and libgit2
        // read the packs one by one without it.
        remove_if_present(&dir.join("multi-pack-index"))?;
    }
    if kept.len() != listed {
        write_superseded(git_dir, &kept)?;
    }
    Ok(removed)
}

/// The objects a repository must keep: what every ref and every reflog entry
/// points at (git fsck checks reflog entries too).
fn roots(repo: &Repository) -> Result<Vec<Oid>, MaintenanceError> {
    let mut roots = Vec::new();
    let references = repo.references().map_err(git("listing the references"))?;
    let mut names = vec!["HEAD".to_string()];
    for reference in references {
        let reference = reference.map_err(git("listing the references"))?;
        if let Some(oid) = reference.target() {
            roots.push(oid);
        }
        if let Ok(name) = reference.name() {
            names.push(name.to_string());
        }
    }
    if let Ok(head) = repo.refname_to_id("HEAD") {
        roots.push(head);
    }
    // A reflog entry may name an object removed long ago (by a `git gc` that
    // expired it): nothing is left to keep of it. A ref's target must exist.
    let odb = repo.odb().map_err(git("opening the object database"))?;
    for name in names {
        let Ok(log) = repo.reflog(&name) else {
            continue;
        };
        for entry in log.iter() {
            for oid in [entry.id_old(), entry.id_new()] {
                if !oid.is_zero() && odb.exists(oid) {
                    roots.push(oid);
                }
            }
        }
    }
    roots.sort();
    roots.dedup();
    Ok(roots)
}

/// Maintains the repository at `git_dir` (a bare repository or a `.git`
/// folder): see the module documentation. `Mode::Auto` repacks only above the
/// thresholds of `settings`; superseded packs whose grace is over are removed
/// either way.
pub fn maintain(
    git_dir: &Path,
    settings: &Settings,
    mode: Mode,
) -> Result<Report, MaintenanceError> {
    let before = measure(git_dir)?;
    let mut report = Report {
        before,
        after: before,
        ..Report::default()
    };
    if let Some(reason) = git_gc_running(git_dir) {
        report.skipped = Some(reason);
        return Ok(report);
    }
    let Some(_lock) = lock(git_dir)? else {
        report.skipped = Some("another maintenance of it is running".into());
        return Ok(report);
    };
    remove_temporary(git_dir)?;
    let now = SystemTime::now();
    report.packs_removed = expire_superseded(git_dir, now)?;
    // Superseded packs do not count: removing them changes no count.
    if mode == Mode::Force || settings.exceeded(&before) {
        repack(git_dir, settings, now, &mut report)?;
    }
    if report.changed() {
        report.after = measure(git_dir)?;
    }
    Ok(report)
}

/// Why a `git gc` seems to be running in the repository, if it does.
fn git_gc_running(git_dir: &Path) -> Option<String> {
    let modified = fs::metadata(git_dir.join("gc.pid"))
        .and_then(|m| m.modified())
        .ok()?;
    let age = SystemTime::now()
        .duration_since(modified)
        .unwrap_or_default();
    (age < GIT_GC_PID_FRESH)
        .then(|| "a `git gc` is running in it (gc.pid is younger than 12 hours)".to_string())
}

/// Writes every reachable object into one new pack, then removes what it makes
/// redundant (see the module documentation for the order).
fn repack(
    git_dir: &Path,
    settings: &Settings,
    now: SystemTime,
    report: &mut Report,
) -> Result<(), MaintenanceError> {
    let dir = pack_dir(git_dir);
    fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    // What exists before the walk: only these are ever removed, so whatever a
    // concurrent writer adds meanwhile is left alone.
    let superseded = read_superseded(git_dir)?;
    let packs: Vec<Pack> = list_packs(git_dir)?
        .into_iter()
        .filter(|p| !p.kept && !superseded.iter().any(|(_, name)| *name == p.name))
        .collect();
    let loose = list_loose(git_dir)?;

    let new_name = write_pack(git_dir)?;
    let mut list = superseded;
    if let Some((name, _)) = &new_name
        && list.iter().any(|(_, listed)| listed == name)
    {
        // The new pack is one that was superseded (the same objects, packed
        // alike): it is in use again, before anything else happens.
        list.retain(|(_, listed)| listed != name);
        write_superseded(git_dir, &list)?;
    }
    let reachable = match &new_name {
        Some((name, count)) => {
            report.packed_objects = Some(*count);
            index_ids(&dir.join(format!("{name}.idx")))?
        }
        None => Vec::new(),
    };
    failpoint::hit("maintenance-after-install");

    let grace = settings.prune_after();
    let older_than_grace = |path: &Path| {
        fs::metadata(path)
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > grace)
    };
    let mut removed_loose = false;
    for object in &loose {
        let held = reachable.binary_search(&object.oid).is_ok();
        // Looked at again now: a writer may have just written it again.
        if held || older_than_grace(&object.path) {
            if remove_if_present(&object.path)? {
                if held {
                    report.loose_packed += 1;
                } else {
                    report.loose_pruned += 1;
                }
            }
            if !removed_loose {
                removed_loose = true;
                failpoint::hit("maintenance-removing-loose");
            }
        }
    }

    for pack in &packs {
        if new_name
            .as_ref()
            .is_some_and(|(name, _)| *name == pack.name)
        {
            continue;
        }
        let ids = index_ids(&dir.join(format!("{}.idx", pack.name)))?;
        let held = ids.iter().all(|id| reachable.binary_search(id).is_ok());
        if held || older_than_grace(&dir.join(format!("{}.pack", pack.name))) {
            list.push((now, pack.name.clone()));
            report.packs_superseded += 1;
        }
    }
    if report.packs_superseded > 0 {
        write_superseded(git_dir, &list)?;
    }
    failpoint::hit("maintenance-after-superseded");
    Ok(())
}

/// Adds the tree `oid` at `path` and everything below it that is not in the
/// builder yet, each named by its path.
///
/// libgit2's own walk (`insert_walk`) names blobs by their file name but trees
/// by nothing, so its delta search pairs trees by size alone, and the versions
/// of a project's tree, the bulk of what a sync adds, were mostly stored whole
/// (4.3 MB of trees where named ones take 1 MB, after 1 000 one-edit syncs).
/// With the path as name, the versions of one tree sort side by side.
fn insert_tree(
    repo: &Repository,
    builder: &mut git2::PackBuilder<'_>,
    oid: Oid,
    path: &str,
    seen: &mut std::collections::HashSet<Oid>,
) -> Result<(), git2::Error> {
    if !seen.insert(oid) {
        return Ok(());
    }
    builder.insert_object(oid, Some(path))?;
    let tree = repo.find_tree(oid)?;
    for entry in tree.iter() {
        let name = String::from_utf8_lossy(entry.name_bytes());
        let below = if path.is_empty() {
            name.into_owned()
        } else {
            format!("{path}/{name}")
        };
        match entry.kind() {
            Some(ObjectType::Tree) => insert_tree(repo, builder, entry.id(), &below, seen)?,
            Some(ObjectType::Blob) if seen.insert(entry.id()) => {
                builder.insert_object(entry.id(), Some(&below))?;
            }
            // A gitlink names a commit of another repository.
            _ => {}
        }
    }
    Ok(())
}

/// Writes a pack of every object reachable from a ref or a reflog entry into a
/// temporary folder, fsyncs it, and moves it into `objects/pack`, the pack
/// before its index. Returns its name and object count, `None` when nothing is
/// reachable.
fn write_pack(git_dir: &Path) -> Result<Option<(String, u64)>, MaintenanceError> {
    let dir = pack_dir(git_dir);
    let repo =
        Repository::open_bare(git_dir).map_err(git(format!("opening {}", git_dir.display())))?;
    let context = || format!("packing the objects of {}", git_dir.display());
    // Attachment parts (megabytes of random-looking bytes) are kept out of the
    // delta search, as in the clone's own configuration (see
    // `exchange::keep_big_objects_out_of_delta_search`), without writing a
    // channel's configuration: a file of settings added for this process only.
    let overrides = tempfile::NamedTempFile::new().map_err(io(context()))?;
    fs::write(
        overrides.path(),
        "[pack]\n\tdeltaCacheSize = 1048576\n\tbigFileThreshold = 1048576\n",
    )
    .map_err(io(context()))?;
    let mut config = repo.config().map_err(git(context()))?;
    config
        .add_file(overrides.path(), git2::ConfigLevel::App, true)
        .map_err(git(context()))?;

    let mut builder = repo.packbuilder().map_err(git(context()))?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    builder.set_threads(threads);
    let mut walk = repo.revwalk().map_err(git(context()))?;
    walk.set_sorting(git2::Sort::TIME).map_err(git(context()))?;
    let mut commits = 0;
    for oid in roots(&repo)? {
        let object = repo.find_object(oid, None).map_err(git(context()))?;
        match object.kind() {
            Some(ObjectType::Commit) => {
                walk.push(oid).map_err(git(context()))?;
                commits += 1;
            }
            _ => builder
                .insert_recursive(oid, None)
                .map_err(git(context()))?,
        }
    }
    if commits > 0 {
        let mut seen = std::collections::HashSet::new();
        for commit in walk {
            let commit = commit.map_err(git(context()))?;
            builder
                .insert_object(commit, None)
                .map_err(git(context()))?;
            let tree = repo.find_commit(commit).map_err(git(context()))?.tree_id();
            insert_tree(&repo, &mut builder, tree, "", &mut seen).map_err(git(context()))?;
        }
    }
    let count = builder.object_count() as u64;
    if count == 0 {
        return Ok(None);
    }
    let temporary = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempdir_in(&dir)
        .map_err(io(context()))?;
    builder
        .write(temporary.path(), 0o444)
        .map_err(git(context()))?;
    let mut written = None;
    for entry in fs::read_dir(temporary.path()).map_err(io(context()))? {
        let entry = entry.map_err(io(context()))?;
        if let Some(name) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_suffix(".idx"))
        {
            written = Some(name.to_string());
        }
        sync_file(&entry.path())?;
    }
    sync_dir(temporary.path())?;
    let Some(name) = written else {
        return Err(MaintenanceError::Io {
            context: context(),
            source: std::io::Error::other("libgit2 wrote no pack index"),
        });
    };
    failpoint::hit("maintenance-after-pack");
    let installed = dir.join(format!("{name}.idx"));
    if !installed.exists() {
        // The pack first: an index is what makes a pack visible.
        for extension in ["pack", "idx"] {
            let from = temporary.path().join(format!("{name}.{extension}"));
            let to = dir.join(format!("{name}.{extension}"));
            fs::rename(&from, &to).map_err(io(format!(
                "moving {} to {}",
                from.display(),
                to.display()
            )))?;
        }
        sync_dir(&dir)?;
    }
    temporary.close().map_err(io(context()))?;
    Ok(Some((name, count)))
}

/// A repository a site maintains, or a channel it cannot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The site's private clone.
    Clone(PathBuf),
    /// A folder channel: the peers whose connections use it, its URL as
    /// configured, and the folder.
    Folder {
        /// Peers of the connections through it (several may share one).
        peers: Vec<String>,
        /// The URL as configured (of the first of them).
        url: String,
        /// The repository.
        dir: PathBuf,
    },
    /// A channel on a server (ssh, https, git://): its repository is out of
    /// reach; whoever runs the server compacts it.
    Server {
        /// The peer.
        peer: String,
        /// The URL as configured.
        url: String,
    },
}

impl Target {
    /// How messages name it.
    pub fn describe(&self) -> String {
        match self {
            Target::Clone(_) => "exchange clone".to_string(),
            Target::Folder { peers, url, .. } => format!("channel {} ({url})", peers.join(", ")),
            Target::Server { peer, url } => format!("channel {peer} ({url})"),
        }
    }

    /// The repository, when ferry can reach it.
    pub fn dir(&self) -> Option<&Path> {
        match self {
            Target::Clone(dir) | Target::Folder { dir, .. } => Some(dir),
            Target::Server { .. } => None,
        }
    }
}

/// What a maintenance of one target came to.
#[derive(Debug)]
pub struct Done {
    /// The repository.
    pub target: Target,
    /// Its report, or why it failed (nothing unfinished was removed).
    pub outcome: Result<Report, MaintenanceError>,
}

/// Maintains each of `targets` that ferry can reach, one after the other.
/// Call it holding the site lock: the clone has no other guard.
pub fn run(targets: Vec<Target>, settings: &Settings, mode: Mode) -> Vec<Done> {
    targets
        .into_iter()
        .filter_map(|target| {
            let dir = target.dir()?.to_path_buf();
            let outcome = maintain(&dir, settings, mode);
            if let Err(e) = &outcome {
                tracing::warn!("maintenance of the {}: {e}", target.describe());
            }
            Some(Done { target, outcome })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_index_versions() {
        let dir = tempfile::tempdir().unwrap();
        let ids = [[1u8; 20], [2u8; 20], [200u8; 20]];
        // Version 1: fan-out, then offset and id per entry.
        let mut v1 = Vec::new();
        for byte in 0..256usize {
            let n = ids.iter().filter(|id| usize::from(id[0]) <= byte).count() as u32;
            v1.extend_from_slice(&n.to_be_bytes());
        }
        for id in &ids {
            v1.extend_from_slice(&0u32.to_be_bytes());
            v1.extend_from_slice(id);
        }
        v1.extend_from_slice(&[0; 40]);
        let path = dir.path().join("v1.idx");
        fs::write(&path, &v1).unwrap();
        assert_eq!(index_ids(&path).unwrap(), ids);
        fs::write(&path, b"short").unwrap();
        assert!(index_ids(&path).is_err());
    }

    #[test]
    fn a_superseded_pack_goes_after_its_hour_unless_written_again() {
        let git_dir = tempfile::tempdir().unwrap();
        let dir = pack_dir(git_dir.path());
        fs::create_dir_all(&dir).unwrap();
        fs::create_dir_all(git_dir.path().join(STATE_DIR)).unwrap();
        let name = |n: u8| format!("pack-{}", format!("{n:02x}").repeat(20));
        for n in 1..=4 {
            for extension in ["pack", "idx"] {
                fs::write(dir.join(format!("{}.{extension}", name(n))), b"x").unwrap();
            }
        }
        fs::write(dir.join(format!("{}.keep", name(4))), b"").unwrap();
        let now = SystemTime::now();
        // Written before they were superseded, but for the third.
        for n in [1, 2, 4] {
            let pack = File::options()
                .write(true)
                .open(dir.join(format!("{}.pack", name(n))))
                .unwrap();
            pack.set_modified(now - 3 * PACK_GRACE).unwrap();
        }
        let hour_and_more = PACK_GRACE + Duration::from_secs(60);
        write_superseded(
            git_dir.path(),
            &[
                // Its hour is over: removed.
                (now - hour_and_more, name(1)),
                // Superseded a minute ago: kept, still listed.
                (now - Duration::from_secs(60), name(2)),
                // Its hour is over, but written again since: kept, unlisted.
                (now - hour_and_more - Duration::from_secs(3600), name(3)),
                // A .keep file: never removed.
                (now - hour_and_more, name(4)),
            ],
        )
        .unwrap();
        let before = measure(git_dir.path()).unwrap();
        assert_eq!((before.packs, before.superseded_packs), (0, 4));
        assert_eq!(expire_superseded(git_dir.path(), now).unwrap(), 1);
        assert!(!dir.join(format!("{}.idx", name(1))).exists());
        assert!(!dir.join(format!("{}.pack", name(1))).exists());
        for n in 2..=4 {
            assert!(dir.join(format!("{}.pack", name(n))).exists(), "{n}");
        }
        let listed: Vec<String> = read_superseded(git_dir.path())
            .unwrap()
            .into_iter()
            .map(|(_, name)| name)
            .collect();
        assert_eq!(listed, [name(2)]);
        let after = measure(git_dir.path()).unwrap();
        assert_eq!((after.packs, after.superseded_packs), (2, 1));
    }

    #[test]
    fn sizes_read_like_du() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_500), "1.5 kB");
        assert_eq!(human_bytes(12_345_678), "12.3 MB");
    }
}

//! A site opened for work: configuration, lock, ledger, exchange clone, tracker.
//!
//! Opening a site takes its lock first, so two runs of one site (cron firing while
//! an operator syncs by hand) never interleave; the second one exits 75 at once,
//! naming the holder.
//!
//! The lock is an OS file lock (`flock`) on `.ferry/lock`, not the file's
//! existence: the kernel drops it when the holding process dies, however it dies,
//! so a lock left by a killed run is never stale and is simply taken by the next
//! one. The file's content (pid, host, since) is only a note for the operator.

use std::fs::{self, File, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::config::{CONFIG_FILE, Config, TrackerConfig, write_atomic};
use crate::exchange::Exchange;
use crate::failure::Level;
use crate::ledger::Ledger;
use crate::signing::{KeyError, SiteKey};
use crate::tracker::jira::JiraTracker;
use crate::tracker::local::LocalTracker;
use crate::tracker::redmine::RedmineTracker;
use crate::tracker::{Tracker, TrackerError};

/// Another run of this site holds the lock.
#[derive(Debug, thiserror::Error)]
#[error(
    "another ferry run of this site holds the lock {} ({}); try again when it is done",
    .path.display(),
    .holder.as_deref().unwrap_or("holder unknown")
)]
pub struct LockError {
    /// The lock file.
    pub path: PathBuf,
    /// What the holder wrote into it: `pid N on HOST since TIME`.
    pub holder: Option<String>,
}

/// What opening a site may create when its state is not there.
///
/// `ferry init` makes the state folder, the ledger and the exchange clone, so
/// afterwards a missing one was lost or is misnamed. Creating it empty then would
/// be the worst answer: an empty ledger knows no link, so the next sync would send
/// every shared issue again and create the peer's issues a second time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// `ferry init`: a new site, or one whose whole state folder was lost (init
    /// keeps every file that exists).
    Create,
    /// `ferry relink`: the state folder must exist; a lost ledger is what relink
    /// rebuilds.
    NewLedger,
    /// Every other command.
    Refuse,
}

/// The state folder or its ledger is not there.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// `state:` names a folder that does not exist.
    #[error(
        "{}: `state: {}` names {}, which does not exist. If `state:` is mistyped or \
         the folder was moved, fix ferry.yaml; if the folder was lost, restore it from \
         a backup, or run `ferry init` (it keeps every existing file), `ferry pull` \
         and `ferry relink`",
        .config.display(),
        .setting.display(),
        .path.display()
    )]
    MissingFolder {
        /// `ferry.yaml`.
        config: PathBuf,
        /// The `state:` setting as written.
        setting: PathBuf,
        /// The folder it resolves to.
        path: PathBuf,
    },
    /// The state folder exists but the ledger does not.
    #[error(
        "the ledger {} does not exist. If this site has synced before, its ledger was \
         lost: restore it from a backup, or rebuild it with `ferry relink` (an empty \
         ledger would send every shared issue again and import the peer's twice); a \
         new site is set up with `ferry init`",
        .path.display()
    )]
    MissingLedger {
        /// Where the ledger should be.
        path: PathBuf,
    },
}

/// The site's state folder, created only if `missing` is [`Missing::Create`].
pub fn state_folder(config: &Config, missing: Missing) -> anyhow::Result<PathBuf> {
    let state = config.state_dir();
    if state.is_dir() {
        return Ok(state);
    }
    if missing != Missing::Create {
        return Err(StateError::MissingFolder {
            config: config.root.join(CONFIG_FILE),
            setting: config.site.state.clone(),
            path: state,
        }
        .into());
    }
    fs::create_dir_all(&state)
        .with_context(|| format!("cannot create state folder {}", state.display()))?;
    Ok(state)
}

/// Opens the site's ledger, creating the state folder or the ledger only as far
/// as `missing` allows.
pub fn open_ledger(config: &Config, missing: Missing) -> anyhow::Result<Ledger> {
    let path = state_folder(config, missing)?.join(LEDGER_FILE);
    if missing == Missing::Refuse && !path.exists() {
        return Err(StateError::MissingLedger { path }.into());
    }
    Ok(Ledger::open(&path)?)
}

/// Ledger file name inside the state folder.
pub const LEDGER_FILE: &str = "ledger.db";
/// Exchange clone folder name inside the state folder.
pub const EXCHANGE_DIR: &str = "exchange.git";
/// Lock file name inside the state folder.
pub const LOCK_FILE: &str = "lock";

/// A site, locked and ready.
pub struct Site {
    /// Checked configuration.
    pub config: Config,
    /// Local state.
    pub ledger: Ledger,
    /// Local exchange clone.
    pub exchange: Exchange,
    /// The tracker connector.
    pub tracker: Box<dyn Tracker>,
    _lock: File,
}

impl Site {
    /// Loads the configuration under `dir`, takes the lock, opens the state, and
    /// checks that this is the site its ledger belongs to (see [`crate::identity`]).
    pub fn open(dir: &Path) -> anyhow::Result<Site> {
        Site::open_with(dir, Missing::Refuse)
    }

    /// [`Site::open`], creating missing state as far as `missing` allows: for
    /// `ferry init` and `ferry relink`.
    pub fn open_with(dir: &Path, missing: Missing) -> anyhow::Result<Site> {
        let site = Site::open_state(dir, missing)?;
        let now = crate::identity::current(site.name(), site.tracker.as_ref())?;
        let ledger_path = site.config.state_dir().join(LEDGER_FILE);
        crate::identity::verify(&site.ledger, &now, dir, &ledger_path)?;
        Ok(site)
    }

    /// [`Site::open`] without the identity check: for `ferry site confirm`, which
    /// exists to settle a mismatch.
    pub fn open_unverified(dir: &Path) -> anyhow::Result<Site> {
        Site::open_state(dir, Missing::Refuse)
    }

    fn open_state(dir: &Path, missing: Missing) -> anyhow::Result<Site> {
        let config = Config::load(dir)?;
        let state = state_folder(&config, missing)?;
        let lock = take_lock(&state.join(LOCK_FILE))?;
        let ledger = open_ledger(&config, missing)?;
        // From here on the ledger can keep what goes wrong, for `ferry errors` and
        // the notification: local state that cannot be opened is the node's
        // failure, a tracker that cannot be opened the site's.
        let recorded = |level| {
            let ledger = &ledger;
            move |e: anyhow::Error| {
                record_run_failure(ledger, level, &e);
                e
            }
        };
        let mut exchange = Exchange::open_or_init(&state.join(EXCHANGE_DIR))
            .map_err(anyhow::Error::from)
            .map_err(recorded(Level::Node))?;
        exchange.sign_with(SiteKey::load(&config.signing_key_path())?);
        // We hold the site lock, so nobody else writes the private clone: any lock
        // file or pack in the making in it was left by a run that was killed.
        for stale in exchange
            .remove_stale_files()
            .map_err(anyhow::Error::from)
            .map_err(recorded(Level::Node))?
        {
            tracing::warn!("removed {}, left by an interrupted run", stale.display());
        }
        for stale in crate::transport::bundle::remove_quarantines(&exchange)
            .map_err(anyhow::Error::from)
            .map_err(recorded(Level::Node))?
        {
            tracing::warn!("removed {}, left by an interrupted run", stale.display());
        }
        let tracker = open_tracker(&config)
            .map_err(anyhow::Error::from)
            .map_err(recorded(Level::Site))?;
        Ok(Site {
            config,
            ledger,
            exchange,
            tracker,
            _lock: lock,
        })
    }

    /// This site's name.
    pub fn name(&self) -> &str {
        self.config.site_name()
    }
}

/// Records an error that stopped a whole run at `level`, when the ledger still
/// can.
pub fn record_run_failure(ledger: &Ledger, level: Level, e: &anyhow::Error) {
    if let Err(unrecorded) = ledger.record_error(level, None, None, &crate::words::error_chain(e)) {
        tracing::error!("{level}-level error not recorded: {unrecorded}");
    }
}

/// The site's clone, then every git channel of its connections that `pick`
/// selects: folders once each (connections sharing one repository), servers
/// as such. Bundle channels hold no repository.
pub fn maintenance_targets(
    config: &crate::config::Config,
    pick: impl Fn(&crate::config::Connection) -> bool,
) -> Vec<crate::maintenance::Target> {
    let mut targets = vec![crate::maintenance::Target::Clone(
        config.state_dir().join(EXCHANGE_DIR),
    )];
    for connection in config.connections.values().filter(|c| pick(c)) {
        let crate::config::ChannelSetting::Git(url) = &connection.settings.channel else {
            continue;
        };
        let peer = connection.peer.clone();
        let Some(dir) = crate::transport::remote::folder(url, &config.root) else {
            targets.push(crate::maintenance::Target::Server {
                peer,
                url: url.clone(),
            });
            continue;
        };
        let same = |a: &Path, b: &Path| match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
            (Ok(a), Ok(b)) => a == b,
            _ => a == b,
        };
        match targets.iter_mut().find(|t| match t {
            crate::maintenance::Target::Folder { dir: other, .. } => same(other, &dir),
            _ => false,
        }) {
            Some(crate::maintenance::Target::Folder { peers, .. }) => peers.push(peer),
            _ => targets.push(crate::maintenance::Target::Folder {
                peers: vec![peer],
                url: url.clone(),
                dir,
            }),
        }
    }
    targets
}

/// The connector the configuration names.
pub fn open_tracker(config: &Config) -> Result<Box<dyn Tracker>, TrackerError> {
    match &config.site.tracker {
        TrackerConfig::Local { path } => Ok(Box::new(LocalTracker::open(&config.resolve(path))?)),
        TrackerConfig::Redmine(redmine) => Ok(Box::new(RedmineTracker::open(
            redmine.settings(&config.root)?,
            &config.state_dir(),
        )?)),
        TrackerConfig::Jira(jira) => Ok(Box::new(JiraTracker::open(
            jira,
            &config.root,
            &config.state_dir(),
        )?)),
    }
}

/// Takes the site lock in the state folder `state` without opening the site:
/// for commands that need no tracker (`ferry maintenance`). Held until the
/// file is dropped.
pub fn lock(state: &Path) -> anyhow::Result<File> {
    take_lock(&state.join(LOCK_FILE))
}

fn take_lock(path: &Path) -> anyhow::Result<File> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {
            let host = hostname::get()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "an unknown host".into());
            let note = format!(
                "pid {} on {host} since {}\n",
                std::process::id(),
                crate::model::format_timestamp(&chrono::Utc::now())
            );
            // The note is best effort: the lock is held whether or not it is written.
            let _ = file
                .set_len(0)
                .and_then(|()| (&file).write_all(note.as_bytes()));
            Ok(file)
        }
        Err(TryLockError::WouldBlock) => {
            let holder = fs::read_to_string(path)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty());
            Err(LockError {
                path: path.to_path_buf(),
                holder,
            }
            .into())
        }
        Err(TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// This site's signing key, created (with its `.pub`) when the configuration
/// names none and the state folder has none yet: a key `ferry.yaml` names must
/// already exist, since ferry never writes where an admin pointed it. Returns the
/// key with whether it was created.
pub fn ensure_signing_key(config: &Config) -> Result<(SiteKey, bool), KeyError> {
    let path = config.signing_key_path();
    match SiteKey::load(&path) {
        Err(KeyError::Missing { .. }) if config.site.signing_key.is_none() => {
            let comment = format!("ferry@{}", config.site_name());
            Ok((SiteKey::generate(&path, &comment)?, true))
        }
        other => other.map(|key| (key, false)),
    }
}

/// The `tracker:` block of a new site's `ferry.yaml` for the embedded tracker.
pub const LOCAL_TRACKER_YAML: &str =
    "  # `local` is the embedded tracker (a SQLite file); see `ferry tracker --help`.
  kind: local
  path: tracker.db";

/// The files a new site gets, relative to the site folder, with their content.
/// `{{site}}` is replaced by the site name and `{{tracker}}` by the tracker block,
/// except in the message templates under
/// `templates/`, where it is filled at each notice.
const SCAFFOLD: &[(&str, &str)] = &[
    (CONFIG_FILE, include_str!("../templates/ferry.yaml")),
    (
        "rules/outgoing.rhai",
        include_str!("../templates/outgoing.rhai"),
    ),
    (
        "rules/incoming.rhai",
        include_str!("../templates/incoming.rhai"),
    ),
    (
        "rules/tables/users.yaml",
        include_str!("../templates/tables/users.yaml"),
    ),
    (
        "templates/notify.txt",
        include_str!("../templates/notify.txt"),
    ),
    (
        "templates/notify.html",
        include_str!("../templates/notify.html"),
    ),
];

/// Writes the scaffold of a new site into `dir`, keeping every file that already
/// exists (re-running `ferry init` never overwrites an admin's work). `tracker` is
/// the indented body of the `tracker:` block ([`LOCAL_TRACKER_YAML`] for the
/// embedded tracker). Returns each path with whether it was created.
pub fn scaffold(
    dir: &Path,
    site: &str,
    tracker: &str,
) -> anyhow::Result<Vec<(&'static str, bool)>> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut done = Vec::new();
    for (path, template) in SCAFFOLD {
        let target = dir.join(path);
        let created = !target.exists();
        if created {
            let text = if path.starts_with("templates/") {
                template.to_string()
            } else {
                template
                    .replace("{{site}}", site)
                    .replace("{{tracker}}", tracker)
            };
            write_atomic(&target, text.as_bytes())?;
        }
        done.push((*path, created));
    }
    Ok(done)
}

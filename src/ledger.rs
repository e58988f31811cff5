//! The ledger: a site's local, transactional state in SQLite (WAL).
//!
//! The exchange repo is the queue; the ledger is everything a site must remember
//! about it: which peer issue maps to which local one, which replica blob was last
//! applied per path (so a run that dies halfway resumes without redoing or skipping
//! work), which local issues are shared with which peer, the export cursor per
//! connection, imports to retry, and errors for operators and notifications
//! (`errors.notified_at` says which ones were already e-mailed, see [`crate::notify`]).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use crate::failure::Level;
use crate::model::{LinkDirection, Origin, format_timestamp, parse_timestamp};

mod attachments;
mod relations;
mod releases;
mod semantics;

pub use attachments::KnownAttachment;
pub use relations::{KeptRelation, Relation};
pub use releases::Held;
pub use semantics::{ExportRecord, KEPT_EXPORTS, NewExport};

/// The ledger could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("ledger {path}: {source}")]
pub struct LedgerError {
    path: String,
    #[source]
    source: rusqlite::Error,
}

impl LedgerError {
    /// A ledger that cannot be read or written is the machine's failure, wherever
    /// it surfaces: nothing the run did after it would be kept.
    pub const LEVEL: Level = Level::Node;
}

/// The `level` column holds [`Level::as_str`].
impl rusqlite::ToSql for Level {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(self.as_str().into())
    }
}

impl rusqlite::types::FromSql for Level {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        let name = value.as_str()?;
        Level::from_name(name).ok_or_else(|| {
            rusqlite::types::FromSqlError::Other(format!("unknown error level {name:?}").into())
        })
    }
}

impl From<LedgerError> for crate::failure::RunFailure {
    fn from(e: LedgerError) -> Self {
        crate::failure::RunFailure {
            level: LedgerError::LEVEL,
            error: e.into(),
        }
    }
}

/// One recorded error.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ErrorRecord {
    /// Ledger id, for `ferry retry`/`resolve`.
    pub id: i64,
    /// How far it reaches.
    pub level: Level,
    /// The connection (peer) it belongs to, if any.
    pub connection: Option<String>,
    /// The replica path or issue key it concerns, if any.
    pub subject: Option<String>,
    /// What happened.
    pub message: String,
    /// How many runs saw it.
    pub count: i64,
    /// First time seen.
    pub first_seen: String,
    /// Last time seen.
    pub last_seen: String,
    /// For an import waiting for a retry: failed tries so far.
    pub tries: Option<i64>,
    /// For an import waiting for a retry: parked until `ferry retry`.
    pub parked: bool,
    /// For an import waiting for a retry: earliest next automatic try.
    pub next_try: Option<String>,
}

/// How failing imports are retried (`retry:` in ferry.yaml).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Failed tries after which an issue is parked until an operator runs
    /// `ferry retry`.
    #[serde(default = "default_max_tries")]
    pub max_tries: u32,
    /// Delay before the second try; it doubles with every failed try, up to a day.
    #[serde(default = "default_backoff_minutes")]
    pub backoff_minutes: u32,
}

fn default_max_tries() -> u32 {
    8
}

fn default_backoff_minutes() -> u32 {
    5
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_tries: default_max_tries(),
            backoff_minutes: default_backoff_minutes(),
        }
    }
}

/// Where a failing replica stands after one more failed try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    /// Failed tries so far.
    pub tries: i64,
    /// No automatic retry any more: it waits for `ferry retry`.
    pub parked: bool,
    /// Earliest time of the next automatic try.
    pub next_at: DateTime<Utc>,
}

/// One write to the tracker on behalf of an import, as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Step {
    /// Journal id.
    pub id: i64,
    /// The replica path it applies.
    pub path: String,
    /// The replica blob it applies.
    pub blob: String,
    /// `create`, `update`, `comment`, `delete`.
    pub kind: String,
    /// The local issue it writes, when known before the write.
    pub target: Option<String>,
    /// When it started.
    pub started_at: String,
}

/// A tracker write to journal with [`Ledger::begin_steps`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewStep {
    /// The replica path it applies.
    pub path: String,
    /// The replica blob it applies.
    pub blob: String,
    /// `create`, `update`, `comment`, ...
    pub kind: &'static str,
    /// The local issue it writes, when known before the write.
    pub target: Option<String>,
}

/// A reviewer's verdict on a peer's commit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReviewVerdict {
    /// The commit.
    pub commit: String,
    /// `approved` or `rejected`.
    pub verdict: String,
    /// Who.
    pub by: String,
    /// When.
    pub at: String,
    /// Why, for a rejection.
    pub reason: Option<String>,
}

/// A paused connection: who paused it and when.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Pause {
    /// When it was paused (RFC 3339).
    pub since: String,
    /// Who paused it.
    pub by: String,
}

/// A hand-made choice to share one issue on a connection, or to stop.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Pick {
    /// Shared (`ferry share`), or unshared (`ferry unshare`).
    pub shared: bool,
    /// Made by the peer (its replica removed, or back), not by hand here.
    pub by_peer: bool,
    /// When.
    pub at: String,
    /// Whether an export acted on it yet.
    pub exported: bool,
}

/// A bundle in a connection's inbox that waits for a predecessor.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Waiting {
    /// Its file name in the inbox.
    pub file: String,
    /// The commit it needs and this site does not have.
    pub needs: String,
    /// When a fetch first found it waiting.
    pub since: String,
}

/// A site's ledger.
pub struct Ledger {
    conn: Connection,
    path: String,
    /// `FERRY_NOW` when set, so tests can step over retry delays.
    clock: Option<DateTime<Utc>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS links (
    peer TEXT NOT NULL,
    remote_id TEXT NOT NULL,
    remote_key TEXT NOT NULL,
    local_id TEXT NOT NULL,
    PRIMARY KEY (peer, remote_id)
);
CREATE INDEX IF NOT EXISTS links_local ON links (peer, local_id);
CREATE TABLE IF NOT EXISTS shared (
    peer TEXT NOT NULL,
    local_id TEXT NOT NULL,
    PRIMARY KEY (peer, local_id)
);
-- Issues shared (shared = 1) or unshared (0) by hand (`ferry share`,
-- `ferry unshare`) whatever the query says, or by the peer (by_peer = 1: it
-- removed its replica, or brought it back); `exported` once an export acted on it.
CREATE TABLE IF NOT EXISTS picks (
    peer TEXT NOT NULL,
    local_id TEXT NOT NULL,
    shared INTEGER NOT NULL,
    by_peer INTEGER NOT NULL DEFAULT 0,
    at TEXT NOT NULL,
    exported INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (peer, local_id)
);
CREATE TABLE IF NOT EXISTS applied (
    peer TEXT NOT NULL,
    path TEXT NOT NULL,
    blob TEXT NOT NULL,
    PRIMARY KEY (peer, path)
);
CREATE TABLE IF NOT EXISTS pending (
    peer TEXT NOT NULL,
    path TEXT NOT NULL,
    tries INTEGER NOT NULL DEFAULT 0,
    next_at TEXT,
    parked INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (peer, path)
);
CREATE TABLE IF NOT EXISTS cursors (
    peer TEXT PRIMARY KEY,
    cursor TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS steps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    peer TEXT NOT NULL,
    path TEXT NOT NULL,
    blob TEXT NOT NULL,
    kind TEXT NOT NULL,
    target TEXT,
    started_at TEXT NOT NULL,
    finished_at TEXT
);
CREATE INDEX IF NOT EXISTS steps_path ON steps (peer, path);
CREATE TABLE IF NOT EXISTS arrivals (
    peer TEXT PRIMARY KEY,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS reviews (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    peer TEXT NOT NULL,
    commit_id TEXT NOT NULL,
    verdict TEXT NOT NULL,
    by TEXT NOT NULL,
    at TEXT NOT NULL,
    reason TEXT,
    superseded INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS waiting_bundles (
    peer TEXT NOT NULL,
    file TEXT NOT NULL,
    needs TEXT NOT NULL,
    since TEXT NOT NULL,
    PRIMARY KEY (peer, file)
);
CREATE TABLE IF NOT EXISTS paused (
    peer TEXT PRIMARY KEY,
    since TEXT NOT NULL,
    by TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS errors (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    level TEXT NOT NULL,
    connection TEXT,
    subject TEXT,
    message TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    count INTEGER NOT NULL DEFAULT 1,
    resolved INTEGER NOT NULL DEFAULT 0
);
-- Every applied replica resolves its open errors: without this, each import
-- scanned every error the site ever had.
CREATE INDEX IF NOT EXISTS errors_open ON errors (connection, subject) WHERE resolved = 0;
";

impl Ledger {
    /// Opens (creating if needed) the ledger database.
    pub fn open(path: &Path) -> Result<Ledger, LedgerError> {
        let display = path.display().to_string();
        let wrap = |source| LedgerError {
            path: display.clone(),
            source,
        };
        let conn = Connection::open(path).map_err(wrap)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(wrap)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(wrap)?;
        // NORMAL, not FULL: in WAL mode a commit then costs no fsync (FULL costs
        // one per statement, milliseconds on common disks, which made an import
        // of 10 000 replicas take minutes). A killed process loses nothing; a
        // power cut may lose the last transactions, never consistency, and the
        // ledger then reads as if the run had stopped earlier, which every step
        // recovers from (replicas re-exported byte-identical, imports found again
        // by origin marker). [`Ledger::checkpoint`] makes a finished step durable.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(wrap)?;
        conn.set_prepared_statement_cache_capacity(64);
        conn.execute_batch(SCHEMA).map_err(wrap)?;
        conn.execute_batch(semantics::SCHEMA).map_err(wrap)?;
        conn.execute_batch(attachments::SCHEMA).map_err(wrap)?;
        conn.execute_batch(relations::SCHEMA).map_err(wrap)?;
        conn.execute_batch(releases::SCHEMA).map_err(wrap)?;
        migrate(&conn).map_err(wrap)?;
        Ok(Ledger {
            conn,
            path: display,
            clock: crate::clock::fixed_utc(),
        })
    }

    /// SQLite's own consistency check of the database (`PRAGMA quick_check`).
    pub fn quick_check(&self) -> Result<(), LedgerError> {
        let verdict: String = self
            .conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| self.wrap(e))?;
        if verdict == "ok" {
            Ok(())
        } else {
            Err(self.wrap(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
                Some(verdict),
            )))
        }
    }

    /// The time ledger records carry: `FERRY_NOW` when set (an invalid value is
    /// reported by the tracker and the exchange, which need it too), else the
    /// system clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.unwrap_or_else(Utc::now)
    }

    /// Runs a statement, prepared once per connection: a run makes thousands of
    /// the same few statements, and parsing them each time was a third of an
    /// import's time.
    fn exec(&self, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
        self.conn.prepare_cached(sql)?.execute(params)
    }

    /// Reads one row with a statement prepared once per connection.
    fn row<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        self.conn.prepare_cached(sql)?.query_row(params, f)
    }

    fn wrap(&self, source: rusqlite::Error) -> LedgerError {
        LedgerError {
            path: self.path.clone(),
            source,
        }
    }

    /// The local issue a peer's issue maps to.
    pub fn local_for(&self, peer: &str, remote_id: &str) -> Result<Option<String>, LedgerError> {
        self.row(
            "SELECT local_id FROM links WHERE peer = ?1 AND remote_id = ?2",
            params![peer, remote_id],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| self.wrap(e))
    }

    /// The peer's issue (id, key) a local issue maps to.
    pub fn remote_for(
        &self,
        peer: &str,
        local_id: &str,
    ) -> Result<Option<(String, String)>, LedgerError> {
        self.row(
            "SELECT remote_id, remote_key FROM links WHERE peer = ?1 AND local_id = ?2",
            params![peer, local_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(|e| self.wrap(e))
    }

    /// Records that a peer's issue maps to a local one.
    pub fn link(
        &self,
        peer: &str,
        remote_id: &str,
        remote_key: &str,
        local_id: &str,
    ) -> Result<(), LedgerError> {
        self.exec(
            "INSERT INTO links (peer, remote_id, remote_key, local_id) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (peer, remote_id) DO UPDATE SET remote_key = ?3, local_id = ?4",
            params![peer, remote_id, remote_key, local_id],
        )
        .map(drop)
        .map_err(|e| self.wrap(e))
    }

    /// Whether a local issue is connected with a peer: shared by this site, or
    /// linked to one of the peer's issues. Connected issues keep syncing even when
    /// they stop matching the connection's query (a closed issue must still send
    /// its closing).
    pub fn is_connected(&self, peer: &str, local_id: &str) -> Result<bool, LedgerError> {
        self.row(
            "SELECT EXISTS (SELECT 1 FROM shared WHERE peer = ?1 AND local_id = ?2)
                     OR EXISTS (SELECT 1 FROM links WHERE peer = ?1 AND local_id = ?2)",
            params![peer, local_id],
            |r| r.get(0),
        )
        .map_err(|e| self.wrap(e))
    }

    /// Whether this site exported the local issue to `peer` (the `shared`
    /// records of [`Ledger::mark_shared`]): only then may a replica of the peer
    /// that names this site's issue as its origin touch it.
    pub fn is_shared(&self, peer: &str, local_id: &str) -> Result<bool, LedgerError> {
        self.row(
            "SELECT EXISTS (SELECT 1 FROM shared WHERE peer = ?1 AND local_id = ?2)",
            params![peer, local_id],
            |r| r.get(0),
        )
        .map_err(|e| self.wrap(e))
    }

    /// Records the bundles of `peer`'s inbox that wait for a predecessor, as
    /// the last fetch found them (file, prerequisite), replacing the earlier
    /// list; a bundle still waiting keeps the time it was first seen waiting.
    pub fn set_waiting(
        &mut self,
        peer: &str,
        bundles: &[(String, String)],
    ) -> Result<(), LedgerError> {
        let now = format_timestamp(&self.now());
        self.atomically(|tx| {
            let files =
                serde_json::json!(bundles.iter().map(|(f, _)| f).collect::<Vec<_>>()).to_string();
            tx.prepare_cached(
                "DELETE FROM waiting_bundles WHERE peer = ?1
                 AND file NOT IN (SELECT value FROM json_each(?2))",
            )?
            .execute(params![peer, files])?;
            for (file, needs) in bundles {
                tx.prepare_cached(
                    "INSERT INTO waiting_bundles (peer, file, needs, since) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (peer, file) DO UPDATE SET needs = ?3",
                )?
                .execute(params![peer, file, needs, now])?;
            }
            Ok(())
        })
    }

    /// The bundles of `peer`'s inbox waiting for a predecessor, by file name.
    pub fn waiting(&self, peer: &str) -> Result<Vec<Waiting>, LedgerError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT file, needs, since FROM waiting_bundles WHERE peer = ?1 ORDER BY file",
            )
            .map_err(|e| self.wrap(e))?;
        stmt.query_map([peer], |r| {
            Ok(Waiting {
                file: r.get(0)?,
                needs: r.get(1)?,
                since: r.get(2)?,
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(|e| self.wrap(e))
    }

    /// Which of `local_ids` are connected to `peer` ([`Ledger::is_connected`]),
    /// in one query: an export asks for a page of issues at a time.
    pub fn connected_among(
        &self,
        peer: &str,
        local_ids: &[&str],
    ) -> Result<std::collections::HashSet<String>, LedgerError> {
        let ids = serde_json::json!(local_ids).to_string();
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT value FROM json_each(?2) AS i
                 WHERE EXISTS (SELECT 1 FROM shared WHERE peer = ?1 AND local_id = i.value)
                    OR EXISTS (SELECT 1 FROM links WHERE peer = ?1 AND local_id = i.value)",
            )
            .map_err(|e| self.wrap(e))?;
        stmt.query_map(params![peer, ids], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.wrap(e))
    }

    /// Records that local issues are shared with a peer, in one transaction.
    pub fn mark_shared(&mut self, peer: &str, local_ids: &[String]) -> Result<(), LedgerError> {
        self.atomically(|tx| {
            let mut insert =
                tx.prepare_cached("INSERT OR IGNORE INTO shared (peer, local_id) VALUES (?1, ?2)")?;
            for id in local_ids {
                insert.execute(params![peer, id])?;
            }
            Ok(())
        })
    }

    /// Records that a local issue is shared (`shared`) or no longer shared with
    /// `peer`, by hand or (`by_peer`) by the peer, replacing an earlier choice;
    /// the next export acts on it.
    pub fn pick(
        &self,
        peer: &str,
        local_id: &str,
        shared: bool,
        by_peer: bool,
    ) -> Result<(), LedgerError> {
        let now = format_timestamp(&self.now());
        self.exec(
            "INSERT INTO picks (peer, local_id, shared, by_peer, at, exported)
             VALUES (?1, ?2, ?3, ?4, ?5, 0)
             ON CONFLICT (peer, local_id) DO UPDATE SET shared = ?3, by_peer = ?4, at = ?5,
                 exported = 0",
            params![peer, local_id, shared, by_peer, now],
        )
        .map(drop)
        .map_err(|e| self.wrap(e))
    }

    /// The hand-made choice for a local issue on `peer`, if any.
    pub fn pick_for(&self, peer: &str, local_id: &str) -> Result<Option<Pick>, LedgerError> {
        self.conn
            .query_row(
                "SELECT shared, by_peer, at, exported FROM picks WHERE peer = ?1 AND local_id = ?2",
                params![peer, local_id],
                |r| {
                    Ok(Pick {
                        shared: r.get(0)?,
                        by_peer: r.get(1)?,
                        at: r.get(2)?,
                        exported: r.get(3)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.wrap(e))
    }

    /// The hand-made choices among `local_ids`: id → shared (true) or unshared.
    pub fn picks_among(
        &self,
        peer: &str,
        local_ids: &[&str],
    ) -> Result<HashMap<String, bool>, LedgerError> {
        let ids = serde_json::json!(local_ids).to_string();
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT local_id, shared FROM picks
                 WHERE peer = ?1 AND local_id IN (SELECT value FROM json_each(?2))",
            )
            .map_err(|e| self.wrap(e))?;
        stmt.query_map(params![peer, ids], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.wrap(e))
    }

    /// The local issues whose hand-made choice no export has acted on yet.
    pub fn unexported_picks(&self, peer: &str) -> Result<Vec<String>, LedgerError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT local_id FROM picks WHERE peer = ?1 AND exported = 0 ORDER BY local_id",
            )
            .map_err(|e| self.wrap(e))?;
        stmt.query_map([peer], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.wrap(e))
    }

    /// Records that an export acted on these issues' hand-made choices.
    pub fn mark_picks_exported(
        &mut self,
        peer: &str,
        local_ids: &[String],
    ) -> Result<(), LedgerError> {
        self.atomically(|tx| {
            let mut update = tx.prepare_cached(
                "UPDATE picks SET exported = 1 WHERE peer = ?1 AND local_id = ?2",
            )?;
            for id in local_ids {
                update.execute(params![peer, id])?;
            }
            Ok(())
        })
    }

    /// Writes what the ledger holds through to the disk (a WAL checkpoint, which
    /// syncs the WAL first): a step that finished is then kept even through a
    /// power cut. Passive: it never waits for a reader such as `ferry status`.
    pub fn checkpoint(&self) -> Result<(), LedgerError> {
        self.row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .map_err(|e| self.wrap(e))
    }

    /// The peer's replica path and applied blob of one of its issues, by the
    /// issue's id (the project part of the path is the peer's, unknown here).
    pub fn applied_for(
        &self,
        peer: &str,
        remote_id: &str,
    ) -> Result<Option<(String, String)>, LedgerError> {
        self.row(
            "SELECT path, blob FROM applied
                 WHERE peer = ?1 AND path LIKE 'issues/%/' || ?2 || '.yaml' AND blob != ''",
            params![peer, remote_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(|e| self.wrap(e))
    }

    /// The blob last applied for a replica path of a peer.
    pub fn applied_blob(&self, peer: &str, path: &str) -> Result<Option<String>, LedgerError> {
        self.row(
            "SELECT blob FROM applied WHERE peer = ?1 AND path = ?2",
            params![peer, path],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| self.wrap(e))
    }

    /// Runs `f` in one transaction, committed only if it succeeds: an import's
    /// bookkeeping for many replicas costs one commit instead of a dozen each. The
    /// methods that keep their own transaction nest in it as savepoints.
    pub fn in_transaction<T>(
        &mut self,
        f: impl FnOnce(&mut Ledger) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| self.wrap(e))?;
        let result = f(self).and_then(|value| {
            self.conn
                .execute_batch("COMMIT")
                .map_err(|e| self.wrap(e))?;
            Ok(value)
        });
        if result.is_err() && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        result
    }

    /// Runs `f` as one unit: a transaction of its own, or a savepoint when
    /// inside [`Ledger::in_transaction`].
    fn atomically<T>(
        &mut self,
        f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
    ) -> Result<T, LedgerError> {
        let result = (|| {
            let unit = self.conn.savepoint()?;
            let value = f(&unit)?;
            unit.commit()?;
            Ok(value)
        })();
        result.map_err(|e| self.wrap(e))
    }

    /// Records a replica blob as applied and clears its retry entry and its step
    /// journal, in one transaction.
    pub fn mark_applied(&mut self, peer: &str, path: &str, blob: &str) -> Result<(), LedgerError> {
        self.atomically(|tx| {
            tx.prepare_cached(
                "INSERT INTO applied (peer, path, blob) VALUES (?1, ?2, ?3)
                 ON CONFLICT (peer, path) DO UPDATE SET blob = ?3",
            )?
            .execute(params![peer, path, blob])?;
            tx.prepare_cached("DELETE FROM pending WHERE peer = ?1 AND path = ?2")?
                .execute(params![peer, path])?;
            // The replica is in the tracker: its journal has served its purpose.
            tx.prepare_cached("DELETE FROM steps WHERE peer = ?1 AND path = ?2")?
                .execute(params![peer, path])?;
            Ok(())
        })
    }

    /// Journals a tracker write before it runs. Together with [`Ledger::finish_step`]
    /// after it, a run killed in between leaves an unfinished step: the next run
    /// says what it is resuming, and the write itself is made safe to repeat by
    /// the origin markers (a create or comment is looked up before it is redone).
    pub fn begin_step(
        &self,
        peer: &str,
        path: &str,
        blob: &str,
        kind: &str,
        target: Option<&str>,
    ) -> Result<i64, LedgerError> {
        self.exec(
            "INSERT INTO steps (peer, path, blob, kind, target, started_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                peer,
                path,
                blob,
                kind,
                target,
                format_timestamp(&self.now())
            ],
        )
        .map_err(|e| self.wrap(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Journals tracker writes that have run but do not take effect before the
    /// tracker commits them (a batch, see [`crate::tracker::Tracker::begin_batch`]),
    /// all in one transaction, just before that commit; returns their ids for
    /// [`Ledger::finish_step`], once it is done. A run killed in between leaves
    /// them all unfinished, as [`Ledger::begin_step`] does for one write.
    pub fn begin_steps(&mut self, peer: &str, steps: &[NewStep]) -> Result<Vec<i64>, LedgerError> {
        self.in_transaction(|ledger| {
            steps
                .iter()
                .map(|step| {
                    ledger.begin_step(
                        peer,
                        &step.path,
                        &step.blob,
                        step.kind,
                        step.target.as_deref(),
                    )
                })
                .collect()
        })
    }

    /// Journals that a tracker write is done.
    pub fn finish_step(&self, id: i64) -> Result<(), LedgerError> {
        self.exec(
            "UPDATE steps SET finished_at = ?2 WHERE id = ?1",
            params![id, format_timestamp(&self.now())],
        )
        .map(drop)
        .map_err(|e| self.wrap(e))
    }

    /// Steps of a peer that started and never finished (the run died), oldest
    /// first; `path` narrows to one replica.
    pub fn interrupted_steps(
        &self,
        peer: &str,
        path: Option<&str>,
    ) -> Result<Vec<Step>, LedgerError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, path, blob, kind, target, started_at FROM steps
                 WHERE peer = ?1 AND finished_at IS NULL AND (?2 IS NULL OR path = ?2)
                 ORDER BY id",
            )
            .map_err(|e| self.wrap(e))?;
        let rows = stmt
            .query_map(params![peer, path], |r| {
                Ok(Step {
                    id: r.get(0)?,
                    path: r.get(1)?,
                    blob: r.get(2)?,
                    kind: r.get(3)?,
                    target: r.get(4)?,
                    started_at: r.get(5)?,
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>());
        rows.map_err(|e| self.wrap(e))
    }

    /// Replica paths of a peer whose import failed and waits for a retry, parked
    /// ones included.
    pub fn pending(&self, peer: &str) -> Result<Vec<String>, LedgerError> {
        self.pending_where(peer, "1")
    }

    /// The retries that are due now: not parked, and their backoff has passed.
    pub fn due_retries(&self, peer: &str) -> Result<Vec<String>, LedgerError> {
        let now = format_timestamp(&self.now());
        self.pending_where(
            peer,
            &format!("parked = 0 AND (next_at IS NULL OR next_at <= '{now}')"),
        )
    }

    fn pending_where(&self, peer: &str, condition: &str) -> Result<Vec<String>, LedgerError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT path FROM pending WHERE peer = ?1 AND {condition} ORDER BY path"
            ))
            .map_err(|e| self.wrap(e))?;
        let rows = stmt
            .query_map(params![peer], |r| r.get(0))
            .and_then(|rows| rows.collect::<Result<Vec<String>, _>>());
        rows.map_err(|e| self.wrap(e))
    }

    /// Counts one more failed try of a replica path and schedules the next one:
    /// the first retry is on the next run (most failures are a rule or a mapping
    /// an admin fixes right away), later ones wait `policy.backoff_minutes`,
    /// doubling with every try (at most a day), so a tracker that keeps refusing
    /// one issue is not hammered by every cron run. Once `policy.max_tries` tries
    /// have failed the path is parked: no automatic retry until `ferry retry`.
    pub fn retry_later(
        &self,
        peer: &str,
        path: &str,
        policy: &RetryPolicy,
    ) -> Result<Retry, LedgerError> {
        let tries: i64 = self
            .conn
            .query_row(
                "SELECT tries FROM pending WHERE peer = ?1 AND path = ?2",
                params![peer, path],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.wrap(e))?
            .unwrap_or(0)
            + 1;
        let parked = tries >= i64::from(policy.max_tries);
        let delay_minutes = match tries {
            1 => 0,
            n => i64::from(policy.backoff_minutes)
                .saturating_mul(1_i64 << (n - 2).clamp(0, 20))
                .min(24 * 60),
        };
        let next_at = self.now() + chrono::Duration::minutes(delay_minutes);
        self.exec(
            "INSERT INTO pending (peer, path, tries, next_at, parked) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (peer, path) DO UPDATE SET tries = ?3, next_at = ?4, parked = ?5",
            params![peer, path, tries, format_timestamp(&next_at), parked],
        )
        .map_err(|e| self.wrap(e))?;
        Ok(Retry {
            tries,
            parked,
            next_at,
        })
    }

    /// Makes a queued replica path due at once with a fresh count of tries (what
    /// `ferry retry` does); `false` when nothing was queued for it.
    pub fn requeue(&self, peer: &str, path: &str) -> Result<bool, LedgerError> {
        self.exec(
            "UPDATE pending SET tries = 0, next_at = NULL, parked = 0
                 WHERE peer = ?1 AND path = ?2",
            params![peer, path],
        )
        .map(|n| n > 0)
        .map_err(|e| self.wrap(e))
    }

    /// Drops a replica path from the retry queue (an operator handled it by hand).
    pub fn forget_retry(&self, peer: &str, path: &str) -> Result<(), LedgerError> {
        self.exec(
            "DELETE FROM pending WHERE peer = ?1 AND path = ?2",
            params![peer, path],
        )
        .map(drop)
        .map_err(|e| self.wrap(e))
    }

    /// How many issues are tied to a peer: (shared by this site and not
    /// unshared since, linked to one of the peer's issues, imports waiting for
    /// a retry).
    pub fn counts(&self, peer: &str) -> Result<(i64, i64, i64), LedgerError> {
        self.row(
            "SELECT (SELECT COUNT(*) FROM shared AS s WHERE peer = ?1
                         AND NOT EXISTS (SELECT 1 FROM picks AS p WHERE p.peer = ?1
                             AND p.local_id = s.local_id AND p.shared = 0)),
                        (SELECT COUNT(*) FROM links WHERE peer = ?1),
                        (SELECT COUNT(*) FROM pending WHERE peer = ?1)",
            params![peer],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .map_err(|e| self.wrap(e))
    }

    /// The export cursor of a connection: the newest `updated` already exported.
    pub fn cursor(&self, peer: &str) -> Result<Option<DateTime<Utc>>, LedgerError> {
        let text: Option<String> = self
            .conn
            .query_row(
                "SELECT cursor FROM cursors WHERE peer = ?1",
                params![peer],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.wrap(e))?;
        Ok(text.and_then(|t| parse_timestamp(&t).ok()))
    }

    /// Moves the export cursor of a connection (`None` forgets it: full export).
    pub fn set_cursor(&self, peer: &str, cursor: Option<DateTime<Utc>>) -> Result<(), LedgerError> {
        let result = match cursor {
            Some(c) => self.exec(
                "INSERT INTO cursors (peer, cursor) VALUES (?1, ?2)
                 ON CONFLICT (peer) DO UPDATE SET cursor = ?2",
                params![peer, format_timestamp(&c)],
            ),
            None => self
                .conn
                .execute("DELETE FROM cursors WHERE peer = ?1", params![peer]),
        };
        result.map(drop).map_err(|e| self.wrap(e))
    }

    /// Records that something new arrived from a peer (now).
    pub fn mark_arrival(&self, peer: &str) -> Result<(), LedgerError> {
        self.exec(
            "INSERT INTO arrivals (peer, at) VALUES (?1, ?2)
                 ON CONFLICT (peer) DO UPDATE SET at = ?2",
            params![peer, format_timestamp(&self.now())],
        )
        .map(drop)
        .map_err(|e| self.wrap(e))
    }

    /// When something last arrived from a peer, and how long ago that is.
    pub fn last_arrival(
        &self,
        peer: &str,
    ) -> Result<Option<(DateTime<Utc>, chrono::Duration)>, LedgerError> {
        let text: Option<String> = self
            .conn
            .query_row(
                "SELECT at FROM arrivals WHERE peer = ?1",
                params![peer],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.wrap(e))?;
        Ok(text
            .and_then(|t| parse_timestamp(&t).ok())
            .map(|at| (at, self.now() - at)))
    }

    /// Records a reviewer's verdict on a peer's commit.
    pub fn record_verdict(
        &self,
        peer: &str,
        commit: &str,
        verdict: &str,
        by: &str,
        reason: Option<&str>,
    ) -> Result<(), LedgerError> {
        self.insert_verdict("reviews", peer, commit, verdict, by, reason)
    }

    /// Records a verdict in `table` (`reviews` or `releases`, the same columns).
    fn insert_verdict(
        &self,
        table: &str,
        peer: &str,
        commit: &str,
        verdict: &str,
        by: &str,
        reason: Option<&str>,
    ) -> Result<(), LedgerError> {
        self.exec(
            &format!(
                "INSERT INTO {table} (peer, commit_id, verdict, by, at, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
            ),
            params![
                peer,
                commit,
                verdict,
                by,
                format_timestamp(&self.now()),
                reason
            ],
        )
        .map(drop)
        .map_err(|e| self.wrap(e))
    }

    /// The newest approval of a peer's commits.
    pub fn last_approval(&self, peer: &str) -> Result<Option<ReviewVerdict>, LedgerError> {
        Ok(self
            .verdicts("reviews", peer, "verdict = 'approved'")?
            .into_iter()
            .next_back())
    }

    /// Rejections a later approval has not superseded, oldest first.
    pub fn open_rejections(&self, peer: &str) -> Result<Vec<ReviewVerdict>, LedgerError> {
        self.verdicts("reviews", peer, "verdict = 'rejected' AND superseded = 0")
    }

    /// Marks a rejection superseded (a reviewer approved past it).
    pub fn supersede_rejection(&self, peer: &str, commit: &str) -> Result<(), LedgerError> {
        self.exec(
            "UPDATE reviews SET superseded = 1
                 WHERE peer = ?1 AND commit_id = ?2 AND verdict = 'rejected'",
            params![peer, commit],
        )
        .map(drop)
        .map_err(|e| self.wrap(e))
    }

    /// The verdicts of `table` (`reviews` or `releases`) for `peer` that meet
    /// `condition`, oldest first.
    fn verdicts(
        &self,
        table: &str,
        peer: &str,
        condition: &str,
    ) -> Result<Vec<ReviewVerdict>, LedgerError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT commit_id, verdict, by, at, reason FROM {table}
                 WHERE peer = ?1 AND {condition} ORDER BY id"
            ))
            .map_err(|e| self.wrap(e))?;
        let rows = stmt
            .query_map(params![peer], |r| {
                Ok(ReviewVerdict {
                    commit: r.get(0)?,
                    verdict: r.get(1)?,
                    by: r.get(2)?,
                    at: r.get(3)?,
                    reason: r.get(4)?,
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>());
        rows.map_err(|e| self.wrap(e))
    }

    /// Pauses a connection; returns the existing pause when it already was.
    ///
    /// A pause is state, not configuration: it lives here rather than in the
    /// connection file, so pausing never rewrites what an admin wrote, and a
    /// configuration deployment cannot resume a connection an operator paused.
    pub fn pause(&self, peer: &str, by: &str) -> Result<Option<Pause>, LedgerError> {
        if let Some(existing) = self.paused(peer)? {
            return Ok(Some(existing));
        }
        self.exec(
            "INSERT INTO paused (peer, since, by) VALUES (?1, ?2, ?3)",
            params![peer, format_timestamp(&self.now()), by],
        )
        .map_err(|e| self.wrap(e))?;
        Ok(None)
    }

    /// Resumes a connection; returns the pause it ended, if it was paused.
    pub fn resume(&self, peer: &str) -> Result<Option<Pause>, LedgerError> {
        let pause = self.paused(peer)?;
        self.exec("DELETE FROM paused WHERE peer = ?1", params![peer])
            .map_err(|e| self.wrap(e))?;
        Ok(pause)
    }

    /// The pause of a connection, if it is paused.
    pub fn paused(&self, peer: &str) -> Result<Option<Pause>, LedgerError> {
        self.row(
            "SELECT since, by FROM paused WHERE peer = ?1",
            params![peer],
            |r| {
                Ok(Pause {
                    since: r.get(0)?,
                    by: r.get(1)?,
                })
            },
        )
        .optional()
        .map_err(|e| self.wrap(e))
    }

    /// Records an error; the same unresolved error seen again only bumps its count.
    pub fn record_error(
        &self,
        level: Level,
        connection: Option<&str>,
        subject: Option<&str>,
        message: &str,
    ) -> Result<(), LedgerError> {
        let now = format_timestamp(&self.now());
        let updated = self
            .conn
            .execute(
                "UPDATE errors SET count = count + 1, last_seen = ?5
                 WHERE resolved = 0 AND level = ?1 AND connection IS ?2 AND subject IS ?3 AND message = ?4",
                params![level, connection, subject, message, now],
            )
            .map_err(|e| self.wrap(e))?;
        if updated == 0 {
            self.exec(
                "INSERT INTO errors (level, connection, subject, message, first_seen, last_seen)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                params![level, connection, subject, message, now],
            )
            .map_err(|e| self.wrap(e))?;
        }
        Ok(())
    }

    /// Marks a subject's errors resolved (it imported fine on a later run).
    pub fn resolve_subject(&self, connection: &str, subject: &str) -> Result<(), LedgerError> {
        self
            .exec(
                "UPDATE errors SET resolved = 1 WHERE connection = ?1 AND subject = ?2 AND resolved = 0",
                params![connection, subject],
            )
            .map(drop)
            .map_err(|e| self.wrap(e))
    }

    /// Whether `connection` has an unresolved error about `subject`.
    pub fn has_open_subject(&self, connection: &str, subject: &str) -> Result<bool, LedgerError> {
        self.conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM errors
                     WHERE resolved = 0 AND connection = ?1 AND subject = ?2)",
                params![connection, subject],
                |r| r.get(0),
            )
            .map_err(|e| self.wrap(e))
    }

    /// Unresolved errors, oldest first.
    pub fn open_errors(&self) -> Result<Vec<ErrorRecord>, LedgerError> {
        self.errors_where("e.resolved = 0")
    }

    /// One unresolved error by id.
    pub fn open_error(&self, id: i64) -> Result<Option<ErrorRecord>, LedgerError> {
        Ok(self
            .errors_where(&format!("e.resolved = 0 AND e.id = {id}"))?
            .into_iter()
            .next())
    }

    /// Marks one error handled.
    pub fn resolve_error(&self, id: i64) -> Result<(), LedgerError> {
        self.exec("UPDATE errors SET resolved = 1 WHERE id = ?1", params![id])
            .map(drop)
            .map_err(|e| self.wrap(e))
    }

    /// Marks resolved the errors of one level that have no subject: a connection's
    /// (`connection` = the peer) or the site's (`None`), once a run got through.
    pub fn resolve_level(&self, level: Level, connection: Option<&str>) -> Result<(), LedgerError> {
        self.exec(
            "UPDATE errors SET resolved = 1
                 WHERE resolved = 0 AND level = ?1 AND connection IS ?2 AND subject IS NULL",
            params![level, connection],
        )
        .map(drop)
        .map_err(|e| self.wrap(e))
    }

    /// Unresolved errors no notification has mentioned yet, oldest first. An error
    /// seen again only bumps its count, so it is never notified twice; one that
    /// was resolved and comes back is a new row, so it is notified again.
    ///
    /// Left out: errors a notice was being sent for within `window` of now, by a
    /// run that died before it could record the server's answer. The message
    /// may have gone out; it is sent again only once the window has passed.
    pub fn unnotified_errors(
        &self,
        window: chrono::Duration,
    ) -> Result<Vec<ErrorRecord>, LedgerError> {
        let since = format_timestamp(&(self.now() - window));
        self.errors_where(&format!(
            "e.resolved = 0 AND e.notified_at IS NULL
             AND (e.notice_attempt_at IS NULL OR e.notice_attempt_at <= '{since}')"
        ))
    }

    /// Records that a notice listing these errors is about to be sent (see
    /// [`Ledger::unnotified_errors`]), in one transaction.
    pub fn mark_notice_attempt(&mut self, ids: &[i64]) -> Result<(), LedgerError> {
        let now = format_timestamp(&self.now());
        self.update_errors(ids, "notice_attempt_at = ?2", Some(&now))
    }

    /// Forgets a notice attempt that certainly failed (the server refused or was
    /// unreachable), so the next run sends at once.
    pub fn clear_notice_attempt(&mut self, ids: &[i64]) -> Result<(), LedgerError> {
        self.update_errors(ids, "notice_attempt_at = NULL", None)
    }

    fn update_errors(
        &mut self,
        ids: &[i64],
        assignment: &str,
        value: Option<&str>,
    ) -> Result<(), LedgerError> {
        let sql = format!("UPDATE errors SET {assignment} WHERE id = ?1");
        self.atomically(|tx| {
            ids.iter().try_for_each(|id| match value {
                Some(value) => tx.execute(&sql, params![id, value]).map(drop),
                None => tx.execute(&sql, params![id]).map(drop),
            })
        })
    }

    /// Records that a notification listing these errors was accepted by the mail
    /// server (now), in one transaction.
    pub fn mark_notified(&mut self, ids: &[i64]) -> Result<(), LedgerError> {
        let now = format_timestamp(&self.now());
        self.update_errors(ids, "notified_at = ?2", Some(&now))
    }

    fn errors_where(&self, condition: &str) -> Result<Vec<ErrorRecord>, LedgerError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT e.id, e.level, e.connection, e.subject, e.message, e.count,
                        e.first_seen, e.last_seen, p.tries, COALESCE(p.parked, 0), p.next_at
                 FROM errors e
                 LEFT JOIN pending p ON p.peer = e.connection AND p.path = e.subject
                 WHERE {condition} ORDER BY e.id"
            ))
            .map_err(|e| self.wrap(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(ErrorRecord {
                    id: r.get(0)?,
                    level: r.get(1)?,
                    connection: r.get(2)?,
                    subject: r.get(3)?,
                    message: r.get(4)?,
                    count: r.get(5)?,
                    first_seen: r.get(6)?,
                    last_seen: r.get(7)?,
                    tries: r.get(8)?,
                    parked: r.get(9)?,
                    next_try: r.get(10)?,
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>());
        rows.map_err(|e| self.wrap(e))
    }
}

/// Brings a ledger written by an older ferry up to the current schema.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let has_notified_at: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info('errors') WHERE name = 'notified_at')",
        [],
        |r| r.get(0),
    )?;
    if !has_notified_at {
        conn.execute("ALTER TABLE errors ADD COLUMN notified_at TEXT", [])?;
    }
    let has_tries: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info('pending') WHERE name = 'tries')",
        [],
        |r| r.get(0),
    )?;
    let has_attempt: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info('errors') WHERE name = 'notice_attempt_at')",
        [],
        |r| r.get(0),
    )?;
    if !has_attempt {
        conn.execute("ALTER TABLE errors ADD COLUMN notice_attempt_at TEXT", [])?;
    }
    if !has_tries {
        conn.execute_batch(
            "ALTER TABLE pending ADD COLUMN tries INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE pending ADD COLUMN next_at TEXT;
             ALTER TABLE pending ADD COLUMN parked INTEGER NOT NULL DEFAULT 0;",
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;

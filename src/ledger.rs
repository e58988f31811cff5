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

use crate::model::{LinkDirection, Origin, format_timestamp, parse_timestamp};

mod releases;

pub use releases::Held;

/// The ledger could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("ledger {path}: {source}")]
pub struct LedgerError {
    path: String,
    #[source]
    source: rusqlite::Error,
}

/// One recorded error.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ErrorRecord {
    /// Ledger id, for `ferry retry`/`resolve`.
    pub id: i64,
    /// `issue`, `connection`, `site` or `node`.
    pub level: String,
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
        conn.execute_batch(SEMANTICS_SCHEMA).map_err(wrap)?;
        conn.execute_batch(ATTACHMENTS_SCHEMA).map_err(wrap)?;
        conn.execute_batch(RELATIONS_SCHEMA).map_err(wrap)?;
        conn.execute_batch(releases::SCHEMA).map_err(wrap)?;
        migrate(&conn).map_err(wrap)?;
        Ok(Ledger {
            conn,
            path: display,
            clock: std::env::var(crate::tracker::local::NOW_ENV)
                .ok()
                .and_then(|t| parse_timestamp(&t).ok()),
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
        self.exec(
            "INSERT INTO reviews (peer, commit_id, verdict, by, at, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
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
            .verdicts(peer, "verdict = 'approved'")?
            .into_iter()
            .next_back())
    }

    /// Rejections a later approval has not superseded, oldest first.
    pub fn open_rejections(&self, peer: &str) -> Result<Vec<ReviewVerdict>, LedgerError> {
        self.verdicts(peer, "verdict = 'rejected' AND superseded = 0")
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

    fn verdicts(&self, peer: &str, condition: &str) -> Result<Vec<ReviewVerdict>, LedgerError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT commit_id, verdict, by, at, reason FROM reviews
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
        level: &str,
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
    pub fn resolve_level(&self, level: &str, connection: Option<&str>) -> Result<(), LedgerError> {
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

/// Tables of the sync semantics (conflicts, site identity), kept apart from
/// [`SCHEMA`] so each part of the ledger reads on its own.
///
/// - `baselines`: per linked issue and field, the last value both sites are known
///   to share (see [`crate::engine::conflict`]), with the `exported.seq` it dates
///   from, so a newer export the peer has acknowledged can replace it.
/// - `exported`: per issue, the local field values of each export not yet known
///   to be superseded, with the commit that carried them and the issue's `updated`.
/// - `identity`: which site and tracker this ledger belongs to (see
///   [`crate::identity`]).
const SEMANTICS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS baselines (
    peer TEXT NOT NULL,
    local_id TEXT NOT NULL,
    field TEXT NOT NULL,
    value TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (peer, local_id, field)
);
CREATE TABLE IF NOT EXISTS exported (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    peer TEXT NOT NULL,
    local_id TEXT NOT NULL,
    commit_id TEXT NOT NULL,
    updated TEXT NOT NULL,
    fields TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS exported_issue ON exported (peer, local_id, seq);
CREATE TABLE IF NOT EXISTS staged_exports (
    seq INTEGER PRIMARY KEY,
    peer TEXT NOT NULL,
    local_id TEXT NOT NULL,
    updated TEXT NOT NULL,
    fields TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS identity (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

/// How many exports of one issue the ledger keeps for conflict baselines. A peer
/// acknowledges within a sync or two; an acknowledgement older than the kept ones
/// falls back to the import baseline, which can only make a conflict more likely
/// to be seen, never hide one.
pub const KEPT_EXPORTS: i64 = 16;

/// Deletes the export records older than the newest [`KEPT_EXPORTS`] of each
/// staged issue: one pass over those issues' records, in index order.
fn prune_exports() -> String {
    format!(
        "DELETE FROM exported WHERE seq IN (
             SELECT seq FROM (
                 SELECT seq, row_number() OVER (PARTITION BY local_id ORDER BY seq DESC) AS newer
                 FROM exported
                 WHERE peer = ?1 AND local_id IN (SELECT local_id FROM staged_exports WHERE peer = ?1)
             ) WHERE newer > {KEPT_EXPORTS})"
    )
}

/// One export of one issue, as [`Ledger::exports`] returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportRecord {
    /// Order of the exports (ledger-wide, increasing).
    pub seq: i64,
    /// The commit of this site's branch that carried it.
    pub commit: String,
    /// The issue's `updated` at the export (the replica's `updated`).
    pub updated: DateTime<Utc>,
    /// Local field values at the export, by field name.
    pub fields: BTreeMap<String, serde_json::Value>,
}

/// What one export carried of one issue, for [`Ledger::stage_exports`].
#[derive(Debug, Clone, PartialEq)]
pub struct NewExport {
    /// The local issue.
    pub local_id: String,
    /// Its `updated` (the replica's).
    pub updated: DateTime<Utc>,
    /// Its local field values by field name, as the JSON object the ledger
    /// stores: an export of 100 000 issues holds one per issue until its commit
    /// exists, and the text is a third of the size of the map.
    fields: String,
}

impl NewExport {
    /// The record of `fields`, the issue's local field values by field name.
    pub fn new(
        local_id: String,
        updated: DateTime<Utc>,
        fields: BTreeMap<String, serde_json::Value>,
    ) -> NewExport {
        let fields = serde_json::Value::Object(fields.into_iter().collect()).to_string();
        NewExport {
            local_id,
            updated,
            fields,
        }
    }
}

/// Field values of one issue by field name, with the sequence number they date
/// from.
pub type BaselineFields = BTreeMap<String, (serde_json::Value, i64)>;

impl Ledger {
    /// The baseline of a linked issue: per field, the last value both sites share.
    pub fn baseline(&self, peer: &str, local_id: &str) -> Result<BaselineFields, LedgerError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT field, value, seq FROM baselines WHERE peer = ?1 AND local_id = ?2",
            )
            .map_err(|e| self.wrap(e))?;
        let rows = stmt
            .query_map(params![peer, local_id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.wrap(e))?;
        Ok(rows
            .into_iter()
            .map(|(field, value, seq)| {
                let value = serde_json::from_str(&value).unwrap_or(serde_json::Value::Null);
                (field, (value, seq))
            })
            .collect())
    }

    /// Sets baseline values, each only where the stored one is not newer. `seq`
    /// `None` means "now": newer than every export so far.
    pub fn merge_baseline(
        &mut self,
        peer: &str,
        local_id: &str,
        fields: &BTreeMap<String, serde_json::Value>,
        seq: Option<i64>,
    ) -> Result<(), LedgerError> {
        self.atomically(|tx| {
            let seq: i64 = match seq {
                Some(seq) => seq,
                None => tx
                    .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM exported")?
                    .query_row([], |r| r.get(0))?,
            };
            let mut merge = tx.prepare_cached(
                "INSERT INTO baselines (peer, local_id, field, value, seq) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (peer, local_id, field) DO UPDATE SET value = ?4, seq = ?5
                 WHERE baselines.seq <= ?5",
            )?;
            for (field, value) in fields {
                merge.execute(params![peer, local_id, field, value.to_string(), seq])?;
            }
            Ok(())
        })
    }

    /// Keeps what an export is about to commit, until [`Ledger::record_staged_exports`]
    /// knows the commit: a large export then holds a page of these, not all.
    /// Nothing reads staged records; [`Ledger::drop_staged_exports`] clears what
    /// a run that died before its commit left.
    pub fn stage_exports(&mut self, peer: &str, exports: &[NewExport]) -> Result<(), LedgerError> {
        self.atomically(|tx| {
            for export in exports {
                tx.prepare_cached(
                    "INSERT INTO staged_exports (peer, local_id, updated, fields)
                     VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![
                    peer,
                    export.local_id,
                    format_timestamp(&export.updated),
                    export.fields
                ])?;
            }
            Ok(())
        })
    }

    /// Records the staged exports as carried by `commit`, in one transaction,
    /// keeping the newest [`KEPT_EXPORTS`] records of each issue: older ones only
    /// matter until the peer acknowledges a newer one, and a peer that stays
    /// silent must not make the table grow without end.
    pub fn record_staged_exports(&mut self, peer: &str, commit: &str) -> Result<(), LedgerError> {
        self.atomically(|tx| {
            tx.prepare_cached(
                "INSERT INTO exported (peer, local_id, commit_id, updated, fields)
                 SELECT peer, local_id, ?2, updated, fields FROM staged_exports
                 WHERE peer = ?1 ORDER BY seq",
            )?
            .execute(params![peer, commit])?;
            tx.prepare_cached(&prune_exports())?.execute([peer])?;
            tx.prepare_cached("DELETE FROM staged_exports WHERE peer = ?1")?
                .execute([peer])?;
            Ok(())
        })
    }

    /// Forgets staged exports no commit carries.
    pub fn drop_staged_exports(&self, peer: &str) -> Result<(), LedgerError> {
        self.exec("DELETE FROM staged_exports WHERE peer = ?1", [peer])
            .map(drop)
            .map_err(|e| self.wrap(e))
    }

    /// The recorded exports of an issue, oldest first.
    pub fn exports(&self, peer: &str, local_id: &str) -> Result<Vec<ExportRecord>, LedgerError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, commit_id, updated, fields FROM exported
                 WHERE peer = ?1 AND local_id = ?2 ORDER BY seq",
            )
            .map_err(|e| self.wrap(e))?;
        let rows = stmt
            .query_map(params![peer, local_id], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.wrap(e))?;
        Ok(rows
            .into_iter()
            .filter_map(|(seq, commit, updated, fields)| {
                Some(ExportRecord {
                    seq,
                    commit,
                    updated: parse_timestamp(&updated).ok()?,
                    fields: serde_json::from_str(&fields).ok()?,
                })
            })
            .collect())
    }

    /// Forgets an issue's exports older than `seq`: the peer has acknowledged a
    /// later one, so they can never be a baseline again.
    pub fn forget_exports_before(
        &self,
        peer: &str,
        local_id: &str,
        seq: i64,
    ) -> Result<(), LedgerError> {
        self.exec(
            "DELETE FROM exported WHERE peer = ?1 AND local_id = ?2 AND seq < ?3",
            params![peer, local_id, seq],
        )
        .map(drop)
        .map_err(|e| self.wrap(e))
    }

    /// A value of the `identity` table.
    pub fn identity(&self, name: &str) -> Result<Option<String>, LedgerError> {
        self.row(
            "SELECT value FROM identity WHERE name = ?1",
            params![name],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| self.wrap(e))
    }

    /// Queues a replica path for the next import, due at once, without counting a
    /// failed try (`ferry relink` queues replicas whose issue is missing here).
    pub fn queue_import(&self, peer: &str, path: &str) -> Result<(), LedgerError> {
        self.exec(
            "INSERT INTO pending (peer, path) VALUES (?1, ?2) ON CONFLICT (peer, path) DO NOTHING",
            params![peer, path],
        )
        .map(drop)
        .map_err(|e| self.wrap(e))
    }

    /// Sets a value of the `identity` table.
    pub fn set_identity(&self, name: &str, value: &str) -> Result<(), LedgerError> {
        self.exec(
            "INSERT INTO identity (name, value) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET value = ?2",
            params![name, value],
        )
        .map(drop)
        .map_err(|e| self.wrap(e))
    }
}

/// What ferry knows of the tracker's attachments, by local issue and attachment
/// id: the SHA-256 and size it computed from their content (a tracker that does
/// not report hashes is then read once per attachment, not once per export), and
/// the peer an import copied it from (such a copy is not sent back to that peer).
const ATTACHMENTS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS attachments (
    local_id TEXT NOT NULL,
    attachment TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    peer TEXT,
    PRIMARY KEY (local_id, attachment)
);
";

/// One attachment as the ledger knows it ([`Ledger::attachment`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownAttachment {
    /// SHA-256 of its content, computed by ferry.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
    /// The peer it was copied from, when an import made it.
    pub peer: Option<String>,
}

impl Ledger {
    /// What the ledger knows of attachment `attachment` of local issue `local_id`.
    pub fn attachment(
        &self,
        local_id: &str,
        attachment: &str,
    ) -> Result<Option<KnownAttachment>, LedgerError> {
        self.conn
            .prepare_cached(
                "SELECT sha256, size, peer FROM attachments WHERE local_id = ?1 AND attachment = ?2",
            )
            .and_then(|mut statement| {
                statement
                    .query_row(params![local_id, attachment], |r| {
                        Ok(KnownAttachment {
                            sha256: r.get(0)?,
                            size: r.get(1)?,
                            peer: r.get(2)?,
                        })
                    })
                    .optional()
            })
            .map_err(|e| self.wrap(e))
    }

    /// Records an attachment's content hash, and the peer it came from when an
    /// import made it (a later record without a peer keeps the one known).
    pub fn record_attachment(
        &self,
        local_id: &str,
        attachment: &str,
        known: &KnownAttachment,
    ) -> Result<(), LedgerError> {
        self.exec(
            "INSERT INTO attachments (local_id, attachment, sha256, size, peer) \
             VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (local_id, attachment) DO UPDATE SET \
             sha256 = excluded.sha256, size = excluded.size, \
             peer = COALESCE(excluded.peer, attachments.peer)",
            params![local_id, attachment, known.sha256, known.size, known.peer],
        )
        .map(|_| ())
        .map_err(|e| self.wrap(e))
    }
}

/// The relations (links between issues, parents) the peers' replicas ask of
/// local issues, by the peer, the local issue whose replica asks, what it asks
/// (`kind` `link` with its local link type and direction, or `parent`) and the
/// other issue by its identity across sites. `other_local` is the local issue
/// the relation was made with; NULL while the relation waits for its other end
/// to arrive (or to be shared on that connection). Rows change in the
/// transaction that marks their replica applied, and a waiting one becomes made
/// only after the tracker holds the relation, so a killed run leaves at worst a
/// made relation still marked waiting, which the next run makes again (making
/// a relation that exists changes nothing).
const RELATIONS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS relations (
    peer TEXT NOT NULL,
    local_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    link_type TEXT NOT NULL,
    direction TEXT NOT NULL,
    other_site TEXT NOT NULL,
    other_id TEXT NOT NULL,
    path TEXT NOT NULL,
    other_local TEXT,
    since TEXT NOT NULL,
    PRIMARY KEY (peer, local_id, kind, link_type, direction, other_site, other_id)
);
CREATE INDEX IF NOT EXISTS relations_waiting ON relations (peer) WHERE other_local IS NULL;
";

/// A relation a peer's replica asks of a local issue: a link (its type, in this
/// site's names, and which end the local issue is) or the parent, with the
/// other issue by its identity across sites.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Relation {
    /// `Some((type, direction))` for a link, `None` for the parent.
    pub link: Option<(String, LinkDirection)>,
    /// The other issue.
    pub other: Origin,
}

/// A [`Relation`] as the ledger keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptRelation {
    /// The local issue whose replica asked for it.
    pub local_id: String,
    /// What it asked for.
    pub relation: Relation,
    /// The replica path that asked.
    pub path: String,
    /// The local issue it was made with; `None` while it waits.
    pub made_with: Option<String>,
    /// When it was first asked for.
    pub since: String,
}

impl Relation {
    /// The ledger's `kind`, `link_type` and `direction` columns.
    fn columns(&self) -> (&'static str, &str, &'static str) {
        match &self.link {
            Some((link_type, direction)) => ("link", link_type, direction.as_str()),
            None => ("parent", "", ""),
        }
    }
}

/// Reads `local_id, kind, link_type, direction, other_site, other_id, path,
/// other_local, since`.
fn read_relation(r: &rusqlite::Row) -> rusqlite::Result<KeptRelation> {
    let kind: String = r.get(1)?;
    let link_type: String = r.get(2)?;
    let direction: String = r.get(3)?;
    let link = match (kind.as_str(), LinkDirection::parse(&direction)) {
        ("link", Some(direction)) => Some((link_type, direction)),
        _ => None,
    };
    Ok(KeptRelation {
        local_id: r.get(0)?,
        relation: Relation {
            link,
            other: Origin {
                site: r.get(4)?,
                id: r.get(5)?,
            },
        },
        path: r.get(6)?,
        made_with: r.get(7)?,
        since: r.get(8)?,
    })
}

const RELATION_COLUMNS: &str =
    "local_id, kind, link_type, direction, other_site, other_id, path, other_local, since";

impl Ledger {
    /// The relations `peer`'s replica asks of the local issue `local_id`.
    pub fn relations(&self, peer: &str, local_id: &str) -> Result<Vec<KeptRelation>, LedgerError> {
        self.relations_where(peer, "local_id = ?2", local_id)
    }

    /// The relations of `peer`'s replicas that wait for their other end, oldest
    /// first.
    pub fn waiting_relations(&self, peer: &str) -> Result<Vec<KeptRelation>, LedgerError> {
        self.relations_where(peer, "other_local IS NULL AND ?2 = ?2", "")
    }

    fn relations_where(
        &self,
        peer: &str,
        condition: &str,
        value: &str,
    ) -> Result<Vec<KeptRelation>, LedgerError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {RELATION_COLUMNS} FROM relations WHERE peer = ?1 AND {condition} \
                 ORDER BY since, local_id, kind, link_type, direction, other_site, other_id"
            ))
            .map_err(|e| self.wrap(e))?;
        stmt.query_map(params![peer, value], read_relation)
            .and_then(|rows| rows.collect())
            .map_err(|e| self.wrap(e))
    }

    /// Records that `peer`'s replica at `path` asks `relation` of the local issue
    /// `local_id`; it waits until [`Ledger::relation_made`]. Asked again, it
    /// stays as it is.
    pub fn want_relation(
        &self,
        peer: &str,
        local_id: &str,
        relation: &Relation,
        path: &str,
    ) -> Result<(), LedgerError> {
        let (kind, link_type, direction) = relation.columns();
        self.exec(
            "INSERT INTO relations (peer, local_id, kind, link_type, direction, other_site, \
             other_id, path, since) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
             ON CONFLICT DO NOTHING",
            params![
                peer,
                local_id,
                kind,
                link_type,
                direction,
                relation.other.site,
                relation.other.id,
                path,
                format_timestamp(&self.now())
            ],
        )
        .map(drop)
        .map_err(|e| self.wrap(e))
    }

    /// Records that `relation` of `local_id` is in the tracker, made with the
    /// local issue `other_local`.
    pub fn relation_made(
        &self,
        peer: &str,
        local_id: &str,
        relation: &Relation,
        other_local: &str,
    ) -> Result<(), LedgerError> {
        let (kind, link_type, direction) = relation.columns();
        self.exec(
            "UPDATE relations SET other_local = ?8 WHERE peer = ?1 AND local_id = ?2 \
             AND kind = ?3 AND link_type = ?4 AND direction = ?5 AND other_site = ?6 \
             AND other_id = ?7",
            params![
                peer,
                local_id,
                kind,
                link_type,
                direction,
                relation.other.site,
                relation.other.id,
                other_local
            ],
        )
        .map(drop)
        .map_err(|e| self.wrap(e))
    }

    /// Forgets a relation: the replica no longer asks for it.
    pub fn forget_relation(
        &self,
        peer: &str,
        local_id: &str,
        relation: &Relation,
    ) -> Result<(), LedgerError> {
        let (kind, link_type, direction) = relation.columns();
        self.exec(
            "DELETE FROM relations WHERE peer = ?1 AND local_id = ?2 AND kind = ?3 \
             AND link_type = ?4 AND direction = ?5 AND other_site = ?6 AND other_id = ?7",
            params![
                peer,
                local_id,
                kind,
                link_type,
                direction,
                relation.other.site,
                relation.other.id
            ],
        )
        .map(drop)
        .map_err(|e| self.wrap(e))
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
mod tests {
    use super::*;

    const HOUR: chrono::Duration = chrono::Duration::hours(1);

    fn ledger() -> (tempfile::TempDir, Ledger) {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&dir.path().join("ledger.db")).unwrap();
        (dir, ledger)
    }

    #[test]
    fn links_map_both_ways_and_connect() {
        let (_dir, mut ledger) = ledger();
        assert!(!ledger.is_connected("eng", "7").unwrap());
        ledger.link("eng", "42", "ENG-1", "7").unwrap();
        assert_eq!(ledger.local_for("eng", "42").unwrap().as_deref(), Some("7"));
        assert_eq!(
            ledger.remote_for("eng", "7").unwrap(),
            Some(("42".into(), "ENG-1".into()))
        );
        assert!(ledger.is_connected("eng", "7").unwrap());
        assert!(!ledger.is_connected("qa", "7").unwrap());
        ledger.mark_shared("qa", &["7".into()]).unwrap();
        assert!(ledger.is_connected("qa", "7").unwrap());
        assert_eq!(
            ledger.connected_among("eng", &["7", "8"]).unwrap(),
            std::collections::HashSet::from(["7".to_string()])
        );
    }

    #[test]
    fn picks_replace_each_other_and_wait_for_an_export() {
        let (_dir, mut ledger) = ledger();
        assert_eq!(ledger.pick_for("qa", "7").unwrap(), None);
        ledger.pick("qa", "7", true, false).unwrap();
        ledger.pick("qa", "8", false, true).unwrap();
        assert_eq!(ledger.unexported_picks("qa").unwrap(), vec!["7", "8"]);
        ledger.mark_picks_exported("qa", &["7".into()]).unwrap();
        assert_eq!(ledger.unexported_picks("qa").unwrap(), vec!["8"]);
        let picks = ledger.picks_among("qa", &["7", "8", "9"]).unwrap();
        assert_eq!(picks.get("7"), Some(&true));
        assert_eq!(picks.get("8"), Some(&false));
        assert_eq!(picks.get("9"), None);
        // Changing one's mind replaces the choice, and the next export acts again.
        ledger.pick("qa", "7", false, false).unwrap();
        let pick = ledger.pick_for("qa", "7").unwrap().unwrap();
        assert!(!pick.shared && !pick.exported && !pick.by_peer);
        assert!(ledger.pick_for("qa", "8").unwrap().unwrap().by_peer);
        // An issue unshared no longer counts as shared.
        ledger.mark_shared("qa", &["7".into(), "9".into()]).unwrap();
        assert_eq!(ledger.counts("qa").unwrap().0, 1);
        assert!(ledger.unexported_picks("other").unwrap().is_empty());
    }

    #[test]
    fn relations_wait_until_made_and_are_forgotten_when_no_longer_asked() {
        let (_dir, ledger) = ledger();
        let blocks = Relation {
            link: Some(("Blocks".into(), LinkDirection::Outward)),
            other: Origin {
                site: "support".into(),
                id: "7".into(),
            },
        };
        let parent = Relation {
            link: None,
            other: blocks.other.clone(),
        };
        let path = "issues/SUP/5.yaml";
        for relation in [&blocks, &parent, &blocks] {
            ledger
                .want_relation("support", "12", relation, path)
                .unwrap();
        }
        let kept = ledger.relations("support", "12").unwrap();
        assert_eq!(kept.len(), 2);
        assert!(kept.iter().all(|k| k.made_with.is_none() && k.path == path));
        assert_eq!(ledger.waiting_relations("support").unwrap().len(), 2);
        assert!(ledger.waiting_relations("other").unwrap().is_empty());
        ledger.relation_made("support", "12", &blocks, "3").unwrap();
        let waiting = ledger.waiting_relations("support").unwrap();
        assert_eq!(
            waiting.iter().map(|k| &k.relation).collect::<Vec<_>>(),
            [&parent]
        );
        let made = ledger.relations("support", "12").unwrap();
        let made = made.iter().find(|k| k.relation == blocks).unwrap();
        assert_eq!(made.made_with.as_deref(), Some("3"));
        ledger.forget_relation("support", "12", &blocks).unwrap();
        ledger.forget_relation("support", "12", &parent).unwrap();
        assert!(ledger.relations("support", "12").unwrap().is_empty());
    }

    #[test]
    fn applied_clears_pending() {
        let (_dir, mut ledger) = ledger();
        let policy = RetryPolicy::default();
        ledger
            .retry_later("eng", "issues/ENG/1.yaml", &policy)
            .unwrap();
        ledger
            .retry_later("eng", "issues/ENG/1.yaml", &policy)
            .unwrap();
        assert_eq!(ledger.pending("eng").unwrap(), vec!["issues/ENG/1.yaml"]);
        ledger
            .mark_applied("eng", "issues/ENG/1.yaml", "abc")
            .unwrap();
        assert!(ledger.pending("eng").unwrap().is_empty());
        assert_eq!(
            ledger
                .applied_blob("eng", "issues/ENG/1.yaml")
                .unwrap()
                .as_deref(),
            Some("abc")
        );
    }

    #[test]
    fn retries_back_off_then_park_until_requeued() {
        let (_dir, mut ledger) = ledger();
        let start = parse_timestamp("2026-11-20T10:00:00Z").unwrap();
        ledger.clock = Some(start);
        let policy = RetryPolicy {
            max_tries: 3,
            backoff_minutes: 10,
        };
        let path = "issues/ENG/1.yaml";
        let first = ledger.retry_later("eng", path, &policy).unwrap();
        assert_eq!((first.tries, first.parked), (1, false));
        assert_eq!(ledger.due_retries("eng").unwrap(), vec![path], "next run");

        let second = ledger.retry_later("eng", path, &policy).unwrap();
        assert_eq!(second.next_at, start + chrono::Duration::minutes(10));
        assert!(ledger.due_retries("eng").unwrap().is_empty());
        ledger.clock = Some(second.next_at);
        assert_eq!(ledger.due_retries("eng").unwrap(), vec![path]);

        let third = ledger.retry_later("eng", path, &policy).unwrap();
        assert!(third.parked);
        ledger.clock = Some(start + chrono::Duration::days(30));
        assert!(ledger.due_retries("eng").unwrap().is_empty(), "parked");
        assert_eq!(ledger.pending("eng").unwrap(), vec![path]);

        assert!(ledger.requeue("eng", path).unwrap());
        assert_eq!(ledger.due_retries("eng").unwrap(), vec![path]);
        assert_eq!(ledger.retry_later("eng", path, &policy).unwrap().tries, 1);
        ledger.forget_retry("eng", path).unwrap();
        assert!(ledger.pending("eng").unwrap().is_empty());
        assert!(!ledger.requeue("eng", path).unwrap());
    }

    #[test]
    fn cursor_round_trips_and_resets() {
        let (_dir, ledger) = ledger();
        assert_eq!(ledger.cursor("eng").unwrap(), None);
        let t = parse_timestamp("2026-11-20T10:00:00Z").unwrap();
        ledger.set_cursor("eng", Some(t)).unwrap();
        assert_eq!(ledger.cursor("eng").unwrap(), Some(t));
        ledger.set_cursor("eng", None).unwrap();
        assert_eq!(ledger.cursor("eng").unwrap(), None);
    }

    #[test]
    fn same_error_twice_is_counted_not_duplicated() {
        let (_dir, ledger) = ledger();
        for _ in 0..2 {
            ledger
                .record_error("issue", Some("eng"), Some("issues/ENG/1.yaml"), "bad")
                .unwrap();
        }
        let errors = ledger.open_errors().unwrap();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].count, 2);
        ledger.resolve_subject("eng", "issues/ENG/1.yaml").unwrap();
        assert!(ledger.open_errors().unwrap().is_empty());
    }

    #[test]
    fn notified_errors_are_not_listed_again_until_they_come_back() {
        let (_dir, mut ledger) = ledger();
        ledger
            .record_error("issue", Some("eng"), Some("issues/ENG/1.yaml"), "bad")
            .unwrap();
        let pending = ledger.unnotified_errors(HOUR).unwrap();
        assert_eq!(pending.len(), 1);
        ledger.mark_notified(&[pending[0].id]).unwrap();
        assert!(ledger.unnotified_errors(HOUR).unwrap().is_empty());
        // Seen again: counted, not notified again.
        ledger
            .record_error("issue", Some("eng"), Some("issues/ENG/1.yaml"), "bad")
            .unwrap();
        assert!(ledger.unnotified_errors(HOUR).unwrap().is_empty());
        // Resolved and back: a new error, notified again.
        ledger.resolve_subject("eng", "issues/ENG/1.yaml").unwrap();
        ledger
            .record_error("issue", Some("eng"), Some("issues/ENG/1.yaml"), "bad")
            .unwrap();
        assert_eq!(ledger.unnotified_errors(HOUR).unwrap().len(), 1);
    }

    #[test]
    fn a_notice_that_may_have_gone_out_waits_for_the_window() {
        let (_dir, mut ledger) = ledger();
        let start = parse_timestamp("2026-11-20T10:00:00Z").unwrap();
        ledger.clock = Some(start);
        ledger.record_error("site", None, None, "down").unwrap();
        let ids: Vec<i64> = ledger
            .unnotified_errors(HOUR)
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect();
        // The run died after sending, before hearing the answer.
        ledger.mark_notice_attempt(&ids).unwrap();
        ledger.clock = Some(start + chrono::Duration::minutes(59));
        assert!(ledger.unnotified_errors(HOUR).unwrap().is_empty());
        ledger.clock = Some(start + HOUR);
        assert_eq!(ledger.unnotified_errors(HOUR).unwrap().len(), 1);
        // A send that certainly failed is retried at once.
        ledger.mark_notice_attempt(&ids).unwrap();
        ledger.clear_notice_attempt(&ids).unwrap();
        assert_eq!(ledger.unnotified_errors(HOUR).unwrap().len(), 1);
    }

    /// Staging then recording, as an export does around its commit.
    trait RecordExports {
        fn record(&mut self, at: (&str, &str), exports: &[NewExport]) -> Result<(), LedgerError>;
    }

    impl RecordExports for Ledger {
        fn record(
            &mut self,
            (peer, commit): (&str, &str),
            exports: &[NewExport],
        ) -> Result<(), LedgerError> {
            self.stage_exports(peer, exports)?;
            self.record_staged_exports(peer, commit)
        }
    }

    #[test]
    fn staged_exports_no_commit_carries_are_dropped() {
        let (_dir, mut ledger) = ledger();
        ledger.stage_exports("eng", &[export("7", "Open")]).unwrap();
        ledger.drop_staged_exports("eng").unwrap();
        ledger
            .record(("eng", "c1"), &[export("8", "Open")])
            .unwrap();
        assert!(ledger.exports("eng", "7").unwrap().is_empty());
        assert_eq!(ledger.exports("eng", "8").unwrap()[0].commit, "c1");
    }

    fn values(status: &str) -> BTreeMap<String, serde_json::Value> {
        BTreeMap::from([("status".to_string(), serde_json::json!(status))])
    }

    fn export(id: &str, status: &str) -> NewExport {
        NewExport::new(id.into(), Utc::now(), values(status))
    }

    #[test]
    fn a_baseline_value_is_replaced_only_by_a_newer_one() {
        let (_dir, mut ledger) = ledger();
        ledger
            .record(("eng", "c1"), &[export("7", "Open")])
            .unwrap();
        ledger
            .record(("eng", "c2"), &[export("7", "Closed")])
            .unwrap();
        let exports = ledger.exports("eng", "7").unwrap();
        assert_eq!(exports.len(), 2);
        // An import after both exports: newer than either.
        ledger
            .merge_baseline("eng", "7", &values("Resolved"), None)
            .unwrap();
        // Folding in the acknowledged first export does not undo it.
        ledger
            .merge_baseline("eng", "7", &values("Open"), Some(exports[0].seq))
            .unwrap();
        assert_eq!(ledger.baseline("eng", "7").unwrap()["status"].0, "Resolved");
        // An export made after the import, once acknowledged, replaces it.
        ledger
            .record(("eng", "c3"), &[export("7", "Closed")])
            .unwrap();
        let third = ledger.exports("eng", "7").unwrap()[2].seq;
        ledger
            .merge_baseline("eng", "7", &values("Closed"), Some(third))
            .unwrap();
        assert_eq!(ledger.baseline("eng", "7").unwrap()["status"].0, "Closed");
        ledger.forget_exports_before("eng", "7", third).unwrap();
        assert_eq!(ledger.exports("eng", "7").unwrap().len(), 1);
    }

    #[test]
    fn only_the_newest_exports_of_an_issue_are_kept() {
        let (_dir, mut ledger) = ledger();
        for i in 0..KEPT_EXPORTS + 5 {
            ledger
                .record(("eng", &format!("c{i}")), &[export("7", "Open")])
                .unwrap();
        }
        ledger
            .record(("eng", "other"), &[export("8", "Open")])
            .unwrap();
        let kept = ledger.exports("eng", "7").unwrap();
        assert_eq!(kept.len() as i64, KEPT_EXPORTS);
        assert_eq!(
            kept.last().unwrap().commit,
            format!("c{}", KEPT_EXPORTS + 4)
        );
        assert_eq!(ledger.exports("eng", "8").unwrap().len(), 1);
    }

    #[test]
    fn an_old_ledger_gains_notified_at() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let old = Connection::open(&path).unwrap();
        old.execute_batch(SCHEMA).unwrap();
        old.execute(
            "INSERT INTO errors (level, message, first_seen, last_seen) VALUES ('issue', 'old', 'x', 'x')",
            [],
        )
        .unwrap();
        drop(old);
        let ledger = Ledger::open(&path).unwrap();
        assert_eq!(ledger.unnotified_errors(HOUR).unwrap().len(), 1);
        drop(ledger);
        // Opening again does not try to add the column twice.
        Ledger::open(&path).unwrap();
    }
}

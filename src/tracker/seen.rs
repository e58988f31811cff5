//! What a server connector has seen of each issue, kept to notice deletions.
//!
//! Jira and Redmine delete issues for good and report nothing, so their
//! connectors remember every issue they have read (what a tombstone needs) and,
//! on each run, look for the remembered ones that vanished. That memory grows
//! with the project, and a first export of a large project fills it a page at a
//! time: it is a small SQLite file in the state folder, not a JSON document, so
//! neither a run's memory nor the cost of recording a page grows with the
//! number of issues remembered (a JSON file had to be read whole, held whole and
//! rewritten whole for every change: at 100 000 issues some 40 MB per page).
//!
//! Each row is one issue: its id, key and project (for the lookups the
//! connectors make), the connector's own record of it (JSON, opaque here), when
//! its deletion was confirmed, and when a 404 first made it suspect (Jira
//! confirms a deletion only in a later run). An older JSON file is read into the
//! store once, on the first open, and then removed.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use crate::model::{format_timestamp, parse_timestamp};
use crate::tracker::TrackerError;

/// One remembered issue.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    /// The connector's record (JSON).
    pub record: String,
    /// When the deletion was confirmed; `None` while the issue lives.
    pub deleted_at: Option<DateTime<Utc>>,
    /// When a run first found it missing (Jira); `None` otherwise.
    pub suspected_at: Option<DateTime<Utc>>,
}

/// A live issue as it is recorded.
pub(crate) struct Seen {
    pub id: String,
    pub key: String,
    pub project: String,
    pub record: String,
}

/// The store: one SQLite file.
pub(crate) struct SeenStore {
    conn: Mutex<Connection>,
    path: PathBuf,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS seen (
    id TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    project TEXT NOT NULL,
    record TEXT NOT NULL,
    deleted_at TEXT,
    suspected_at TEXT
);
CREATE INDEX IF NOT EXISTS seen_key ON seen (key);
";

fn time(s: Option<String>) -> Option<DateTime<Utc>> {
    s.and_then(|s| parse_timestamp(&s).ok())
}

impl SeenStore {
    /// Opens (or creates) the store at `path`. When it is new and `legacy` (the
    /// JSON file of an older ferry) exists, `migrate` turns that file's bytes
    /// into rows (with their deletion and suspicion times), which are stored
    /// before the file is removed.
    pub fn open(
        path: &Path,
        legacy: &Path,
        migrate: impl FnOnce(&[u8]) -> Result<Vec<(Seen, Entry)>, String>,
    ) -> Result<SeenStore, TrackerError> {
        let fail = |e: &dyn std::fmt::Display| {
            TrackerError::Unavailable(format!("cannot open {}: {e}", path.display()))
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
        }
        let conn = Connection::open(path).map_err(|e| fail(&e))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(|e| fail(&e))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| fail(&e))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| fail(&e))?;
        conn.execute_batch(SCHEMA).map_err(|e| fail(&e))?;
        let store = SeenStore {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        };
        if let Ok(bytes) = std::fs::read(legacy) {
            let rows = migrate(&bytes).map_err(|e| {
                TrackerError::Unavailable(format!("cannot read {}: {e}", legacy.display()))
            })?;
            store.write(|tx| {
                for (seen, entry) in &rows {
                    tx.execute(
                        "INSERT OR REPLACE INTO seen (id, key, project, record, deleted_at, suspected_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![
                            seen.id,
                            seen.key,
                            seen.project,
                            seen.record,
                            entry.deleted_at.as_ref().map(format_timestamp),
                            entry.suspected_at.as_ref().map(format_timestamp),
                        ],
                    )?;
                }
                Ok(())
            })?;
            std::fs::remove_file(legacy).map_err(|e| {
                TrackerError::Unavailable(format!("cannot remove {}: {e}", legacy.display()))
            })?;
        }
        Ok(store)
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn error(&self, e: rusqlite::Error) -> TrackerError {
        TrackerError::Unavailable(format!("{}: {e}", self.path.display()))
    }

    /// Runs `f` in one transaction.
    fn write(
        &self,
        f: impl FnOnce(&rusqlite::Transaction) -> rusqlite::Result<()>,
    ) -> Result<(), TrackerError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.error(e))?;
        f(&tx).map_err(|e| self.error(e))?;
        tx.commit().map_err(|e| self.error(e))
    }

    /// The entry of `id`.
    pub fn get(&self, id: &str) -> Result<Option<Entry>, TrackerError> {
        self.conn()
            .prepare_cached("SELECT record, deleted_at, suspected_at FROM seen WHERE id = ?1")
            .and_then(|mut s| {
                s.query_row([id], |row| {
                    Ok(Entry {
                        record: row.get(0)?,
                        deleted_at: time(row.get(1)?),
                        suspected_at: time(row.get(2)?),
                    })
                })
                .optional()
            })
            .map_err(|e| self.error(e))
    }

    /// The id of the remembered issue with this key (the newest, should a key
    /// have been reused).
    pub fn id_of_key(&self, key: &str) -> Result<Option<String>, TrackerError> {
        self.conn()
            .prepare_cached("SELECT id FROM seen WHERE key = ?1 ORDER BY rowid DESC LIMIT 1")
            .and_then(|mut s| s.query_row([key], |row| row.get(0)).optional())
            .map_err(|e| self.error(e))
    }

    /// Records live issues, in one transaction: a changed record replaces the
    /// old one, and an issue seen alive is no longer deleted or suspected (a
    /// reused id, an index that caught up).
    pub fn seen(&self, issues: impl IntoIterator<Item = Seen>) -> Result<(), TrackerError> {
        self.write(|tx| {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO seen (id, key, project, record) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (id) DO UPDATE SET key = ?2, project = ?3, record = ?4,
                     deleted_at = NULL, suspected_at = NULL
                 WHERE record IS NOT ?4 OR deleted_at IS NOT NULL OR suspected_at IS NOT NULL",
            )?;
            for issue in issues {
                upsert.execute(params![issue.id, issue.key, issue.project, issue.record])?;
            }
            Ok(())
        })
    }

    /// Replaces the record of `id` and marks it deleted at `at` (unless it
    /// already was: the first time stays). Nothing for an id never seen.
    pub fn bury(
        &self,
        id: &str,
        record: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<(), TrackerError> {
        self.write(|tx| {
            if let Some(record) = record {
                tx.execute(
                    "UPDATE seen SET record = ?2 WHERE id = ?1",
                    params![id, record],
                )?;
            }
            tx.execute(
                "UPDATE seen SET deleted_at = coalesce(deleted_at, ?2), suspected_at = NULL
                 WHERE id = ?1",
                params![id, format_timestamp(&at)],
            )?;
            Ok(())
        })
    }

    /// Records that a run found `id` missing at `at` (the first time stays).
    pub fn suspect(&self, id: &str, at: DateTime<Utc>) -> Result<(), TrackerError> {
        self.write(|tx| {
            tx.execute(
                "UPDATE seen SET suspected_at = coalesce(suspected_at, ?2) WHERE id = ?1",
                params![id, format_timestamp(&at)],
            )?;
            Ok(())
        })
    }

    /// Forgets issues (moved out of sight).
    pub fn forget(&self, ids: &[String]) -> Result<(), TrackerError> {
        self.write(|tx| {
            let mut delete = tx.prepare_cached("DELETE FROM seen WHERE id = ?1")?;
            for id in ids {
                delete.execute([id])?;
            }
            Ok(())
        })
    }

    /// Ids of live issues (of `project`, when given) that `listed` does not
    /// hold, in id order.
    pub fn live_ids_except(
        &self,
        project: Option<&str>,
        listed: &std::collections::HashSet<String>,
    ) -> Result<Vec<String>, TrackerError> {
        let conn = self.conn();
        let mut statement = conn
            .prepare_cached(
                "SELECT id FROM seen WHERE deleted_at IS NULL AND (?1 IS NULL OR project = ?1)
                 ORDER BY id",
            )
            .map_err(|e| self.error(e))?;
        let rows = statement
            .query_map([project], |row| row.get::<_, String>(0))
            .map_err(|e| self.error(e))?;
        let mut missing = Vec::new();
        for id in rows {
            let id = id.map_err(|e| self.error(e))?;
            if !listed.contains(&id) {
                missing.push(id);
            }
        }
        Ok(missing)
    }

    /// Deleted issues whose deletion was confirmed at or after `since`, in id
    /// order: (id, entry).
    pub fn tombstones(
        &self,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<(String, Entry)>, TrackerError> {
        let conn = self.conn();
        let mut statement = conn
            .prepare_cached(
                "SELECT id, record, deleted_at FROM seen
                 WHERE deleted_at IS NOT NULL AND (?1 IS NULL OR deleted_at >= ?1) ORDER BY id",
            )
            .map_err(|e| self.error(e))?;
        let rows = statement
            .query_map([since.as_ref().map(format_timestamp)], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    Entry {
                        record: row.get(1)?,
                        deleted_at: time(row.get(2)?),
                        suspected_at: None,
                    },
                ))
            })
            .map_err(|e| self.error(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.error(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn at(s: &str) -> DateTime<Utc> {
        parse_timestamp(s).unwrap()
    }

    fn seen(id: &str, record: &str) -> Seen {
        Seen {
            id: id.into(),
            key: "K".into(),
            project: "P".into(),
            record: record.into(),
        }
    }

    #[test]
    fn records_buries_revives_and_lists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known.db");
        let store = SeenStore::open(&path, &dir.path().join("none.json"), |_| Ok(vec![])).unwrap();
        store
            .seen([seen("1", "a"), seen("2", "b"), seen("3", "c")])
            .unwrap();
        store.suspect("2", at("2026-01-01T00:00:00Z")).unwrap();
        store.suspect("2", at("2026-01-02T00:00:00Z")).unwrap();
        assert_eq!(
            store.get("2").unwrap().unwrap().suspected_at,
            Some(at("2026-01-01T00:00:00Z")),
            "the first suspicion stays"
        );
        store.bury("3", None, at("2026-01-03T00:00:00Z")).unwrap();
        store.bury("3", None, at("2026-01-04T00:00:00Z")).unwrap();
        let listed: HashSet<String> = ["1".to_string()].into();
        assert_eq!(store.live_ids_except(Some("P"), &listed).unwrap(), ["2"]);
        assert!(
            store
                .live_ids_except(Some("Q"), &listed)
                .unwrap()
                .is_empty()
        );
        let tombs = store.tombstones(Some(at("2026-01-03T00:00:00Z"))).unwrap();
        assert_eq!(tombs.len(), 1);
        assert_eq!(tombs[0].1.deleted_at, Some(at("2026-01-03T00:00:00Z")));
        assert!(
            store
                .tombstones(Some(at("2026-01-03T00:00:01Z")))
                .unwrap()
                .is_empty()
        );
        // Seen alive again: neither deleted nor suspected.
        store.seen([seen("3", "c"), seen("2", "b")]).unwrap();
        assert_eq!(
            store.get("3").unwrap(),
            Some(Entry {
                record: "c".into(),
                deleted_at: None,
                suspected_at: None
            })
        );
        assert_eq!(store.get("2").unwrap().unwrap().suspected_at, None);
        store.forget(&["1".into()]).unwrap();
        assert_eq!(store.get("1").unwrap(), None);
        assert_eq!(store.id_of_key("K").unwrap().as_deref(), Some("3"));
        drop(store);
        // What it holds is on disk for the next run.
        let again = SeenStore::open(&path, &dir.path().join("none.json"), |_| Ok(vec![])).unwrap();
        assert_eq!(again.get("3").unwrap().unwrap().record, "c");
    }

    #[test]
    fn an_older_json_file_is_read_once_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = dir.path().join("known.json");
        std::fs::write(&legacy, "x").unwrap();
        let path = dir.path().join("known.db");
        let store = SeenStore::open(&path, &legacy, |bytes| {
            assert_eq!(bytes, b"x");
            Ok(vec![(
                Seen {
                    id: "7".into(),
                    key: "K-7".into(),
                    project: "P".into(),
                    record: "r".into(),
                },
                Entry {
                    record: "r".into(),
                    deleted_at: Some(at("2026-01-01T00:00:00Z")),
                    suspected_at: None,
                },
            )])
        })
        .unwrap();
        assert!(!legacy.exists());
        assert_eq!(
            store.get("7").unwrap().unwrap().deleted_at,
            Some(at("2026-01-01T00:00:00Z"))
        );
        assert_eq!(store.tombstones(None).unwrap().len(), 1);
    }
}

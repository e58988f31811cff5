//! The embedded default tracker: a real little issue tracker in one SQLite file.
//!
//! A site that has no Redmine or Jira (the demo, tests, benchmarks, or a small team
//! that just wants ferry's exchange) keeps its issues here. It has what sync needs
//! from any tracker: projects with `PROJECT-N` keys, types, statuses, priorities,
//! users as plain names, labels, components, custom fields holding any JSON value,
//! comments with an internal flag, attachments with their content, soft deletion and `updated`
//! timestamps that move only on a real change.
//!
//! Design choices, and why:
//! - Timestamps are stored as Unix seconds (`INTEGER`): ferry works in whole seconds
//!   everywhere, and integers compare and index cheaply for `changed_since`.
//! - Deletion is soft (`deleted = 1`): a deleted issue must still reach peers as a
//!   tombstone, and ids are never reused.
//! - Every write is one `IMMEDIATE` transaction, so a crash never leaves half an
//!   issue and two processes never deadlock upgrading a read lock; the database is
//!   in WAL mode with a busy timeout so readers and a writer can overlap. A batch
//!   ([`Tracker::begin_batch`], what an import uses) holds many writes in one
//!   such transaction, each in a savepoint: a transaction per write was most of
//!   the cost of importing thousands of issues.
//! - Reads load a whole set of issues with one query per table inside one read
//!   transaction, so `changed_since` over 100k issues is a handful of queries and a
//!   consistent snapshot.
//!
//! - Attachment content lives in the same file (`attachment_content`), written and
//!   read through SQLite's incremental blob I/O in fixed-size chunks: one file to
//!   back up and copy, and a 100 MB attachment never sits in memory whole.
//!
//! The clock: timestamps come from the system clock (UTC, whole seconds), unless the
//! environment variable `FERRY_NOW` holds an RFC 3339 timestamp, which then is the
//! fixed time of every change. Tests and documentation use it for reproducible
//! output; [`LocalTracker::set_clock`] does the same from code.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, MAIN_DB, OptionalExtension, TransactionBehavior, params};

use super::{
    IssuePatch, NewAttachment, NewComment, NewIssue, Tracker, TrackerError, TrackerInstance,
};
use crate::model::{
    Attachment, Comment, FieldValue, Issue, IssueLink, LinkDirection, Origin, RelatedIssue,
    normalize_set, truncate_to_seconds,
};

pub use crate::clock::NOW_ENV;

/// The schema version kept in `PRAGMA user_version`; a database written by a newer
/// ferry is refused rather than misread, an older one is brought up to it
/// (version 2 added links and parents, see [`RELATIONS_SCHEMA`]).
const SCHEMA_VERSION: i64 = 2;

/// How long a writer waits for another process's transaction before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Default issue type when a create leaves it unset.
pub const DEFAULT_TYPE: &str = "Task";
/// Default status when a create leaves it unset.
pub const DEFAULT_STATUS: &str = "Open";
/// Default priority when a create leaves it unset.
pub const DEFAULT_PRIORITY: &str = "Medium";

const SCHEMA: &str = r#"
CREATE TABLE projects (
    key         TEXT PRIMARY KEY,
    next_number INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE issues (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    project     TEXT NOT NULL REFERENCES projects(key),
    number      INTEGER NOT NULL,
    type        TEXT NOT NULL,
    summary     TEXT NOT NULL,
    description TEXT,
    status      TEXT NOT NULL,
    priority    TEXT,
    assignee    TEXT,
    reporter    TEXT,
    created     INTEGER NOT NULL,
    updated     INTEGER NOT NULL,
    deleted     INTEGER NOT NULL DEFAULT 0,
    origin_site TEXT,
    origin_id   TEXT,
    UNIQUE (project, number)
);
CREATE INDEX issues_updated ON issues(updated);
CREATE INDEX issues_origin ON issues(origin_site, origin_id) WHERE origin_site IS NOT NULL;

CREATE TABLE labels (
    issue INTEGER NOT NULL REFERENCES issues(id),
    name  TEXT NOT NULL,
    PRIMARY KEY (issue, name)
) WITHOUT ROWID;

CREATE TABLE components (
    issue INTEGER NOT NULL REFERENCES issues(id),
    name  TEXT NOT NULL,
    PRIMARY KEY (issue, name)
) WITHOUT ROWID;

CREATE TABLE fields (
    issue INTEGER NOT NULL REFERENCES issues(id),
    name  TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (issue, name)
) WITHOUT ROWID;

CREATE TABLE comments (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    issue       INTEGER NOT NULL REFERENCES issues(id),
    author      TEXT NOT NULL,
    body        TEXT NOT NULL,
    internal    INTEGER NOT NULL DEFAULT 0,
    created     INTEGER NOT NULL,
    origin_site TEXT,
    origin_id   TEXT
);
CREATE INDEX comments_issue ON comments(issue, id);
CREATE UNIQUE INDEX comments_origin ON comments(issue, origin_site, origin_id)
    WHERE origin_site IS NOT NULL;

CREATE TABLE attachments (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    issue   INTEGER NOT NULL REFERENCES issues(id),
    name    TEXT NOT NULL,
    size    INTEGER NOT NULL,
    sha256  TEXT NOT NULL,
    author  TEXT,
    created INTEGER NOT NULL
);
CREATE INDEX attachments_issue ON attachments(issue, id);
"#;

/// What version 2 of the schema added to version 1 ([`SCHEMA`]): an issue's
/// parent, and links between issues. A link is one row whatever end it is read
/// from: `source` is the end for which it is `outward` (`SUP-1 Blocks SUP-2`
/// is `(SUP-1, Blocks, SUP-2)`), so the two ends can never disagree.
const RELATIONS_SCHEMA: &str = r#"
ALTER TABLE issues ADD COLUMN parent INTEGER REFERENCES issues(id);
CREATE INDEX issues_parent ON issues(parent) WHERE parent IS NOT NULL;

CREATE TABLE issue_links (
    source INTEGER NOT NULL REFERENCES issues(id),
    type   TEXT NOT NULL,
    target INTEGER NOT NULL REFERENCES issues(id),
    PRIMARY KEY (source, type, target)
) WITHOUT ROWID;
CREATE INDEX issue_links_target ON issue_links(target, type, source);
"#;

/// Columns of `issues` in the order [`read_issue_row`] expects.
const ISSUE_COLUMNS: &str = "id, project, number, type, summary, description, status, priority, \
     assignee, reporter, created, updated, deleted, origin_site, origin_id";

/// The embedded tracker: one SQLite database file.
pub struct LocalTracker {
    conn: Connection,
    path: PathBuf,
    /// A fixed time for every change, or `None` for the system clock.
    clock: Option<DateTime<Utc>>,
    /// A batch is open (see [`Tracker::begin_batch`]): one transaction holds its
    /// writes, each in a savepoint of its own.
    batch: bool,
}

/// Internal failure: SQLite errors get the database path only at the public
/// boundary, where [`LocalTracker`] knows it.
enum Fail {
    Sql(rusqlite::Error),
    Corrupt(String),
    Tracker(TrackerError),
}

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Fail {
        Fail::Sql(e)
    }
}

impl From<TrackerError> for Fail {
    fn from(e: TrackerError) -> Fail {
        Fail::Tracker(e)
    }
}

/// Which issues a read loads. Each maps to a `WHERE` clause on `issues`, used both
/// for the issues and (as a sub-select) for their labels, comments and so on.
enum Filter<'a> {
    Id(i64),
    Key(&'a str, i64),
    Origin(&'a Origin),
    Live,
    Since(Option<i64>),
    Ids(&'a [i64]),
}

impl Filter<'_> {
    fn clause(&self) -> (&'static str, Vec<rusqlite::types::Value>) {
        use rusqlite::types::Value;
        match self {
            Filter::Id(id) => ("id = ?1", vec![Value::Integer(*id)]),
            Filter::Key(project, number) => (
                "project = ?1 AND number = ?2",
                vec![Value::Text((*project).into()), Value::Integer(*number)],
            ),
            Filter::Origin(origin) => (
                // The lowest id: should two issues ever carry one origin, the first
                // created is the one sync made.
                "id = (SELECT min(id) FROM issues WHERE origin_site = ?1 AND origin_id = ?2)",
                vec![
                    Value::Text(origin.site.clone()),
                    Value::Text(origin.id.clone()),
                ],
            ),
            Filter::Live => ("deleted = 0", Vec::new()),
            Filter::Since(Some(since)) => ("updated >= ?1", vec![Value::Integer(*since)]),
            Filter::Since(None) => ("1", Vec::new()),
            Filter::Ids(ids) => (
                "id IN (SELECT value FROM json_each(?1))",
                vec![Value::Text(serde_json::json!(ids).to_string())],
            ),
        }
    }
}

impl LocalTracker {
    /// Opens the tracker database, creating the file (and its folder) and the
    /// schema when new. The clock is fixed when `FERRY_NOW` is set.
    pub fn open(path: &Path) -> Result<LocalTracker, TrackerError> {
        let clock = crate::clock::fixed()
            .map_err(|e| TrackerError::Unavailable(e.to_string()))?
            .map(|t| truncate_to_seconds(t.with_timezone(&Utc)));
        let unavailable = |e: &dyn std::fmt::Display| {
            TrackerError::Unavailable(format!("{}: {e}", path.display()))
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| unavailable(&e))?;
        }
        let conn = Connection::open(path).map_err(|e| unavailable(&e))?;
        let mut tracker = LocalTracker {
            conn,
            path: path.to_path_buf(),
            clock,
            batch: false,
        };
        tracker.init().map_err(|f| tracker.error(f))?;
        Ok(tracker)
    }

    /// Fixes the clock to `now` (truncated to whole seconds), or returns to the
    /// system clock with `None`; what `FERRY_NOW` does, for code and tests.
    pub fn set_clock(&mut self, now: Option<DateTime<Utc>>) {
        self.clock = now.map(truncate_to_seconds);
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves an issue to another project (created on first use): it gets the next
    /// number there, so a new key, and keeps its id, which is what replicas and
    /// links go by. Returns the issue as stored.
    pub fn move_issue(&mut self, id: &str, project: &str) -> Result<Issue, TrackerError> {
        check_project(project)?;
        let row = parse_id(id).ok_or_else(|| TrackerError::NotFound(id.into()))?;
        let now = self.now();
        self.write(|tx| {
            let current = load_existing(tx, row)?;
            if current.deleted {
                return Err(rejected(&current.key, "the issue is deleted").into());
            }
            if current.project == project {
                return Ok(current);
            }
            tx.execute(
                "INSERT INTO projects (key, next_number) VALUES (?1, 1) ON CONFLICT DO NOTHING",
                [project],
            )?;
            let number: i64 = tx.query_row(
                "UPDATE projects SET next_number = next_number + 1 WHERE key = ?1 RETURNING next_number - 1",
                [project],
                |r| r.get(0),
            )?;
            tx.execute(
                "UPDATE issues SET project = ?2, number = ?3, updated = ?4 WHERE id = ?1",
                params![row, project, number, now.max(current.updated).timestamp()],
            )?;
            load_existing(tx, row)
        })
    }

    /// Every issue that is not deleted, ordered by project and number.
    pub fn list(&self) -> Result<Vec<Issue>, TrackerError> {
        self.read(|conn| load(conn, &Filter::Live))
    }

    /// The current time as this tracker records it.
    fn now(&self) -> DateTime<Utc> {
        self.clock
            .unwrap_or_else(|| truncate_to_seconds(Utc::now()))
    }

    /// Sets the connection up and creates or checks the schema.
    fn init(&mut self) -> Result<(), Fail> {
        self.conn.busy_timeout(BUSY_TIMEOUT)?;
        // Loading issues alone takes a dozen statements; the default cache of 16
        // would make an import re-parse them all the time.
        self.conn.set_prepared_statement_cache_capacity(128);
        let mode: String =
            self.conn
                .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Fail::Corrupt(format!(
                "cannot switch the database to WAL mode (it stays in {mode} mode)"
            )));
        }
        self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        self.conn.pragma_update(None, "foreign_keys", true)?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
        match version {
            0 => {
                tx.execute_batch(SCHEMA)?;
                tx.execute_batch(RELATIONS_SCHEMA)?;
                tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            }
            // A database of a ferry from before links: it gains them, with no
            // issue linked yet.
            1 => {
                tx.execute_batch(RELATIONS_SCHEMA)?;
                tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            }
            SCHEMA_VERSION => {}
            other => {
                return Err(Fail::Corrupt(format!(
                    "schema version {other} is newer than this ferry knows ({SCHEMA_VERSION}); upgrade ferry"
                )));
            }
        }
        // The instance id is born with the database and travels with every copy of
        // the file, which is what lets a site tell its own tracker from another
        // one's. Added without a schema version bump: older databases gain it on
        // first open.
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
             INSERT OR IGNORE INTO meta (name, value) VALUES ('instance', lower(hex(randomblob(16))));",
        )?;
        // Content came after the metadata table; like `meta`, older databases gain
        // the table on first open (their attachments have metadata only).
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS attachment_content (
                 attachment INTEGER PRIMARY KEY REFERENCES attachments(id) ON DELETE CASCADE,
                 content    BLOB NOT NULL
             );",
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Turns an internal failure into the public error, naming the database.
    fn error(&self, fail: Fail) -> TrackerError {
        match fail {
            Fail::Sql(e) => TrackerError::Unavailable(format!("{}: {e}", self.path.display())),
            Fail::Corrupt(message) => {
                TrackerError::Unavailable(format!("{}: {message}", self.path.display()))
            }
            Fail::Tracker(e) => e,
        }
    }

    /// Ends the open batch with `COMMIT` or `ROLLBACK`. A failed commit rolls back,
    /// so the connection never stays inside a transaction nobody will end.
    fn end_batch(&mut self, sql: &str) -> Result<(), TrackerError> {
        if !self.batch {
            return Ok(());
        }
        self.batch = false;
        let result = self.conn.execute_batch(sql);
        if result.is_err() && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        result.map_err(|e| self.error(e.into()))
    }

    /// Runs `f` in a read transaction: one consistent snapshot for all its queries
    /// (the batch's transaction when one is open).
    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T, Fail>) -> Result<T, TrackerError> {
        if self.batch {
            return f(&self.conn).map_err(|fail| self.error(fail));
        }
        let run = || {
            let tx = self.conn.unchecked_transaction()?;
            let value = f(&tx)?;
            tx.finish()?;
            Ok(value)
        };
        run().map_err(|fail| self.error(fail))
    }

    /// Runs `f` in one immediate write transaction, committed only if `f` succeeds;
    /// in a batch, in a savepoint of the batch's transaction, so that a failed
    /// write leaves no trace and the batch goes on.
    fn write<T>(
        &mut self,
        f: impl FnOnce(&Connection) -> Result<T, Fail>,
    ) -> Result<T, TrackerError> {
        if self.batch {
            // Savepoint statements prepared once: a batch runs tens of thousands.
            let run = |sql: &str| self.conn.prepare_cached(sql)?.execute([]).map(drop);
            let result = run("SAVEPOINT write").map_err(Fail::from).and_then(|()| {
                match f(&self.conn) {
                    Ok(value) => run("RELEASE write").map(|()| value).map_err(Fail::from),
                    Err(fail) => {
                        // Undo the failed write only; the batch goes on.
                        run("ROLLBACK TO write")
                            .and_then(|()| run("RELEASE write"))
                            .map_err(Fail::from)?;
                        Err(fail)
                    }
                }
            });
            return result.map_err(|fail| self.error(fail));
        }
        let result = (|| {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let value = f(&tx)?;
            tx.commit()?;
            Ok(value)
        })();
        result.map_err(|fail| self.error(fail))
    }
}

impl Tracker for LocalTracker {
    fn now(&self) -> Result<DateTime<Utc>, TrackerError> {
        Ok(LocalTracker::now(self))
    }

    fn instance(&self) -> Result<TrackerInstance, TrackerError> {
        let id: String = self.read(|conn| {
            Ok(
                conn.query_row("SELECT value FROM meta WHERE name = 'instance'", [], |r| {
                    r.get(0)
                })?,
            )
        })?;
        // The canonical path, so that `./tracker.db` and `/srv/site/tracker.db`
        // name the same file and a moved or copied folder names another.
        let location = std::fs::canonicalize(&self.path).unwrap_or_else(|_| self.path.clone());
        Ok(TrackerInstance {
            kind: "local".into(),
            location: location.display().to_string(),
            id,
        })
    }

    fn changed_since(&self, since: Option<DateTime<Utc>>) -> Result<Vec<Issue>, TrackerError> {
        self.read(|conn| load(conn, &Filter::Since(since.map(|t| t.timestamp()))))
    }

    fn changed_ids(
        &self,
        since: Option<DateTime<Utc>>,
    ) -> Result<Option<Vec<String>>, TrackerError> {
        self.read(|conn| {
            let (clause, args) = Filter::Since(since.map(|t| t.timestamp())).clause();
            // The order of `load`, and its `+` (see there).
            let sql = format!("SELECT id FROM issues WHERE {clause} ORDER BY +project, +number");
            let mut stmt = conn.prepare_cached(&sql)?;
            let ids = stmt
                .query_map(rusqlite::params_from_iter(args), |r| r.get::<_, i64>(0))?
                .map(|id| id.map(|id| id.to_string()))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some(ids))
        })
    }

    fn get_many(&self, ids: &[String]) -> Result<Vec<Issue>, TrackerError> {
        let numbers: Vec<i64> = ids.iter().filter_map(|id| parse_id(id)).collect();
        let mut by_id: HashMap<String, Issue> = self
            .read(|conn| load(conn, &Filter::Ids(&numbers)))?
            .into_iter()
            .map(|issue| (issue.id.clone(), issue))
            .collect();
        Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
    }

    fn get(&self, id: &str) -> Result<Option<Issue>, TrackerError> {
        let Some(id) = parse_id(id) else {
            return Ok(None);
        };
        self.read(|conn| load_one(conn, &Filter::Id(id)))
    }

    fn get_by_key(&self, key: &str) -> Result<Option<Issue>, TrackerError> {
        let Some((project, number)) = split_key(key) else {
            return Ok(None);
        };
        self.read(|conn| load_one(conn, &Filter::Key(project, number)))
    }

    fn find_by_origin(&self, origin: &Origin) -> Result<Option<Issue>, TrackerError> {
        self.read(|conn| load_one(conn, &Filter::Origin(origin)))
    }

    fn create(&mut self, issue: &NewIssue) -> Result<Issue, TrackerError> {
        check_project(&issue.project)?;
        let values = Values::for_create(&issue.patch, &issue.author)?;
        let now = self.now();
        self.write(|tx| {
            let (id, key) =
                insert_issue(tx, &issue.project, &values, now, now, issue.origin.as_ref())?;
            let (_, others) = write_relations(tx, id, &key, &issue.patch)?;
            bump(tx, &others, now)?;
            load_existing(tx, id)
        })
    }

    fn update(
        &mut self,
        id: &str,
        patch: &IssuePatch,
        _author: &str,
    ) -> Result<Issue, TrackerError> {
        // The local tracker keeps no change history, so the author is not recorded;
        // trackers with an audit trail attribute the change to it.
        let row = parse_id(id).ok_or_else(|| TrackerError::NotFound(id.into()))?;
        let now = self.now();
        self.write(|tx| {
            let current = load_existing(tx, row)?;
            if current.deleted {
                return Err(rejected(&current.key, "the issue is deleted").into());
            }
            let mut next = Values::from_issue(&current);
            next.apply(patch, &current.key)?;
            let (related, others) = write_relations(tx, row, &current.key, patch)?;
            if next != Values::from_issue(&current) {
                write_values(tx, row, &next, now.max(current.updated))?;
            } else if related {
                bump(tx, &[row], now)?;
            } else {
                return Ok(current);
            }
            bump(tx, &others, now)?;
            load_existing(tx, row)
        })
    }

    fn add_comment(&mut self, id: &str, comment: &NewComment) -> Result<Comment, TrackerError> {
        let row = parse_id(id).ok_or_else(|| TrackerError::NotFound(id.into()))?;
        let now = self.now();
        self.write(|tx| {
            let (key, deleted, updated) = issue_state(tx, row)?;
            if deleted {
                return Err(rejected(&key, "the issue is deleted").into());
            }
            if comment.body.trim().is_empty() {
                return Err(rejected(&key, "a comment needs text").into());
            }
            if let Some(origin) = &comment.origin {
                let existing = tx
                    .prepare_cached(
                        "SELECT id FROM comments WHERE issue = ?1 AND origin_site = ?2 AND origin_id = ?3",
                    )?
                    .query_row(params![row, origin.site, origin.id], |r| {
                        r.get::<_, i64>(0)
                    })
                    .optional()?;
                if let Some(existing) = existing {
                    return load_comment(tx, existing);
                }
            }
            let comment_id = insert_comment(tx, row, comment, now)?;
            tx.prepare_cached("UPDATE issues SET updated = ?2 WHERE id = ?1")?
                .execute(params![row, now.max(updated).timestamp()])?;
            load_comment(tx, comment_id)
        })
    }

    fn read_attachment(
        &self,
        id: &str,
        attachment: &str,
        out: &mut dyn Write,
    ) -> Result<u64, TrackerError> {
        let issue = parse_id(id).ok_or_else(|| TrackerError::NotFound(id.into()))?;
        let row = parse_id(attachment)
            .ok_or_else(|| TrackerError::NotFound(format!("{id} attachment {attachment}")))?;
        self.read(|tx| {
            let (key, _, _) = issue_state(tx, issue)?;
            let exists: Option<i64> = tx
                .query_row(
                    "SELECT c.attachment FROM attachments a \
                     JOIN attachment_content c ON c.attachment = a.id \
                     WHERE a.id = ?1 AND a.issue = ?2",
                    params![row, issue],
                    |r| r.get(0),
                )
                .optional()?;
            if exists.is_none() {
                return Err(TrackerError::NotFound(format!(
                    "{key} attachment {attachment} (or its content)"
                ))
                .into());
            }
            let mut blob = tx.blob_open(MAIN_DB, "attachment_content", "content", row, true)?;
            let copied = std::io::copy(&mut blob, out).map_err(|e| {
                Fail::Tracker(TrackerError::Unavailable(format!(
                    "cannot copy attachment {attachment} of {key}: {e}"
                )))
            })?;
            Ok(copied)
        })
    }

    fn attach(&mut self, id: &str, file: &NewAttachment) -> Result<Attachment, TrackerError> {
        let issue = parse_id(id).ok_or_else(|| TrackerError::NotFound(id.into()))?;
        let now = self.now();
        let mut source = std::fs::File::open(file.path).map_err(|e| {
            TrackerError::Unavailable(format!("cannot read {}: {e}", file.path.display()))
        })?;
        self.write(|tx| {
            let (key, deleted, updated) = issue_state(tx, issue)?;
            if deleted {
                return Err(rejected(&key, "the issue is deleted").into());
            }
            if file.name.is_empty() || file.name.contains(['/', '\\', '\0']) {
                return Err(rejected(&key, &format!("{:?} is not a file name", file.name)).into());
            }
            let size = i64::try_from(file.size)
                .ok()
                .filter(|&size| size <= MAX_ATTACHMENT_BYTES)
                .ok_or_else(|| {
                    rejected(
                        &key,
                        &format!(
                            "{} is {} bytes; this tracker keeps files up to {MAX_ATTACHMENT_BYTES}",
                            file.name, file.size
                        ),
                    )
                })?;
            tx.prepare_cached(
                "INSERT INTO attachments (issue, name, size, sha256, author, created) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                issue,
                file.name,
                size,
                file.sha256,
                file.author,
                now.timestamp()
            ])?;
            let row = tx.last_insert_rowid();
            tx.execute(
                "INSERT INTO attachment_content (attachment, content) VALUES (?1, zeroblob(?2))",
                params![row, size],
            )?;
            let mut blob = tx.blob_open(MAIN_DB, "attachment_content", "content", row, false)?;
            let (written, sha256) = crate::attachment::copy_hashing(&mut source, &mut blob)
                .map_err(|e| {
                    Fail::Tracker(TrackerError::Unavailable(format!(
                        "cannot store {} on {key}: {e}",
                        file.path.display()
                    )))
                })?;
            drop(blob);
            if written != file.size || sha256 != file.sha256 {
                return Err(rejected(
                    &key,
                    &format!(
                        "{} changed while it was attached: {written} bytes with SHA-256 {sha256}, \
                         expected {} bytes with {}",
                        file.path.display(),
                        file.size,
                        file.sha256
                    ),
                )
                .into());
            }
            tx.execute(
                "UPDATE issues SET updated = ?2 WHERE id = ?1",
                params![issue, now.max(updated).timestamp()],
            )?;
            load_attachment(tx, row)
        })
    }

    fn delete_attachment(
        &mut self,
        id: &str,
        attachment: &str,
        _author: &str,
    ) -> Result<(), TrackerError> {
        let issue = parse_id(id).ok_or_else(|| TrackerError::NotFound(id.into()))?;
        let Some(row) = parse_id(attachment) else {
            return Ok(());
        };
        let now = self.now();
        self.write(|tx| {
            let (_, _, updated) = issue_state(tx, issue)?;
            let removed = tx.execute(
                "DELETE FROM attachments WHERE id = ?1 AND issue = ?2",
                params![row, issue],
            )?;
            if removed > 0 {
                tx.execute(
                    "UPDATE issues SET updated = ?2 WHERE id = ?1",
                    params![issue, now.max(updated).timestamp()],
                )?;
            }
            Ok(())
        })
    }

    fn begin_batch(&mut self) -> Result<bool, TrackerError> {
        if !self.batch {
            // Immediate, as every write: the write lock is taken now, so no other
            // writer can make this transaction's snapshot stale.
            self.conn
                .execute_batch("BEGIN IMMEDIATE")
                .map_err(|e| self.error(e.into()))?;
            self.batch = true;
        }
        Ok(true)
    }

    fn commit_batch(&mut self) -> Result<(), TrackerError> {
        self.end_batch("COMMIT")
    }

    fn rollback_batch(&mut self) -> Result<(), TrackerError> {
        self.end_batch("ROLLBACK")
    }

    fn delete(&mut self, id: &str, _author: &str) -> Result<(), TrackerError> {
        // As for `update`: no history, so the author is not recorded.
        let row = parse_id(id).ok_or_else(|| TrackerError::NotFound(id.into()))?;
        let now = self.now();
        self.write(|tx| {
            let (_, deleted, updated) = issue_state(tx, row)?;
            if !deleted {
                tx.execute(
                    "UPDATE issues SET deleted = 1, updated = ?2 WHERE id = ?1",
                    params![row, now.max(updated).timestamp()],
                )?;
                // A deleted issue leaves the hierarchy and its links: the issues
                // at their other ends change, and say so through `updated`.
                let others = related_ids(tx, row)?;
                tx.execute(
                    "DELETE FROM issue_links WHERE source = ?1 OR target = ?1",
                    [row],
                )?;
                tx.execute(
                    "UPDATE issues SET parent = NULL WHERE parent = ?1 OR id = ?1",
                    [row],
                )?;
                bump(tx, &others, now)?;
            }
            Ok(())
        })
    }
}

/// The plain values of an issue as the `issues` table and its side tables hold
/// them; comparing two of them is how an update finds out whether anything changed.
#[derive(Debug, Clone, PartialEq)]
struct Values {
    issue_type: String,
    summary: String,
    description: Option<String>,
    status: String,
    priority: Option<String>,
    assignee: Option<String>,
    reporter: Option<String>,
    labels: Vec<String>,
    components: Vec<String>,
    fields: BTreeMap<String, FieldValue>,
}

impl Values {
    /// The values of a new issue: the patch over the defaults, the author as the
    /// reporter unless the patch names one.
    fn for_create(patch: &IssuePatch, author: &str) -> Result<Values, TrackerError> {
        let mut values = Values {
            issue_type: DEFAULT_TYPE.into(),
            summary: String::new(),
            description: None,
            status: DEFAULT_STATUS.into(),
            priority: Some(DEFAULT_PRIORITY.into()),
            assignee: None,
            reporter: Some(author.to_string()).filter(|a| !a.is_empty()),
            labels: Vec::new(),
            components: Vec::new(),
            fields: BTreeMap::new(),
        };
        values.apply(patch, "the new issue")?;
        Ok(values)
    }

    fn from_issue(issue: &Issue) -> Values {
        Values {
            issue_type: issue.issue_type.clone(),
            summary: issue.summary.clone(),
            description: issue.description.clone(),
            status: issue.status.clone(),
            priority: issue.priority.clone(),
            assignee: issue.assignee.clone(),
            reporter: issue.reporter.clone(),
            labels: issue.labels.clone(),
            components: issue.components.clone(),
            fields: issue.fields.clone(),
        }
    }

    /// Applies a patch, then checks what every issue must have. Empty optional
    /// texts become `None`, so that "" and absent never differ.
    fn apply(&mut self, patch: &IssuePatch, issue: &str) -> Result<(), TrackerError> {
        let set = |target: &mut String, value: &Option<String>| {
            if let Some(v) = value {
                target.clone_from(v);
            }
        };
        let set_opt = |target: &mut Option<String>, value: &Option<Option<String>>| {
            if let Some(v) = value {
                *target = v.clone().filter(|s| !s.is_empty());
            }
        };
        set(&mut self.issue_type, &patch.issue_type);
        set(&mut self.summary, &patch.summary);
        set(&mut self.status, &patch.status);
        set_opt(&mut self.description, &patch.description);
        set_opt(&mut self.priority, &patch.priority);
        set_opt(&mut self.assignee, &patch.assignee);
        set_opt(&mut self.reporter, &patch.reporter);
        if let Some(labels) = &patch.labels {
            self.labels.clone_from(labels);
        }
        if let Some(components) = &patch.components {
            self.components.clone_from(components);
        }
        normalize_set(&mut self.labels);
        normalize_set(&mut self.components);
        for (name, value) in &patch.fields {
            if value.is_null() {
                self.fields.remove(name);
            } else {
                self.fields.insert(name.clone(), value.clone());
            }
        }
        for (what, value) in [
            ("summary", &self.summary),
            ("type", &self.issue_type),
            ("status", &self.status),
        ] {
            if value.trim().is_empty() {
                return Err(rejected(issue, &format!("the {what} must not be empty")));
            }
        }
        if let Some(name) = self.fields.keys().find(|n| n.trim().is_empty()) {
            return Err(rejected(
                issue,
                &format!("invalid custom field name {name:?}"),
            ));
        }
        Ok(())
    }
}

fn rejected(issue: &str, message: &str) -> TrackerError {
    TrackerError::Rejected {
        issue: issue.into(),
        message: message.into(),
    }
}

/// Project keys are letters, digits and `_`, starting with a letter, so that
/// `PROJECT-N` always splits back unambiguously.
fn check_project(project: &str) -> Result<(), TrackerError> {
    let mut chars = project.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(rejected(
            project,
            "a project key is letters, digits and '_', starting with a letter",
        ))
    }
}

/// Issue ids are the table's integer ids; anything else names no issue.
fn parse_id(id: &str) -> Option<i64> {
    id.parse().ok().filter(|n: &i64| *n > 0)
}

/// `SUP-42` → (`SUP`, 42).
fn split_key(key: &str) -> Option<(&str, i64)> {
    let (project, number) = key.rsplit_once('-')?;
    Some((project, number.parse().ok().filter(|n: &i64| *n > 0)?))
}

fn timestamp(secs: i64) -> Result<DateTime<Utc>, Fail> {
    DateTime::from_timestamp(secs, 0)
        .ok_or_else(|| Fail::Corrupt(format!("timestamp {secs} is out of range")))
}

/// Creates an issue row with its labels, components and fields, numbering it in
/// its project (created on first use). Returns the id and the key.
fn insert_issue(
    conn: &Connection,
    project: &str,
    values: &Values,
    created: DateTime<Utc>,
    updated: DateTime<Utc>,
    origin: Option<&Origin>,
) -> Result<(i64, String), Fail> {
    conn.prepare_cached(
        "INSERT INTO projects (key, next_number) VALUES (?1, 1) ON CONFLICT DO NOTHING",
    )?
    .execute([project])?;
    let number: i64 = conn
        .prepare_cached(
            "UPDATE projects SET next_number = next_number + 1 WHERE key = ?1 RETURNING next_number - 1",
        )?
        .query_row([project], |r| r.get(0))?;
    conn.prepare_cached(
        "INSERT INTO issues (project, number, type, summary, description, status, priority, \
         assignee, reporter, created, updated, origin_site, origin_id) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        project,
        number,
        values.issue_type,
        values.summary,
        values.description,
        values.status,
        values.priority,
        values.assignee,
        values.reporter,
        created.timestamp(),
        updated.timestamp(),
        origin.map(|o| &o.site),
        origin.map(|o| &o.id),
    ])?;
    let id = conn.last_insert_rowid();
    write_sets(conn, id, values, false)?;
    Ok((id, format!("{project}-{number}")))
}

/// Rewrites an existing issue's values and sets its `updated`.
fn write_values(
    conn: &Connection,
    id: i64,
    values: &Values,
    updated: DateTime<Utc>,
) -> Result<(), Fail> {
    conn.prepare_cached(
        "UPDATE issues SET type = ?2, summary = ?3, description = ?4, status = ?5, priority = ?6, \
         assignee = ?7, reporter = ?8, updated = ?9 WHERE id = ?1",
    )?
    .execute(params![
        id,
        values.issue_type,
        values.summary,
        values.description,
        values.status,
        values.priority,
        values.assignee,
        values.reporter,
        updated.timestamp(),
    ])?;
    write_sets(conn, id, values, true)
}

/// Writes labels, components and custom fields, replacing the old ones if asked.
fn write_sets(conn: &Connection, id: i64, values: &Values, replace: bool) -> Result<(), Fail> {
    for (table, names) in [
        ("labels", &values.labels),
        ("components", &values.components),
    ] {
        if replace {
            conn.prepare_cached(&format!("DELETE FROM {table} WHERE issue = ?1"))?
                .execute([id])?;
        }
        let mut insert = conn.prepare_cached(&format!(
            "INSERT INTO {table} (issue, name) VALUES (?1, ?2)"
        ))?;
        for name in names {
            insert.execute(params![id, name])?;
        }
    }
    if replace {
        conn.prepare_cached("DELETE FROM fields WHERE issue = ?1")?
            .execute([id])?;
    }
    let mut insert =
        conn.prepare_cached("INSERT INTO fields (issue, name, value) VALUES (?1, ?2, ?3)")?;
    for (name, value) in &values.fields {
        insert.execute(params![id, name, value.to_string()])?;
    }
    Ok(())
}

/// Makes the link and parent changes of `patch` on issue `id` (`key` names it in
/// refusals). Returns whether anything changed, and the other issues whose
/// links, parent or sub-tasks changed with it, for their `updated` to move.
fn write_relations(
    conn: &Connection,
    id: i64,
    key: &str,
    patch: &IssuePatch,
) -> Result<(bool, Vec<i64>), Fail> {
    let mut changed = false;
    let mut others = Vec::new();
    // The other issue of a relation: it exists, is live and is not this one.
    let other = |what: &str, other: &str| -> Result<i64, Fail> {
        let found = parse_id(other)
            .map(|other| issue_state(conn, other).map(|state| (other, state)))
            .transpose()
            .or_else(|fail| match fail {
                Fail::Tracker(TrackerError::NotFound(_)) => Ok(None),
                fail => Err(fail),
            })?;
        match found {
            None => Err(rejected(key, &format!("no issue {other} to {what}")).into()),
            Some((row, _)) if row == id => {
                Err(rejected(key, &format!("an issue cannot {what} itself")).into())
            }
            Some((_, (other_key, true, _))) => {
                Err(rejected(key, &format!("cannot {what} {other_key}: it is deleted")).into())
            }
            Some((row, _)) => Ok(row),
        }
    };
    for link in &patch.remove_links {
        let Some(row) = parse_id(&link.other) else {
            continue;
        };
        let (source, target) = ends(id, row, link.direction);
        let removed = conn
            .prepare_cached(
                "DELETE FROM issue_links WHERE source = ?1 AND type = ?2 AND target = ?3",
            )?
            .execute(params![source, link.link_type, target])?;
        if removed > 0 {
            changed = true;
            others.push(row);
        }
    }
    for link in &patch.add_links {
        let name = link.link_type.trim();
        if name.is_empty() || name != link.link_type || name.contains(['\n', '\r']) {
            return Err(rejected(
                key,
                &format!(
                    "{:?} is not a link type: a name on one line, without spaces around it",
                    link.link_type
                ),
            )
            .into());
        }
        let row = other("link to", &link.other)?;
        let (source, target) = ends(id, row, link.direction);
        let added = conn
            .prepare_cached(
                "INSERT OR IGNORE INTO issue_links (source, type, target) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![source, link.link_type, target])?;
        if added > 0 {
            changed = true;
            others.push(row);
        }
    }
    if let Some(parent) = &patch.parent {
        let current: Option<i64> = conn
            .prepare_cached("SELECT parent FROM issues WHERE id = ?1")?
            .query_row([id], |r| r.get(0))?;
        let wanted = match parent {
            Some(parent) => Some(other("be a sub-task of", parent)?),
            None => None,
        };
        if wanted != current {
            if let Some(wanted) = wanted {
                // The new parent's ancestors must not include this issue.
                let cycle: bool = conn
                    .prepare_cached(
                        "WITH RECURSIVE up(id) AS (SELECT ?1 UNION SELECT i.parent FROM issues i \
                         JOIN up ON i.id = up.id WHERE i.parent IS NOT NULL) \
                         SELECT EXISTS (SELECT 1 FROM up WHERE id = ?2)",
                    )?
                    .query_row(params![wanted, id], |r| r.get(0))?;
                if cycle {
                    return Err(rejected(
                        key,
                        "its parent cannot be one of its own sub-tasks (or theirs)",
                    )
                    .into());
                }
            }
            conn.prepare_cached("UPDATE issues SET parent = ?2 WHERE id = ?1")?
                .execute(params![id, wanted])?;
            changed = true;
            others.extend(current);
            others.extend(wanted);
        }
    }
    others.sort_unstable();
    others.dedup();
    Ok((changed, others))
}

/// The `(source, target)` of the link between `id` and `other` in which `id`
/// is the `direction` end.
fn ends(id: i64, other: i64, direction: LinkDirection) -> (i64, i64) {
    match direction {
        LinkDirection::Outward => (id, other),
        LinkDirection::Inward => (other, id),
    }
}

/// The issues at the other end of `id`'s links, its parent and its sub-tasks.
fn related_ids(conn: &Connection, id: i64) -> Result<Vec<i64>, Fail> {
    let mut stmt = conn.prepare_cached(
        "SELECT target FROM issue_links WHERE source = ?1 \
         UNION SELECT source FROM issue_links WHERE target = ?1 \
         UNION SELECT parent FROM issues WHERE id = ?1 AND parent IS NOT NULL \
         UNION SELECT id FROM issues WHERE parent = ?1",
    )?;
    let ids = stmt
        .query_map([id], |r| r.get(0))?
        .collect::<Result<Vec<i64>, _>>()?;
    Ok(ids)
}

/// Moves the `updated` of the live issues `ids` to `now` (never back).
fn bump(conn: &Connection, ids: &[i64], now: DateTime<Utc>) -> Result<(), Fail> {
    let mut stmt = conn.prepare_cached(
        "UPDATE issues SET updated = max(updated, ?2) WHERE id = ?1 AND deleted = 0",
    )?;
    for id in ids {
        stmt.execute(params![id, now.timestamp()])?;
    }
    Ok(())
}

fn insert_comment(
    conn: &Connection,
    issue: i64,
    comment: &NewComment,
    created: DateTime<Utc>,
) -> Result<i64, Fail> {
    conn.prepare_cached(
        "INSERT INTO comments (issue, author, body, internal, created, origin_site, origin_id) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        issue,
        comment.author,
        comment.body,
        comment.internal,
        created.timestamp(),
        comment.origin.as_ref().map(|o| &o.site),
        comment.origin.as_ref().map(|o| &o.id),
    ])?;
    Ok(conn.last_insert_rowid())
}

/// The largest attachment the embedded tracker keeps: SQLite's own limit on one
/// value is a little under 1 GB.
const MAX_ATTACHMENT_BYTES: i64 = 900 * 1024 * 1024;

fn load_attachment(conn: &Connection, id: i64) -> Result<Attachment, Fail> {
    let row = conn.query_row(
        "SELECT id, name, size, sha256, author, created FROM attachments WHERE id = ?1",
        [id],
        |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, u64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, i64>(5)?,
            ))
        },
    )?;
    Ok(Attachment {
        id: row.0.to_string(),
        name: row.1,
        size: row.2,
        sha256: row.3,
        author: row.4,
        created: timestamp(row.5)?,
    })
}

/// Key, deleted flag and `updated` of an issue; `NotFound` when there is none.
fn issue_state(conn: &Connection, id: i64) -> Result<(String, bool, DateTime<Utc>), Fail> {
    let row = conn
        .prepare_cached(
            "SELECT project || '-' || number, deleted, updated FROM issues WHERE id = ?1",
        )?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let (key, deleted, updated) = row.ok_or_else(|| TrackerError::NotFound(id.to_string()))?;
    Ok((key, deleted, timestamp(updated)?))
}

fn load_existing(conn: &Connection, id: i64) -> Result<Issue, Fail> {
    load_one(conn, &Filter::Id(id))?
        .ok_or_else(|| Fail::Tracker(TrackerError::NotFound(id.to_string())))
}

fn load_one(conn: &Connection, filter: &Filter) -> Result<Option<Issue>, Fail> {
    Ok(load(conn, filter)?.into_iter().next())
}

fn load_comment(conn: &Connection, id: i64) -> Result<Comment, Fail> {
    let mut stmt = conn.prepare_cached(
        "SELECT issue, id, author, body, internal, created, origin_site, origin_id \
         FROM comments WHERE id = ?1",
    )?;
    let (_, comment) = stmt.query_row([id], read_comment_row)?;
    comment
}

/// Loads the issues a filter selects, fully (labels, components, fields, comments
/// oldest first, attachments), normalised, ordered by project and number: one query
/// per table whatever the number of issues.
fn load(conn: &Connection, filter: &Filter) -> Result<Vec<Issue>, Fail> {
    let (clause, args) = filter.clause();
    let args = rusqlite::params_from_iter(args);
    let mut issues = Vec::new();
    let mut index = HashMap::new();
    {
        // `+` keeps the planner from walking the whole (project, number) index to
        // save a sort: then reading the few issues changed since a cursor costs a
        // scan of every issue (a third of a second at 100 000 issues).
        let sql =
            format!("SELECT {ISSUE_COLUMNS} FROM issues WHERE {clause} ORDER BY +project, +number");
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(args.clone())?;
        while let Some(row) = rows.next()? {
            let (id, issue) = read_issue_row(row)?;
            index.insert(id, issues.len());
            issues.push(issue);
        }
    }
    if issues.is_empty() {
        return Ok(issues);
    }
    // Every child query selects `issue` first and its sort key (name or id) second.
    let children = |columns: &str, table: &str| {
        format!(
            "SELECT {columns} FROM {table} WHERE issue IN (SELECT id FROM issues WHERE {clause}) \
             ORDER BY 1, 2"
        )
    };
    let mut each = |sql: String,
                    f: &mut dyn FnMut(&mut Issue, &rusqlite::Row) -> Result<(), Fail>|
     -> Result<(), Fail> {
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(args.clone())?;
        while let Some(row) = rows.next()? {
            let issue: i64 = row.get(0)?;
            if let Some(&at) = index.get(&issue) {
                f(&mut issues[at], row)?;
            }
        }
        Ok(())
    };
    each(children("issue, name", "labels"), &mut |issue, row| {
        issue.labels.push(row.get(1)?);
        Ok(())
    })?;
    each(children("issue, name", "components"), &mut |issue, row| {
        issue.components.push(row.get(1)?);
        Ok(())
    })?;
    each(
        children("issue, name, value", "fields"),
        &mut |issue, row| {
            let name: String = row.get(1)?;
            let text: String = row.get(2)?;
            let value = serde_json::from_str(&text).map_err(|e| {
                Fail::Corrupt(format!(
                    "custom field {name:?} of {} holds invalid JSON: {e}",
                    issue.key
                ))
            })?;
            issue.fields.insert(name, value);
            Ok(())
        },
    )?;
    each(
        children(
            "issue, id, author, body, internal, created, origin_site, origin_id",
            "comments",
        ),
        &mut |issue, row| {
            issue.comments.push(read_comment_row(row)?.1?);
            Ok(())
        },
    )?;
    each(
        children(
            "issue, id, name, size, sha256, author, created",
            "attachments",
        ),
        &mut |issue, row| {
            issue.attachments.push(Attachment {
                id: row.get::<_, i64>(1)?.to_string(),
                name: row.get(2)?,
                size: row.get(3)?,
                sha256: row.get(4)?,
                author: row.get(5)?,
                created: timestamp(row.get(6)?)?,
            });
            Ok(())
        },
    )?;
    // Relations, to live issues only: a deleted issue is no longer linked.
    let related = |row: &rusqlite::Row, at: usize| -> Result<RelatedIssue, Fail> {
        Ok(RelatedIssue {
            id: row.get::<_, i64>(at)?.to_string(),
            key: row.get(at + 1)?,
            origin: origin(row.get(at + 2)?, row.get(at + 3)?),
        })
    };
    const OTHER: &str = "o.id, o.project || '-' || o.number, o.origin_site, o.origin_id";
    each(
        format!(
            "SELECT l.source, l.type, 'outward', {OTHER} FROM issue_links l \
             JOIN issues o ON o.id = l.target \
             WHERE l.source IN (SELECT id FROM issues WHERE {clause}) AND o.deleted = 0 \
             UNION ALL \
             SELECT l.target, l.type, 'inward', {OTHER} FROM issue_links l \
             JOIN issues o ON o.id = l.source \
             WHERE l.target IN (SELECT id FROM issues WHERE {clause}) AND o.deleted = 0"
        ),
        &mut |issue, row| {
            let direction: String = row.get(2)?;
            issue.links.push(IssueLink {
                link_type: row.get(1)?,
                direction: LinkDirection::parse(&direction).unwrap_or(LinkDirection::Outward),
                issue: related(row, 3)?,
            });
            Ok(())
        },
    )?;
    each(
        format!(
            "SELECT c.id, {OTHER} FROM issues c JOIN issues o ON o.id = c.parent \
             WHERE c.id IN (SELECT id FROM issues WHERE {clause}) AND o.deleted = 0"
        ),
        &mut |issue, row| {
            issue.parent = Some(related(row, 1)?);
            Ok(())
        },
    )?;
    each(
        format!(
            "SELECT o.parent, {OTHER} FROM issues o \
             WHERE o.parent IN (SELECT id FROM issues WHERE {clause}) AND o.deleted = 0"
        ),
        &mut |issue, row| {
            issue.subtasks.push(related(row, 1)?);
            Ok(())
        },
    )?;
    for issue in &mut issues {
        issue.normalize();
    }
    Ok(issues)
}

fn read_issue_row(row: &rusqlite::Row) -> Result<(i64, Issue), Fail> {
    let id: i64 = row.get(0)?;
    let project: String = row.get(1)?;
    let number: i64 = row.get(2)?;
    let origin = origin(row.get(13)?, row.get(14)?);
    let issue = Issue {
        resolution: None,
        id: id.to_string(),
        key: format!("{project}-{number}"),
        project,
        issue_type: row.get(3)?,
        summary: row.get(4)?,
        description: row.get(5)?,
        status: row.get(6)?,
        priority: row.get(7)?,
        assignee: row.get(8)?,
        reporter: row.get(9)?,
        labels: Vec::new(),
        components: Vec::new(),
        created: timestamp(row.get(10)?)?,
        updated: timestamp(row.get(11)?)?,
        fields: BTreeMap::new(),
        comments: Vec::new(),
        attachments: Vec::new(),
        links: Vec::new(),
        parent: None,
        subtasks: Vec::new(),
        origin,
        deleted: row.get(12)?,
    };
    Ok((id, issue))
}

/// Reads `issue, id, author, body, internal, created, origin_site, origin_id`. The
/// outer result is SQLite's (so it fits `query_row`), the inner one the timestamp's.
fn read_comment_row(row: &rusqlite::Row) -> rusqlite::Result<(i64, Result<Comment, Fail>)> {
    let issue: i64 = row.get(0)?;
    let id: i64 = row.get(1)?;
    let author: String = row.get(2)?;
    let body: String = row.get(3)?;
    let internal: bool = row.get(4)?;
    let created: i64 = row.get(5)?;
    let origin = origin(row.get(6)?, row.get(7)?);
    let comment = timestamp(created).map(|created| Comment {
        id: id.to_string(),
        author,
        created,
        body,
        internal,
        origin,
    });
    Ok((issue, comment))
}

fn origin(site: Option<String>, id: Option<String>) -> Option<Origin> {
    Some(Origin {
        site: site?,
        id: id?,
    })
}

mod generate;

pub use generate::GenerateShape;

#[cfg(test)]
mod tests;

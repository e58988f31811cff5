//! The ledger's tables of the sync semantics: conflict baselines, the exports
//! that feed them, and the site's identity.

use super::*;

/// Tables of the sync semantics (conflicts, site identity), kept apart from
/// the main schema so each part of the ledger reads on its own.
///
/// - `baselines`: per linked issue and field, the last value both sites are known
///   to share (see [`crate::engine::conflict`]), with the `exported.seq` it dates
///   from, so a newer export the peer has acknowledged can replace it.
/// - `exported`: per issue, the local field values of each export not yet known
///   to be superseded, with the commit that carried them and the issue's `updated`.
/// - `identity`: which site and tracker this ledger belongs to (see
///   [`crate::identity`]).
pub(super) const SCHEMA: &str = "
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
    /// The record of `fields`, the local field values by field name.
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

//! The release gate's records: who released or rejected which of this site's
//! commits for a peer, and the issues a rejection holds back (see
//! `engine::release`).

use rusqlite::params;

use super::{Ledger, LedgerError, ReviewVerdict};
use crate::model::format_timestamp;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS releases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    peer TEXT NOT NULL,
    commit_id TEXT NOT NULL,
    verdict TEXT NOT NULL,
    by TEXT NOT NULL,
    at TEXT NOT NULL,
    reason TEXT
);
CREATE TABLE IF NOT EXISTS held (
    peer TEXT NOT NULL,
    path TEXT NOT NULL,
    key TEXT NOT NULL,
    rejected TEXT NOT NULL,
    reason TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (peer, path)
);
";

/// An issue a rejection holds back: its later exports leave only when a
/// release names it again.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Held {
    /// The replica's path.
    pub path: String,
    /// The key in the replica, for people.
    pub key: String,
    /// The rejected commit.
    pub rejected: String,
    /// Why.
    pub reason: String,
    /// When.
    pub at: String,
}

impl Ledger {
    /// Records a release officer's verdict on one of this site's commits for
    /// `peer`.
    pub fn record_release(
        &self,
        peer: &str,
        commit: &str,
        verdict: &str,
        by: &str,
        reason: Option<&str>,
    ) -> Result<(), LedgerError> {
        self.insert_verdict("releases", peer, commit, verdict, by, reason)
    }

    /// Every verdict for `peer`, oldest first.
    pub fn releases(&self, peer: &str) -> Result<Vec<ReviewVerdict>, LedgerError> {
        self.verdicts("releases", peer, "1 = 1")
    }

    /// Holds the issue at `path` back for `peer` (see [`Held`]).
    pub fn hold(
        &self,
        peer: &str,
        path: &str,
        key: &str,
        rejected: &str,
        reason: &str,
    ) -> Result<(), LedgerError> {
        self.exec(
            "INSERT OR REPLACE INTO held (peer, path, key, rejected, reason, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                peer,
                path,
                key,
                rejected,
                reason,
                format_timestamp(&self.now())
            ],
        )
        .map(drop)
        .map_err(|e| self.wrap(e))
    }

    /// The issues held back for `peer`, by path.
    pub fn held(&self, peer: &str) -> Result<Vec<Held>, LedgerError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT path, key, rejected, reason, at FROM held WHERE peer = ?1 ORDER BY path",
            )
            .map_err(|e| self.wrap(e))?;
        let rows = stmt
            .query_map(params![peer], |r| {
                Ok(Held {
                    path: r.get(0)?,
                    key: r.get(1)?,
                    rejected: r.get(2)?,
                    reason: r.get(3)?,
                    at: r.get(4)?,
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>());
        rows.map_err(|e| self.wrap(e))
    }

    /// Lets the issue at `path` go again.
    pub fn release_held(&self, peer: &str, path: &str) -> Result<(), LedgerError> {
        self.exec(
            "DELETE FROM held WHERE peer = ?1 AND path = ?2",
            params![peer, path],
        )
        .map(drop)
        .map_err(|e| self.wrap(e))
    }
}

impl Ledger {
    /// Points the conflict baselines' export records of the commits `from` at
    /// `to`, a commit a release or a rejection made in their place with their
    /// content; the records of the issues `dropped` are forgotten instead (a
    /// rejection kept their content out of `to`). The peer acknowledges `to`,
    /// never the commits it replaced. A run killed half-way leaves some
    /// records on commits the peer never acknowledges: they are never folded
    /// into a baseline, which only makes a conflict more likely to be seen.
    pub fn reassign_exports(
        &self,
        peer: &str,
        from: &[String],
        to: &str,
        dropped: &[String],
    ) -> Result<(), LedgerError> {
        for commit in from {
            for id in dropped {
                self.exec(
                    "DELETE FROM exported WHERE peer = ?1 AND commit_id = ?2 AND local_id = ?3",
                    params![peer, commit, id],
                )
                .map_err(|e| self.wrap(e))?;
            }
            self.exec(
                "UPDATE exported SET commit_id = ?3 WHERE peer = ?1 AND commit_id = ?2",
                params![peer, commit, to],
            )
            .map_err(|e| self.wrap(e))?;
        }
        Ok(())
    }
}

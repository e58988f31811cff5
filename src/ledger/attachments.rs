//! What the ledger knows of the tracker's attachments.

use super::*;

/// What ferry knows of the tracker's attachments, by local issue and attachment
/// id: the SHA-256 and size it computed from their content (a tracker that does
/// not report hashes is then read once per attachment, not once per export), and
/// the peer an import copied it from (such a copy is not sent back to that peer).
pub(super) const SCHEMA: &str = "
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

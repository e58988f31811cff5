//! The relations (links, parents) the peers' replicas ask of local issues.

use super::*;

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
pub(super) const SCHEMA: &str = "
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

//! The issues this connector has seen, to notice the ones Redmine deleted.
//!
//! Redmine deletes issues for good and reports nothing, so the connector keeps,
//! per issue id it has read, what a tombstone needs (key, project, summary, type,
//! status, created), and the tombstones themselves with the time the deletion was
//! noticed: that time is their `updated`, so `changed_since` hands them out once
//! to each cursor. They live in a small SQLite file (see [`crate::tracker::seen`]);
//! what a run records is written a page at a time ([`Known::save`]).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{Issue, Origin};
use crate::tracker::TrackerError;
use crate::tracker::seen::{self, SeenStore};

/// The store, in the state folder.
pub const STORE_FILE: &str = "redmine-known.db";

/// What is remembered of one issue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Seen {
    key: String,
    project: String,
    summary: String,
    #[serde(rename = "type")]
    issue_type: String,
    status: String,
    #[serde(with = "crate::model::timestamp")]
    created: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    origin: Option<Origin>,
    /// When the deletion was noticed, in the JSON file of older versions (the
    /// store keeps it in a column of its own).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "optional_time"
    )]
    deleted: Option<DateTime<Utc>>,
}

/// The JSON file older versions kept.
#[derive(Debug, Default, Deserialize)]
struct File {
    issues: BTreeMap<String, Seen>,
}

/// The remembered issues.
pub(super) struct Known {
    store: SeenStore,
    /// Issues read since the last [`Known::save`], written together.
    pending: Vec<seen::Seen>,
}

impl Known {
    /// Opens the store in `state`; the JSON file of an older version
    /// (`legacy`) is read into it once.
    pub fn load(state: &Path, legacy: &str) -> Result<Known, TrackerError> {
        let store = SeenStore::open(&state.join(STORE_FILE), &state.join(legacy), |bytes| {
            let file: File = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
            Ok(file
                .issues
                .into_iter()
                .map(|(id, mut seen)| {
                    let deleted = seen.deleted.take();
                    let row = record(&id, &seen);
                    (
                        row,
                        seen::Entry {
                            record: String::new(),
                            deleted_at: deleted,
                            suspected_at: None,
                        },
                    )
                })
                .collect())
        })?;
        Ok(Known {
            store,
            pending: Vec::new(),
        })
    }

    /// Remembers a live issue (a reused id revives it); written at the next
    /// [`Known::save`].
    pub fn seen(&mut self, issue: &Issue) {
        let seen = Seen {
            key: issue.key.clone(),
            project: issue.project.clone(),
            summary: issue.summary.clone(),
            issue_type: issue.issue_type.clone(),
            status: issue.status.clone(),
            created: issue.created,
            origin: issue.origin.clone(),
            deleted: None,
        };
        self.pending.push(record(&issue.id, &seen));
    }

    /// Redmine no longer has issue `id`: its tombstone (deleted `at`, unless it
    /// was noticed before), or `None` if it was never seen.
    pub fn vanished(&mut self, id: &str, at: DateTime<Utc>) -> Result<Option<Issue>, TrackerError> {
        self.save()?;
        let Some(entry) = self.store.get(id)? else {
            return Ok(None);
        };
        let deleted = match entry.deleted_at {
            Some(deleted) => deleted,
            None => {
                self.store.bury(id, None, at)?;
                at
            }
        };
        Ok(parse(&entry.record).map(|seen| tombstone(id, &seen, deleted)))
    }

    /// Whether `id` is a tombstone already.
    pub fn is_tombstone(&mut self, id: &str) -> Result<bool, TrackerError> {
        self.save()?;
        Ok(self.store.get(id)?.is_some_and(|e| e.deleted_at.is_some()))
    }

    /// Forgets an issue that moved out of sight (another project).
    pub fn forget(&mut self, id: &str) -> Result<(), TrackerError> {
        self.save()?;
        self.store.forget(&[id.to_string()])
    }

    /// Live issues not in `listed`.
    pub fn live_ids_except(
        &mut self,
        listed: &HashSet<String>,
    ) -> Result<Vec<String>, TrackerError> {
        self.save()?;
        self.store.live_ids_except(None, listed)
    }

    /// Tombstones noticed at or after `since`.
    pub fn tombstones_since(
        &mut self,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<Issue>, TrackerError> {
        self.save()?;
        Ok(self
            .store
            .tombstones(since)?
            .into_iter()
            .filter_map(|(id, entry)| {
                let seen = parse(&entry.record)?;
                Some(tombstone(
                    &id,
                    &seen,
                    entry.deleted_at.unwrap_or(seen.created),
                ))
            })
            .collect())
    }

    /// Writes what was read since the last save, in one transaction.
    pub fn save(&mut self) -> Result<(), TrackerError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.store.seen(std::mem::take(&mut self.pending))
    }
}

fn record(id: &str, seen: &Seen) -> seen::Seen {
    seen::Seen {
        id: id.to_string(),
        key: seen.key.clone(),
        project: seen.project.clone(),
        record: serde_json::to_string(seen).unwrap_or_default(),
    }
}

fn parse(record: &str) -> Option<Seen> {
    serde_json::from_str(record).ok()
}

fn tombstone(id: &str, seen: &Seen, deleted: DateTime<Utc>) -> Issue {
    Issue {
        resolution: None,
        id: id.into(),
        key: seen.key.clone(),
        project: seen.project.clone(),
        issue_type: seen.issue_type.clone(),
        summary: seen.summary.clone(),
        description: None,
        status: seen.status.clone(),
        priority: None,
        assignee: None,
        reporter: None,
        labels: Vec::new(),
        components: Vec::new(),
        created: seen.created,
        updated: deleted,
        fields: BTreeMap::new(),
        comments: Vec::new(),
        attachments: Vec::new(),
        links: Vec::new(),
        parent: None,
        subtasks: Vec::new(),
        origin: seen.origin.clone(),
        deleted: true,
    }
}

mod optional_time {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => crate::model::timestamp::serialize(t, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| crate::model::parse_timestamp(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

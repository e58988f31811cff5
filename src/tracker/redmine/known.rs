//! The issues this connector has seen, to notice the ones Redmine deleted.
//!
//! Redmine deletes issues for good and reports nothing, so the connector keeps,
//! per issue id it has read, what a tombstone needs (key, project, summary, type,
//! status, created), and the tombstones themselves with the time the deletion was
//! noticed: that time is their `updated`, so `changed_since` hands them out once
//! to each cursor. The file is JSON, rewritten atomically when it changed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{Issue, Origin};
use crate::tracker::TrackerError;

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
    /// When the deletion was noticed; `None` while the issue lives.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "optional_time"
    )]
    deleted: Option<DateTime<Utc>>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    issues: BTreeMap<String, Seen>,
}

/// The remembered issues, with their file.
pub(super) struct Known {
    path: PathBuf,
    file: File,
    dirty: bool,
}

impl Known {
    /// Reads the file; a missing file is an empty memory.
    pub fn load(path: &Path) -> Result<Known, TrackerError> {
        let file = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                TrackerError::Unavailable(format!("cannot read {}: {e}", path.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => File::default(),
            Err(e) => {
                return Err(TrackerError::Unavailable(format!(
                    "cannot read {}: {e}",
                    path.display()
                )));
            }
        };
        Ok(Known {
            path: path.to_path_buf(),
            file,
            dirty: false,
        })
    }

    /// Remembers a live issue (a reused id revives it).
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
        if self.file.issues.get(&issue.id) != Some(&seen) {
            self.file.issues.insert(issue.id.clone(), seen);
            self.dirty = true;
        }
    }

    /// Redmine no longer has issue `id`: its tombstone (deleted `at`, unless it
    /// was noticed before), or `None` if it was never seen.
    pub fn vanished(&mut self, id: &str, at: DateTime<Utc>) -> Option<Issue> {
        let seen = self.file.issues.get_mut(id)?;
        if seen.deleted.is_none() {
            seen.deleted = Some(at);
            self.dirty = true;
        }
        Some(tombstone(id, seen))
    }

    /// Forgets an issue that moved out of sight (another project).
    pub fn forget(&mut self, id: &str) {
        if self.file.issues.remove(id).is_some() {
            self.dirty = true;
        }
    }

    /// Live issues not in `listed`.
    pub fn live_ids_except(&self, listed: &BTreeSet<String>) -> Vec<String> {
        self.file
            .issues
            .iter()
            .filter(|(id, seen)| seen.deleted.is_none() && !listed.contains(*id))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Tombstones noticed at or after `since`.
    pub fn tombstones_since(&self, since: Option<DateTime<Utc>>) -> Vec<Issue> {
        self.file
            .issues
            .iter()
            .filter(|(_, s)| {
                s.deleted
                    .is_some_and(|d| since.is_none_or(|since| d >= since))
            })
            .map(|(id, s)| tombstone(id, s))
            .collect()
    }

    /// Writes the file if anything changed.
    pub fn save(&mut self) -> Result<(), TrackerError> {
        if !self.dirty {
            return Ok(());
        }
        let bytes = serde_json::to_vec_pretty(&self.file).map_err(|e| {
            TrackerError::Unavailable(format!("cannot encode {}: {e}", self.path.display()))
        })?;
        crate::config::write_atomic(&self.path, &bytes)
            .map_err(|e| TrackerError::Unavailable(e.to_string()))?;
        self.dirty = false;
        Ok(())
    }
}

fn tombstone(id: &str, seen: &Seen) -> Issue {
    let deleted = seen.deleted.unwrap_or(seen.created);
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

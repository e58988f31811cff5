//! PLACEHOLDER API (helper replaces): the embedded SQLite tracker.
use std::path::Path;

use chrono::{DateTime, Utc};

use super::{IssuePatch, NewComment, NewIssue, Tracker, TrackerError};
use crate::model::{Comment, Issue, Origin};

/// The embedded tracker.
pub struct LocalTracker {
    conn: rusqlite::Connection,
}

impl LocalTracker {
    /// Opens (creating if needed) the tracker database.
    pub fn open(path: &Path) -> Result<LocalTracker, TrackerError> {
        let conn = rusqlite::Connection::open(path)
            .map_err(|e| TrackerError::Unavailable(e.to_string()))?;
        Ok(LocalTracker { conn })
    }
    /// One issue by key (`SUP-1`).
    pub fn get_by_key(&self, _key: &str) -> Result<Option<Issue>, TrackerError> {
        let _ = &self.conn;
        Ok(None)
    }
    /// Every issue, deleted ones excluded, ordered by project and number.
    pub fn list(&self) -> Result<Vec<Issue>, TrackerError> {
        Ok(Vec::new())
    }
}

impl Tracker for LocalTracker {
    fn changed_since(&self, _since: Option<DateTime<Utc>>) -> Result<Vec<Issue>, TrackerError> {
        Ok(Vec::new())
    }
    fn get(&self, _id: &str) -> Result<Option<Issue>, TrackerError> {
        Ok(None)
    }
    fn find_by_origin(&self, _origin: &Origin) -> Result<Option<Issue>, TrackerError> {
        Ok(None)
    }
    fn create(&mut self, _issue: &NewIssue) -> Result<Issue, TrackerError> {
        Err(TrackerError::Unavailable("placeholder".into()))
    }
    fn update(&mut self, id: &str, _p: &IssuePatch, _a: &str) -> Result<Issue, TrackerError> {
        Err(TrackerError::NotFound(id.into()))
    }
    fn add_comment(&mut self, id: &str, _c: &NewComment) -> Result<Comment, TrackerError> {
        Err(TrackerError::NotFound(id.into()))
    }
    fn delete(&mut self, id: &str, _a: &str) -> Result<(), TrackerError> {
        Err(TrackerError::NotFound(id.into()))
    }
}

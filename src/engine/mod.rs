//! The engine: one export, one import, one sync, over a [`Site`].
//!
//! Errors come in levels. An issue-level error (a malformed replica, a rule that
//! fails, a tracker refusing one change) fails that one issue: it is recorded in the
//! ledger, queued for retry, reported, and the run goes on (exit 1). A
//! connection-level error (channel unreachable, rule script that does not compile)
//! stops that connection only. Anything else (ledger, tracker down) stops the run.

mod export;
mod import;
mod review;
mod sync;

pub use export::{ExportReport, export};
pub use import::{ImportAction, ImportReport, ImportedIssue, import};
pub use review::{FieldChange, PendingIssue, Review, Verdict, review};
pub use sync::{ConnectionReport, SyncOptions, SyncReport, pull, push, selected, sync};

use std::path::Path;

use crate::config::Connection;
use crate::rules::{RuleError, RuleScript, load_tables};
use crate::site::Site;

/// Error levels, as the ledger and notifications name them.
pub mod level {
    /// One issue failed.
    pub const ISSUE: &str = "issue";
    /// One connection failed.
    pub const CONNECTION: &str = "connection";
}

/// One issue that failed, with enough to find it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueError {
    /// Issue key or replica path.
    pub subject: String,
    /// What went wrong.
    pub message: String,
}

impl std::fmt::Display for IssueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.subject, self.message)
    }
}

/// Loads a connection's rule script (incoming or outgoing) with the site's tables
/// (`rules/tables/*.yaml` beside the script).
fn load_rule(site: &Site, script: &Path) -> Result<RuleScript, RuleError> {
    let path = site.config.resolve(script);
    let tables_dir = path
        .parent()
        .map(|p| p.join("tables"))
        .unwrap_or_else(|| site.config.root.join("rules/tables"));
    let tables = load_tables(&tables_dir)?;
    RuleScript::load(&path, tables)
}

/// Records an issue error in the ledger and returns it for the report.
fn issue_error(
    site: &Site,
    connection: &Connection,
    subject: &str,
    message: String,
) -> anyhow::Result<IssueError> {
    tracing::warn!(connection = %connection.peer, %subject, "{message}");
    site.ledger.record_error(
        level::ISSUE,
        Some(&connection.peer),
        Some(subject),
        &message,
    )?;
    Ok(IssueError {
        subject: subject.to_string(),
        message,
    })
}

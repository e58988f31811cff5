//! The engine: one export, one import, one sync, over a [`Site`].
//!
//! Errors come in four levels, each recorded in the ledger for `ferry errors` and
//! the e-mail notification:
//!
//! - **issue**: a malformed replica, a rule that fails, a tracker refusing one
//!   change. That one issue fails, is retried with backoff and parked after
//!   `retry.max_tries`; the run goes on (exit 1).
//! - **connection**: channel unreachable, rule script that does not compile. That
//!   connection stops; the others go on (exit 3). Resolved by the next run that
//!   gets through.
//! - **site**: the tracker is down or refuses ferry. The run stops (exit 3).
//! - **node**: the machine: local state (ledger, exchange clone) unreadable or
//!   unwritable, disk full. The run stops (exit 3). When the ledger itself is
//!   what fails nothing can be recorded; `ferry errors` then reports the ledger.

mod attachments;
pub mod conflict;
mod export;
mod import;
pub mod release;
mod relink;
pub mod review;
mod rules_test;
mod sync;

pub use export::{Changed, ExportReport, export};
pub use import::{ImportAction, ImportReport, ImportedIssue, RelationCounts, import};
pub use relink::{RelinkReport, relink};
#[cfg(test)]
mod tests;

pub use review::{FieldChange, PendingIssue, Review, Verdict, review};
pub use rules_test::{OutgoingDifference, RulesTest, rules_test};
pub use sync::{ConnectionReport, SyncOptions, SyncReport, pull, push, selected, sync};

use std::path::Path;

use crate::config::{Config, Connection};
use crate::failure::{Level, RunFailure};
use crate::rules::{RuleError, RuleScript, load_tables};
use crate::site::Site;

pub use crate::site::record_run_failure;

/// The widest level an error's causes declare of themselves (see
/// [`crate::failure`]): the node's for the ledger's errors, the site's for an
/// unavailable tracker; `None` when none does, and the step that met it decides.
pub fn declared_level(e: &anyhow::Error) -> Option<Level> {
    e.chain()
        .filter_map(|cause| {
            if cause.is::<crate::ledger::LedgerError>() {
                Some(crate::ledger::LedgerError::LEVEL)
            } else {
                cause
                    .downcast_ref::<crate::tracker::TrackerError>()
                    .and_then(crate::tracker::TrackerError::level)
            }
        })
        .max()
}

/// Raises `error` as a run failure at `level`, or wider when the error says so.
pub fn run_failure(level: Level) -> impl FnOnce(anyhow::Error) -> RunFailure {
    move |error| RunFailure {
        level: declared_level(&error).map_or(level, |declared| declared.max(level)),
        error,
    }
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
pub fn load_rule(config: &Config, script: &Path) -> Result<RuleScript, RuleError> {
    let path = config.resolve(script);
    let tables_dir = path
        .parent()
        .map(|p| p.join("tables"))
        .unwrap_or_else(|| config.root.join("rules/tables"));
    let tables = load_tables(&tables_dir)?;
    RuleScript::load(&path, tables, config.site.rules)
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
        Level::Issue,
        Some(&connection.peer),
        Some(subject),
        &message,
    )?;
    Ok(IssueError {
        subject: subject.to_string(),
        message,
    })
}

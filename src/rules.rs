//! PLACEHOLDER API (helper replaces): rhai rule scripts.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::model::{Comment, FieldValue, Issue};
use crate::replica::Replica;

/// Mapping tables loaded from `rules/tables/*.yaml`, by file stem.
pub type Tables = BTreeMap<String, serde_json::Value>;

/// A rule script failed to compile or run. Names the script, line and column.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}{}: {message}", script.display(), position(*line, *column))]
pub struct RuleError {
    /// The script file.
    pub script: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// What went wrong.
    pub message: String,
}

fn position(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

/// A compiled, sandboxed rule script.
pub struct RuleScript {
    path: PathBuf,
}

/// What an outgoing rule knows besides the issue.
pub struct OutgoingContext<'a> {
    /// This site.
    pub site: &'a str,
    /// The peer the replica is for.
    pub peer: &'a str,
}

/// What an incoming rule sees.
pub struct IncomingInput<'a> {
    /// This site.
    pub site: &'a str,
    /// The peer that sent the replica.
    pub peer: &'a str,
    /// The replica as received.
    pub replica: &'a Replica,
    /// The replica last applied for this issue, if any.
    pub previous: Option<&'a Replica>,
    /// The local issue, `None` when the replica is new here.
    pub local: Option<&'a Issue>,
    /// The local project the connection maps the replica's project to.
    pub local_project: &'a str,
    /// Comments of the replica not yet present locally (echoes already removed).
    pub added_comments: &'a [Comment],
    /// Names of replica fields that differ from `previous`.
    pub changed_fields: &'a [String],
}

/// The local issue as an incoming rule wants it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TargetIssue {
    /// Project key.
    pub project: String,
    /// Type.
    #[serde(rename = "type")]
    pub issue_type: String,
    /// Summary.
    pub summary: String,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Status.
    pub status: String,
    /// Priority.
    #[serde(default)]
    pub priority: Option<String>,
    /// Assignee.
    #[serde(default)]
    pub assignee: Option<String>,
    /// Reporter.
    #[serde(default)]
    pub reporter: Option<String>,
    /// Labels.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Components.
    #[serde(default)]
    pub components: Vec<String>,
    /// Custom fields.
    #[serde(default)]
    pub fields: BTreeMap<String, FieldValue>,
}

/// A comment an incoming rule wants added.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TargetComment {
    /// Author.
    pub author: String,
    /// Text.
    pub body: String,
    /// Keep it internal here.
    #[serde(default)]
    pub internal: bool,
    /// Id of the replica comment it comes from (for the origin marker).
    pub source: String,
}

/// What an incoming rule decided.
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingResult {
    /// The wanted local issue.
    pub issue: TargetIssue,
    /// Comments to add.
    pub new_comments: Vec<TargetComment>,
    /// Delete the local issue.
    pub delete_issue: bool,
}

/// Loads `rules/tables/*.yaml`.
pub fn load_tables(_dir: &Path) -> Result<Tables, RuleError> {
    Ok(Tables::new())
}

impl RuleScript {
    /// Reads and compiles a script.
    pub fn load(path: &Path, _tables: Tables) -> Result<RuleScript, RuleError> {
        Ok(RuleScript {
            path: path.to_path_buf(),
        })
    }
    /// Runs an outgoing rule; `None` when the rule does not share the issue.
    pub fn run_outgoing(
        &self,
        issue: &Issue,
        ctx: &OutgoingContext,
    ) -> Result<Option<Replica>, RuleError> {
        let _ = &self.path;
        Ok(Some(Replica::from_issue(ctx.site, issue)))
    }
    /// Runs an incoming rule; `None` when the rule skips the replica.
    pub fn run_incoming(
        &self,
        _input: &IncomingInput,
    ) -> Result<Option<IncomingResult>, RuleError> {
        Ok(None)
    }
}

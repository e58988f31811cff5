//! `ferry tracker new`: create an issue.

use std::io::Write;

use crate::cli::{Ctx, ExitStatus};
use crate::model::FieldValue;
use crate::tracker::{IssuePatch, NewIssue, Tracker};

use super::{Actor, find_live, open, parse_field};

/// Create an issue and print its key.
#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// Project key (created on first use).
    #[arg(long, value_name = "KEY")]
    project: String,
    /// Issue type [default: Task].
    #[arg(long = "type", value_name = "TYPE")]
    issue_type: Option<String>,
    /// One-line summary.
    #[arg(long)]
    summary: String,
    /// Description text.
    #[arg(long)]
    description: Option<String>,
    /// A label (repeatable).
    #[arg(long = "label", value_name = "LABEL")]
    labels: Vec<String>,
    /// A component (repeatable).
    #[arg(long = "component", value_name = "COMPONENT")]
    components: Vec<String>,
    /// Status [default: Open].
    #[arg(long)]
    status: Option<String>,
    /// Priority [default: Medium].
    #[arg(long)]
    priority: Option<String>,
    /// Assignee user name.
    #[arg(long)]
    assignee: Option<String>,
    /// A custom field; VALUE is a YAML scalar, so numbers stay numbers (repeatable).
    #[arg(long = "field", value_name = "NAME=VALUE", value_parser = parse_field)]
    fields: Vec<(String, FieldValue)>,
    /// Make it a sub-task of this issue (SUP-1).
    #[arg(long, value_name = "KEY")]
    parent: Option<String>,
    #[command(flatten)]
    actor: Actor,
}

/// Creates the issue and prints its key alone on a line, for scripts.
pub fn run(args: NewArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    let mut tracker = open(ctx)?;
    let parent = match &args.parent {
        Some(key) => Some(Some(find_live(&tracker, key)?.id)),
        None => None,
    };
    let new = NewIssue {
        project: args.project,
        patch: IssuePatch {
            resolution: None,
            issue_type: args.issue_type,
            summary: Some(args.summary),
            description: args.description.map(Some),
            status: args.status,
            priority: args.priority.map(Some),
            assignee: args.assignee.map(Some),
            reporter: None,
            labels: Some(args.labels),
            components: Some(args.components),
            fields: args.fields.into_iter().collect(),
            parent,
            ..IssuePatch::default()
        },
        author: args.actor.name(),
        origin: None,
    };
    let issue = tracker.create(&new)?;
    writeln!(ctx.out, "{}", issue.key)?;
    Ok(ExitStatus::Success)
}

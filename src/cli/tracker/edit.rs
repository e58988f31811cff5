//! `ferry tracker edit`: change an issue's fields.

use std::io::Write;

use crate::cli::{Ctx, ExitStatus};
use crate::model::FieldValue;
use crate::tracker::{IssuePatch, Tracker};

use super::{Actor, clearable, find_live, open, parse_field, usage};

/// Change an issue.
///
/// Options not given leave their field as it is; an empty value clears an optional
/// field (`--assignee ""`), `--label ""` removes every label.
#[derive(Debug, clap::Args)]
pub struct EditArgs {
    /// The issue key (SUP-1).
    key: String,
    /// New summary.
    #[arg(long)]
    summary: Option<String>,
    /// New description (empty clears it).
    #[arg(long)]
    description: Option<String>,
    /// New status.
    #[arg(long)]
    status: Option<String>,
    /// New priority (empty clears it).
    #[arg(long)]
    priority: Option<String>,
    /// New assignee (empty unassigns).
    #[arg(long)]
    assignee: Option<String>,
    /// New issue type.
    #[arg(long = "type", value_name = "TYPE")]
    issue_type: Option<String>,
    /// Replace the labels with these (repeatable).
    #[arg(long = "label", value_name = "LABEL")]
    labels: Vec<String>,
    /// Add a label (repeatable).
    #[arg(long = "add-label", value_name = "LABEL")]
    add_labels: Vec<String>,
    /// Remove a label (repeatable).
    #[arg(long = "remove-label", value_name = "LABEL")]
    remove_labels: Vec<String>,
    /// Replace the components with these (repeatable).
    #[arg(long = "component", value_name = "COMPONENT")]
    components: Vec<String>,
    /// Set a custom field; VALUE is a YAML scalar, an empty VALUE removes the
    /// field (repeatable).
    #[arg(long = "field", value_name = "NAME=VALUE", value_parser = parse_field)]
    fields: Vec<(String, FieldValue)>,
    /// Make it a sub-task of this issue (SUP-1); empty makes it an issue of its
    /// own.
    #[arg(long, value_name = "KEY")]
    parent: Option<String>,
    #[command(flatten)]
    actor: Actor,
}

/// Applies the changes and says whether anything changed.
pub fn run(args: EditArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    let mut tracker = open(ctx)?;
    let issue = find_live(&tracker, &args.key)?;
    let labels_change =
        !(args.labels.is_empty() && args.add_labels.is_empty() && args.remove_labels.is_empty());
    let labels = labels_change.then(|| {
        let mut labels = if args.labels.is_empty() {
            issue.labels.clone()
        } else {
            args.labels
        };
        labels.extend(args.add_labels);
        labels.retain(|l| !args.remove_labels.contains(l));
        labels
    });
    let parent = match args.parent.as_deref() {
        None => None,
        Some("") => Some(None),
        Some(key) => Some(Some(find_live(&tracker, key)?.id)),
    };
    let patch = IssuePatch {
        resolution: None,
        issue_type: args.issue_type,
        summary: args.summary,
        description: clearable(args.description),
        status: args.status,
        priority: clearable(args.priority),
        assignee: clearable(args.assignee),
        reporter: None,
        labels,
        components: (!args.components.is_empty()).then_some(args.components),
        fields: args.fields.into_iter().collect(),
        parent,
        ..IssuePatch::default()
    };
    if patch.is_empty() {
        return Err(usage(
            "nothing to change: give at least one option (see `ferry tracker edit --help`)",
        ));
    }
    let after = tracker.update(&issue.id, &patch, &args.actor.name())?;
    let what = if after == issue {
        "unchanged"
    } else {
        "updated"
    };
    writeln!(ctx.out, "{} {what}", issue.key)?;
    Ok(ExitStatus::Success)
}

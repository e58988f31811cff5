//! `ferry tracker show`: one issue in full.
//!
//! The human format is stable (tests snapshot it): a title line, one `name: value`
//! line per standard field (`-` when empty; `origin`, `parent` and `sub-tasks`
//! only when set), then the sections that have content: custom fields,
//! description, links (one sentence each, `SUP-1 Blocks SUP-2`), attachments,
//! comments oldest first. Multi-line texts are indented under their heading.

use std::io::Write;

use crate::cli::terminal::one_line;
use crate::cli::{Ctx, ExitStatus};
use crate::model::{FieldValue, Issue, LinkDirection, format_timestamp};

use super::{find, open};

/// Show one issue: its fields, then its comments.
#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The issue key (SUP-1).
    key: String,
    /// Print the issue as pretty JSON (see docs/json.md) instead.
    #[arg(long)]
    json: bool,
}

/// Prints the issue, deleted ones too (marked as such).
pub fn run(args: ShowArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    let tracker = open(ctx)?;
    let issue = find(&tracker, &args.key)?;
    if args.json {
        serde_json::to_writer_pretty(ctx.out.raw(), &issue)?;
        writeln!(ctx.out)?;
    } else {
        ctx.out.write_all(render(&issue).as_bytes())?;
    }
    Ok(ExitStatus::Success)
}

/// The human rendering of an issue.
fn render(issue: &Issue) -> String {
    let mut text = format!(
        "{}  {}{}\n",
        issue.key,
        one_line(&issue.summary),
        if issue.deleted { "  [deleted]" } else { "" }
    );
    // Values that belong on one line stay there, whatever a peer put in them.
    let dash =
        |value: Option<&str>| one_line(value.filter(|v| !v.is_empty()).unwrap_or("-")).into_owned();
    let mut lines = vec![
        ("type", one_line(&issue.issue_type).into_owned()),
        ("status", one_line(&issue.status).into_owned()),
        ("priority", dash(issue.priority.as_deref())),
        ("assignee", dash(issue.assignee.as_deref())),
        ("reporter", dash(issue.reporter.as_deref())),
        ("labels", dash(Some(&issue.labels.join(", ")))),
        ("components", dash(Some(&issue.components.join(", ")))),
        ("created", format_timestamp(&issue.created)),
        ("updated", format_timestamp(&issue.updated)),
    ];
    if let Some(origin) = &issue.origin {
        lines.push(("origin", origin.to_string()));
    }
    if let Some(parent) = &issue.parent {
        lines.push(("parent", one_line(&parent.key).into_owned()));
    }
    if !issue.subtasks.is_empty() {
        let keys: Vec<&str> = issue.subtasks.iter().map(|s| s.key.as_str()).collect();
        lines.push(("sub-tasks", one_line(&keys.join(", ")).into_owned()));
    }
    push_aligned(&mut text, "", &lines);

    if !issue.fields.is_empty() {
        text.push_str("\nfields:\n");
        let fields: Vec<(&str, String)> = issue
            .fields
            .iter()
            .map(|(name, value)| (name.as_str(), field_text(value)))
            .collect();
        push_aligned(&mut text, "  ", &fields);
    }
    if let Some(description) = issue.description.as_deref().filter(|d| !d.is_empty()) {
        text.push_str("\ndescription:\n");
        push_indented(&mut text, "  ", description);
    }
    if !issue.links.is_empty() {
        text.push_str("\nlinks:\n");
        for link in &issue.links {
            let (from, to) = match link.direction {
                LinkDirection::Outward => (&issue.key, &link.issue.key),
                LinkDirection::Inward => (&link.issue.key, &issue.key),
            };
            text.push_str(&format!(
                "  {} {} {}\n",
                one_line(from),
                one_line(&link.link_type),
                one_line(to)
            ));
        }
    }
    if !issue.attachments.is_empty() {
        text.push_str("\nattachments:\n");
        for a in &issue.attachments {
            let short = a.sha256.get(..12).unwrap_or(&a.sha256);
            text.push_str(&format!(
                "  {} ({} bytes, sha256 {}) by {} at {}\n",
                one_line(&a.name),
                a.size,
                one_line(short),
                dash(a.author.as_deref()),
                format_timestamp(&a.created)
            ));
        }
    }
    if !issue.comments.is_empty() {
        text.push_str("\ncomments:\n");
        for (i, c) in issue.comments.iter().enumerate() {
            if i > 0 {
                text.push('\n');
            }
            text.push_str(&format!(
                "  #{} by {} at {}",
                one_line(&c.id),
                one_line(&c.author),
                format_timestamp(&c.created)
            ));
            if c.internal {
                text.push_str(" [internal]");
            }
            if let Some(origin) = &c.origin {
                text.push_str(&format!(" via {}", one_line(&origin.site)));
            }
            text.push('\n');
            push_indented(&mut text, "    ", &c.body);
        }
    }
    text
}

/// Custom field values: text as it is, anything else as compact JSON.
fn field_text(value: &FieldValue) -> String {
    match value {
        FieldValue::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `name:` lines with the values in one column; multi-line values continue
/// indented under the value column.
fn push_aligned(text: &mut String, indent: &str, lines: &[(&str, String)]) {
    let width = lines.iter().map(|(name, _)| name.len()).max().unwrap_or(0) + 1;
    for (name, value) in lines {
        let label = format!("{name}:");
        let mut values = value.lines();
        let first = values.next().unwrap_or("");
        text.push_str(format!("{indent}{label:width$}  {first}").trim_end());
        text.push('\n');
        let pad = " ".repeat(indent.len() + width + 2);
        for more in values {
            push_indented(text, &pad, more);
        }
    }
}

/// Every line of `body` with `indent` before it; blank lines stay blank.
fn push_indented(text: &mut String, indent: &str, body: &str) {
    for line in body.lines() {
        if line.trim().is_empty() {
            text.push('\n');
        } else {
            text.push_str(indent);
            text.push_str(line.trim_end());
            text.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Comment, IssueLink, Origin, RelatedIssue, parse_timestamp};

    fn related(id: &str, key: &str) -> RelatedIssue {
        RelatedIssue {
            id: id.into(),
            key: key.into(),
            origin: None,
        }
    }

    #[test]
    fn renders_fields_sections_and_comments() {
        let at = |s| parse_timestamp(s).unwrap();
        let issue = Issue {
            resolution: None,
            id: "1".into(),
            key: "SUP-1".into(),
            project: "SUP".into(),
            issue_type: "Bug".into(),
            summary: "Printer on fire".into(),
            description: Some("Smoke seen.\n\nTwice.".into()),
            status: "Open".into(),
            priority: Some("High".into()),
            assignee: None,
            reporter: Some("ann".into()),
            labels: vec!["customer".into(), "escalate".into()],
            components: Vec::new(),
            created: at("2026-11-20T10:00:00Z"),
            updated: at("2026-11-22T09:30:00Z"),
            fields: [
                ("Customer".to_string(), FieldValue::from("ACME")),
                ("Severity".to_string(), FieldValue::from(2)),
            ]
            .into(),
            comments: vec![
                Comment {
                    id: "3".into(),
                    author: "kevin".into(),
                    created: at("2026-11-20T10:05:00Z"),
                    body: "Looks bad.".into(),
                    internal: true,
                    origin: None,
                },
                Comment {
                    id: "4".into(),
                    author: "li".into(),
                    created: at("2026-11-21T08:00:00Z"),
                    body: "Fixed in 2.1.".into(),
                    internal: false,
                    origin: Some(Origin {
                        site: "engineering".into(),
                        id: "77".into(),
                    }),
                },
            ],
            attachments: Vec::new(),
            links: vec![
                IssueLink {
                    link_type: "Blocks".into(),
                    direction: LinkDirection::Outward,
                    issue: related("7", "SUP-7"),
                },
                IssueLink {
                    link_type: "Duplicate".into(),
                    direction: LinkDirection::Inward,
                    issue: related("9", "ENG-9"),
                },
            ],
            parent: Some(related("5", "SUP-5")),
            subtasks: vec![related("11", "SUP-11"), related("12", "SUP-12")],
            origin: None,
            deleted: true,
        };
        let expected = "\
SUP-1  Printer on fire  [deleted]
type:        Bug
status:      Open
priority:    High
assignee:    -
reporter:    ann
labels:      customer, escalate
components:  -
created:     2026-11-20T10:00:00Z
updated:     2026-11-22T09:30:00Z
parent:      SUP-5
sub-tasks:   SUP-11, SUP-12

fields:
  Customer:  ACME
  Severity:  2

description:
  Smoke seen.

  Twice.

links:
  SUP-1 Blocks SUP-7
  ENG-9 Duplicate SUP-1

comments:
  #3 by kevin at 2026-11-20T10:05:00Z [internal]
    Looks bad.

  #4 by li at 2026-11-21T08:00:00Z via engineering
    Fixed in 2.1.
";
        assert_eq!(render(&issue), expected);
    }
}

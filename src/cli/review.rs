//! `ferry review`: read what the peers' fetched commits would change here, before
//! anything is imported.

use std::io::Write;

use super::{Ctx, ExitStatus};
use crate::engine::{self, FieldChange, PendingIssue, Review, SyncOptions, Verdict};
use crate::model::FieldValue;
use crate::site::Site;
use crate::words::plural;

/// Show the pending changes from each peer (fetched, not yet imported), per issue
/// and per field, and what the incoming rule would do with them. Nothing is applied.
///
/// Run `ferry pull` first to fetch. Descriptions are shown as word diffs in git's
/// `--word-diff=plain` style: `[-removed-]{+added+}`.
#[derive(Debug, clap::Args)]
pub struct ReviewArgs {
    /// Only this connection.
    #[arg(long, value_name = "PEER")]
    connection: Option<String>,
    /// Print a JSON array, one object per connection.
    #[arg(long)]
    json: bool,
}

/// Runs `ferry review`.
pub fn run(args: ReviewArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    let site = Site::open(&ctx.dir)?;
    let connections = engine::selected(
        &site,
        &SyncOptions {
            connection: args.connection,
        },
    )?;
    let mut reviews = Vec::new();
    for c in connections
        .iter()
        .filter(|c| c.settings.direction.imports())
    {
        reviews.push(engine::review(&site, c)?);
    }
    if args.json {
        writeln!(ctx.out, "{}", serde_json::to_string_pretty(&reviews)?)?;
    } else {
        for review in &reviews {
            render(ctx.out, review)?;
        }
    }
    Ok(ExitStatus::Success)
}

fn render(out: &mut dyn Write, review: &Review) -> std::io::Result<()> {
    if review.issues.is_empty() && review.refused_paths.is_empty() {
        return writeln!(out, "{}: nothing pending", review.peer);
    }
    writeln!(
        out,
        "{}: {} commit{} pending, {} issue{}",
        review.peer,
        review.commits.len(),
        plural(review.commits.len()),
        review.issues.len(),
        plural(review.issues.len())
    )?;
    for path in &review.refused_paths {
        writeln!(out, "  refused: {path} (outside issues/)")?;
    }
    for issue in &review.issues {
        render_issue(out, issue)?;
    }
    Ok(())
}

fn render_issue(out: &mut dyn Write, issue: &PendingIssue) -> std::io::Result<()> {
    let remote = issue.remote_key.as_deref().unwrap_or(&issue.path);
    let local = issue
        .local_key
        .as_deref()
        .map(|k| format!(" → {k}"))
        .unwrap_or_else(|| " (new here)".into());
    let deleted = if issue.deleted {
        "  DELETED by the peer"
    } else {
        ""
    };
    writeln!(out, "\n  {remote}{local}{deleted}")?;
    if let Some(new) = &issue.new_issue {
        writeln!(out, "    summary: {}", new.summary)?;
        writeln!(out, "    type: {}   status: {}", new.issue_type, new.status)?;
    }
    for change in issue.changes.iter().filter(|c| c.field != "description") {
        if issue.new_issue.is_none() {
            writeln!(out, "    {}", describe(change))?;
        }
    }
    if let Some((old, new)) = &issue.description {
        writeln!(out, "    description: {}", word_diff(old, new))?;
    }
    for c in &issue.added_comments {
        writeln!(
            out,
            "    + comment by {} at {}:",
            c.author,
            crate::model::format_timestamp(&c.created)
        )?;
        for line in c.body.lines() {
            writeln!(out, "      {line}")?;
        }
    }
    let verdict = match &issue.verdict {
        Verdict::Create { project } => format!("create an issue in {project}"),
        Verdict::Update {
            changes,
            comments,
            delete,
        } => {
            let mut parts: Vec<String> = changes.iter().map(describe).collect();
            if *comments > 0 {
                parts.push(format!("add {comments} comment{}", plural(*comments)));
            }
            if *delete {
                parts.push("delete the local issue".into());
            }
            format!("update: {}", parts.join("; "))
        }
        Verdict::Nothing => "nothing changes here".into(),
        Verdict::Skip => "skipped by the incoming rule".into(),
        Verdict::Error { message } => format!("ERROR: {message}"),
    };
    writeln!(out, "    => {verdict}")
}

fn describe(change: &FieldChange) -> String {
    format!(
        "{}: {} → {}",
        change.field,
        value(change.old.as_ref()),
        value(change.new.as_ref())
    )
}

fn value(v: Option<&FieldValue>) -> String {
    match v {
        None => "(none)".into(),
        Some(FieldValue::String(s)) => s.clone(),
        Some(FieldValue::Array(items)) => {
            let items: Vec<String> = items.iter().map(|i| value(Some(i))).collect();
            format!("[{}]", items.join(", "))
        }
        Some(other) => other.to_string(),
    }
}

/// git's `--word-diff=plain` rendering: runs of removed and added words each in
/// one bracket.
fn word_diff(old: &str, new: &str) -> String {
    use similar::{ChangeTag, TextDiff};
    fn flush(text: &mut String, tag: ChangeTag, run: &mut String) {
        match tag {
            ChangeTag::Equal => text.push_str(run),
            ChangeTag::Delete => text.push_str(&format!("[-{run}-]")),
            ChangeTag::Insert => text.push_str(&format!("{{+{run}+}}")),
        }
        run.clear();
    }
    let diff = TextDiff::from_words(old, new);
    let (mut text, mut run, mut tag) = (String::new(), String::new(), ChangeTag::Equal);
    for change in diff.iter_all_changes() {
        if change.tag() != tag {
            flush(&mut text, tag, &mut run);
            tag = change.tag();
        }
        run.push_str(change.value());
    }
    flush(&mut text, tag, &mut run);
    text
}

#[cfg(test)]
mod tests {
    use super::word_diff;

    #[test]
    fn word_diff_marks_removed_and_added_words() {
        assert_eq!(
            word_diff(
                "Smoke seen after update.",
                "Smoke seen after the firmware update."
            ),
            "Smoke seen after {+the firmware +}update."
        );
    }
}

//! `ferry tracker list`: one line per issue.

use std::io::{BufWriter, Write};

use crate::cli::{Ctx, ExitStatus};
use crate::tracker::Tracker;

use super::open;

/// List issues: key, status and summary, ordered by project and number.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Print a JSON array of issues (see docs/json.md) instead.
    #[arg(long)]
    json: bool,
    /// Include deleted issues (marked "[deleted]").
    #[arg(long)]
    all: bool,
}

/// Prints the list, columns aligned; one line per issue even if a summary has a
/// line break.
pub fn run(args: ListArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    let tracker = open(ctx)?;
    let issues = if args.all {
        tracker.changed_since(None)?
    } else {
        tracker.list()?
    };
    if args.json {
        let mut out = BufWriter::new(ctx.out.raw());
        serde_json::to_writer(&mut out, &issues)?;
        writeln!(out)?;
        out.flush()?;
        return Ok(ExitStatus::Success);
    }
    let mut out = BufWriter::new(&mut ctx.out);
    let key_width = issues.iter().map(|i| i.key.len()).max().unwrap_or(0);
    let status_width = issues.iter().map(|i| i.status.len()).max().unwrap_or(0);
    for issue in &issues {
        let line = format!(
            "{:key_width$}  {:status_width$}  {}{}",
            issue.key,
            issue.status,
            issue.summary.replace(['\r', '\n'], " "),
            if issue.deleted { "  [deleted]" } else { "" }
        );
        writeln!(out, "{}", line.trim_end())?;
    }
    out.flush()?;
    Ok(ExitStatus::Success)
}

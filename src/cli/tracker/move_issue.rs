//! `ferry tracker move`: move an issue to another project.

use std::io::Write;

use crate::cli::{Ctx, ExitStatus};

use super::{find_live, open};

/// Move an issue to another project; it gets a new key there.
///
/// Its id stays, so sync keeps treating it as the same issue: peers learn the new
/// key, nothing is created twice and nothing is deleted (provided the connection
/// maps the new project).
#[derive(Debug, clap::Args)]
pub struct MoveArgs {
    /// The issue key (SUP-1).
    key: String,
    /// The project to move it to (created on first use).
    project: String,
}

/// Moves the issue and prints the old and the new key.
pub fn run(args: MoveArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    let mut tracker = open(ctx)?;
    let issue = find_live(&tracker, &args.key)?;
    let moved = tracker.move_issue(&issue.id, &args.project)?;
    writeln!(ctx.out, "{} → {}", issue.key, moved.key)?;
    Ok(ExitStatus::Success)
}

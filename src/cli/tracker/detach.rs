//! `ferry tracker detach`: remove an attachment from an issue.

use std::io::Write;

use crate::cli::{Ctx, ExitStatus};
use crate::tracker::Tracker;

use super::{Actor, find_attachment, find_live, open};

/// Remove one attachment from an issue.
#[derive(Debug, clap::Args)]
pub struct DetachArgs {
    /// The issue key (SUP-1).
    key: String,
    /// The attachment's name, or its id when several share a name.
    name: String,
    #[command(flatten)]
    actor: Actor,
}

/// Removes it; the issue's `updated` moves, so the removal reaches peers.
pub fn run(args: DetachArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    let mut tracker = open(ctx)?;
    let issue = find_live(&tracker, &args.key)?;
    let attachment = find_attachment(&issue, &args.name)?;
    tracker.delete_attachment(&issue.id, &attachment.id, &args.actor.name())?;
    writeln!(ctx.out, "removed {} from {}", attachment.name, issue.key)?;
    Ok(ExitStatus::Success)
}

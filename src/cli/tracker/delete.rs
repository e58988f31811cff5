//! `ferry tracker delete`: delete an issue.

use std::io::Write;

use crate::cli::{Ctx, ExitStatus};
use crate::tracker::Tracker;

use super::{Actor, find, open};

/// Delete an issue.
///
/// It stays readable as deleted and reaches peers as a tombstone.
#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// The issue key (SUP-1).
    key: String,
    #[command(flatten)]
    actor: Actor,
}

/// Deletes the issue; deleting a deleted issue is not an error (it was asked for
/// and is true), but says so.
pub fn run(args: DeleteArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    let mut tracker = open(ctx)?;
    let issue = find(&tracker, &args.key)?;
    if issue.deleted {
        writeln!(ctx.out, "{} was already deleted", issue.key)?;
    } else {
        tracker.delete(&issue.id, &args.actor.name())?;
        writeln!(ctx.out, "{} deleted", issue.key)?;
    }
    Ok(ExitStatus::Success)
}

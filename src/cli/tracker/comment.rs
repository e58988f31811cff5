//! `ferry tracker comment`: add a comment to an issue.

use std::io::Write;

use crate::cli::{Ctx, ExitStatus};
use crate::tracker::{NewComment, Tracker};

use super::{Actor, find_live, open};

/// Add a comment to an issue and print the new comment's id.
#[derive(Debug, clap::Args)]
pub struct CommentArgs {
    /// The issue key (SUP-1).
    key: String,
    /// The comment text.
    text: String,
    /// An internal comment: it never leaves this site.
    #[arg(long)]
    internal: bool,
    #[command(flatten)]
    actor: Actor,
}

/// Adds the comment; prints its id alone on a line, for scripts.
pub fn run(args: CommentArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    let mut tracker = open(ctx)?;
    let issue = find_live(&tracker, &args.key)?;
    let comment = NewComment {
        author: args.actor.name(),
        body: args.text,
        internal: args.internal,
        origin: None,
    };
    let added = tracker.add_comment(&issue.id, &comment)?;
    writeln!(ctx.out, "{}", added.id)?;
    Ok(ExitStatus::Success)
}

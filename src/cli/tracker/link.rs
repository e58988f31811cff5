//! `ferry tracker link`: link one issue to another.

use std::io::Write;

use crate::cli::{Ctx, ExitStatus};
use crate::model::LinkDirection;
use crate::tracker::{IssuePatch, LinkChange, Tracker};

use super::{Actor, find_live, open};

/// Link an issue to another: `ferry tracker link SUP-1 Blocks SUP-2` says that
/// SUP-1 blocks SUP-2.
///
/// The link type is any name (Blocks, Relates, Duplicate); both issues show the
/// link, SUP-1 as `outward` and SUP-2 as `inward`, and both count as changed, so
/// the link reaches the peers that have both issues.
#[derive(Debug, clap::Args)]
pub struct LinkArgs {
    /// The issue the link goes from (SUP-1).
    key: String,
    /// The link type (Blocks).
    #[arg(value_name = "TYPE")]
    link_type: String,
    /// The issue the link goes to (SUP-2).
    other: String,
    #[command(flatten)]
    actor: Actor,
}

/// Makes the link and says whether it was new.
pub fn run(args: LinkArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    let mut tracker = open(ctx)?;
    let issue = find_live(&tracker, &args.key)?;
    let other = find_live(&tracker, &args.other)?;
    let patch = IssuePatch {
        add_links: vec![LinkChange {
            link_type: args.link_type.clone(),
            direction: LinkDirection::Outward,
            other: other.id.clone(),
        }],
        ..IssuePatch::default()
    };
    let after = tracker.update(&issue.id, &patch, &args.actor.name())?;
    let what = if after == issue {
        "already linked"
    } else {
        "linked"
    };
    writeln!(
        ctx.out,
        "{} {} {}: {what}",
        issue.key, args.link_type, other.key
    )?;
    Ok(ExitStatus::Success)
}

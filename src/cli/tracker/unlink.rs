//! `ferry tracker unlink`: remove a link between two issues.

use std::io::Write;

use crate::cli::{Ctx, ExitStatus};
use crate::model::LinkDirection;
use crate::tracker::{IssuePatch, LinkChange, Tracker};

use super::{Actor, find_live, open};

/// Remove the link of a type between two issues: the one from the first to the
/// second, else the one the other way round.
///
/// Both issues count as changed, so the peers that have both learn of it and
/// remove the link they made.
#[derive(Debug, clap::Args)]
pub struct UnlinkArgs {
    /// One issue (SUP-1).
    key: String,
    /// The link type (Blocks).
    #[arg(value_name = "TYPE")]
    link_type: String,
    /// The other issue (SUP-2).
    other: String,
    #[command(flatten)]
    actor: Actor,
}

/// Removes the link; an error when there is none, naming the links there are.
pub fn run(args: UnlinkArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    let mut tracker = open(ctx)?;
    let issue = find_live(&tracker, &args.key)?;
    let other = find_live(&tracker, &args.other)?;
    let between: Vec<_> = issue
        .links
        .iter()
        .filter(|l| l.issue.id == other.id)
        .collect();
    // The link as the arguments say it (KEY TYPE OTHER), else the one the
    // other way round.
    let of_type = |direction| {
        between
            .iter()
            .find(|l| l.link_type == args.link_type && l.direction == direction)
    };
    let found = of_type(LinkDirection::Outward).or_else(|| of_type(LinkDirection::Inward));
    let Some(found) = found else {
        let mut types: Vec<&str> = between.iter().map(|l| l.link_type.as_str()).collect();
        types.dedup();
        anyhow::bail!(
            "{} has no {} link with {} ({})",
            issue.key,
            args.link_type,
            other.key,
            if types.is_empty() {
                "they are not linked at all".to_string()
            } else {
                format!("their links: {}", types.join(", "))
            }
        );
    };
    let patch = IssuePatch {
        remove_links: vec![LinkChange {
            link_type: found.link_type.clone(),
            direction: found.direction,
            other: other.id.clone(),
        }],
        ..IssuePatch::default()
    };
    tracker.update(&issue.id, &patch, &args.actor.name())?;
    let (from, to) = match found.direction {
        LinkDirection::Outward => (&issue.key, &other.key),
        LinkDirection::Inward => (&other.key, &issue.key),
    };
    writeln!(ctx.out, "{from} {} {to}: unlinked", args.link_type)?;
    Ok(ExitStatus::Success)
}

//! `ferry site confirm`: settle a site identity mismatch (see [`crate::identity`]).

use std::io::Write;

use super::{Ctx, ExitStatus};
use crate::site::Site;

/// The site as a whole.
#[derive(Debug, clap::Subcommand)]
pub enum SiteCommand {
    Confirm(ConfirmArgs),
}

/// Confirm that this folder is the site its ledger belongs to, after it was moved
/// or its tracker was restored from a backup; syncing resumes.
///
/// Never run it in a copy (a staging clone of production): the copy would then sync
/// as production. Give a copy its own state folder instead.
#[derive(Debug, clap::Args)]
pub struct ConfirmArgs {}

/// Runs `ferry site ...`.
pub fn run(command: SiteCommand, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    match command {
        SiteCommand::Confirm(ConfirmArgs {}) => confirm(ctx),
    }
}

fn confirm(ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    let site = Site::open_unverified(&ctx.dir)?;
    let now = crate::identity::current(site.name(), site.tracker.as_ref())?;
    let differences = crate::identity::confirm(&site.ledger, &now)?;
    if differences.is_empty() {
        writeln!(
            ctx.out,
            "site {} already matches its ledger; nothing to confirm",
            site.name()
        )?;
    } else {
        writeln!(ctx.out, "site {} confirmed:", site.name())?;
        for difference in &differences {
            writeln!(ctx.out, "  {difference}")?;
        }
    }
    Ok(ExitStatus::Success)
}

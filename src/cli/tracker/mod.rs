//! PLACEHOLDER API (helper replaces): `ferry tracker ...`.
use super::{Ctx, ExitStatus};

/// Act on the embedded tracker.
#[derive(Debug, clap::Args)]
pub struct TrackerArgs {}

/// Runs a tracker subcommand.
pub fn run(_args: TrackerArgs, _ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    Ok(ExitStatus::Success)
}

//! PLACEHOLDER (lead replaces).
use super::{Ctx, ExitStatus};

/// placeholder
#[derive(Debug, clap::Args)]
pub struct InitArgs {}

/// placeholder
pub fn run(_args: InitArgs, _ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    Ok(ExitStatus::Success)
}

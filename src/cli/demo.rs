//! PLACEHOLDER (lead replaces).
use super::{Ctx, ExitStatus};

/// placeholder
#[derive(Debug, clap::Args)]
pub struct DemoArgs {}

/// placeholder
pub fn run(_args: DemoArgs, _ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    Ok(ExitStatus::Success)
}

//! PLACEHOLDER (lead replaces).
use super::{Ctx, ExitStatus};

/// Manage connections.
#[derive(Debug, clap::Subcommand)]
pub enum ConnectionCommand {
    /// placeholder
    List,
}

/// placeholder
pub fn run(_cmd: ConnectionCommand, _ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    Ok(ExitStatus::Success)
}

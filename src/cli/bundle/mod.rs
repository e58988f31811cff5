//! `ferry bundle ...`: air-gapped exchange through git bundle files.

mod create;
mod import;

use super::{Ctx, ExitStatus};

/// Exchange with a peer through bundle files carried by hand (USB stick, data
/// diode) instead of a shared repository.
#[derive(Debug, clap::Subcommand)]
pub enum BundleCommand {
    Create(create::CreateArgs),
    Import(import::ImportArgs),
}

/// Runs a bundle subcommand.
pub fn run(cmd: BundleCommand, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    match cmd {
        BundleCommand::Create(args) => create::run(args, ctx),
        BundleCommand::Import(args) => import::run(args, ctx),
    }
}

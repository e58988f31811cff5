//! PLACEHOLDER (lead replaces).
use super::{Ctx, ExitStatus};
/// placeholder
#[derive(Debug, clap::Args)]
pub struct SyncArgs {}
/// placeholder
pub fn sync(_args: SyncArgs, _ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    Ok(ExitStatus::Success)
}
/// placeholder
#[derive(Debug, clap::Args)]
pub struct ExportArgs {}
/// placeholder
pub fn export(_args: ExportArgs, _ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    Ok(ExitStatus::Success)
}
/// placeholder
#[derive(Debug, clap::Args)]
pub struct ImportArgs {}
/// placeholder
pub fn import(_args: ImportArgs, _ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    Ok(ExitStatus::Success)
}
/// placeholder
#[derive(Debug, clap::Args)]
pub struct PushArgs {}
/// placeholder
pub fn push(_args: PushArgs, _ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    Ok(ExitStatus::Success)
}
/// placeholder
#[derive(Debug, clap::Args)]
pub struct PullArgs {}
/// placeholder
pub fn pull(_args: PullArgs, _ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    Ok(ExitStatus::Success)
}

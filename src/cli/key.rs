//! `ferry key ...`: this site's signing key.

use std::io::Write;

use super::{Ctx, ExitStatus};
use crate::config::Config;
use crate::signing::SiteKey;

/// This site's SSH signing key, which signs every commit ferry makes.
#[derive(Debug, clap::Subcommand)]
pub enum KeyCommand {
    /// Print the public key, one OpenSSH line: what a peer passes to
    /// `ferry connection trust`.
    Show,
}

/// Runs a key subcommand.
pub fn run(cmd: KeyCommand, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    match cmd {
        KeyCommand::Show => show(ctx),
    }
}

/// Reads the key without taking the site lock: printing a public key must work
/// while cron runs a sync.
fn show(ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    let config = Config::load(&ctx.dir)?;
    let key = SiteKey::load(&config.signing_key_path())?;
    writeln!(ctx.out, "{}", key.public_line())?;
    Ok(ExitStatus::Success)
}

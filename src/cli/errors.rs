//! `ferry errors`: what went wrong and is not resolved yet.
//!
//! Reads the ledger without taking the site's lock, so an operator can look while
//! cron is running a sync.

use super::{Ctx, ExitStatus};
use crate::config::Config;
use crate::ledger::Ledger;
use crate::site::LEDGER_FILE;

/// List unresolved errors kept in the ledger (oldest first).
///
/// An issue-level error names the replica path or issue key; it is retried on
/// every run and disappears once that issue imports or exports cleanly.
#[derive(Debug, clap::Args)]
pub struct ErrorsArgs {
    /// Print a JSON array (fields: id, level, connection, subject, message, count,
    /// last_seen).
    #[arg(long)]
    json: bool,
}

/// Runs `ferry errors`.
pub fn run(args: ErrorsArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    let config = Config::load(&ctx.dir)?;
    let ledger = Ledger::open(&config.state_dir().join(LEDGER_FILE))?;
    let errors = ledger.open_errors()?;
    if args.json {
        writeln!(ctx.out, "{}", serde_json::to_string_pretty(&errors)?)?;
        return Ok(ExitStatus::Success);
    }
    if errors.is_empty() {
        writeln!(ctx.out, "no unresolved errors")?;
    }
    for e in &errors {
        let times = if e.count > 1 {
            format!(" (seen {} times)", e.count)
        } else {
            String::new()
        };
        writeln!(
            ctx.out,
            "#{} {} {}{}{}  last {}\n    {}",
            e.id,
            e.level,
            e.connection.as_deref().unwrap_or("-"),
            e.subject
                .as_deref()
                .map(|s| format!(" {s}"))
                .unwrap_or_default(),
            times,
            e.last_seen,
            e.message.replace('\n', "\n    ")
        )?;
    }
    Ok(ExitStatus::Success)
}

//! `ferry errors`, `ferry retry`, `ferry resolve`: what went wrong, and what an
//! operator does about it.
//!
//! All three work on the ledger without taking the site's lock, so an operator
//! can act while cron is running a sync (SQLite serialises the writes; a retry
//! takes effect at the next run).

use std::io::Write;

use super::{Ctx, ExitStatus, UsageError};
use crate::config::Config;
use crate::failure::Level;
use crate::ledger::{ErrorRecord, Ledger};
use crate::site::{Missing, StateError, open_ledger};

/// List unresolved errors kept in the ledger (oldest first), at four levels:
/// issue, connection, site, node.
///
/// An issue-level error names the replica path or issue key; it is retried on
/// later runs (with backoff, parked after `retry.max_tries`) and disappears once
/// that issue imports or exports cleanly. Connection, site and node errors
/// disappear once a run gets through. When the ledger itself cannot be read,
/// that is reported as a node-level error and the exit status is 3.
#[derive(Debug, clap::Args)]
pub struct ErrorsArgs {
    /// Print a JSON array (fields: id, level, connection, subject, message, count,
    /// first_seen, last_seen, tries, parked, next_try).
    #[arg(long)]
    json: bool,
}

/// Queue failed imports again: due at the next run, with a fresh count of tries
/// (parked ones included). A connection, site or node error is marked resolved
/// (it comes back if the next run still fails).
#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("which").required(true))]
pub struct RetryArgs {
    /// The error's id, as `ferry errors` shows it (#ID).
    #[arg(group = "which")]
    id: Option<i64>,
    /// Every unresolved error.
    #[arg(long, group = "which")]
    all: bool,
}

/// Mark an error handled: it leaves `ferry errors`, and a failed import is no
/// longer retried (the operator fixed the issue by hand; a later change of the
/// peer's replica is imported as usual).
#[derive(Debug, clap::Args)]
pub struct ResolveArgs {
    /// The error's id, as `ferry errors` shows it (#ID).
    id: i64,
}

/// Runs `ferry errors`.
pub fn run(args: ErrorsArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    let config = Config::load(&ctx.dir)?;
    let errors = match open_ledger(&config, Missing::Refuse).and_then(|l| Ok(l.open_errors()?)) {
        Ok(errors) => errors,
        Err(e)
            if e.chain().any(|c| {
                c.is::<crate::ledger::LedgerError>()
                    || matches!(c.downcast_ref(), Some(StateError::MissingLedger { .. }))
            }) =>
        {
            let advice = crate::disk::full_disk_advice(&config.state_dir()).unwrap_or_else(|| {
                "restore the ledger from a backup, or move it aside and rebuild it with \
                 `ferry relink`"
                    .into()
            });
            writeln!(
                ctx.out,
                "#- {} (ledger unusable)\n    {}\n    {advice}",
                Level::Node,
                crate::words::error_chain(&e)
            )?;
            return Ok(ExitStatus::Failed);
        }
        Err(e) => return Err(e),
    };
    if args.json {
        writeln!(ctx.out.raw(), "{}", serde_json::to_string_pretty(&errors)?)?;
        return Ok(ExitStatus::Success);
    }
    if errors.is_empty() {
        writeln!(ctx.out, "no unresolved errors")?;
    }
    for e in &errors {
        write_error(ctx, e)?;
    }
    Ok(ExitStatus::Success)
}

fn write_error(ctx: &mut Ctx, e: &ErrorRecord) -> std::io::Result<()> {
    let seen = if e.count > 1 {
        format!(
            "seen {} times, {} .. {}",
            e.count, e.first_seen, e.last_seen
        )
    } else {
        format!("seen {}", e.last_seen)
    };
    let retry = match (e.tries, e.parked, &e.next_try) {
        (Some(tries), true, _) => format!("; parked after {tries} tries (`ferry retry {}`)", e.id),
        (Some(tries), false, Some(next)) if tries > 0 => {
            format!("; {tries} failed tries, next after {next}")
        }
        _ => String::new(),
    };
    writeln!(
        ctx.out,
        "#{} {} {}{}  {seen}{retry}\n    {}",
        e.id,
        e.level,
        e.connection.as_deref().unwrap_or("-"),
        e.subject
            .as_deref()
            .map(|s| format!(" {s}"))
            .unwrap_or_default(),
        e.message.replace('\n', "\n    ")
    )
}

fn find(ledger: &Ledger, id: i64) -> anyhow::Result<ErrorRecord> {
    ledger.open_error(id)?.ok_or_else(|| {
        UsageError(format!(
            "no unresolved error #{id}; `ferry errors` lists them"
        ))
        .into()
    })
}

/// The retry queue entry an issue-level error stands for, if any.
fn queued(e: &ErrorRecord) -> Option<(&str, &str)> {
    match (&e.connection, &e.subject, e.tries) {
        (Some(peer), Some(path), Some(_)) if e.level == Level::Issue => Some((peer, path)),
        _ => None,
    }
}

/// Runs `ferry retry`.
pub fn retry(args: RetryArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    let ledger = open_ledger(&Config::load(&ctx.dir)?, Missing::Refuse)?;
    let errors = match args.id {
        Some(id) => vec![find(&ledger, id)?],
        None => ledger.open_errors()?,
    };
    if errors.is_empty() {
        writeln!(ctx.out, "no unresolved errors")?;
    }
    for e in &errors {
        match queued(e) {
            Some((peer, path)) => {
                ledger.requeue(peer, path)?;
                writeln!(
                    ctx.out,
                    "#{} {path}: queued; the next sync of {peer} imports it again",
                    e.id
                )?;
            }
            None => {
                ledger.resolve_error(e.id)?;
                writeln!(
                    ctx.out,
                    "#{} {}: cleared; the next sync tries again and records it if it still fails",
                    e.id, e.level
                )?;
            }
        }
    }
    Ok(ExitStatus::Success)
}

/// Runs `ferry resolve`.
pub fn resolve(args: ResolveArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    let ledger = open_ledger(&Config::load(&ctx.dir)?, Missing::Refuse)?;
    let e = find(&ledger, args.id)?;
    if let Some((peer, path)) = queued(&e) {
        ledger.forget_retry(peer, path)?;
    }
    ledger.resolve_error(e.id)?;
    writeln!(
        ctx.out,
        "#{} resolved{}",
        e.id,
        if queued(&e).is_some() {
            "; it is no longer retried"
        } else {
            ""
        }
    )?;
    Ok(ExitStatus::Success)
}

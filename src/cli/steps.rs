//! `ferry sync` and its steps on their own: `pull`, `import`, `export`, `push`.

use super::{Ctx, ExitStatus, maintenance, report};
use crate::config::{Config, Connection};
use crate::engine::{self, SyncOptions};
use crate::notify;
use crate::site::{Missing, Site};
use crate::transport::PushOutcome;

/// What cron runs: pull the exchange repo, import what peers changed, export what
/// this site changed, push.
///
/// With notify.yaml, new errors then go out in one e-mail; a mail server that is
/// down only prints a `notify:` warning (the errors wait for the next run) and
/// does not change the exit status.
///
/// Exit status: 0 all done, 1 finished with issue-level errors, 2 usage or
/// configuration error, 3 a connection or the site failed, 75 another run holds
/// the lock.
#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    /// Only this connection (runs it even when its method is `manual`).
    #[arg(long, value_name = "PEER")]
    connection: Option<String>,
}

/// Bring peers' new commits from their channels into the local exchange clone.
#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// Only this connection.
    #[arg(long, value_name = "PEER")]
    connection: Option<String>,
}

/// Apply what peers changed (already pulled) to the tracker.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// Only this connection.
    #[arg(long, value_name = "PEER")]
    connection: Option<String>,
}

/// Write what changed in the tracker as one commit per connection.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Only this connection.
    #[arg(long, value_name = "PEER")]
    connection: Option<String>,
    /// Re-evaluate every issue, not only those changed since the last export
    /// (after editing a query or an outgoing rule).
    #[arg(long)]
    full: bool,
}

/// Send this site's commits to the peers' channels.
#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// Only this connection.
    #[arg(long, value_name = "PEER")]
    connection: Option<String>,
    /// Build on this site's branch as the channel has it, at COMMIT, although
    /// this site's key did not sign it: only for the site's own commits made
    /// with a key it no longer has (a lost state folder). A push refused for a
    /// foreign commit names the tip to give here.
    #[arg(long, value_name = "COMMIT", requires = "connection", value_parser = parse_commit)]
    adopt: Option<git2::Oid>,
}

/// A full commit id, as a refusal prints it.
fn parse_commit(text: &str) -> Result<git2::Oid, String> {
    if text.len() != 40 {
        return Err(format!("{text:?}: give the full 40-character commit id"));
    }
    git2::Oid::from_str(text).map_err(|e| format!("{text:?}: {}", e.message()))
}

/// Opens the site and the connections a step covers, leaving out (and saying so)
/// the paused ones.
fn open(ctx: &mut Ctx, connection: Option<String>) -> anyhow::Result<(Site, Vec<Connection>)> {
    let site = Site::open(&ctx.dir)?;
    let mut active = Vec::new();
    for c in engine::selected(&site, &SyncOptions { connection })? {
        match site.ledger.paused(&c.peer)? {
            Some(pause) => report::paused(&mut ctx.out, &c.peer, &pause)?,
            None => active.push(c),
        }
    }
    Ok((site, active))
}

/// Runs `ferry sync`.
pub fn sync(args: SyncArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    let mut site = match Site::open(&ctx.dir) {
        Ok(site) => site,
        Err(e) => {
            notify_unopened(ctx, &e)?;
            return Err(e);
        }
    };
    let run = engine::sync(
        &mut site,
        &SyncOptions {
            connection: args.connection,
        },
    );
    let status = match &run {
        Ok(run) => report::sync(&mut ctx.out, run, ctx.listing),
        Err(failure) => {
            engine::record_run_failure(&site.ledger, failure.level, &failure.error);
            Ok(ExitStatus::Failed)
        }
    };
    // Site- and node-level errors are news too: notify before giving up.
    if let Some(config) = &site.config.notify {
        let outcome = notify::send_pending(config, site.config.site_name(), &mut site.ledger);
        report::notified(&mut ctx.out, &outcome)?;
    }
    if let Ok(run) = &run {
        let clone = run.connections.iter().any(|c| {
            c.fetched.as_ref().is_some_and(|f| f.after != f.before)
                || c.exported.as_ref().is_some_and(|e| e.commit.is_some())
        });
        let pushed: Vec<String> = run
            .connections
            .iter()
            .filter(|c| matches!(c.pushed, Some(PushOutcome::Pushed(_))))
            .map(|c| c.peer.clone())
            .collect();
        maintenance::after_run(&site, &mut ctx.out, clone, &pushed)?;
    }
    run.map_err(crate::failure::RunFailure::into_error)?;
    Ok(status?)
}

/// Sends the notification when the site could not even be opened (its tracker is
/// down: the error is recorded, and it is exactly the news an operator needs).
/// Not when another run holds the lock (that run notifies) or the configuration
/// is broken (nothing ran).
fn notify_unopened(ctx: &mut Ctx, e: &anyhow::Error) -> anyhow::Result<()> {
    if super::classify(e) != ExitStatus::Failed {
        return Ok(());
    }
    let Ok(config) = Config::load(&ctx.dir) else {
        return Ok(());
    };
    let Some(notify_config) = &config.notify else {
        return Ok(());
    };
    let Ok(mut ledger) = crate::site::open_ledger(&config, Missing::Refuse) else {
        return Ok(());
    };
    let outcome = notify::send_pending(notify_config, config.site_name(), &mut ledger);
    report::notified(&mut ctx.out, &outcome)?;
    Ok(())
}

/// Runs `ferry pull`.
pub fn pull(args: PullArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    let (mut site, connections) = open(ctx, args.connection)?;
    let mut changed = false;
    for c in connections
        .iter()
        .filter(|c| c.settings.direction.imports())
    {
        let fetched = engine::pull(&mut site, c)?;
        report::fetched(&mut ctx.out, &c.peer, &fetched)?;
        changed |= fetched.after != fetched.before;
    }
    maintenance::after_run(&site, &mut ctx.out, changed, &[])?;
    Ok(ExitStatus::Success)
}

/// Runs `ferry import`.
pub fn import(args: ImportArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    let (mut site, connections) = open(ctx, args.connection)?;
    let mut status = ExitStatus::Success;
    for c in connections
        .iter()
        .filter(|c| c.settings.direction.imports())
    {
        let imported = engine::import(&mut site, c)?;
        report::imported(&mut ctx.out, &c.peer, &imported, ctx.listing)?;
        if !imported.errors.is_empty() {
            status = ExitStatus::IssueErrors;
        }
    }
    Ok(status)
}

/// Runs `ferry export`.
pub fn export(args: ExportArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    let (mut site, connections) = open(ctx, args.connection)?;
    let mut status = ExitStatus::Success;
    let mut committed = false;
    for c in connections
        .iter()
        .filter(|c| c.settings.direction.exports())
    {
        if args.full {
            site.ledger.set_cursor(&c.peer, None)?;
        }
        let changed = engine::Changed::read(&site, &[c])?;
        let exported = engine::export(&mut site, c, &changed)?;
        report::exported(&mut ctx.out, &c.peer, &exported, ctx.listing)?;
        if !exported.errors.is_empty() {
            status = ExitStatus::IssueErrors;
        }
        committed |= exported.commit.is_some();
    }
    maintenance::after_run(&site, &mut ctx.out, committed, &[])?;
    Ok(status)
}

/// Runs `ferry push`.
pub fn push(args: PushArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    let (site, connections) = open(ctx, args.connection)?;
    let mut peers = Vec::new();
    for c in connections
        .iter()
        .filter(|c| c.settings.direction.exports())
    {
        let pushed = engine::push(&site, c, args.adopt)?;
        report::pushed(&mut ctx.out, &c.peer, &pushed)?;
        if matches!(pushed, PushOutcome::Pushed(_)) {
            peers.push(c.peer.clone());
        }
    }
    maintenance::after_run(&site, &mut ctx.out, false, &peers)?;
    Ok(ExitStatus::Success)
}

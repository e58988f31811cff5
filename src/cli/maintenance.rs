//! `ferry maintenance`: compact the exchange clone and the folder channels now,
//! and the same after a run that changed something ([`after_run`]).

use std::io::Write;

use serde::Serialize;

use super::{Ctx, ExitStatus};
use crate::config::Config;
use crate::exchange::Exchange;
use crate::maintenance::{self, Done, Mode, Report, Target};
use crate::site::{EXCHANGE_DIR, Missing, Site, state_folder};

/// Repack the exchange clone and every folder channel of the site's
/// connections now, whatever the thresholds, and print the sizes before and
/// after (bytes, packs, loose objects).
///
/// Every object a ref or a reflog entry reaches goes into one new pack; loose
/// objects it holds are removed, and unreachable ones not modified for
/// `maintenance.prune_after_days` (14 days); the old packs are removed an hour
/// later, so that a peer reading the channel meanwhile still finds them. A run
/// that changed something (sync, pull, export, push) does the same by itself
/// when the loose objects or packs pass `maintenance.loose_objects` (6700) or
/// `maintenance.packs` (50). Channels on a server are out of reach: compact
/// them there (`git gc`).
///
/// Exit status 3 when a repository could not be maintained (nothing that was
/// not finished was removed), 75 when another run of the site holds its lock.
#[derive(Debug, clap::Args)]
pub struct MaintenanceArgs {
    /// Print a JSON array, one object per repository.
    #[arg(long)]
    json: bool,
}

/// One repository in `--json`.
#[derive(Debug, Serialize)]
struct Entry<'a> {
    /// `clone`, `folder` or `server`.
    kind: &'static str,
    /// The peers whose connections go through it (none for the clone).
    peers: Vec<String>,
    /// The channel's URL as configured.
    url: Option<String>,
    /// The repository's folder (none for a server).
    path: Option<String>,
    #[serde(flatten)]
    report: Option<&'a Report>,
    /// Why it was not maintained.
    error: Option<String>,
}

/// Runs `ferry maintenance`.
pub fn run(args: MaintenanceArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    let config = Config::load(&ctx.dir)?;
    let state = state_folder(&config, Missing::Refuse)?;
    let _lock = crate::site::lock(&state)?;
    // What a killed run left in the clone goes first, as when a run opens it.
    let exchange = Exchange::open_or_init(&state.join(EXCHANGE_DIR))?;
    for stale in exchange.remove_stale_files()? {
        tracing::warn!("removed {}, left by an interrupted run", stale.display());
    }
    drop(exchange);
    let targets = crate::site::maintenance_targets(&config, |_| true);
    let servers: Vec<Target> = targets
        .iter()
        .filter(|t| t.dir().is_none())
        .cloned()
        .collect();
    let done = maintenance::run(targets, &config.site.maintenance, Mode::Force);
    let failed = done.iter().any(|d| d.outcome.is_err());
    if args.json {
        let mut entries: Vec<Entry<'_>> = done.iter().map(entry).collect();
        entries.extend(servers.iter().map(|target| Entry {
            kind: "server",
            peers: match target {
                Target::Server { peer, .. } => vec![peer.clone()],
                _ => Vec::new(),
            },
            url: match target {
                Target::Server { url, .. } => Some(url.clone()),
                _ => None,
            },
            path: None,
            report: None,
            error: Some(server_note()),
        }));
        writeln!(ctx.out.raw(), "{}", serde_json::to_string_pretty(&entries)?)?;
    } else {
        for d in &done {
            describe(&mut ctx.out, d)?;
        }
        for target in &servers {
            writeln!(ctx.out, "{}: {}", target.describe(), server_note())?;
        }
    }
    Ok(if failed {
        ExitStatus::Failed
    } else {
        ExitStatus::Success
    })
}

/// What is said of a channel on a server.
fn server_note() -> String {
    "on a server: ferry cannot see or compact its repository; whoever runs the server \
     does (`git gc` there, or the hosting's housekeeping)"
        .to_string()
}

fn entry(done: &Done) -> Entry<'_> {
    let (kind, peers, url) = match &done.target {
        Target::Clone(_) => ("clone", Vec::new(), None),
        Target::Folder { peers, url, .. } => ("folder", peers.clone(), Some(url.clone())),
        Target::Server { peer, url } => ("server", vec![peer.clone()], Some(url.clone())),
    };
    Entry {
        kind,
        peers,
        url,
        path: done.target.dir().map(|d| d.display().to_string()),
        report: done.outcome.as_ref().ok(),
        error: done
            .outcome
            .as_ref()
            .err()
            .map(|e| format!("{e}; nothing that was not finished was removed")),
    }
}

/// Two lines for one repository: the sizes before and after, and what was done.
fn describe(out: &mut dyn Write, done: &Done) -> std::io::Result<()> {
    let name = done.target.describe();
    let report = match &done.outcome {
        Ok(report) => report,
        Err(e) => {
            return writeln!(
                out,
                "{name}: FAILED: {e}; nothing that was not finished was removed"
            );
        }
    };
    if let Some(reason) = &report.skipped {
        return writeln!(out, "{name}: {}; skipped: {reason}", report.before);
    }
    writeln!(out, "{name}: {} → {}", report.before, report.after)?;
    let mut did = Vec::new();
    if let Some(count) = report.packed_objects {
        did.push(format!("{count} objects in a new pack"));
    }
    if report.loose_packed + report.loose_pruned > 0 {
        did.push(format!(
            "{} loose objects removed ({} in the new pack, {} unreachable and older than the grace)",
            report.loose_packed + report.loose_pruned,
            report.loose_packed,
            report.loose_pruned
        ));
    }
    if report.packs_superseded > 0 {
        did.push(format!(
            "{} old pack{} superseded (removed after an hour)",
            report.packs_superseded,
            crate::words::plural(report.packs_superseded as usize)
        ));
    }
    if report.packs_removed > 0 {
        did.push(format!(
            "{} superseded pack{} removed",
            report.packs_removed,
            crate::words::plural(report.packs_removed as usize)
        ));
    }
    if did.is_empty() {
        did.push("nothing to do".to_string());
    }
    writeln!(out, "  {}", did.join("; "))
}

/// The maintenance a run does at its end, holding the site's lock: the clone
/// when `clone` (the run wrote to it), and the folder channels of `pushed`
/// (peers the run pushed to), each only above the thresholds. Prints a line per
/// repository it changed; failures are logged (they do not fail the run).
pub(super) fn after_run(
    site: &Site,
    out: &mut dyn Write,
    clone: bool,
    pushed: &[String],
) -> std::io::Result<()> {
    let settings = &site.config.site.maintenance;
    if !settings.auto || (!clone && pushed.is_empty()) {
        return Ok(());
    }
    let targets = crate::site::maintenance_targets(&site.config, |c| pushed.contains(&c.peer))
        .into_iter()
        .filter(|t| match t {
            Target::Clone(_) => clone,
            Target::Folder { .. } => true,
            Target::Server { .. } => false,
        })
        .collect();
    for done in maintenance::run(targets, settings, Mode::Auto) {
        if let Ok(report) = &done.outcome
            && report.changed()
        {
            writeln!(
                out,
                "maint  {}: {} → {}",
                done.target.describe(),
                report.before,
                report.after
            )?;
        }
    }
    Ok(())
}

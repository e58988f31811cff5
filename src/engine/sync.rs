//! `ferry sync`: pull, import, export, push for every connection that takes part.
//!
//! Phases run across all connections in order (all pulls, then all imports, then
//! all exports, then all pushes), so one run of a relay site forwards what it just
//! received from one peer to the others.

use anyhow::Context;

use super::{Changed, ExportReport, ImportReport, declared_level, export, import, run_failure};
use crate::config::{Connection, SyncMethod};
use crate::failpoint;
use crate::failure::{Level, RunFailure};
use crate::ledger::Pause;
use crate::site::Site;
use crate::transport::{FetchOutcome, PushOutcome, open_channel};

/// Which connections a run covers.
#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    /// Only this connection (also runs it when its method is `manual`).
    pub connection: Option<String>,
}

/// Everything one connection did in a run.
#[derive(Debug, Default)]
pub struct ConnectionReport {
    /// The peer.
    pub peer: String,
    /// What the pull brought, if it ran.
    pub fetched: Option<FetchOutcome>,
    /// What the import did, if it ran.
    pub imported: Option<ImportReport>,
    /// What the export did, if it ran.
    pub exported: Option<ExportReport>,
    /// What the push did, if it ran.
    pub pushed: Option<PushOutcome>,
    /// Commits behind the release gate that wait for a release after the push.
    pub awaiting_release: usize,
    /// A connection-level failure that stopped this connection.
    pub failure: Option<String>,
    /// The connection is paused: nothing was pulled, imported, exported or pushed.
    pub paused: Option<Pause>,
}

impl ConnectionReport {
    /// Issue-level errors of the import and export.
    pub fn issue_errors(&self) -> usize {
        self.imported.as_ref().map_or(0, |r| r.errors.len())
            + self.exported.as_ref().map_or(0, |r| r.errors.len())
    }
}

/// A whole run.
#[derive(Debug, Default)]
pub struct SyncReport {
    /// Per connection, in name order.
    pub connections: Vec<ConnectionReport>,
}

impl SyncReport {
    /// Issue-level errors in the run.
    pub fn issue_errors(&self) -> usize {
        self.connections
            .iter()
            .map(ConnectionReport::issue_errors)
            .sum()
    }
    /// Connections that failed.
    pub fn failed_connections(&self) -> usize {
        self.connections
            .iter()
            .filter(|c| c.failure.is_some())
            .count()
    }
}

/// The connections a run covers, checked against the options.
pub fn selected(site: &Site, options: &SyncOptions) -> anyhow::Result<Vec<Connection>> {
    match &options.connection {
        Some(peer) => Ok(vec![site.config.connection(peer)?.clone()]),
        None => Ok(site
            .config
            .connections
            .values()
            .filter(|c| c.settings.method == SyncMethod::Auto)
            .cloned()
            .collect()),
    }
}

/// Fetches the peer's branch from the connection's channel, and keeps in the
/// ledger which bundles wait in its inbox for a predecessor (for `status`,
/// `doctor` and the silence warning).
pub fn pull(site: &mut Site, connection: &Connection) -> anyhow::Result<FetchOutcome> {
    tracing::info!(peer = %connection.peer, channel = %connection.settings.channel, "pull");
    let channel = open_channel(
        &connection.settings.channel,
        &site.config.root,
        &connection.trust,
    );
    let outcome = channel.fetch(
        &site.exchange,
        site.name(),
        &connection.peer,
        &connection.trust,
    )?;
    failpoint::hit("after-fetch");
    let waiting: Vec<(String, String)> = outcome
        .waiting
        .iter()
        .map(|b| (b.file.clone(), b.needs.to_string()))
        .collect();
    site.ledger.set_waiting(&connection.peer, &waiting)?;
    Ok(outcome)
}

/// Pushes this site's branch for the peer to the connection's channel; `adopt`
/// is a tip of this site's branch on the channel the operator vouches for
/// (`ferry push --adopt`).
pub fn push(
    site: &Site,
    connection: &Connection,
    adopt: Option<git2::Oid>,
) -> anyhow::Result<PushOutcome> {
    tracing::info!(peer = %connection.peer, channel = %connection.settings.channel, "push");
    let channel = open_channel(
        &connection.settings.channel,
        &site.config.root,
        &connection.trust,
    );
    super::release::settle(site, connection)?;
    failpoint::hit("before-push");
    let outcome = channel.push(&site.exchange, site.name(), &connection.peer, adopt)?;
    failpoint::hit("after-push");
    Ok(outcome)
}

/// One full run: pull, import, export, push.
///
/// A failure of one connection is recorded and stops that connection only; one
/// that stops the run comes back as a [`RunFailure`] at the level decided where
/// it was raised.
pub fn sync(site: &mut Site, options: &SyncOptions) -> Result<SyncReport, RunFailure> {
    // What the configuration or the tracker says failed is the site's; the
    // ledger's errors are the node's (`?` on them says so).
    let connections = selected(site, options).map_err(run_failure(Level::Site))?;
    let mut reports = Vec::with_capacity(connections.len());
    for c in &connections {
        reports.push(ConnectionReport {
            peer: c.peer.clone(),
            paused: site.ledger.paused(&c.peer)?,
            ..Default::default()
        });
    }

    for (connection, report) in connections.iter().zip(&mut reports) {
        if connection.settings.direction.imports() && report.paused.is_none() {
            run_step(site, connection, report, |site, report| {
                let fetched = pull(site, connection).context("pull")?;
                watch_silence(site, connection, &fetched)?;
                report.fetched = Some(fetched);
                Ok(())
            })?;
        }
    }
    for (connection, report) in connections.iter().zip(&mut reports) {
        if connection.settings.direction.imports()
            && report.failure.is_none()
            && report.paused.is_none()
        {
            run_step(site, connection, report, |site, report| {
                report.imported = Some(import(site, connection).context("import")?);
                Ok(())
            })?;
        }
    }
    let exporting = |c: &Connection, r: &ConnectionReport| {
        c.settings.direction.exports() && r.failure.is_none() && r.paused.is_none()
    };
    let exporters: Vec<&Connection> = connections
        .iter()
        .zip(&reports)
        .filter(|(c, r)| exporting(c, r))
        .map(|(c, _)| c)
        .collect();
    if !exporters.is_empty() {
        let changed = Changed::read(site, &exporters).map_err(run_failure(Level::Site))?;
        for (connection, report) in connections.iter().zip(&mut reports) {
            if exporting(connection, report) {
                run_step(site, connection, report, |site, report| {
                    report.exported = Some(export(site, connection, &changed).context("export")?);
                    Ok(())
                })?;
            }
        }
    }
    for (connection, report) in connections.iter().zip(&mut reports) {
        if connection.settings.direction.exports()
            && report.failure.is_none()
            && report.paused.is_none()
        {
            run_step(site, connection, report, |site, report| {
                report.pushed = Some(push(site, connection, None).context("push")?);
                report.awaiting_release =
                    super::release::waiting(&site.exchange, site.name(), connection)?;
                super::release::notice(site, connection, report.awaiting_release)?;
                Ok(())
            })?;
        }
    }
    // What got through is no longer broken: a connection that ran without a
    // failure, and the site and node, since the run reached its end.
    for report in &reports {
        if report.failure.is_none() && report.paused.is_none() {
            site.ledger
                .resolve_level(Level::Connection, Some(&report.peer))?;
        }
    }
    for level in [Level::Site, Level::Node] {
        site.ledger.resolve_level(level, None)?;
    }
    Ok(SyncReport {
        connections: reports,
    })
}

/// The subject of the error that says a peer has gone silent.
const SILENCE: &str = "silence";

/// Keeps the time of the last arrival from the peer, and raises a
/// connection-level error when it is older than `stale_after_hours`: on an
/// air-gapped link a lost bundle or a dead cron on the other side looks exactly
/// like nothing happening. The error names the time of the last arrival (not the
/// hours, which change every run) so it is notified once, and it is resolved by
/// the next arrival. The clock starts at the connection's first pull.
fn watch_silence(
    site: &Site,
    connection: &Connection,
    fetched: &FetchOutcome,
) -> anyhow::Result<()> {
    let peer = &connection.peer;
    let last = site.ledger.last_arrival(peer)?;
    if fetched.after != fetched.before || last.is_none() {
        site.ledger.mark_arrival(peer)?;
        site.ledger.resolve_subject(peer, SILENCE)?;
        return Ok(());
    }
    let (Some(hours), Some((since, silent_for))) = (connection.settings.stale_after_hours, last)
    else {
        return Ok(());
    };
    if silent_for > chrono::Duration::hours(hours.into()) {
        // A bundle waiting for its predecessor is something that came and
        // cannot be used: the link is silent all the same, and the bundle says
        // what to ask the peer for.
        let waiting = match fetched.waiting.as_slice() {
            [] => String::new(),
            bundles => format!(
                "; {} bundle{} wait{} in the inbox for a predecessor that never arrived ({}): \
                 ask {peer} to send it again, or a bundle made after what this site has",
                bundles.len(),
                crate::words::plural(bundles.len()),
                if bundles.len() == 1 { "s" } else { "" },
                bundles
                    .iter()
                    .map(|b| format!("{} needs {}", b.file, crate::words::short_id(b.needs)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let message = format!(
            "nothing has arrived from {peer} since {} (more than stale_after_hours: {hours}){waiting}; \
             check the channel (a bundle not carried over, a full inbox) and {peer}'s \
             scheduled sync",
            crate::model::format_timestamp(&since)
        );
        tracing::warn!("{message}");
        site.ledger
            .record_error(Level::Connection, Some(peer), Some(SILENCE), &message)?;
    }
    Ok(())
}

/// Runs one step of one connection. A failure that belongs to the connection
/// (channel, rules, replicas) is recorded and stops that connection only; one
/// whose error declares the site's or the node's level (ledger, tracker down)
/// stops the run.
fn run_step(
    site: &mut Site,
    connection: &Connection,
    report: &mut ConnectionReport,
    step: impl FnOnce(&mut Site, &mut ConnectionReport) -> anyhow::Result<()>,
) -> Result<(), RunFailure> {
    let error = match step(site, report) {
        Ok(()) => return Ok(()),
        Err(error) => error,
    };
    if let Some(level) = declared_level(&error) {
        return Err(RunFailure { level, error });
    }
    let message = crate::words::error_chain(&error);
    site.ledger
        .record_error(Level::Connection, Some(&connection.peer), None, &message)?;
    report.failure = Some(message);
    Ok(())
}

#[cfg(test)]
mod tests {
    use anyhow::Context;

    use super::*;
    use crate::tracker::TrackerError;

    fn ledger_error() -> anyhow::Error {
        let dir = tempfile::tempdir().unwrap();
        let Err(e) = crate::ledger::Ledger::open(dir.path()) else {
            panic!("a folder opened as a ledger");
        };
        anyhow::Error::from(e).context("import")
    }

    #[test]
    fn errors_declare_their_own_level_through_any_context() {
        assert_eq!(declared_level(&ledger_error()), Some(Level::Node));
        let down: anyhow::Result<()> =
            Err(TrackerError::Unavailable("connection refused".into())).context("export");
        assert_eq!(declared_level(&down.unwrap_err()), Some(Level::Site));
        let refused = anyhow::Error::from(TrackerError::Rejected {
            issue: "ENG-1".into(),
            message: "no such status".into(),
        });
        assert_eq!(declared_level(&refused), None);
        assert_eq!(declared_level(&anyhow::anyhow!("bad channel")), None);
    }

    #[test]
    fn a_run_failure_takes_the_wider_of_its_floor_and_the_declared_level() {
        let plain = run_failure(Level::Site)(anyhow::anyhow!("no such connection"));
        assert_eq!(plain.level, Level::Site);
        assert_eq!(plain.error.to_string(), "no such connection");
        assert_eq!(run_failure(Level::Site)(ledger_error()).level, Level::Node);
        let down = anyhow::Error::from(TrackerError::Unavailable("timeout".into()));
        assert_eq!(run_failure(Level::Node)(down).level, Level::Node);
    }
}

//! `ferry relink`: rebuild the ledger from the exchange repo and the tracker.

use std::io::Write;

use super::{Ctx, ExitStatus};
use crate::engine::{self, SyncOptions};
use crate::site::{Missing, Site};
use crate::words::{plural, short_id};

/// Rebuild the ledger's links, shared issues and applied positions from the
/// exchange repo and the origin markers in the tracker, after the ledger was lost
/// or the tracker restored from a backup; then `ferry sync` as usual.
///
/// Nothing is created or changed in the tracker, and nothing is fetched: issues of
/// the peer missing here are queued and created by the next import, once.
#[derive(Debug, clap::Args)]
pub struct RelinkArgs {
    /// Only this connection.
    #[arg(long, value_name = "PEER")]
    connection: Option<String>,
}

/// Runs `ferry relink`.
pub fn run(args: RelinkArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    let mut site = Site::open_with(&ctx.dir, Missing::NewLedger)?;
    let connections = engine::selected(
        &site,
        &SyncOptions {
            connection: args.connection,
        },
    )?;
    for connection in &connections {
        let r = engine::relink(&mut site, connection)?;
        writeln!(
            ctx.out,
            "relink {}: {} link{}, {} shared, applied at {} ({} replica{}), {} queued for import",
            r.peer,
            r.linked,
            plural(r.linked),
            r.shared,
            r.applied.map_or("(nothing)".to_string(), short_id),
            r.applied_replicas,
            plural(r.applied_replicas),
            r.queued.len(),
        )?;
        for path in &r.queued {
            writeln!(ctx.out, "  queued {path}")?;
        }
        for problem in &r.unreadable {
            writeln!(ctx.out, "  unreadable {problem}")?;
        }
        for problem in &r.refused {
            writeln!(ctx.out, "  not linked {problem}")?;
        }
    }
    Ok(ExitStatus::Success)
}

//! `ferry share` and `ferry unshare`: share one issue on a connection by hand,
//! whatever the connection's query says, or stop sharing it.

use std::io::Write;

use super::{Ctx, ExitStatus, UsageError};
use crate::site::Site;

/// Share one issue with a peer whatever the connection's query says.
///
/// Recorded in the ledger; the next `ferry sync` (or `ferry export`) writes its
/// replica, even if the issue did not change. An issue unshared before is
/// shared again with the same copy at the peer.
#[derive(Debug, clap::Args)]
pub struct ShareArgs {
    /// The issue's key in this site's tracker.
    key: String,
    /// The connection (the peer's site name).
    #[arg(long = "with", value_name = "PEER")]
    peer: String,
}

/// Stop sharing one issue with a peer, without deleting anything.
///
/// The next `ferry sync` (or `ferry export`) removes its replica from this
/// site's branch: the peer keeps its copy, marks it as no longer shared and
/// sends no more changes of it; its changes are no longer imported here, and
/// the query does not share it again. `ferry share` resumes the same link.
#[derive(Debug, clap::Args)]
pub struct UnshareArgs {
    /// The issue's key in this site's tracker.
    key: String,
    /// The connection (the peer's site name).
    #[arg(long = "with", value_name = "PEER")]
    peer: String,
}

/// Runs `ferry share`.
pub fn share(args: ShareArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    pick(&args.key, &args.peer, true, ctx)
}

/// Runs `ferry unshare`.
pub fn unshare(args: UnshareArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    pick(&args.key, &args.peer, false, ctx)
}

fn pick(key: &str, peer: &str, shared: bool, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    let site = Site::open(&ctx.dir)?;
    let connection = site.config.connection(peer)?;
    if !connection.settings.direction.exports() {
        return Err(UsageError(format!(
            "the connection to {peer} only imports (direction: in): this site sends \
             nothing on it, so there is nothing to share or unshare"
        ))
        .into());
    }
    let Some(issue) = site.tracker.get_by_key(key)? else {
        return Err(UsageError(format!("no issue {key} in this site's tracker")).into());
    };
    if issue.deleted {
        return Err(UsageError(format!("{key} is deleted: there is nothing to share")).into());
    }
    if shared && connection.remote_project(&issue.project).is_none() {
        return Err(UsageError(format!(
            "{key} is in project {}, which the connection to {peer} does not map; \
             map it in connections/{peer}.yaml first",
            issue.project
        ))
        .into());
    }
    let before = site.ledger.pick_for(peer, &issue.id)?;
    site.ledger.pick(peer, &issue.id, shared, false)?;
    let verb = if shared { "shared" } else { "unshared" };
    let again = match before {
        Some(p) if p.shared == shared && !p.by_peer => " (again)",
        _ => "",
    };
    writeln!(
        ctx.out,
        "{key} {verb} with {peer} by hand{again}; the next `ferry sync` {}",
        if shared {
            "sends it"
        } else {
            "removes its replica (the peer keeps its copy)"
        }
    )?;
    Ok(ExitStatus::Success)
}

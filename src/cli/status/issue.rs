//! `ferry status ISSUE`: one issue's sync panel, the question an operator is asked
//! most ("did SUP-42 reach engineering, and what came back?") answered from the
//! ledger, the exchange clone and the tracker, without the site lock.

use std::io::Write;

use git2::Oid;
use serde::Serialize;

use crate::cli::{Ctx, ExitStatus, UsageError};
use crate::config::Config;
use crate::exchange::{Exchange, own_branch};
use crate::ledger::{ErrorRecord, Step};
use crate::model::{Origin, format_timestamp};
use crate::replica::{Replica, replica_path};
use crate::site::{EXCHANGE_DIR, Missing, open_ledger, open_tracker};
use crate::words::short_id;

/// The panel.
#[derive(Debug, Serialize)]
struct IssuePanel {
    key: String,
    id: String,
    summary: String,
    status: String,
    updated: String,
    deleted: bool,
    /// The site and id it was copied from, for an issue sync created.
    origin: Option<Origin>,
    connections: Vec<IssueConnection>,
}

/// The issue as seen on one connection.
#[derive(Debug, Serialize)]
struct IssueConnection {
    peer: String,
    /// This site exports the issue to the peer.
    shared: bool,
    /// Why it is shared or not, in words.
    why: String,
    /// The peer's issue it is linked with: (id, key).
    linked: Option<(String, String)>,
    /// The replica of it on this site's branch (the last export).
    sent: Option<Version>,
    /// The peer's replica last applied here.
    received: Option<Version>,
    /// Tracker writes a killed run left unfinished for it.
    interrupted_steps: Vec<Step>,
    /// Its unresolved errors (with tries and parking for an import retry).
    errors: Vec<ErrorRecord>,
}

/// One replica version.
#[derive(Debug, Serialize)]
struct Version {
    path: String,
    blob: String,
    /// The replica's `updated`.
    updated: Option<String>,
    /// The commit it is in (for a sent one: this site's branch head).
    commit: Option<String>,
}

/// Runs `ferry status ISSUE`.
pub fn run(key: &str, json: bool, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    let config = Config::load(&ctx.dir)?;
    let ledger = open_ledger(&config, Missing::Refuse)?;
    let state = config.state_dir();
    let exchange = Exchange::open_or_init(&state.join(EXCHANGE_DIR))?;
    let tracker = open_tracker(&config)?;
    let Some(issue) = tracker.get_by_key(key)? else {
        return Err(UsageError(format!("no issue {key} in this site's tracker")).into());
    };
    let errors = ledger.open_errors()?;
    let me = config.site_name();
    let mut connections = Vec::new();
    for c in config.connections.values() {
        let peer = c.peer.as_str();
        let linked = match (&issue.origin, ledger.remote_for(peer, &issue.id)?) {
            (_, Some(link)) => Some(link),
            // A copy made from the peer's issue names it in its origin marker.
            (Some(origin), None) if origin.site == peer => Some((origin.id.clone(), String::new())),
            _ => None,
        };
        let own_path = replica_path(&issue.project, &issue.id);
        let sent = match exchange.resolve(&own_branch(me, peer))? {
            Some(head) => exchange
                .find_replica(head, &own_path)?
                .map(|(_, blob)| version(&exchange, &own_path, blob, Some(head))),
            None => None,
        };
        let received = match &linked {
            Some((remote_id, _)) => match ledger.applied_for(peer, remote_id)? {
                Some((path, blob)) => Oid::from_str(&blob)
                    .ok()
                    .map(|blob| version(&exchange, &path, blob, None)),
                None => None,
            },
            None => None,
        };
        let mut subjects = vec![issue.key.clone(), own_path.clone()];
        subjects.extend(received.as_ref().map(|r| r.path.clone()));
        let interrupted_steps = match &received {
            Some(r) => ledger.interrupted_steps(peer, Some(&r.path))?,
            None => Vec::new(),
        };
        let connected = ledger.is_connected(peer, &issue.id)?;
        let pick = ledger.pick_for(peer, &issue.id)?;
        let matches = !issue.deleted && c.query.matches(&issue);
        let (shared, why) = match &pick {
            Some(p) if !p.shared && p.by_peer => (false, format!("no longer shared by {peer}")),
            Some(p) if !p.shared => (
                false,
                format!("unshared by hand (`ferry unshare`) at {}", p.at),
            ),
            Some(p) if !p.by_peer => (true, format!("shared by hand (`ferry share`) at {}", p.at)),
            _ if issue.origin.as_ref().is_some_and(|o| o.site == peer) => {
                (true, format!("a copy of {peer}'s issue"))
            }
            _ if connected && matches => (true, "the connection's query matches it".into()),
            _ if connected => (
                true,
                "shared when the query matched it; keeps syncing".into(),
            ),
            _ if matches => (
                false,
                "the connection's query matches it: the next sync sends it".into(),
            ),
            _ => (
                false,
                "the connection's query does not match it (`ferry share` shares it by hand)".into(),
            ),
        };
        connections.push(IssueConnection {
            peer: peer.to_string(),
            shared,
            why,
            linked,
            sent,
            received,
            interrupted_steps,
            errors: errors
                .iter()
                .filter(|e| {
                    e.connection.as_deref() == Some(peer)
                        && e.subject.as_ref().is_some_and(|s| subjects.contains(s))
                })
                .cloned()
                .collect(),
        });
    }
    let panel = IssuePanel {
        key: issue.key.clone(),
        id: issue.id.clone(),
        summary: issue.summary.clone(),
        status: issue.status.clone(),
        updated: format_timestamp(&issue.updated),
        deleted: issue.deleted,
        origin: issue.origin.clone(),
        connections,
    };
    if json {
        writeln!(ctx.out.raw(), "{}", serde_json::to_string_pretty(&panel)?)?;
    } else {
        render(ctx, &panel)?;
    }
    Ok(ExitStatus::Success)
}

/// A replica version as stored; a replica that no longer parses still shows its
/// path and blob.
fn version(exchange: &Exchange, path: &str, blob: Oid, commit: Option<Oid>) -> Version {
    let updated = exchange
        .read_blob(blob)
        .ok()
        .and_then(|bytes| Replica::parse(path, &bytes).ok())
        .map(|r| format_timestamp(&r.updated));
    Version {
        path: path.to_string(),
        blob: blob.to_string(),
        updated,
        commit: commit.map(|c| c.to_string()),
    }
}

fn render(ctx: &mut Ctx, p: &IssuePanel) -> std::io::Result<()> {
    let origin = p
        .origin
        .as_ref()
        .map(|o| format!("; copied from {}'s issue {}", o.site, o.id))
        .unwrap_or_default();
    writeln!(
        ctx.out,
        "{} {:?} ({}, updated {}{}{origin})",
        p.key,
        p.summary,
        p.status,
        p.updated,
        if p.deleted { ", DELETED" } else { "" }
    )?;
    if p.connections.is_empty() {
        writeln!(ctx.out, "no connections")?;
    }
    for c in &p.connections {
        writeln!(ctx.out, "\n{}", c.peer)?;
        if !c.shared && c.linked.is_none() {
            writeln!(ctx.out, "  not shared with {}: {}", c.peer, c.why)?;
            continue;
        }
        match c.shared {
            true => writeln!(ctx.out, "  shared    {}", c.why)?,
            false => writeln!(ctx.out, "  shared    no: {}", c.why)?,
        }
        match &c.linked {
            Some((id, key)) if !key.is_empty() => {
                writeln!(ctx.out, "  linked    {key} (their id {id})")?
            }
            Some((id, _)) => writeln!(ctx.out, "  linked    their id {id}")?,
            None => writeln!(
                ctx.out,
                "  linked    not yet (the peer has not sent its copy)"
            )?,
        }
        match &c.sent {
            Some(v) => writeln!(
                ctx.out,
                "  sent      {}, updated {}, in {}",
                v.path,
                v.updated.as_deref().unwrap_or("?"),
                v.commit
                    .as_deref()
                    .and_then(|c| Oid::from_str(c).ok())
                    .map_or("-".into(), short_id)
            )?,
            None => writeln!(ctx.out, "  sent      nothing yet")?,
        }
        match &c.received {
            Some(v) => writeln!(
                ctx.out,
                "  received  {}, updated {}, applied",
                v.path,
                v.updated.as_deref().unwrap_or("?")
            )?,
            None => writeln!(ctx.out, "  received  nothing applied yet")?,
        }
        for step in &c.interrupted_steps {
            writeln!(
                ctx.out,
                "  resuming  {} (a run died during it at {})",
                step.kind, step.started_at
            )?;
        }
        for e in &c.errors {
            let retry = match (e.tries, e.parked) {
                (Some(tries), true) => format!(" [parked after {tries} tries]"),
                (Some(tries), false) if tries > 0 => format!(" [{tries} failed tries]"),
                _ => String::new(),
            };
            writeln!(
                ctx.out,
                "  error #{} {}{retry}: {}",
                e.id, e.level, e.message
            )?;
        }
    }
    Ok(())
}

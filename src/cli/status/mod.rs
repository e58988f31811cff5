//! `ferry status`: every connection at a glance; `ferry status ISSUE`: one
//! issue's sync panel ([`issue`]).
//!
//! Reads the configuration, the ledger and the exchange clone without taking the
//! site's lock, so it answers while cron is syncing.

mod issue;

use std::io::Write;

use serde::Serialize;

use super::{Ctx, ExitStatus};
use crate::config::{ChannelSetting, Config};
use crate::exchange::{Exchange, applied_ref, own_branch, peer_branch};
use crate::ledger::{Pause, Step, Waiting};
use crate::maintenance::{self, Storage};
use crate::signing::SignaturePolicy;
use crate::site::{EXCHANGE_DIR, Missing, open_ledger};
use crate::words::plural;

/// Interrupted steps listed one per line; more are counted.
const SHOWN_STEPS: usize = 10;

/// Show each connection: channel, direction and method, what was last exported
/// and imported, what is pending, which of the peer's signing keys are trusted,
/// and unresolved errors by level. With an issue key: that issue's sync panel.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// An issue key (SUP-1): show, per connection, whether it is shared, the
    /// peer's issue it is linked to, the versions last sent and received, queued
    /// work and errors.
    issue: Option<String>,
    /// Print a JSON array, one object per connection.
    #[arg(long)]
    json: bool,
}

/// One connection's state.
#[derive(Debug, Serialize)]
struct ConnectionStatus {
    peer: String,
    channel: String,
    direction: String,
    method: String,
    /// Head of this site's branch for the peer (last export).
    exported: Option<String>,
    /// Newest `updated` already exported.
    export_cursor: Option<String>,
    /// Head of the peer's branch as last fetched.
    fetched: Option<String>,
    /// When something new last arrived from the peer.
    last_arrival: Option<String>,
    /// Last commit of the peer's branch applied here.
    applied: Option<String>,
    /// Fetched commits not yet applied.
    pending_commits: usize,
    /// Imports waiting for a retry.
    retries: i64,
    /// Local issues this site shares with the peer.
    shared_issues: i64,
    /// Peer issues linked to local ones.
    linked_issues: i64,
    /// Links and parents the peer's replicas ask for that wait for their other
    /// issue to arrive here.
    waiting_relations: usize,
    /// Commits exported behind the release gate that wait for a release.
    waiting_release: usize,
    /// Unresolved errors: (level, count).
    errors: Vec<(String, usize)>,
    /// What keeps the connection down: its unresolved connection-level errors.
    failing: Vec<String>,
    /// Bundles in the inbox waiting for a predecessor (the link is silent).
    waiting_bundles: Vec<Waiting>,
    /// Set while an operator has paused the connection.
    paused: Option<Pause>,
    /// Tracker writes a killed run left unfinished (the next import resumes them).
    interrupted_steps: Vec<Step>,
    /// `required` or `off`: whether incoming commits must be signed.
    signatures: SignaturePolicy,
    /// How many of the peer's signing keys this site trusts.
    trusted_keys: usize,
    /// The objects of the channel, when it is a folder on this machine.
    channel_storage: Option<Storage>,
    /// The objects of this site's exchange clone (the same in every object).
    clone_storage: Option<Storage>,
}

/// Runs `ferry status`.
pub fn run(args: StatusArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    if let Some(key) = &args.issue {
        return issue::run(key, args.json, ctx);
    }
    let config = Config::load(&ctx.dir)?;
    let ledger = open_ledger(&config, Missing::Refuse)?;
    let state = config.state_dir();
    let exchange = Exchange::open_or_init(&state.join(EXCHANGE_DIR))?;
    let errors = ledger.open_errors()?;
    let me = config.site_name();
    // Sizes are a glance, not a check: a repository that cannot be measured
    // shows none (`ferry doctor` says why).
    let clone_storage = maintenance::measure(&state.join(EXCHANGE_DIR)).ok();
    let mut rows = Vec::new();
    for c in config.connections.values() {
        let peer = c.peer.as_str();
        let fetched = exchange.resolve(&peer_branch(me, peer))?;
        let applied = exchange.resolve(&applied_ref(peer))?;
        let pending_commits = match fetched {
            Some(head) if Some(head) != applied => exchange.commits_between(applied, head)?.len(),
            _ => 0,
        };
        let (shared_issues, linked_issues, retries) = ledger.counts(peer)?;
        let mut by_level: Vec<(String, usize)> = Vec::new();
        let mut failing = Vec::new();
        for e in errors
            .iter()
            .filter(|e| e.connection.as_deref() == Some(peer))
        {
            if e.level == crate::failure::Level::Connection {
                failing.push(e.message.clone());
            }
            match by_level.iter_mut().find(|(l, _)| *l == e.level.as_str()) {
                Some((_, n)) => *n += 1,
                None => by_level.push((e.level.to_string(), 1)),
            }
        }
        rows.push(ConnectionStatus {
            peer: peer.to_string(),
            channel: c.settings.channel.to_string(),
            direction: format!("{:?}", c.settings.direction).to_lowercase(),
            method: format!("{:?}", c.settings.method).to_lowercase(),
            exported: exchange
                .resolve(&own_branch(me, peer))?
                .map(|o| o.to_string()),
            export_cursor: ledger
                .cursor(peer)?
                .map(|t| crate::model::format_timestamp(&t)),
            fetched: fetched.map(|o| o.to_string()),
            last_arrival: ledger
                .last_arrival(peer)?
                .map(|(at, _)| crate::model::format_timestamp(&at)),
            applied: applied.map(|o| o.to_string()),
            pending_commits,
            retries,
            shared_issues,
            linked_issues,
            waiting_relations: ledger.waiting_relations(peer)?.len(),
            waiting_release: crate::engine::release::waiting(&exchange, me, c)?,
            errors: by_level,
            failing,
            waiting_bundles: ledger.waiting(peer)?,
            paused: ledger.paused(peer)?,
            interrupted_steps: ledger.interrupted_steps(peer, None)?,
            signatures: c.settings.signatures,
            trusted_keys: c.trust.keys.len(),
            channel_storage: match &c.settings.channel {
                ChannelSetting::Git(url) => crate::transport::remote::folder(url, &config.root)
                    .and_then(|dir| maintenance::measure(&dir).ok()),
                ChannelSetting::Bundles(_) => None,
            },
            clone_storage,
        });
    }
    if args.json {
        writeln!(ctx.out.raw(), "{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(ExitStatus::Success);
    }
    writeln!(ctx.out, "site {me}")?;
    if rows.is_empty() {
        writeln!(
            ctx.out,
            "no connections; add one with `ferry connection add`"
        )?;
    }
    let short = |o: &Option<String>| {
        o.as_deref()
            .map_or("-".to_string(), |s| s[..10].to_string())
    };
    for r in &rows {
        let errors = if r.errors.is_empty() {
            "none".to_string()
        } else {
            r.errors
                .iter()
                .map(|(l, n)| format!("{n} {l}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let trust = match (r.signatures, r.trusted_keys) {
            (SignaturePolicy::Off, _) => {
                "signatures off: incoming commits are not checked".to_string()
            }
            (SignaturePolicy::Required, 0) => format!(
                "no key: nothing can be imported until `ferry connection trust {} KEY`",
                r.peer
            ),
            (SignaturePolicy::Required, n) => format!("{n} key{} of {}", plural(n), r.peer),
        };
        writeln!(
            ctx.out,
            "\n{} ({}, {}) via {}\n  exported  {}  (cursor {})\n  fetched   {}  applied {}  pending {} commit(s), {} retr{}\n  arrived   {}\n  issues    {} shared, {} linked\n  trusts    {trust}\n  errors    {}",
            r.peer,
            r.direction,
            r.method,
            r.channel,
            short(&r.exported),
            r.export_cursor.as_deref().unwrap_or("-"),
            short(&r.fetched),
            short(&r.applied),
            r.pending_commits,
            r.retries,
            if r.retries == 1 { "y" } else { "ies" },
            r.last_arrival.as_deref().unwrap_or("never"),
            r.shared_issues,
            r.linked_issues,
            errors,
        )?;
        if let Some(storage) = &r.channel_storage {
            writeln!(ctx.out, "  storage   {storage}")?;
        }
        for bundle in &r.waiting_bundles {
            writeln!(
                ctx.out,
                "  waiting   {} since {}: it needs {}, which has not arrived; nothing comes \
                 through until it does",
                bundle.file,
                bundle.since,
                &bundle.needs[..bundle.needs.len().min(10)]
            )?;
        }
        if r.waiting_release > 0 {
            writeln!(
                ctx.out,
                "  release   {} commit{} wait{} for release (`ferry release`)",
                r.waiting_release,
                plural(r.waiting_release),
                if r.waiting_release == 1 { "s" } else { "" }
            )?;
        }
        if r.waiting_relations > 0 {
            writeln!(
                ctx.out,
                "  relations {} link{} or parent{} {} waiting for the other issue to arrive",
                r.waiting_relations,
                plural(r.waiting_relations),
                plural(r.waiting_relations),
                if r.waiting_relations == 1 {
                    "is"
                } else {
                    "are"
                }
            )?;
        }
        for message in &r.failing {
            writeln!(ctx.out, "  failing   {message}")?;
        }
        // A run killed during a batch of the embedded tracker leaves every write
        // of the batch open: the first few say what it is.
        for step in r.interrupted_steps.iter().take(SHOWN_STEPS) {
            writeln!(
                ctx.out,
                "  resuming  {} of {} (a run died during it at {}; the next import finishes it)",
                step.kind, step.path, step.started_at
            )?;
        }
        if r.interrupted_steps.len() > SHOWN_STEPS {
            writeln!(
                ctx.out,
                "  resuming  {} more steps (`ferry status --json` lists them)",
                r.interrupted_steps.len() - SHOWN_STEPS
            )?;
        }
        if let Some(pause) = &r.paused {
            writeln!(
                ctx.out,
                "  PAUSED    since {} by {} (`ferry connection resume {}`)",
                pause.since, pause.by, r.peer
            )?;
        }
    }
    if let Some(storage) = &clone_storage {
        writeln!(ctx.out, "\nexchange clone {storage}")?;
    }
    Ok(ExitStatus::Success)
}

//! `ferry release`: read what waits to leave this site, and release or reject
//! it, on connections with `release: {required: true}`.

use std::io::Write;

use super::review::{Gate, Paint, describe, gated_connection, word_diff};
use super::terminal::{Human, one_line};
use super::{Ctx, ExitStatus, operator};
use crate::engine::release::{self, OutgoingIssue, Pending};
use crate::engine::{self, SyncOptions};
use crate::site::Site;
use crate::words::plural;

/// Show what this site exported that waits for a release officer before it
/// leaves (push, bundle), per issue and per field, against what was released:
/// new issues in full, changed fields, descriptions as word diffs, comments
/// and attachments. Issues a rejection holds back come first.
///
/// On a connection with `release: {required: true}` (`ferry connection add
/// --release-required`), exports are committed here and only what `ferry
/// release approve` released leaves.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ReleaseArgs {
    #[command(subcommand)]
    action: Option<ReleaseAction>,
    /// Only this connection.
    #[arg(long, value_name = "PEER")]
    connection: Option<String>,
    /// Print a JSON array, one object per connection.
    #[arg(long)]
    json: bool,
    /// Write the same as one self-contained HTML page to FILE (no script,
    /// nothing fetched), to read in a browser, print or archive.
    #[arg(long, value_name = "FILE", conflicts_with = "json")]
    html: Option<std::path::PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
enum ReleaseAction {
    /// Release this site's exports up to REV (default: all); recorded with
    /// who and when. The next push or bundle sends them.
    Approve(ApproveArgs),
    /// Keep the export REV out of everything that leaves, with a reason: the
    /// exports that wait are rebuilt without it, and the issues it changed are
    /// held until a release names them again.
    Reject(RejectArgs),
}

#[derive(Debug, clap::Args)]
struct ApproveArgs {
    /// One of the commits `ferry release` lists (full or abbreviated id);
    /// default: the newest.
    rev: Option<String>,
    /// The connection; needed when several require release.
    #[arg(long, value_name = "PEER")]
    connection: Option<String>,
    /// An issue a rejection holds back (its key, as `ferry release` shows it),
    /// whose newer export this release lets go; once per issue.
    #[arg(long, value_name = "KEY")]
    including: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct RejectArgs {
    /// One of the commits `ferry release` lists.
    rev: String,
    /// Why; kept here with the verdict, never sent.
    #[arg(long)]
    reason: String,
    /// The connection; needed when several require release.
    #[arg(long, value_name = "PEER")]
    connection: Option<String>,
}

/// Runs `ferry release`.
pub fn run(args: ReleaseArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    match args.action {
        Some(ReleaseAction::Approve(a)) => return approve(a, ctx),
        Some(ReleaseAction::Reject(r)) => return reject(r, ctx),
        None => {}
    }
    let site = Site::open(&ctx.dir)?;
    let connections = engine::selected(
        &site,
        &SyncOptions {
            connection: args.connection,
        },
    )?;
    let mut all = Vec::new();
    for c in connections
        .iter()
        .filter(|c| c.settings.release.required && c.settings.direction.exports())
    {
        release::realign(&site, c)?;
        all.push(release::pending(&site, c)?);
    }
    if args.json {
        writeln!(ctx.out.raw(), "{}", serde_json::to_string_pretty(&all)?)?;
        return Ok(ExitStatus::Success);
    }
    if let Some(file) = &args.html {
        let when = crate::model::format_timestamp(&site.ledger.now());
        let page = super::html::release_page(site.name(), &when, &all);
        crate::config::write_atomic(file, page.as_bytes())?;
        let issues: usize = all.iter().map(|p| p.issues.len()).sum();
        writeln!(
            ctx.out,
            "wrote {} ({issues} issue{} waiting)",
            file.display(),
            plural(issues)
        )?;
        return Ok(ExitStatus::Success);
    }
    if all.is_empty() {
        writeln!(
            ctx.out,
            "no connection requires release; `release: {{required: true}}` in a connection file turns it on"
        )?;
    }
    for pending in &all {
        render(&mut ctx.out, pending)?;
    }
    Ok(ExitStatus::Success)
}

fn render(out: &mut Human, pending: &Pending) -> std::io::Result<()> {
    let peer = &pending.peer;
    if pending.commits.is_empty() {
        return writeln!(out, "{peer}: nothing waits for release");
    }
    writeln!(
        out,
        "{peer}: {} commit{} wait{} for release, {} issue{} (released up to {}; newest {})",
        pending.commits.len(),
        plural(pending.commits.len()),
        if pending.commits.len() == 1 { "s" } else { "" },
        pending.issues.len(),
        plural(pending.issues.len()),
        pending.released.as_deref().map_or("nothing", short),
        pending.head.as_deref().map_or("", short),
    )?;
    for issue in &pending.issues {
        render_issue(out, peer, issue)?;
    }
    let held: Vec<&str> = pending
        .issues
        .iter()
        .filter(|i| i.held.is_some())
        .map(|i| i.key.as_str())
        .collect();
    let including: String = held
        .iter()
        .map(|k| format!(" --including {}", one_line(k)))
        .collect();
    writeln!(
        out,
        "\n  release with `ferry release approve --connection {peer}{including}`, \
         or reject one commit with `ferry release reject REV --reason WHY`"
    )
}

fn render_issue(out: &mut Human, peer: &str, issue: &OutgoingIssue) -> std::io::Result<()> {
    let what = if issue.new_issue.is_some() {
        format!(" (new to {peer})")
    } else if issue.removed {
        " (no longer shared: the replica goes)".into()
    } else {
        String::new()
    };
    writeln!(out, "\n  {}{what}", one_line(&issue.key))?;
    if let Some(reason) = &issue.held {
        writeln!(
            out,
            "    HELD by a rejection ({}): released only with --including {}",
            one_line(reason),
            one_line(&issue.key)
        )?;
    }
    if let Some(new) = &issue.new_issue {
        writeln!(out, "    summary: {}", one_line(&new.summary))?;
        writeln!(
            out,
            "    type: {}   status: {}",
            one_line(&new.issue_type),
            one_line(&new.status)
        )?;
        if let Some(description) = new.description.as_deref().filter(|d| !d.is_empty()) {
            writeln!(out, "    description:")?;
            for line in description.lines() {
                writeln!(out, "      {line}")?;
            }
        }
    }
    for change in &issue.changes {
        writeln!(out, "    {}", describe(change))?;
    }
    if let Some((old, new)) = &issue.description {
        write!(out, "    description: ")?;
        word_diff(out, old, new, Paint(false))?;
        writeln!(out)?;
    }
    for c in &issue.added_comments {
        writeln!(
            out,
            "    + comment by {} at {}{}:",
            one_line(&c.author),
            crate::model::format_timestamp(&c.created),
            if c.internal { " (internal)" } else { "" }
        )?;
        for line in c.body.lines() {
            writeln!(out, "      {line}")?;
        }
    }
    for c in &issue.removed_comments {
        writeln!(out, "    - comment by {} (removed)", one_line(&c.author))?;
    }
    for a in &issue.added_attachments {
        writeln!(
            out,
            "    + attachment {} ({} bytes, sha256 {})",
            one_line(&a.name),
            a.size,
            one_line(&a.sha256)
        )?;
    }
    for a in &issue.removed_attachments {
        writeln!(out, "    - attachment {} (removed)", one_line(&a.name))?;
    }
    let stays = issue.dropped.describe();
    if !stays.is_empty() {
        writeln!(out, "    stays here: {}", one_line(&stays))?;
    }
    Ok(())
}

fn short(id: &str) -> &str {
    id.get(..10).unwrap_or(id)
}

fn approve(args: ApproveArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    let site = Site::open(&ctx.dir)?;
    let connection = gated_connection(&site, args.connection, Gate::Release)?;
    let commit = release::approve(
        &site,
        &connection,
        args.rev.as_deref(),
        &args.including,
        &operator(),
    )?;
    writeln!(
        ctx.out,
        "{}: released up to {}; the next push or bundle sends it",
        connection.peer,
        short(&commit.to_string())
    )?;
    Ok(ExitStatus::Success)
}

fn reject(args: RejectArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    let site = Site::open(&ctx.dir)?;
    let connection = gated_connection(&site, args.connection, Gate::Release)?;
    let rejection = release::reject(&site, &connection, &args.rev, &args.reason, &operator())?;
    writeln!(
        ctx.out,
        "{}: rejected {}; what waits was rebuilt without it (the old history is kept \
         at {}, which nothing sends)",
        connection.peer,
        short(&rejection.commit),
        rejection.kept_at
    )?;
    if !rejection.held.is_empty() {
        writeln!(
            ctx.out,
            "held until a release names them (--including KEY): {}",
            rejection
                .held
                .iter()
                .map(|k| one_line(k).into_owned())
                .collect::<Vec<_>>()
                .join(", ")
        )?;
    }
    Ok(ExitStatus::Success)
}

//! Human-readable rendering of run reports, shared by the step commands and the
//! demo. Everything goes through one writer.

use std::io::{self, Write};

use crate::engine::{ConnectionReport, ExportReport, ImportAction, ImportReport, SyncReport};
use crate::ledger::Pause;
use crate::notify::{NotifyError, NotifyOutcome};
use crate::transport::{FetchOutcome, PushOutcome};

use super::ExitStatus;
use super::terminal::one_line;
use crate::words::{plural, short_id};

/// How much of a run's per-issue lines a report prints. A first export of a
/// large site writes a hundred thousand replicas: a line each would bury the
/// lines that matter (errors, conflicts) and flood cron's mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// The first few lines of each list, then how many more there are.
    First(usize),
    /// Every line (`-v`).
    All,
}

impl Listing {
    /// What a run prints without `-v`.
    pub const DEFAULT: Listing = Listing::First(10);

    /// Whether the line at `index` (from 0) of a list is printed.
    fn shows(self, index: usize) -> bool {
        match self {
            Listing::First(n) => index < n,
            Listing::All => true,
        }
    }
}

/// Says how many lines of a list of `total` were left out, if any.
fn more(out: &mut dyn Write, left_out: usize, total: usize, what: &str) -> io::Result<()> {
    if left_out == 0 {
        return Ok(());
    }
    writeln!(
        out,
        "  … and {left_out} more ({total} {what} in all; `ferry -v` lists every one)"
    )
}

/// Writes what a fetch brought.
pub fn fetched(out: &mut dyn Write, peer: &str, f: &FetchOutcome) -> io::Result<()> {
    for note in &f.notes {
        writeln!(out, "pull   {peer}: {note}")?;
    }
    for bundle in &f.waiting {
        writeln!(
            out,
            "pull   {peer}: {} waits in the inbox for the bundle that brings {} \
             (its predecessor has not arrived)",
            bundle.file,
            short_id(bundle.needs)
        )?;
    }
    match (f.before, f.after) {
        (_, None) => writeln!(out, "pull   {peer}: nothing shared yet"),
        (before, Some(after)) if before == Some(after) => {
            writeln!(out, "pull   {peer}: up to date at {}", short_id(after))
        }
        (before, Some(after)) => writeln!(
            out,
            "pull   {peer}: {} → {}",
            before.map_or("(none)".to_string(), short_id),
            short_id(after)
        ),
    }
}

/// Writes what an import did: every conflict and error, and the other issues as
/// far as `listing` says.
pub fn imported(
    out: &mut dyn Write,
    peer: &str,
    r: &ImportReport,
    listing: Listing,
) -> io::Result<()> {
    if r.awaiting_review > 0 {
        writeln!(
            out,
            "review {peer}: {} commit{} await approval (`ferry review`, then `ferry review approve`)",
            r.awaiting_review,
            plural(r.awaiting_review)
        )?;
    }
    let relations = &r.relations;
    if r.issues.is_empty() && r.errors.is_empty() && relations.made + relations.removed == 0 {
        return writeln!(out, "import {peer}: nothing new");
    }
    writeln!(
        out,
        "import {peer}: {} replica{}, {} error{}",
        r.issues.len(),
        plural(r.issues.len()),
        r.errors.len(),
        plural(r.errors.len())
    )?;
    let mut listed = 0;
    for i in &r.issues {
        if i.conflicts.is_empty() && !listing.shows(listed) {
            continue;
        }
        listed += 1;
        let action = match i.action {
            ImportAction::Created => "created",
            ImportAction::Updated => "updated",
            ImportAction::Unchanged => "unchanged",
            ImportAction::Skipped => "skipped",
            ImportAction::Deleted => "deleted",
        };
        let count = |n: usize, what: &str| match n {
            0 => String::new(),
            n => format!(", {n} {what}{}", plural(n)),
        };
        let comments = count(i.comments_added, "comment");
        let files = format!(
            "{}{}",
            count(i.attachments_added, "attachment"),
            count(i.attachments_removed, "removed attachment")
        );
        writeln!(
            out,
            "  {} → {} {action}{comments}{files}",
            one_line(&i.remote_key),
            i.local_key.as_deref().unwrap_or("-"),
        )?;
        for c in &i.conflicts {
            let outcome = if c.value == c.conflict.local {
                "kept this site's"
            } else if c.value == c.conflict.remote {
                "took the peer's"
            } else {
                "set"
            };
            writeln!(
                out,
                "    conflict on {}: {outcome} {} ({})",
                c.conflict.field,
                c.value,
                c.policy.name()
            )?;
        }
    }
    more(out, r.issues.len() - listed, r.issues.len(), "replicas")?;
    let parts: Vec<String> = [
        (relations.made, "made"),
        (relations.removed, "removed"),
        (relations.waiting, "waiting for the other issue to arrive"),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect();
    if !parts.is_empty() {
        writeln!(out, "  links and parents: {}", parts.join(", "))?;
    }
    for e in &r.errors {
        writeln!(out, "  error: {}", one_line(&e.to_string()))?;
    }
    Ok(())
}

/// Writes what an export did: every error, and the replicas written and removed
/// as far as `listing` says.
pub fn exported(
    out: &mut dyn Write,
    peer: &str,
    r: &ExportReport,
    listing: Listing,
) -> io::Result<()> {
    match r.commit {
        None => writeln!(out, "export {peer}: no change, no commit")?,
        Some(commit) => {
            writeln!(out, "export {peer}: commit {}", short_id(commit))?;
            let lines = r
                .written
                .iter()
                .map(|key| ("wrote  ", key))
                .chain(r.removed.iter().map(|key| ("removed", key)));
            let total = r.written.len() + r.removed.len();
            let mut listed = 0;
            for (what, key) in lines {
                if !listing.shows(listed) {
                    break;
                }
                writeln!(out, "  {what} {key}")?;
                listed += 1;
            }
            more(out, total - listed, total, "replicas written or removed")?;
        }
    }
    for e in &r.errors {
        writeln!(out, "  error: {}", one_line(&e.to_string()))?;
    }
    Ok(())
}

/// Writes what a push did.
pub fn pushed(out: &mut dyn Write, peer: &str, p: &PushOutcome) -> io::Result<()> {
    match p {
        PushOutcome::UpToDate => writeln!(out, "push   {peer}: up to date"),
        PushOutcome::Pushed(oid) => writeln!(out, "push   {peer}: {}", short_id(*oid)),
    }
}

/// Writes one connection's part of a sync.
pub fn connection(out: &mut dyn Write, c: &ConnectionReport, listing: Listing) -> io::Result<()> {
    if let Some(pause) = &c.paused {
        return paused(out, &c.peer, pause);
    }
    if let Some(f) = &c.fetched {
        fetched(out, &c.peer, f)?;
    }
    if let Some(r) = &c.imported {
        imported(out, &c.peer, r, listing)?;
    }
    if let Some(r) = &c.exported {
        exported(out, &c.peer, r, listing)?;
    }
    if let Some(p) = &c.pushed {
        pushed(out, &c.peer, p)?;
    }
    if c.awaiting_release > 0 {
        writeln!(
            out,
            "hold   {}: {} commit{} wait{} for release (`ferry release`)",
            c.peer,
            c.awaiting_release,
            plural(c.awaiting_release),
            if c.awaiting_release == 1 { "s" } else { "" }
        )?;
    }
    if let Some(failure) = &c.failure {
        writeln!(out, "error  {}: {}", c.peer, one_line(failure))?;
    }
    Ok(())
}

/// Writes that a connection was skipped because it is paused.
pub fn paused(out: &mut dyn Write, peer: &str, pause: &Pause) -> io::Result<()> {
    writeln!(
        out,
        "paused {peer}: since {} by {}; nothing pulled, imported, exported or pushed \
         (`ferry connection resume {peer}` lets it all flow)",
        pause.since, pause.by
    )
}

/// Writes a whole sync and returns the exit status it deserves.
pub fn sync(out: &mut dyn Write, r: &SyncReport, listing: Listing) -> io::Result<ExitStatus> {
    if r.connections.is_empty() {
        writeln!(
            out,
            "no connection to sync; add one with `ferry connection add`"
        )?;
    }
    for c in &r.connections {
        connection(out, c, listing)?;
    }
    Ok(if r.failed_connections() > 0 {
        ExitStatus::Failed
    } else if r.issue_errors() > 0 {
        ExitStatus::IssueErrors
    } else {
        ExitStatus::Success
    })
}

/// Writes what the notification after a sync did. A failure is a warning line,
/// not an error of the run: the errors stay pending and go out on a later run.
pub fn notified(out: &mut dyn Write, r: &Result<NotifyOutcome, NotifyError>) -> io::Result<()> {
    match r {
        Ok(NotifyOutcome::NothingNew) => Ok(()),
        Ok(NotifyOutcome::NoRecipient { errors }) => writeln!(
            out,
            "notify {errors} new error{} for levels nobody in notify.yaml subscribes to",
            plural(*errors)
        ),
        Ok(NotifyOutcome::Sent {
            errors,
            recipients,
            answer,
        }) => writeln!(
            out,
            "notify sent {errors} new error{} to {} ({answer})",
            plural(*errors),
            recipients.join(", ")
        ),
        Err(e) => writeln!(out, "notify: {e}"),
    }
}

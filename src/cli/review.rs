//! `ferry review`: read what the peers' fetched commits would change here, before
//! anything is imported.

use std::io::{IsTerminal, Write};

use git2::Oid;

use super::terminal::{Human, one_line};
use super::{Ctx, ExitStatus, UsageError, operator};
use crate::config::Connection;
use crate::engine::review::Approval;
use crate::engine::{self, FieldChange, PendingIssue, Review, SyncOptions, Verdict};
use crate::exchange::peer_branch;
use crate::model::FieldValue;
use crate::site::Site;
use crate::words::{plural, short_id};

/// Show the pending changes from each peer (fetched, not yet imported), per issue
/// and per field, and what the incoming rule would do with them. Nothing is applied.
///
/// Run `ferry pull` first to fetch. Descriptions are shown as word diffs in git's
/// `--word-diff=plain` style: `[-removed-]{+added+}`.
///
/// On a connection with `review: {required: true}`, import stops at the last
/// commit a reviewer approved with `ferry review approve`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ReviewArgs {
    #[command(subcommand)]
    action: Option<ReviewAction>,
    /// Only this connection.
    #[arg(long, value_name = "PEER")]
    connection: Option<String>,
    /// Print a JSON array, one object per connection.
    #[arg(long)]
    json: bool,
    /// Write the review as one self-contained HTML page to FILE (for a
    /// browser, to print or archive; no script, nothing fetched) instead of
    /// printing it.
    #[arg(long, value_name = "FILE", conflicts_with = "json")]
    html: Option<std::path::PathBuf>,
    /// Colour the diff: `auto` (when writing to a terminal), `always`, `never`.
    #[arg(long, value_enum, default_value = "auto", value_name = "WHEN")]
    color: ColorChoice,
    /// Never page the output (by default a long review on a terminal goes through
    /// `$FERRY_PAGER`, else `$PAGER`, else `less -FRX`, like git).
    #[arg(long)]
    no_pager: bool,
}

/// When to colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ColorChoice {
    Auto,
    Always,
    Never,
}

/// ANSI styles, or none. They are written around the text, never into it: the
/// text itself goes through [`Human`], so a peer's own escape codes show as text.
#[derive(Debug, Clone, Copy)]
pub(super) struct Paint(pub(super) bool);

impl Paint {
    fn removed(self, out: &mut Human, text: &str) -> std::io::Result<()> {
        out.styled(self.0, "31", text)
    }
    fn added(self, out: &mut Human, text: &str) -> std::io::Result<()> {
        out.styled(self.0, "32", text)
    }
    fn warning(self, out: &mut Human, text: &str) -> std::io::Result<()> {
        out.styled(self.0, "33", text)
    }
    fn heading(self, out: &mut Human, text: &str) -> std::io::Result<()> {
        out.styled(self.0, "1", text)
    }
}

#[derive(Debug, clap::Subcommand)]
enum ReviewAction {
    /// Approve the peer's fetched commits for import, up to REV (default: all
    /// fetched); recorded with who and when.
    Approve(ApproveArgs),
    /// Keep the peer's commit REV (and everything after it) out of this tracker,
    /// with a reason; reported as a connection-level error until a later approval.
    Reject(RejectArgs),
}

#[derive(Debug, clap::Args)]
struct ApproveArgs {
    /// A commit of the peer's branch (full or abbreviated id, as `ferry review`
    /// shows them); default: the fetched head.
    rev: Option<String>,
    /// The connection; needed when several require review.
    #[arg(long, value_name = "PEER")]
    connection: Option<String>,
}

#[derive(Debug, clap::Args)]
struct RejectArgs {
    /// A commit of the peer's branch.
    rev: String,
    /// Why, for the record and the error notice.
    #[arg(long)]
    reason: String,
    /// The connection; needed when several require review.
    #[arg(long, value_name = "PEER")]
    connection: Option<String>,
}

/// Runs `ferry review`.
pub fn run(args: ReviewArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    match args.action {
        Some(ReviewAction::Approve(a)) => return approve(a, ctx),
        Some(ReviewAction::Reject(r)) => return reject(r, ctx),
        None => {}
    }
    let site = Site::open(&ctx.dir)?;
    let connections = engine::selected(
        &site,
        &SyncOptions {
            connection: args.connection,
        },
    )?;
    let mut reviews = Vec::new();
    for c in connections
        .iter()
        .filter(|c| c.settings.direction.imports())
    {
        reviews.push(engine::review(&site, c)?);
    }
    if args.json {
        writeln!(ctx.out.raw(), "{}", serde_json::to_string_pretty(&reviews)?)?;
        return Ok(ExitStatus::Success);
    }
    if let Some(file) = &args.html {
        let when = crate::model::format_timestamp(&site.ledger.now());
        let page = super::html::review_page(site.name(), &when, &reviews);
        crate::config::write_atomic(file, page.as_bytes())?;
        let issues: usize = reviews.iter().map(|r| r.issues.len()).sum();
        writeln!(
            ctx.out,
            "wrote {} ({issues} pending issue{})",
            file.display(),
            plural(issues)
        )?;
        return Ok(ExitStatus::Success);
    }
    let terminal = std::io::stdout().is_terminal();
    let paint = Paint(match args.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => terminal && std::env::var_os("NO_COLOR").is_none(),
    });
    let mut text = Vec::new();
    {
        let mut human = Human::new(&mut text);
        for review in &reviews {
            render(&mut human, review, paint)?;
        }
    }
    // Escaped already, and holding the colour codes.
    if terminal && !args.no_pager {
        page(&text)?;
    } else {
        ctx.out.raw().write_all(&text)?;
    }
    Ok(ExitStatus::Success)
}

/// Shows `text` through a pager, as git does: `$FERRY_PAGER`, else `$PAGER`, else
/// `less -FRX` (which exits at once when the text fits the screen, keeps colours
/// and leaves the text on screen). An empty pager setting, or one that cannot be
/// started, prints directly.
fn page(text: &[u8]) -> std::io::Result<()> {
    let pager = std::env::var("FERRY_PAGER")
        .or_else(|_| std::env::var("PAGER"))
        .unwrap_or_else(|_| "less -FRX".into());
    let mut words = pager.split_whitespace();
    let started = words.next().and_then(|program| {
        std::process::Command::new(program)
            .args(words)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .ok()
    });
    let Some(mut child) = started else {
        return std::io::stdout().write_all(text);
    };
    if let Some(mut stdin) = child.stdin.take() {
        // The reader may quit early (q in less): not an error.
        let _ = stdin.write_all(text);
    }
    child.wait()?;
    Ok(())
}

/// Which gate a verdict is about.
#[derive(Debug, Clone, Copy)]
pub(super) enum Gate {
    /// What comes in (`review.required`).
    Review,
    /// What leaves (`release.required`).
    Release,
}

impl Gate {
    fn holds(self, connection: &Connection) -> bool {
        match self {
            Gate::Review => connection.settings.review.required,
            Gate::Release => connection.settings.release.required,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Gate::Review => "review",
            Gate::Release => "release",
        }
    }
}

/// The connection a verdict is about: the one named, else the only one whose
/// `gate` is on.
pub(super) fn gated_connection(
    site: &Site,
    named: Option<String>,
    gate: Gate,
) -> anyhow::Result<Connection> {
    let setting = gate.name();
    if let Some(peer) = named {
        let connection = site.config.connection(&peer)?.clone();
        if !gate.holds(&connection) {
            return Err(UsageError(format!(
                "the connection to {peer} does not require {setting}; set `{setting}: {{required: true}}` in {}",
                connection.file.display()
            ))
            .into());
        }
        return Ok(connection);
    }
    let gated: Vec<&Connection> = site
        .config
        .connections
        .values()
        .filter(|c| gate.holds(c))
        .collect();
    match gated.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(UsageError(format!(
            "no connection requires {setting}; set `{setting}: {{required: true}}` in a connection file"
        ))
        .into()),
        _ => Err(UsageError(format!(
            "several connections require {setting} ({}); name one with --connection",
            gated
                .iter()
                .map(|c| c.peer.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .into()),
    }
}

/// Resolves REV to a commit of the peer's fetched branch that is not applied yet.
fn pending_commit(site: &Site, peer: &str, rev: Option<&str>) -> anyhow::Result<Oid> {
    let branch = peer_branch(site.name(), peer);
    let Some(head) = site.exchange.resolve(&branch)? else {
        return Err(UsageError(format!(
            "nothing fetched from {peer} yet; run `ferry pull` first"
        ))
        .into());
    };
    let Some(rev) = rev else {
        return Ok(head);
    };
    let commit = site
        .exchange
        .repo()
        .revparse_single(rev)
        .and_then(|o| o.peel_to_commit())
        .map_err(|e| UsageError(format!("{rev:?} is not a commit here: {}", e.message())))?
        .id();
    if !site.exchange.is_ancestor(commit, head)? {
        return Err(UsageError(format!(
            "{rev} is not on {peer}'s branch {branch} (fetched head {})",
            short_id(head)
        ))
        .into());
    }
    Ok(commit)
}

fn approve(args: ApproveArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    let site = Site::open(&ctx.dir)?;
    let connection = gated_connection(&site, args.connection, Gate::Review)?;
    let peer = connection.peer.as_str();
    let commit = pending_commit(&site, peer, args.rev.as_deref())?;
    let by = operator();
    match engine::review::approve(&site, peer, commit, &by)? {
        Approval::AlreadyApproved { up_to } => writeln!(
            ctx.out,
            "{} is already approved (approved up to {})",
            short_id(commit),
            short_id(up_to)
        )?,
        Approval::Approved { superseded } => {
            // Approving past a rejected commit is a reviewer changing their
            // mind: say so.
            for rejection in superseded {
                writeln!(
                    ctx.out,
                    "this approval includes {}, rejected by {} at {} ({})",
                    short_id(rejection.commit.parse()?),
                    rejection.by,
                    rejection.at,
                    rejection.reason.as_deref().unwrap_or("no reason given")
                )?;
            }
            writeln!(
                ctx.out,
                "approved {peer}'s commits up to {} (by {by}); the next import applies them",
                short_id(commit)
            )?;
        }
    }
    Ok(ExitStatus::Success)
}

fn reject(args: RejectArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    let site = Site::open(&ctx.dir)?;
    let connection = gated_connection(&site, args.connection, Gate::Review)?;
    let peer = connection.peer.as_str();
    let commit = pending_commit(&site, peer, Some(&args.rev))?;
    let by = operator();
    if let Some(up_to) = engine::review::reject(&site, peer, commit, &args.reason, &by)? {
        return Err(UsageError(format!(
            "{} is already approved (up to {}); an approval cannot be taken back once \
             imported",
            short_id(commit),
            short_id(up_to)
        ))
        .into());
    }
    writeln!(
        ctx.out,
        "rejected {peer}'s commit {} (by {by}); recorded as a connection error",
        short_id(commit)
    )?;
    Ok(ExitStatus::Success)
}

fn render(out: &mut Human, review: &Review, paint: Paint) -> std::io::Result<()> {
    if review.review_required {
        match &review.approved {
            Some(a) => writeln!(
                out,
                "{}: review required; approved up to {} by {} at {}",
                review.peer,
                &a.commit[..10],
                a.by,
                a.at
            )?,
            None => writeln!(
                out,
                "{}: review required; nothing approved yet",
                review.peer
            )?,
        }
        for r in &review.rejected {
            writeln!(
                out,
                "{}: rejected {} by {} at {}: {}",
                review.peer,
                &r.commit[..10],
                r.by,
                r.at,
                one_line(r.reason.as_deref().unwrap_or(""))
            )?;
        }
    }
    if review.issues.is_empty() && review.refused_paths.is_empty() {
        return writeln!(out, "{}: nothing pending", review.peer);
    }
    writeln!(
        out,
        "{}: {} commit{} pending, {} issue{}",
        review.peer,
        review.commits.len(),
        plural(review.commits.len()),
        review.issues.len(),
        plural(review.issues.len())
    )?;
    for path in &review.refused_paths {
        writeln!(out, "  refused: {} (outside issues/)", one_line(path))?;
    }
    for issue in &review.issues {
        render_issue(out, issue, paint)?;
    }
    Ok(())
}

/// One issue of the review. Every value that comes from the peer and belongs on
/// one line goes through [`one_line`], so a newline in it cannot forge a line.
fn render_issue(out: &mut Human, issue: &PendingIssue, paint: Paint) -> std::io::Result<()> {
    let remote = one_line(issue.remote_key.as_deref().unwrap_or(&issue.path));
    let local = issue
        .local_key
        .as_deref()
        .map(|k| format!(" → {k}"))
        .unwrap_or_else(|| " (new here)".into());
    let deleted = if issue.deleted {
        "  DELETED by the peer"
    } else {
        ""
    };
    write!(out, "\n  ")?;
    paint.heading(out, &format!("{remote}{local}{deleted}"))?;
    writeln!(out)?;
    if let Some(new) = &issue.new_issue {
        writeln!(out, "    summary: {}", one_line(&new.summary))?;
        writeln!(
            out,
            "    type: {}   status: {}",
            one_line(&new.issue_type),
            one_line(&new.status)
        )?;
    }
    for change in issue.changes.iter().filter(|c| c.field != "description") {
        if issue.new_issue.is_none() {
            writeln!(out, "    {}", describe(change))?;
        }
    }
    if let Some((old, new)) = &issue.description {
        write!(out, "    description: ")?;
        word_diff(out, old, new, paint)?;
        writeln!(out)?;
    }
    for c in &issue.added_comments {
        let heading = format!(
            "+ comment by {} at {}:",
            one_line(&c.author),
            crate::model::format_timestamp(&c.created)
        );
        write!(out, "    ")?;
        paint.added(out, &heading)?;
        writeln!(out)?;
        for line in c.body.lines() {
            write!(out, "      ")?;
            paint.added(out, line)?;
            writeln!(out)?;
        }
    }
    for a in &issue.added_attachments {
        let line = format!(
            "+ attachment {} ({} bytes, sha256 {})",
            one_line(&a.name),
            a.size,
            one_line(a.sha256.get(..12).unwrap_or(&a.sha256))
        );
        write!(out, "    ")?;
        paint.added(out, &line)?;
        writeln!(out)?;
    }
    for a in &issue.removed_attachments {
        let line = format!("- attachment {} (removed by the peer)", one_line(&a.name));
        write!(out, "    ")?;
        paint.removed(out, &line)?;
        writeln!(out)?;
    }
    for miss in &issue.unmapped {
        write!(out, "    ")?;
        paint.warning(out, &format!("! not mapped: {}", one_line(miss)))?;
        writeln!(out)?;
    }
    let verdict = match &issue.verdict {
        Verdict::Create { project } => format!("create an issue in {project}"),
        Verdict::Update {
            changes,
            comments,
            delete,
        } => {
            let mut parts: Vec<String> = changes.iter().map(describe).collect();
            if *comments > 0 {
                parts.push(format!("add {comments} comment{}", plural(*comments)));
            }
            if *delete {
                parts.push("delete the local issue".into());
            }
            format!("update: {}", parts.join("; "))
        }
        Verdict::Nothing => "nothing changes here".into(),
        Verdict::Skip => "skipped by the incoming rule".into(),
        Verdict::Error { message } => format!("ERROR: {}", one_line(message)),
    };
    writeln!(out, "    => {verdict}")
}

/// `field: old → new`, on one line whatever the values hold.
pub(super) fn describe(change: &FieldChange) -> String {
    format!(
        "{}: {} → {}",
        one_line(&change.field),
        one_line(&value(change.old.as_ref())),
        one_line(&value(change.new.as_ref()))
    )
}

fn value(v: Option<&FieldValue>) -> String {
    match v {
        None => "(none)".into(),
        Some(FieldValue::String(s)) => s.clone(),
        Some(FieldValue::Array(items)) => {
            let items: Vec<String> = items.iter().map(|i| value(Some(i))).collect();
            format!("[{}]", items.join(", "))
        }
        Some(other) => other.to_string(),
    }
}

/// git's `--word-diff=plain` rendering: runs of removed and added words each in
/// one bracket. Descriptions are multi-line: their newlines stay.
pub(super) fn word_diff(
    out: &mut Human,
    old: &str,
    new: &str,
    paint: Paint,
) -> std::io::Result<()> {
    use similar::ChangeTag;
    for (tag, run) in crate::engine::review::word_runs(old, new) {
        match tag {
            ChangeTag::Equal => out.write_all(run.as_bytes())?,
            ChangeTag::Delete => paint.removed(out, &format!("[-{run}-]"))?,
            ChangeTag::Insert => paint.added(out, &format!("{{+{run}+}}"))?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Human, Paint, word_diff};

    fn diff(old: &str, new: &str, paint: Paint) -> String {
        let mut text = Vec::new();
        word_diff(&mut Human::new(&mut text), old, new, paint).unwrap();
        String::from_utf8(text).unwrap()
    }

    #[test]
    fn word_diff_marks_removed_and_added_words() {
        assert_eq!(
            diff(
                "Smoke seen after update.",
                "Smoke seen after the firmware update.",
                Paint(false)
            ),
            "Smoke seen after {+the firmware +}update."
        );
        assert_eq!(
            diff("a b", "a c\x1b[8m", Paint(true)),
            "a \x1b[31m[-b-]\x1b[m\x1b[32m{+c\\u{1b}[8m+}\x1b[m"
        );
    }
}

//! The items about trackers on a server: Jira and Redmine, played by the
//! repository's fakes ([`crate::tracker::jira::fake`],
//! [`crate::tracker::redmine::fake`]) on loopback in this process, each with a
//! site of its own that a local site is connected to. The measured step is, as
//! for the other items, ferry run as a child process in the site folder; the
//! fakes count the requests it sends.
//!
//! The fakes answer at once unless told to wait: `--latency` adds that much to
//! every answer for the throughput items, the time a Jira across a network
//! takes. What is measured is ferry's side (its round trips, its memory), not a
//! Jira's or a Redmine's work.
//!
//! The fakes must stay small in memory: a process the bench starts begins
//! with the bench's own high-water mark (Linux keeps `maxrss` across the exec
//! of a spawned child), so a fake holding 100 000 issues as JSON made the
//! first Jira export look 200 MB larger than it was. They keep seeded issues
//! as recipes instead (a run checked against the same export with the fake in
//! another process: 59 MB against 62 MB at 30 000 issues).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

use super::{Measured, Row, Runner, say};
use crate::cli::Ctx;
use crate::tracker::jira::fake::FakeJira;
use crate::tracker::redmine::fake::FakeRedmine;

/// Sizes of the server items.
pub(super) struct Sizes {
    /// Issues (× 5 comments) of the Jira first export.
    pub jira_export: usize,
    /// New issues of the Jira import.
    pub jira_import: usize,
    /// Issues (× 5 notes) of the Redmine first export.
    pub redmine_export: usize,
    /// Milliseconds added to every answer of the throughput items.
    pub latency_ms: u64,
    /// Issues (× 5 comments) of the peak-memory first exports.
    pub rss_issues: usize,
}

/// The Jira project key and the Redmine project identifier the sites share.
const JIRA_PROJECT: &str = "ENG";
const REDMINE_PROJECT: &str = "sup";
const JIRA_TOKEN: &str = "bench-token";
const REDMINE_KEY: &str = "0123456789abcdef0123456789abcdef01234567";
const COMMENTS: usize = 5;

/// A site on a server tracker and a local site, connected both ways through
/// one bare repository, the project mapped to itself.
struct Pair {
    server: PathBuf,
    local: PathBuf,
}

impl Pair {
    /// `tracker` is the `tracker:` block of the server site's `ferry.yaml`;
    /// `files` are written beside it (token and key files).
    fn build(
        runner: &Runner,
        dir: &Path,
        tracker: &str,
        files: &[(&str, &str)],
        project: &str,
    ) -> anyhow::Result<Pair> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        runner.measure(
            Path::new("git"),
            dir,
            &["init", "-q", "--bare", "exchange.git"],
        )?;
        let pair = Pair {
            server: dir.join("s"),
            local: dir.join("l"),
        };
        fs::create_dir_all(&pair.server)?;
        fs::create_dir_all(&pair.local)?;
        fs::write(
            pair.server.join("ferry.yaml"),
            format!("site: s\ntracker:\n{tracker}sync_user: ferry-bot\n"),
        )?;
        for (name, content) in files {
            fs::write(pair.server.join(name), content)?;
        }
        runner.ferry(&pair.server, &["-q", "init", "--site", "s"])?;
        runner.ferry(&pair.local, &["-q", "init", "--site", "l"])?;
        let map = format!("{project}={project}");
        for (site, peer) in [(&pair.server, "l"), (&pair.local, "s")] {
            runner.ferry(
                site,
                &[
                    "-q",
                    "connection",
                    "add",
                    peer,
                    "--channel",
                    "../exchange.git",
                    "--project",
                    &map,
                ],
            )?;
        }
        for (site, peer, other) in [
            (&pair.server, "l", &pair.local),
            (&pair.local, "s", &pair.server),
        ] {
            let key = runner.ferry_output(other, &["key", "show"])?;
            runner.ferry(site, &["-q", "connection", "trust", peer, &key])?;
        }
        Ok(pair)
    }
}

/// A Data Center fake Jira with Jira's own page size.
fn fake_jira() -> FakeJira {
    let fake = FakeJira::start(
        false,
        JIRA_PROJECT,
        "ferry-bot",
        &format!("Bearer {JIRA_TOKEN}"),
    );
    fake.page_size(100);
    fake
}

fn jira_tracker(fake: &FakeJira) -> String {
    format!(
        "  kind: jira\n  url: \"{}\"\n  flavour: datacenter\n  project: {JIRA_PROJECT}\n  \
         token_file: jira.token\n  transition_fields: {{Resolution: Fixed}}\n",
        fake.url()
    )
}

fn jira_pair(runner: &Runner, dir: &Path, fake: &FakeJira) -> anyhow::Result<Pair> {
    Pair::build(
        runner,
        dir,
        &jira_tracker(fake),
        &[("jira.token", &format!("{JIRA_TOKEN}\n"))],
        JIRA_PROJECT,
    )
}

/// Runs the server items and adds their rows.
pub(super) fn run(
    runner: &Runner,
    root: &Path,
    sizes: &Sizes,
    ctx: &mut Ctx,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let latency = Duration::from_millis(sizes.latency_ms);
    jira_export(runner, root, sizes, latency, ctx, rows)?;
    jira_import(runner, root, sizes, latency, ctx, rows)?;
    redmine_memory(runner, root, sizes, ctx, rows)?;
    jira_memory(runner, root, sizes, ctx, rows)?;
    redmine_export(runner, root, sizes, latency, ctx, rows)?;
    Ok(())
}

/// A site on the fake Redmine, and a local site connected to it.
fn redmine_pair(runner: &Runner, dir: &Path, fake: &FakeRedmine) -> anyhow::Result<Pair> {
    let tracker = format!(
        "  kind: redmine\n  url: \"{}\"\n  project: {REDMINE_PROJECT}\n  api_key_file: redmine.key\n",
        fake.url()
    );
    Pair::build(
        runner,
        dir,
        &tracker,
        &[("redmine.key", &format!("{REDMINE_KEY}\n"))],
        REDMINE_PROJECT,
    )
}

/// Item 8: a Jira site's first export of issues with comments written in Jira.
fn jira_export(
    runner: &Runner,
    root: &Path,
    sizes: &Sizes,
    latency: Duration,
    ctx: &mut Ctx,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let n = sizes.jira_export;
    let fake = fake_jira();
    fake.seed(n, COMMENTS, "alice");
    let pair = jira_pair(runner, &root.join("jira-export"), &fake)?;
    fake.latency(latency);
    let (export, requests) = export_counted(runner, &pair, &fake)?;
    fake.latency(Duration::ZERO);
    let rate = n as f64 / export.secs;
    let per_issue = requests as f64 / n.max(1) as f64;
    say(
        ctx,
        format!(
            "Jira first export of {n} issues: {:.2} s (cpu {:.2} s), {requests} requests",
            export.secs, export.cpu_secs
        ),
    )?;
    rows.push(Row {
        item: format!(
            "8 Jira first export, {n} issues × {COMMENTS} comments, {} ms a request",
            latency.as_millis()
        ),
        figure: format!("{rate:.0} issues/s ({:.2} s)", export.secs),
        target: "≥ 50 issues/s".into(),
        met: rate >= 50.0,
        rss: Some(export),
    });
    rows.push(Row {
        item: "8 Jira first export, requests per issue".into(),
        figure: format!("{per_issue:.3} ({requests} requests)"),
        target: "≤ 1.2".into(),
        met: per_issue <= 1.2,
        rss: None,
    });
    Ok(())
}

/// Item 9: a Jira site's import of new issues from a local site, created,
/// moved through the workflow to the mapped status, their comments added.
fn jira_import(
    runner: &Runner,
    root: &Path,
    sizes: &Sizes,
    latency: Duration,
    ctx: &mut Ctx,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let n = sizes.jira_import;
    let fake = fake_jira();
    let pair = jira_pair(runner, &root.join("jira-import"), &fake)?;
    // The generated issues' statuses in this Jira's workflow.
    let rule = pair.server.join("rules/incoming.rhai");
    let text = fs::read_to_string(&rule).context("reading the Jira site's incoming rule")?;
    let Some(line) = text.lines().find(|l| l.starts_with("let statuses = ")) else {
        bail!("the incoming rule has no status map line");
    };
    let text = text.replace(
        line,
        "let statuses = #{ \"Open\": \"Backlog\", \"Waiting\": \"Backlog\", \
         \"In Progress\": \"In Progress\", \"Resolved\": \"Closed\", \"Closed\": \"Closed\" };",
    );
    fs::write(&rule, text)?;
    let count = n.to_string();
    runner.ferry(
        &pair.local,
        &[
            "-q",
            "tracker",
            "generate",
            &count,
            "--project",
            JIRA_PROJECT,
        ],
    )?;
    runner.ferry(&pair.local, &["-q", "export"])?;
    runner.ferry(&pair.local, &["-q", "push"])?;
    runner.ferry(&pair.server, &["-q", "pull"])?;
    fake.latency(latency);
    let before = fake.request_count();
    let import = runner.ferry(&pair.server, &["-q", "import"])?;
    let requests = fake.request_count() - before;
    fake.latency(Duration::ZERO);
    let created = fake.issue_count();
    if created != n {
        bail!("the Jira import created {created} issues, not {n}");
    }
    let rate = n as f64 / import.secs;
    say(
        ctx,
        format!(
            "Jira import of {n} new issues: {:.2} s (cpu {:.2} s), {requests} requests ({:.2} per issue)",
            import.secs,
            import.cpu_secs,
            requests as f64 / n.max(1) as f64
        ),
    )?;
    rows.push(Row {
        item: format!(
            "9 Jira import of {n} new issues, {} ms a request",
            latency.as_millis()
        ),
        figure: format!("{rate:.1} issues/s ({:.2} s)", import.secs),
        target: "≥ 20 issues/s".into(),
        met: rate >= 20.0,
        rss: Some(import),
    });
    Ok(())
}

/// Item 10: peak memory of a first export from a Redmine with many issues.
fn redmine_memory(
    runner: &Runner,
    root: &Path,
    sizes: &Sizes,
    ctx: &mut Ctx,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let n = sizes.rss_issues;
    let fake =
        FakeRedmine::start(REDMINE_PROJECT, REDMINE_KEY).context("starting the fake Redmine")?;
    fake.seed(n, COMMENTS);
    let pair = redmine_pair(runner, &root.join("redmine-memory"), &fake)?;
    let (export, requests) = export_counted(runner, &pair, &fake)?;
    memory_row("10", "Redmine", "notes", n, export, requests, ctx, rows)
}

/// Item 11: peak memory of a first export from a Jira with many issues.
fn jira_memory(
    runner: &Runner,
    root: &Path,
    sizes: &Sizes,
    ctx: &mut Ctx,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let n = sizes.rss_issues;
    let fake = fake_jira();
    fake.seed(n, COMMENTS, "alice");
    let pair = jira_pair(runner, &root.join("jira-memory"), &fake)?;
    let (export, requests) = export_counted(runner, &pair, &fake)?;
    memory_row("11", "Jira", "comments", n, export, requests, ctx, rows)
}

/// A fake that counts the requests it answers.
trait Counted {
    fn answered(&self) -> usize;
}

impl Counted for FakeJira {
    fn answered(&self) -> usize {
        self.request_count()
    }
}

impl Counted for FakeRedmine {
    fn answered(&self) -> usize {
        self.requests()
    }
}

/// `ferry export` at the server site: the run, and the requests it sent.
fn export_counted(
    runner: &Runner,
    pair: &Pair,
    fake: &dyn Counted,
) -> anyhow::Result<(Measured, usize)> {
    let before = fake.answered();
    let export = runner.ferry(&pair.server, &["-q", "export"])?;
    Ok((export, fake.answered() - before))
}

/// The row of a first export's peak memory (items 10 and 11).
#[allow(clippy::too_many_arguments)]
fn memory_row(
    number: &str,
    tracker: &str,
    comments: &str,
    n: usize,
    export: Measured,
    requests: usize,
    ctx: &mut Ctx,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    say(
        ctx,
        format!(
            "{tracker} first export of {n} issues: {:.1} s (cpu {:.1} s), {requests} requests, \
             peak {:.0} MB",
            export.secs,
            export.cpu_secs,
            export.rss_mb()
        ),
    )?;
    rows.push(Row {
        item: format!(
            "{number} peak RSS, {tracker} first export, {n} issues × {COMMENTS} {comments}"
        ),
        figure: format!("{:.0} MB ({:.1} s)", export.rss_mb(), export.secs),
        target: "≤ 200 MB".into(),
        met: export.rss_mb() <= 200.0,
        rss: Some(export),
    });
    Ok(())
}

/// Item 12: a Redmine site's first export of issues with notes written in
/// Redmine: one list request per 100 issues, then one per issue (only an
/// issue's own page has its journals), `concurrency` at a time.
fn redmine_export(
    runner: &Runner,
    root: &Path,
    sizes: &Sizes,
    latency: Duration,
    ctx: &mut Ctx,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let n = sizes.redmine_export;
    let fake =
        FakeRedmine::start(REDMINE_PROJECT, REDMINE_KEY).context("starting the fake Redmine")?;
    fake.seed(n, COMMENTS);
    let pair = redmine_pair(runner, &root.join("redmine-export"), &fake)?;
    fake.latency(latency);
    let (export, requests) = export_counted(runner, &pair, &fake)?;
    fake.latency(Duration::ZERO);
    let rate = n as f64 / export.secs;
    say(
        ctx,
        format!(
            "Redmine first export of {n} issues: {:.2} s (cpu {:.2} s), {requests} requests, \
             at most {} at once",
            export.secs,
            export.cpu_secs,
            fake.most_at_once()
        ),
    )?;
    rows.push(Row {
        item: format!(
            "12 Redmine first export, {n} issues × {COMMENTS} notes, {} ms a request",
            latency.as_millis()
        ),
        figure: format!("{rate:.0} issues/s ({:.2} s)", export.secs),
        target: "≥ 50 issues/s".into(),
        met: rate >= 50.0,
        rss: Some(export),
    });
    Ok(())
}

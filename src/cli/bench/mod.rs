//! `ferry bench`: ferry at scale, measured against git's own limit.
//!
//! Every measured step is this same binary run as a child process in a site
//! folder, exactly as cron would run it; its wall time is taken around the child
//! and its peak memory comes from the kernel (`wait4`'s rusage, which also covers
//! the child's own children, such as the `git` a push runs). Nothing is timed
//! in-process, so what the table says is what an operator would see.

use std::fmt::Write as _;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};

use crate::cli::{Ctx, ExitStatus, UsageError};
use crate::exchange::own_branch;
use crate::maintenance::{self, Storage, human_bytes};
use crate::site::Site;
use crate::tracker::local::GenerateShape;

mod servers;

/// Measure ferry at scale and print a table of figures and targets.
///
/// Items 1, 2, 4, 6 and 7 run on two shapes of site: every issue in one
/// project (one big Jira project), and the issues spread over PROJECTS
/// projects.
///
/// 1. full export of ISSUES issues with COMMENTS comments each (local tracker
///    → replicas → one commit), against git fast-import writing as many
///    replica-sized files as one commit (bench/fastimport_baseline.py);
/// 2. incremental: CHANGED issues edited, then export + push on the site and
///    pull + import (the diff and the new replicas) on the peer, for the big site
///    and for a SMALL one; then one edited issue the same way on both, and
///    the bytes its commit adds to the big site's clone and to the channel;
/// 3. import of IMPORT new replicas into the local tracker (ledger on);
/// 4. the incremental bundle of the CHANGED issues, against their replicas' bytes;
/// 5. the peak memory of each;
/// 6. the bundle outbox after ten one-edit runs to a peer that never
///    acknowledges, against the first (full) bundle;
/// 7. the exchange clone and the channel after SYNCS one-edit syncs of both
///    sites of SMALL issues (with the automatic maintenance), against after
///    the first.
///
/// and, with trackers on a server (the repository's fake Jira and fake Redmine,
/// started in this process on loopback):
///
/// 8. a Jira first export of JIRA_EXPORT issues × 5 comments, LATENCY ms added
///    to every answer: issues per second and requests per issue;
/// 9. a Jira import of JIRA_IMPORT new issues from a local site, LATENCY ms a
///    request: issues per second;
/// 10. the peak memory of a first export of SERVER_ISSUES issues × 5 comments
///     from Redmine, and 11. the same from Jira;
/// 12. a Redmine first export of REDMINE_EXPORT issues × 5 notes, LATENCY ms
///     a request: issues per second.
///
/// Needs git and python3. The default is the full scale and takes minutes;
/// `--issues 10000 --import 2000 --server-issues 20000` is a quick run, and
/// `--only servers` runs items 8 to 12 alone.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Issues in the big site.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    issues: usize,
    /// Projects they are spread over in the second shape (the first has one).
    #[arg(long, value_name = "N", default_value_t = 100)]
    projects: usize,
    /// Comments on every issue.
    #[arg(long, value_name = "N", default_value_t = 5)]
    comments: usize,
    /// Issues changed for the incremental sync and the bundle.
    #[arg(long, value_name = "N", default_value_t = 100)]
    changed: usize,
    /// Issues in the small site the incremental sync is compared with.
    #[arg(long, value_name = "N", default_value_t = 1_000)]
    small: usize,
    /// New replicas the import item imports.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    import: usize,
    /// One-edit syncs item 7 makes (in a site of SMALL issues) before it
    /// measures the clone and the channel again.
    #[arg(long, value_name = "N", default_value_t = 1_000)]
    syncs: usize,
    /// The git fast-import baseline script.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "bench/fastimport_baseline.py"
    )]
    baseline: PathBuf,
    /// Issues (× 5 comments) of the Jira first export (item 8).
    #[arg(long, value_name = "N", default_value_t = 1_000)]
    jira_export: usize,
    /// New issues of the Jira import (item 9).
    #[arg(long, value_name = "N", default_value_t = 1_000)]
    jira_import: usize,
    /// Issues (× 5 notes) of the Redmine first export (item 12).
    #[arg(long, value_name = "N", default_value_t = 1_000)]
    redmine_export: usize,
    /// Milliseconds the fakes take over every answer in items 8, 9 and 12.
    #[arg(long, value_name = "MS", default_value_t = 50)]
    latency: u64,
    /// Issues (× 5 comments) of the peak-memory first exports from Redmine and
    /// Jira (items 10 and 11).
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    server_issues: usize,
    /// Run only the items of the embedded tracker (1 to 6) or only those of
    /// the trackers on a server (8 to 12).
    #[arg(long, value_name = "ITEMS")]
    only: Option<Only>,
    /// Build the sites in DIR and keep them (default: a temporary folder, removed).
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
}

/// A part of the benchmark to run alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Only {
    /// Items 1 to 6: the embedded tracker, git and the exchange.
    Core,
    /// Items 8 to 12: Jira and Redmine, played by the repository's fakes.
    Servers,
}

/// One child process: its wall time and peak resident memory.
#[derive(Debug, Clone, Copy, Default)]
struct Measured {
    secs: f64,
    /// User and system CPU time: on a busy machine, what the wall time would be
    /// without waiting for a core (and for the disk).
    cpu_secs: f64,
    max_rss_kib: u64,
}

impl Measured {
    /// Steps run one after the other: times add up, memory peaks.
    fn then(self, next: Measured) -> Measured {
        Measured {
            secs: self.secs + next.secs,
            cpu_secs: self.cpu_secs + next.cpu_secs,
            max_rss_kib: self.max_rss_kib.max(next.max_rss_kib),
        }
    }

    fn rss_mb(&self) -> f64 {
        self.max_rss_kib as f64 / 1024.0
    }
}

/// Runs ferry (this binary) and git with a sealed, repeatable environment.
struct Runner {
    ferry: PathBuf,
    /// Where the children's stderr goes, shown when one fails.
    log: PathBuf,
}

impl Runner {
    fn command(&self, program: &Path, dir: &Path, args: &[&str]) -> anyhow::Result<Command> {
        let mut command = Command::new(program);
        command
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("FERRY_USER", "bench")
            .env_remove("FERRY_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&self.log).context("creating the bench log")?);
        Ok(command)
    }

    /// Runs `program args` in `dir`, measured; fails with its stderr if it fails.
    fn measure(&self, program: &Path, dir: &Path, args: &[&str]) -> anyhow::Result<Measured> {
        let mut command = self.command(program, dir, args)?;
        let start = Instant::now();
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let (status, usage) = wait_with_rusage(child.id())?;
        let secs = start.elapsed().as_secs_f64();
        if status != 0 {
            let log = fs::read_to_string(&self.log).unwrap_or_default();
            bail!(
                "`{} {}` in {} failed (wait status {status}):\n{log}",
                program.display(),
                args.join(" "),
                dir.display()
            );
        }
        let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        Ok(Measured {
            secs,
            cpu_secs: seconds(usage.ru_utime) + seconds(usage.ru_stime),
            max_rss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
        })
    }

    fn ferry(&self, dir: &Path, args: &[&str]) -> anyhow::Result<Measured> {
        self.measure(&self.ferry.clone(), dir, args)
    }

    /// Runs ferry and returns its standard output.
    fn ferry_output(&self, dir: &Path, args: &[&str]) -> anyhow::Result<String> {
        let output = self
            .command(&self.ferry, dir, args)?
            .stdout(Stdio::piped())
            .output()
            .context("running ferry")?;
        if !output.status.success() {
            bail!(
                "`ferry {}` failed: {}",
                args.join(" "),
                fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }
}

/// Waits for the child `pid` and returns its wait status and resource usage (its
/// reaped children included), which `std::process::Child::wait` drops.
fn wait_with_rusage(pid: u32) -> anyhow::Result<(i32, libc::rusage)> {
    let pid = libc::pid_t::try_from(pid).context("child pid out of range")?;
    let mut status = 0;
    // SAFETY: rusage is plain data for which all zeroes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers are valid for writes for the duration of the call.
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if rc == pid {
            break;
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error).context("waiting for a child");
        }
    }
    Ok((status, usage))
}

/// Two sites, `a` (the one with the issues) and `b`, connected through one bare
/// repository, every project mapped to itself.
struct World {
    a: PathBuf,
    b: PathBuf,
    projects: Vec<String>,
}

const PROJECT: &str = "P";

impl World {
    fn build(
        runner: &Runner,
        dir: &Path,
        issues: usize,
        shape: &GenerateShape,
    ) -> anyhow::Result<World> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let git = Path::new("git");
        runner.measure(git, dir, &["init", "-q", "--bare", "exchange.git"])?;
        let projects = shape.project_names(PROJECT);
        let world = World {
            a: dir.join("a"),
            b: dir.join("b"),
            projects,
        };
        for (site, peer) in [(&world.a, "b"), (&world.b, "a")] {
            fs::create_dir_all(site)?;
            let name = if peer == "a" { "b" } else { "a" };
            runner.ferry(site, &["-q", "init", "--site", name])?;
            let mut args = vec![
                "-q",
                "connection",
                "add",
                peer,
                "--channel",
                "../exchange.git",
            ];
            let pairs: Vec<String> = world.projects.iter().map(|p| format!("{p}={p}")).collect();
            for pair in &pairs {
                args.extend(["--project", pair]);
            }
            runner.ferry(site, &args)?;
        }
        for (site, peer, other) in [(&world.a, "b", &world.b), (&world.b, "a", &world.a)] {
            let key = runner.ferry_output(other, &["key", "show"])?;
            runner.ferry(site, &["-q", "connection", "trust", peer, &key])?;
        }
        let count = issues.to_string();
        let mut args = vec!["-q", "tracker", "generate", &count, "--project", PROJECT];
        let projects = shape.projects.to_string();
        let comments = shape.comments.unwrap_or(0).to_string();
        args.extend(["--projects", &projects, "--comments", &comments]);
        runner.ferry(&world.a, &args)?;
        // The steady state: the issues were last changed before the sync that
        // follows, not in the very second it reads them (an export reads the
        // second of its cursor again, see `engine::export`).
        std::thread::sleep(std::time::Duration::from_millis(1_100));
        Ok(world)
    }

    /// Edits `n` issues of `a`, spread over its projects (not measured).
    fn change(&self, runner: &Runner, n: usize, round: usize) -> anyhow::Result<()> {
        for i in 0..n {
            let key = format!(
                "{}-{}",
                self.projects[i % self.projects.len()],
                1 + i / self.projects.len()
            );
            let summary = format!("Changed by the benchmark, round {round}");
            runner.ferry(
                &self.a,
                &["-q", "tracker", "edit", &key, "--summary", &summary],
            )?;
        }
        Ok(())
    }

    /// `a` exports and pushes, `b` pulls and imports: one change crossing over.
    fn sync_over(&self, runner: &Runner) -> anyhow::Result<Steps> {
        Ok(Steps {
            export: runner.ferry(&self.a, &["-q", "export"])?,
            push: runner.ferry(&self.a, &["-q", "push"])?,
            pull: runner.ferry(&self.b, &["-q", "pull"])?,
            import: runner.ferry(&self.b, &["-q", "import"])?,
        })
    }

    /// Gives `a` a bundle connection to a peer that never answers, writes the
    /// first bundle, then makes `runs` runs that each export one edited issue
    /// and push: the outbox's bytes then, against the first bundle's.
    fn bundle_outbox(&self, runner: &Runner, runs: usize) -> anyhow::Result<Outbox> {
        let usb = self.a.join("usb");
        let (out, inbox) = (usb.join("out"), usb.join("in"));
        for dir in [&out, &inbox] {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let (out_arg, in_arg) = (out.to_string_lossy(), inbox.to_string_lossy());
        let mut args = vec![
            "-q",
            "connection",
            "add",
            "silent",
            "--outbox",
            &out_arg,
            "--inbox",
            &in_arg,
        ];
        let pairs: Vec<String> = self.projects.iter().map(|p| format!("{p}={p}")).collect();
        for pair in &pairs {
            args.extend(["--project", pair]);
        }
        runner.ferry(&self.a, &args)?;
        let send = |runner: &Runner| -> anyhow::Result<Measured> {
            Ok(runner
                .ferry(&self.a, &["-q", "export", "--connection", "silent"])?
                .then(runner.ferry(&self.a, &["-q", "push", "--connection", "silent"])?))
        };
        let mut measured = send(runner)?;
        let first = folder_bytes(&out)?;
        let key = format!("{}-1", self.projects[0]);
        for run in 1..=runs {
            let summary = format!("Edited while the peer is silent, run {run}");
            runner.ferry(
                &self.a,
                &["-q", "tracker", "edit", &key, "--summary", &summary],
            )?;
            measured = measured.then(send(runner)?);
        }
        Ok(Outbox {
            first,
            after: folder_bytes(&out)?,
            runs: measured,
        })
    }

    /// Syncs both sites once, then `syncs` times after editing one issue of
    /// `a` each time: the sizes of `a`'s clone and of the channel after the
    /// first sync and after the last.
    fn one_edit_syncs(
        &self,
        runner: &Runner,
        syncs: usize,
        issues: usize,
    ) -> anyhow::Result<Growth> {
        let per_project = (issues / self.projects.len()).max(1);
        let sync = |runner: &Runner| -> anyhow::Result<Measured> {
            Ok(runner
                .ferry(&self.a, &["-q", "sync"])?
                .then(runner.ferry(&self.b, &["-q", "sync"])?))
        };
        sync(runner)?;
        let first = self.storage()?;
        let mut measured = Measured::default();
        for round in 1..=syncs {
            let key = format!(
                "{}-{}",
                self.projects[round % self.projects.len()],
                1 + (round / self.projects.len()) % per_project
            );
            let summary = format!("One edit, sync {round}");
            runner.ferry(
                &self.a,
                &["-q", "tracker", "edit", &key, "--summary", &summary],
            )?;
            measured = measured.then(sync(runner)?);
        }
        let (clone, channel) = self.storage()?;
        Ok(Growth {
            first_clone: first.0,
            first_channel: first.1,
            clone,
            channel,
            runs: measured,
        })
    }

    /// Edits one issue of `a` and syncs it over: the four steps together,
    /// and what the sync added to `a`'s clone and to the channel (bytes
    /// without superseded packs; a repack in between counts as no growth).
    fn one_edit(&self, runner: &Runner) -> anyhow::Result<OneEdit> {
        let (clone, channel) = self.storage()?;
        let key = format!("{}-1", self.projects[0]);
        runner.ferry(
            &self.a,
            &[
                "-q",
                "tracker",
                "edit",
                &key,
                "--summary",
                "One edit, measured",
            ],
        )?;
        let steps = self.sync_over(runner)?.total();
        let (clone_after, channel_after) = self.storage()?;
        Ok(OneEdit {
            steps,
            clone_growth: live(&clone_after).saturating_sub(live(&clone)),
            channel_growth: live(&channel_after).saturating_sub(live(&channel)),
        })
    }

    /// What `a`'s clone and the channel hold now.
    fn storage(&self) -> anyhow::Result<(Storage, Storage)> {
        Ok((
            maintenance::measure(&self.a.join(".ferry").join(crate::site::EXCHANGE_DIR))?,
            maintenance::measure(&self.a.join("..").join("exchange.git"))?,
        ))
    }

    /// The head of `a`'s branch for `b`.
    fn head(&self) -> anyhow::Result<git2::Oid> {
        let site = Site::open(&self.a)?;
        site.exchange
            .resolve(&own_branch("a", "b"))?
            .context("a has exported nothing")
    }
}

/// The four steps of one change crossing from `a` to `b`.
struct Steps {
    export: Measured,
    push: Measured,
    pull: Measured,
    import: Measured,
}

impl Steps {
    fn total(&self) -> Measured {
        self.export
            .then(self.push)
            .then(self.pull)
            .then(self.import)
    }

    fn describe(&self) -> String {
        let total = self.total();
        format!(
            "export {:.3} s, push {:.3} s, pull {:.3} s, import {:.3} s (cpu {:.3} s)",
            self.export.secs, self.push.secs, self.pull.secs, self.import.secs, total.cpu_secs
        )
    }
}

/// Item 2, one edit: the sync, and the bytes its commit added.
struct OneEdit {
    steps: Measured,
    clone_growth: u64,
    channel_growth: u64,
}

/// Runs with one edit each that item 6 makes while the peer is silent.
const OUTBOX_RUNS: usize = 10;

/// Item 6: the bundle outbox of a peer that never acknowledges.
struct Outbox {
    /// Bytes after the first run (one full bundle).
    first: u64,
    /// Bytes after the edited runs.
    after: u64,
    /// All the runs together.
    runs: Measured,
}

/// Item 7: the repositories after one-edit syncs.
struct Growth {
    first_clone: Storage,
    first_channel: Storage,
    clone: Storage,
    channel: Storage,
    /// All the syncs together.
    runs: Measured,
}

/// Bytes without the superseded packs, which go an hour after a repack.
fn live(storage: &Storage) -> u64 {
    storage.bytes - storage.superseded_bytes
}

/// The bytes of the files directly in `dir`.
fn folder_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut bytes = 0;
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let meta = entry
            .and_then(|e| e.metadata())
            .with_context(|| format!("listing {}", dir.display()))?;
        if meta.is_file() {
            bytes += meta.len();
        }
    }
    Ok(bytes)
}

/// One row of the table.
struct Row {
    item: String,
    figure: String,
    target: String,
    met: bool,
    rss: Option<Measured>,
}

/// Runs the benchmark and prints the table.
pub fn run(args: BenchArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    if args.changed == 0 || args.changed > args.small.min(args.issues) {
        return Err(UsageError(format!(
            "--changed must be between 1 and the size of the smallest site ({})",
            args.small.min(args.issues)
        ))
        .into());
    }
    let core = args.only != Some(Only::Servers);
    if core && !args.baseline.is_file() {
        return Err(UsageError(format!(
            "{} not found: run ferry bench from the ferry checkout, or pass --baseline FILE",
            args.baseline.display()
        ))
        .into());
    }
    let temporary;
    let root = match &args.keep {
        Some(dir) => {
            fs::create_dir_all(dir)?;
            fs::canonicalize(dir)?
        }
        None => {
            temporary = tempfile::tempdir()?;
            temporary.path().to_path_buf()
        }
    };
    let runner = Runner {
        ferry: std::env::current_exe().context("finding the ferry binary")?,
        log: root.join("last-stderr.log"),
    };
    let mut rows = Vec::new();
    let mut notes = String::new();
    if core {
        core_items(&args, &runner, &root, ctx, &mut rows, &mut notes)?;
    }
    if args.only != Some(Only::Core) {
        let sizes = servers::Sizes {
            jira_export: args.jira_export,
            jira_import: args.jira_import,
            redmine_export: args.redmine_export,
            latency_ms: args.latency,
            rss_issues: args.server_issues,
        };
        servers::run(&runner, &root, &sizes, ctx, &mut rows)?;
    }
    print_table(ctx, &rows)?;
    write!(ctx.out, "{notes}")?;
    if args.keep.is_some() {
        writeln!(ctx.out, "sites kept in {}", root.display())?;
    }
    Ok(ExitStatus::Success)
}

/// The shapes a big site is measured in: every issue in one tracker project
/// (one big Jira project, the common case), and the issues spread over
/// PROJECTS projects.
fn shapes(args: &BenchArgs) -> Vec<Shape> {
    let shape = |projects: usize| Shape {
        name: match projects {
            1 => "1 project".to_string(),
            n => format!("{n} projects"),
        },
        dir: format!("p{projects}"),
        generate: GenerateShape {
            projects,
            comments: Some(args.comments),
        },
    };
    let mut shapes = vec![shape(1)];
    if args.projects > 1 {
        shapes.push(shape(args.projects));
    }
    shapes
}

/// One shape of the sites: its name in the table, its folder, how its issues
/// are generated.
struct Shape {
    name: String,
    dir: String,
    generate: GenerateShape,
}

/// Items 1 to 7: those of each shape, then the import and the peak.
fn core_items(
    args: &BenchArgs,
    runner: &Runner,
    root: &Path,
    ctx: &mut Ctx,
    rows: &mut Vec<Row>,
    notes: &mut String,
) -> anyhow::Result<()> {
    let fastimport_secs = fast_import(args, runner, root, ctx)?;
    let shapes = shapes(args);
    for shape in &shapes {
        writeln!(ctx.out, "{}:", shape.name)?;
        shape_items(
            args,
            runner,
            &root.join(&shape.dir),
            shape,
            fastimport_secs,
            ctx,
            rows,
            notes,
        )?;
    }

    // 3. Import of new replicas.
    let spread = shapes.last().context("no shape to measure")?;
    let imports = World::build(runner, &root.join("import"), args.import, &spread.generate)?;
    runner.ferry(&imports.a, &["-q", "export"])?;
    runner.ferry(&imports.a, &["-q", "push"])?;
    runner.ferry(&imports.b, &["-q", "pull"])?;
    let import = runner.ferry(&imports.b, &["-q", "import"])?;
    let rate = args.import as f64 / import.secs;
    say(
        ctx,
        format!(
            "import of {} new replicas: {:.2} s (cpu {:.2} s)",
            args.import, import.secs, import.cpu_secs
        ),
    )?;
    rows.push(Row {
        item: format!("3 import of {} new replicas, ledger on", args.import),
        figure: format!("{:.2} s ({rate:.0} issues/s)", import.secs),
        target: "≤ 5 s (≥ 2000 issues/s)".into(),
        met: rate >= 2000.0,
        rss: Some(import),
    });

    let peak = rows
        .iter()
        .filter_map(|r| r.rss)
        .map(|m| m.max_rss_kib)
        .max()
        .unwrap_or(0);
    rows.push(Row {
        item: "5 peak RSS, highest of the items above".into(),
        figure: format!("{:.0} MB", peak as f64 / 1024.0),
        target: "≤ 200 MB".into(),
        met: peak as f64 / 1024.0 <= 200.0,
        rss: None,
    });
    Ok(())
}

/// git fast-import writing ISSUES replica-sized files in one commit: the
/// baseline of item 1, in seconds.
fn fast_import(
    args: &BenchArgs,
    runner: &Runner,
    root: &Path,
    ctx: &mut Ctx,
) -> anyhow::Result<f64> {
    let baseline = fs::canonicalize(&args.baseline)?;
    let python = Path::new("python3");
    let fastimport_repo = root.join("fastimport.git");
    let fastimport = runner
        .command(python, root, &[])?
        .arg(&baseline)
        .arg(args.issues.to_string())
        .arg(&fastimport_repo)
        .stdout(Stdio::piped())
        .output()
        .context("running the fast-import baseline (needs python3 and git)")?;
    if !fastimport.status.success() {
        bail!(
            "the fast-import baseline failed: {}",
            fs::read_to_string(&runner.log).unwrap_or_default()
        );
    }
    let secs: f64 = String::from_utf8_lossy(&fastimport.stdout)
        .trim()
        .parse()
        .context("reading the baseline's seconds")?;
    fs::remove_dir_all(&fastimport_repo)?;
    say(
        ctx,
        format!("git fast-import of {} files: {secs:.2} s", args.issues),
    )?;
    Ok(secs)
}

/// Items 1, 2, 4, 6 and 7 on sites of one shape.
#[allow(clippy::too_many_arguments)]
fn shape_items(
    args: &BenchArgs,
    runner: &Runner,
    root: &Path,
    shape: &Shape,
    fastimport_secs: f64,
    ctx: &mut Ctx,
    rows: &mut Vec<Row>,
    notes: &mut String,
) -> anyhow::Result<()> {
    let of = |item: String| format!("{item}, {}", shape.name);
    // 1. Full export against git fast-import.
    writeln!(
        ctx.out,
        "building a site of {} issues × {} comments in {}",
        args.issues,
        args.comments,
        root.display()
    )?;
    let big = World::build(runner, &root.join("big"), args.issues, &shape.generate)?;
    let export = runner.ferry(&big.a, &["-q", "export"])?;
    say(
        ctx,
        format!(
            "full export: {:.2} s (cpu {:.2} s)",
            export.secs, export.cpu_secs
        ),
    )?;
    let ratio = export.secs / fastimport_secs;
    rows.push(Row {
        item: of(format!(
            "1 full export, {} issues × {} comments",
            args.issues, args.comments
        )),
        figure: format!(
            "{:.2} s = {ratio:.2} × fast-import ({fastimport_secs:.2} s)",
            export.secs
        ),
        target: "≤ 0.5 × fast-import".into(),
        met: ratio <= 0.5,
        rss: Some(export),
    });

    // The peer takes the whole site once (not an item, but worth knowing).
    runner.ferry(&big.a, &["-q", "push"])?;
    runner.ferry(&big.b, &["-q", "pull"])?;
    let first_import = runner.ferry(&big.b, &["-q", "import"])?;
    say(
        ctx,
        format!(
            "peer imports the {} issues: {:.1} s (cpu {:.1} s, {:.0} issues/s, peak {:.0} MB)",
            args.issues,
            first_import.secs,
            first_import.cpu_secs,
            args.issues as f64 / first_import.secs,
            first_import.rss_mb()
        ),
    )?;
    let _ = writeln!(
        notes,
        "peer's first import of the big site, {}: {:.1} s, peak {:.0} MB",
        shape.name,
        first_import.secs,
        first_import.rss_mb()
    );

    // 2. Incremental, big site.
    let before = big.head()?;
    big.change(runner, args.changed, 1)?;
    let steps = big.sync_over(runner)?;
    let after = big.head()?;
    let big_total = steps.total();
    say(
        ctx,
        format!(
            "{} changed in the big site: {}",
            args.changed,
            steps.describe()
        ),
    )?;

    // 4. The incremental bundle of that change.
    let bundle_file = root.join("incremental.bundle");
    let before_text = before.to_string();
    let bundle = runner.ferry(
        &big.a,
        &[
            "-q",
            "bundle",
            "create",
            "--connection",
            "b",
            "--after",
            &before_text,
            "--out",
            bundle_file
                .to_str()
                .context("temporary path is not UTF-8")?,
        ],
    )?;
    let bundle_bytes = fs::metadata(&bundle_file)?.len();
    let replica_bytes = {
        let site = Site::open(&big.a)?;
        let mut bytes = 0;
        for change in site.exchange.diff_replicas(Some(before), after)? {
            if let Some(blob) = change.new.filter(|_| change.path.starts_with("issues/")) {
                bytes += site.exchange.blob_size(blob)? as u64;
            }
        }
        bytes
    };

    // 2b. Incremental, small site.
    let small = World::build(runner, &root.join("small"), args.small, &shape.generate)?;
    small.sync_over(runner)?;
    small.change(runner, args.changed, 1)?;
    let small_steps = small.sync_over(runner)?;
    let small_total = small_steps.total();
    say(
        ctx,
        format!(
            "{} changed in the small site: {}",
            args.changed,
            small_steps.describe()
        ),
    )?;
    let spread = big_total.secs / small_total.secs;
    rows.push(Row {
        item: of(format!(
            "2 incremental, {} changed in {} issues",
            args.changed, args.issues
        )),
        figure: format!("{:.3} s", big_total.secs),
        target: "≤ 0.3 s".into(),
        met: big_total.secs <= 0.3,
        rss: Some(big_total),
    });
    rows.push(Row {
        item: of(format!(
            "2 incremental, {} changed in {} issues",
            args.changed, args.small
        )),
        figure: format!("{:.3} s (big/small = {spread:.2})", small_total.secs),
        target: "≤ 0.3 s, big within ±20%".into(),
        met: small_total.secs <= 0.3 && (0.8..=1.2).contains(&spread),
        rss: Some(small_total),
    });

    // 2c. One edited issue: the same sync on both sites, and what its commit
    // adds to the big site's clone and to the channel.
    let big_one = big.one_edit(runner)?;
    let small_one = small.one_edit(runner)?;
    say(
        ctx,
        format!(
            "one edit: {:.3} s in the big site, {:.3} s in the small one; the big site's \
             clone grew {} B, the channel {} B",
            big_one.steps.secs, small_one.steps.secs, big_one.clone_growth, big_one.channel_growth
        ),
    )?;
    let one_ratio = big_one.steps.secs / small_one.steps.secs;
    rows.push(Row {
        item: of(format!("2 one edit in {} issues", args.issues)),
        figure: format!(
            "{:.3} s = {one_ratio:.2} × in {} issues ({:.3} s)",
            big_one.steps.secs, args.small, small_one.steps.secs
        ),
        target: "≤ 1.5 ×".into(),
        met: one_ratio <= 1.5,
        rss: Some(big_one.steps),
    });
    let growth_limit = 64 * 1024;
    rows.push(Row {
        item: of(format!("2 one edit in {} issues, growth", args.issues)),
        figure: format!(
            "clone {}, channel {}",
            human_bytes(big_one.clone_growth),
            human_bytes(big_one.channel_growth)
        ),
        target: "≤ 64 KB each".into(),
        met: big_one.clone_growth <= growth_limit && big_one.channel_growth <= growth_limit,
        rss: None,
    });

    let bundle_ratio = bundle_bytes as f64 / replica_bytes.max(1) as f64;
    rows.push(Row {
        item: of(format!(
            "4 incremental bundle, {} changed issues",
            args.changed
        )),
        figure: format!("{bundle_bytes} B for {replica_bytes} B of replicas = {bundle_ratio:.2}"),
        target: "≤ 2 × replica bytes".into(),
        met: bundle_ratio <= 2.0,
        rss: Some(bundle),
    });
    // 6. The bundle outbox while the peer acknowledges nothing.
    let outbox = big.bundle_outbox(runner, OUTBOX_RUNS)?;
    say(
        ctx,
        format!(
            "bundle outbox after {OUTBOX_RUNS} one-edit runs with no ack: {} B, first bundle {} B",
            outbox.after, outbox.first
        ),
    )?;
    let outbox_ratio = outbox.after as f64 / outbox.first.max(1) as f64;
    rows.push(Row {
        item: of(format!(
            "6 bundle outbox, {OUTBOX_RUNS} one-edit runs, no ack"
        )),
        figure: format!(
            "{} B = {outbox_ratio:.2} × the first bundle ({} B)",
            outbox.after, outbox.first
        ),
        target: "≤ 1.1 × first bundle".into(),
        met: outbox_ratio <= 1.1,
        rss: Some(outbox.runs),
    });
    // 7. The clone and the channel after many one-edit syncs.
    let growth_world = World::build(runner, &root.join("growth"), args.small, &shape.generate)?;
    let growth = growth_world.one_edit_syncs(runner, args.syncs, args.small)?;
    for (what, first, after) in [
        ("clone", &growth.first_clone, &growth.clone),
        ("channel", &growth.first_channel, &growth.channel),
    ] {
        say(
            ctx,
            format!(
                "{what} after the first sync: {first}; after {} one-edit syncs: {after}",
                args.syncs
            ),
        )?;
    }
    let ratio = |first: &Storage, after: &Storage| live(after) as f64 / first.bytes.max(1) as f64;
    let (clone_ratio, channel_ratio) = (
        ratio(&growth.first_clone, &growth.clone),
        ratio(&growth.first_channel, &growth.channel),
    );
    let per_sync = |first: &Storage, after: &Storage| {
        live(after).saturating_sub(first.bytes) as f64 / args.syncs.max(1) as f64
    };
    let _ = writeln!(
        notes,
        "item 7, {}: {} issues, {} syncs in {:.0} s; growth per sync {:.0} B (clone), {:.0} B \
         (channel); on disk now, superseded packs included: clone {:.2} ×, channel {:.2} ×",
        shape.name,
        args.small,
        args.syncs,
        growth.runs.secs,
        per_sync(&growth.first_clone, &growth.clone),
        per_sync(&growth.first_channel, &growth.channel),
        growth.clone.bytes as f64 / growth.first_clone.bytes.max(1) as f64,
        growth.channel.bytes as f64 / growth.first_channel.bytes.max(1) as f64,
    );
    rows.push(Row {
        item: of(format!(
            "7 clone, channel after {} one-edit syncs, {} issues",
            args.syncs, args.small
        )),
        figure: format!(
            "{clone_ratio:.2} ×, {channel_ratio:.2} × the first ({}, {})",
            human_bytes(live(&growth.clone)),
            human_bytes(live(&growth.channel))
        ),
        target: "≤ 1.5 × after 1000 syncs".into(),
        met: args.syncs >= 1000 && clone_ratio <= 1.5 && channel_ratio <= 1.5,
        rss: Some(growth.runs),
    });
    Ok(())
}

/// Prints a progress line at once (a full run takes minutes).
fn say(ctx: &mut Ctx, line: String) -> anyhow::Result<()> {
    writeln!(ctx.out, "  {line}")?;
    ctx.out.flush()?;
    Ok(())
}

fn print_table(ctx: &mut Ctx, rows: &[Row]) -> anyhow::Result<()> {
    let width = |f: &dyn Fn(&Row) -> usize, title: &str| {
        rows.iter()
            .map(f)
            .max()
            .unwrap_or(0)
            .max(title.chars().count())
    };
    let item = width(&|r| r.item.chars().count(), "item");
    let figure = width(&|r| r.figure.chars().count(), "result");
    let target = width(&|r| r.target.chars().count(), "target");
    writeln!(ctx.out)?;
    writeln!(
        ctx.out,
        "{:item$}  {:figure$}  {:target$}  {:4}  peak RSS",
        "item", "result", "target", "met"
    )?;
    for row in rows {
        let rss = row
            .rss
            .map_or_else(String::new, |m| format!("{:.0} MB", m.rss_mb()));
        writeln!(
            ctx.out,
            "{:item$}  {:figure$}  {:target$}  {:4}  {rss}",
            row.item,
            row.figure,
            row.target,
            if row.met { "yes" } else { "NO" },
        )?;
    }
    Ok(())
}

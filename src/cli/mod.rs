//! The command line: one file per subcommand, each a clap `Args` struct (its doc
//! comment is the help text) and one `run` function calling into the library.
//!
//! Exit codes are part of the interface (cron reads them) and are decided here, in
//! one place: see [`ExitStatus`].

mod bench;
mod bundle;
mod connection;
mod demo;
mod doctor;
mod errors;
mod generate;
mod html;
mod init;
mod key;
mod maintenance;
mod notify;
mod release;
mod relink;
mod report;
mod review;
mod rules;
mod share;
mod site;
mod status;
mod steps;
mod terminal;
mod tracker;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError};
use crate::signing::KeyError;
use crate::site::LockError;

/// How a command ended, as cron sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// 0: everything done.
    Success = 0,
    /// 1: the run finished, but some issues failed (they are reported and retried).
    IssueErrors = 1,
    /// 2: usage or configuration error; nothing was done.
    Usage = 2,
    /// 3: the run stopped on a site-level error (exchange or tracker unreachable,
    /// disk full); nothing half-written, the next run resumes.
    Failed = 3,
    /// 75 (EX_TEMPFAIL): another run of this site holds the lock; try later.
    Locked = 75,
}

/// ferry: offline issue sync between trackers, through files and git.
#[derive(Debug, Parser)]
#[command(name = "ferry", version = VERSION, about, long_about = None)]
pub struct Cli {
    /// The site folder (holding ferry.yaml); defaults to the current folder.
    #[arg(long, global = true, value_name = "DIR", env = "FERRY_DIR")]
    dir: Option<PathBuf>,
    /// Print nothing but errors (for cron: a run that prints is a run to read).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Log what ferry does on stderr: -v steps, -vv details (FERRY_LOG, a
    /// tracing filter such as `ferry=debug`, takes precedence).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Also append the log to FILE (at least each step, like -v), for log
    /// shippers; one JSON object per line with --log-json.
    #[arg(long, global = true, value_name = "FILE", env = "FERRY_LOG_FILE")]
    log_file: Option<PathBuf>,
    /// Write --log-file as JSON lines.
    #[arg(long, global = true, requires = "log_file")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Init(init::InitArgs),
    #[command(subcommand)]
    Connection(connection::ConnectionCommand),
    #[command(subcommand)]
    Key(key::KeyCommand),
    Tracker(tracker::TrackerArgs),
    Sync(steps::SyncArgs),
    Export(steps::ExportArgs),
    Import(steps::ImportArgs),
    Push(steps::PushArgs),
    Pull(steps::PullArgs),
    #[command(subcommand)]
    Bundle(bundle::BundleCommand),
    Review(review::ReviewArgs),
    Release(release::ReleaseArgs),
    #[command(subcommand)]
    Rules(rules::RulesCommand),
    Relink(relink::RelinkArgs),
    Share(share::ShareArgs),
    Unshare(share::UnshareArgs),
    Status(status::StatusArgs),
    Errors(errors::ErrorsArgs),
    Retry(errors::RetryArgs),
    Resolve(errors::ResolveArgs),
    #[command(subcommand)]
    Site(site::SiteCommand),
    #[command(subcommand)]
    Notify(notify::NotifyCommand),
    Doctor(doctor::DoctorArgs),
    Maintenance(maintenance::MaintenanceArgs),
    Demo(demo::DemoArgs),
    Bench(bench::BenchArgs),
    Completions(generate::CompletionsArgs),
    Man(generate::ManArgs),
}

/// What every command gets: the site folder and where to write.
pub struct Ctx<'a> {
    /// The site folder.
    pub dir: PathBuf,
    /// Standard output (tests pass a buffer), escaping what could drive a
    /// terminal; `out.raw()` for `--json`.
    pub out: terminal::Human<'a>,
    /// How much of a run's per-issue lines to print (all with `-v`).
    pub listing: report::Listing,
}

/// The version and the commit it was built from (`-V`).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("FERRY_COMMIT"),
    ")"
);

/// `--version`: [`VERSION`] and the optional parts this build has, as the linked
/// libraries report them, so an operator can tell two sites' builds apart (a
/// libgit2 without SSH cannot use an `ssh://` channel).
fn long_version() -> String {
    let git = git2::Version::get();
    let (major, minor, patch) = git.libgit2_version();
    let mut transports: Vec<&str> = Vec::new();
    if git.ssh() {
        transports.push("ssh");
    }
    if git.https() {
        transports.push("https");
    }
    let transports = if transports.is_empty() {
        "no ssh or https".to_string()
    } else {
        transports.join(", ")
    };
    format!(
        "{VERSION}\n\
         libgit2 {major}.{minor}.{patch} ({}): {transports}\n\
         SQLite {} (bundled)\n\
         SMTP over rustls; bundles sealed with age",
        if git.vendored() { "bundled" } else { "system" },
        rusqlite::version(),
    )
}

/// Parses the command line, runs the command, prints errors and maps the outcome
/// to an exit code.
pub fn run() -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let parsed = Cli::command()
        .long_version(long_version())
        .try_get_matches()
        .and_then(|matches| Cli::from_arg_matches(&matches));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                ExitStatus::Usage as u8
            } else {
                0
            });
        }
    };
    if let Err(e) = init_tracing(&cli) {
        eprintln!("error: {}", crate::words::error_chain(&e));
        return ExitCode::from(ExitStatus::Usage as u8);
    }
    if cli.quiet {
        crate::progress::hide();
    }
    let dir = cli.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let stdout = std::io::stdout();
    let mut out: Box<dyn Write> = if cli.quiet {
        Box::new(std::io::sink())
    } else {
        Box::new(stdout.lock())
    };
    let mut ctx = Ctx {
        dir,
        out: terminal::Human::new(&mut *out),
        listing: if cli.verbose > 0 {
            report::Listing::All
        } else {
            report::Listing::DEFAULT
        },
    };
    let status = match dispatch(cli.command, &mut ctx) {
        Ok(status) => {
            tracing::info!(target: RUN_OUTCOME, exit = status as u8, "done");
            status
        }
        // A reader that went away (`ferry list | head`) is not a failure of the run,
        // whose work is done and recorded by then; stop quietly like ripgrep does.
        Err(err) if is_broken_pipe(&err) => ExitStatus::Success,
        Err(err) => {
            let _ = ctx.out.flush();
            eprintln!(
                "error: {}",
                terminal::escaped(&crate::words::error_chain(&err))
            );
            if let Some(advice) = full_disk_advice(&ctx.dir) {
                eprintln!("hint: {}", terminal::escaped(&advice));
            }
            let status = classify(&err);
            // For --log-file only: stderr already has it, worded for people.
            tracing::error!(
                target: RUN_OUTCOME,
                exit = status as u8,
                "{}",
                crate::words::error_chain(&err)
            );
            status
        }
    };
    let _ = ctx.out.flush();
    ExitCode::from(status as u8)
}

/// [`run_in`] for a command that must succeed: panics naming the command and
/// what it printed otherwise, and returns what it printed.
#[cfg(test)]
pub(crate) fn run_ok(dir: &std::path::Path, args: &[&str]) -> String {
    let mut out = Vec::new();
    let status = run_in(dir, args, &mut out)
        .unwrap_or_else(|e| panic!("ferry {args:?} in {}: {e:#}", dir.display()));
    let out = String::from_utf8(out).unwrap();
    assert_eq!(status, ExitStatus::Success, "ferry {args:?}: {out}");
    out
}

/// Runs one command as `ferry ARGS` in `dir` would, inside the calling process:
/// for library tests that drive whole sites against an in-process fake server
/// (the Jira connector's), which the integration tests' child processes cannot
/// reach.
#[cfg(test)]
pub(crate) fn run_in(
    dir: &std::path::Path,
    args: &[&str],
    out: &mut dyn Write,
) -> anyhow::Result<ExitStatus> {
    let cli = Cli::try_parse_from(std::iter::once("ferry").chain(args.iter().copied()))?;
    let mut ctx = Ctx {
        dir: dir.to_path_buf(),
        out: terminal::Human::new(out),
        listing: report::Listing::DEFAULT,
    };
    dispatch(cli.command, &mut ctx)
}

/// The tracing target of a run's outcome, logged to `--log-file` only.
const RUN_OUTCOME: &str = "ferry_run";

fn dispatch(command: Command, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    match command {
        Command::Init(args) => init::run(args, ctx),
        Command::Connection(cmd) => connection::run(cmd, ctx),
        Command::Key(cmd) => key::run(cmd, ctx),
        Command::Tracker(args) => tracker::run(args, ctx),
        Command::Sync(args) => steps::sync(args, ctx),
        Command::Export(args) => steps::export(args, ctx),
        Command::Import(args) => steps::import(args, ctx),
        Command::Push(args) => steps::push(args, ctx),
        Command::Pull(args) => steps::pull(args, ctx),
        Command::Bundle(cmd) => bundle::run(cmd, ctx),
        Command::Review(args) => review::run(args, ctx),
        Command::Release(args) => release::run(args, ctx),
        Command::Rules(cmd) => rules::run(cmd, ctx),
        Command::Relink(args) => relink::run(args, ctx),
        Command::Share(args) => share::share(args, ctx),
        Command::Unshare(args) => share::unshare(args, ctx),
        Command::Status(args) => status::run(args, ctx),
        Command::Errors(args) => errors::run(args, ctx),
        Command::Retry(args) => errors::retry(args, ctx),
        Command::Resolve(args) => errors::resolve(args, ctx),
        Command::Site(cmd) => site::run(cmd, ctx),
        Command::Notify(cmd) => notify::run(cmd, ctx),
        Command::Doctor(args) => doctor::run(args, ctx),
        Command::Maintenance(args) => maintenance::run(args, ctx),
        Command::Demo(args) => demo::run(args, ctx),
        Command::Bench(args) => bench::run(args, ctx),
        Command::Completions(args) => generate::completions(args, ctx),
        Command::Man(args) => generate::man(args, ctx),
    }
}

/// Who is acting at the terminal, for the record: `$FERRY_USER`, else `$USER`,
/// else `admin`.
fn operator() -> String {
    ["FERRY_USER", "USER"]
        .iter()
        .find_map(|var| std::env::var(var).ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "admin".into())
}

/// Usage errors are raised with this type so they exit 2 like configuration errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn classify(err: &anyhow::Error) -> ExitStatus {
    for cause in err.chain() {
        if cause.is::<LockError>() {
            return ExitStatus::Locked;
        }
        if cause.is::<ConfigError>() || cause.is::<UsageError>() || cause.is::<KeyError>() {
            return ExitStatus::Usage;
        }
        // A `state:` that names no folder is a setting to fix, like a bad config.
        if matches!(
            cause.downcast_ref::<crate::site::StateError>(),
            Some(crate::site::StateError::MissingFolder { .. })
        ) {
            return ExitStatus::Usage;
        }
        // Not a failure that goes away by itself like exit 3: like issue errors,
        // it waits for an operator (`ferry site confirm`).
        if matches!(
            cause.downcast_ref::<crate::identity::IdentityError>(),
            Some(crate::identity::IdentityError::Mismatch { .. })
        ) {
            return ExitStatus::IssueErrors;
        }
    }
    ExitStatus::Failed
}

/// Advice when the disk under the site's state is full: what failed then reads
/// like damage, and the operator should free space, not restore anything.
fn full_disk_advice(dir: &std::path::Path) -> Option<String> {
    let state = Config::load(dir)
        .map(|c| c.state_dir())
        .unwrap_or_else(|_| dir.to_path_buf());
    crate::disk::full_disk_advice(&state)
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Logs to stderr at the level `-q`/`-v` ask for (or `FERRY_LOG`), and with
/// `--log-file` also to that file, appending, at least at info level.
/// The HTTP client's byte dumps (`ureq_proto::util`, at trace level) show every
/// header it sends, API keys included; they never reach a log, whatever
/// `FERRY_LOG` asks for.
const WIRE_DUMP_OFF: &str = "ureq_proto::util=off";

fn init_tracing(cli: &Cli) -> anyhow::Result<()> {
    use anyhow::Context;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};

    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let stderr_filter = EnvFilter::try_from_env("FERRY_LOG")
        .unwrap_or_else(|_| EnvFilter::new(level))
        .add_directive(format!("{RUN_OUTCOME}=off").parse()?)
        .add_directive(WIRE_DUMP_OFF.parse()?);
    // No colour codes in what cron mails or a pipe stores.
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(|| terminal::LogRecord::new(std::io::stderr()))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .with_filter(stderr_filter);
    let file = match &cli.log_file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open the log file {}", path.display()))?;
            let file_level = if cli.verbose >= 2 { "debug" } else { "info" };
            let file_filter = EnvFilter::try_from_env("FERRY_LOG")
                .unwrap_or_else(|_| EnvFilter::new(file_level))
                .add_directive(WIRE_DUMP_OFF.parse()?);
            let layer = tracing_subscriber::fmt::layer()
                .with_writer(std::sync::Mutex::new(file))
                .with_ansi(false)
                .with_target(false);
            Some(if cli.log_json {
                layer.json().with_filter(file_filter).boxed()
            } else {
                layer.with_filter(file_filter).boxed()
            })
        }
        None => None,
    };
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(file)
        .try_init();
    Ok(())
}

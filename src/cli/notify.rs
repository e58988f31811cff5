//! `ferry notify ...`: e-mail notifications of new errors.
//!
//! `setup` writes `notify.yaml` beside `ferry.yaml` (never `ferry.yaml` itself, so
//! an admin's comments there survive); `test` sends a message now and prints the
//! server's answer, so a wrong port or password shows up at set-up time rather
//! than on the first failing night.

use std::io::Write;

use super::{Ctx, ExitStatus, UsageError};
use crate::config::{CONFIG_FILE, Config, NOTIFY_FILE, write_atomic};
use crate::failure::Level;
use crate::notify::{self, NotifyConfig, NotifySettings, RecipientSettings};

/// E-mail notifications of new errors (settings in notify.yaml).
#[derive(Debug, clap::Subcommand)]
pub enum NotifyCommand {
    /// Write notify.yaml: the mail server, the sender and the recipients.
    Setup(SetupArgs),
    /// Send a test message to every recipient now and print the server's answer.
    Test,
}

/// Write notify.yaml.
///
/// Credentials are never written: set FERRY_SMTP_USER and FERRY_SMTP_PASSWORD in
/// the environment of the runs (cron) when the server wants a login. For one
/// recipient per level set, run setup once and add entries under `to:` by hand.
#[derive(Debug, clap::Args)]
pub struct SetupArgs {
    /// The mail server: smtp://HOST[:PORT] (upgrades with STARTTLS when the server
    /// offers it; port 25 by default) or smtps://HOST[:PORT] (implicit TLS; 465).
    #[arg(long)]
    url: String,
    /// The sender address, e.g. 'ferry <ferry@example.com>'.
    #[arg(long, value_name = "ADDR")]
    from: String,
    /// A recipient (repeat for several; they all get the levels below).
    #[arg(long = "to", value_name = "ADDR", required = true)]
    to: Vec<String>,
    /// An error level the recipients hear about (repeat; every level when omitted).
    #[arg(long = "level", value_enum)]
    levels: Vec<Level>,
    /// PEM file of the CA that signed the mail server's certificate (an internal
    /// server with a private CA), relative to the site folder; trusted in
    /// addition to the public roots.
    #[arg(long, value_name = "PEM")]
    ca_file: Option<std::path::PathBuf>,
    /// Replace an existing notify.yaml.
    #[arg(long)]
    force: bool,
}

/// Runs a notify subcommand.
pub fn run(cmd: NotifyCommand, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    match cmd {
        NotifyCommand::Setup(args) => setup(args, ctx),
        NotifyCommand::Test => test(ctx),
    }
}

const HEADER: &str = "\
# notify.yaml: e-mail notifications of new errors, sent after each `ferry sync`.
# `ferry notify setup` wrote it; it is yours to edit (setup replaces it only with
# --force). Credentials are never stored here: set FERRY_SMTP_USER and
# FERRY_SMTP_PASSWORD in the environment when the server wants a login.
# url: smtp://HOST[:PORT] (STARTTLS when offered) or smtps://HOST[:PORT] (TLS).
# levels: issue, connection, site, node (every level when omitted).
";

fn setup(args: SetupArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    if !ctx.dir.join(CONFIG_FILE).is_file() {
        return Err(UsageError(format!(
            "{} has no {CONFIG_FILE}; run `ferry init` first or pass --dir",
            ctx.dir.display()
        ))
        .into());
    }
    let file = ctx.dir.join(NOTIFY_FILE);
    if file.exists() && !args.force {
        return Err(UsageError(format!(
            "{} exists; edit it, or pass --force to replace it",
            file.display()
        ))
        .into());
    }
    let levels = if args.levels.is_empty() {
        Level::ALL.to_vec()
    } else {
        args.levels
    };
    let settings = NotifySettings {
        url: args.url,
        from: args.from,
        to: args
            .to
            .into_iter()
            .map(|address| RecipientSettings {
                address,
                levels: levels.clone(),
            })
            .collect(),
        resend_window_minutes: crate::notify::DEFAULT_RESEND_WINDOW_MINUTES,
        ca_file: args.ca_file,
    };
    // Refused before it is written, with the same message a hand edit would get.
    NotifyConfig::check(&file, &settings)?;
    let yaml = serde_yaml::to_string(&settings)?;
    write_atomic(&file, format!("{HEADER}{yaml}").as_bytes())?;
    writeln!(
        ctx.out,
        "wrote {}; try it with `ferry notify test`",
        file.display()
    )?;
    Ok(ExitStatus::Success)
}

fn test(ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    let config = Config::load(&ctx.dir)?;
    let Some(notify) = &config.notify else {
        return Err(UsageError(format!(
            "no {NOTIFY_FILE} in {}; write one with `ferry notify setup`",
            ctx.dir.display()
        ))
        .into());
    };
    let answer = notify::send_test(notify, config.site_name())?;
    writeln!(ctx.out, "{}: {answer}", notify.server)?;
    Ok(ExitStatus::Success)
}

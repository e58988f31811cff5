//! `ferry init`: scaffold a site folder.

use super::{Ctx, ExitStatus, UsageError};
use crate::config::{CONFIG_FILE, Config};
use crate::replica::is_plain_name;
use crate::site::{Site, ensure_signing_key, scaffold};

/// Create a site: ferry.yaml, default rule scripts and the state folder.
///
/// Files that already exist are kept as they are, so re-running init is safe.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// This site's name (letters, digits, '-', '_', '.').
    #[arg(long)]
    site: String,
    /// The tracker connector.
    #[arg(long, value_enum, default_value = "local")]
    tracker: TrackerKind,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum TrackerKind {
    /// The embedded SQLite tracker.
    Local,
}

/// Runs `ferry init`.
pub fn run(args: InitArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    let TrackerKind::Local = args.tracker;
    if !is_plain_name(&args.site) {
        return Err(UsageError(format!(
            "{:?} is not a valid site name: use letters, digits, '-', '_' and '.'",
            args.site
        ))
        .into());
    }
    let dir = ctx.dir.clone();
    for (path, created) in scaffold(&dir, &args.site)? {
        writeln!(
            ctx.out,
            "{} {path}",
            if created { "created" } else { "kept   " }
        )?;
    }
    let config = Config::load(&dir)?;
    if config.site_name() != args.site {
        writeln!(
            ctx.out,
            "note: {CONFIG_FILE} already names this site {:?}; it was kept",
            config.site_name()
        )?;
    }
    let (key, created) = ensure_signing_key(&config)?;
    writeln!(
        ctx.out,
        "{} signing key {}",
        if created { "created" } else { "kept   " },
        key.path().display()
    )?;
    // Opening the site creates the ledger, the exchange clone and the tracker.
    drop(Site::open(&dir)?);
    writeln!(
        ctx.out,
        "site {} ready in {}\n\
         next: ferry connection add PEER --channel URL --project LOCAL=REMOTE\n\
         then give PEER this site's public key (`ferry key show`) and trust theirs\n\
         with `ferry connection trust PEER KEY`",
        config.site_name(),
        dir.display()
    )?;
    Ok(ExitStatus::Success)
}

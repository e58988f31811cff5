//! `ferry init`: scaffold a site folder.

use anyhow::Context;

use super::{Ctx, ExitStatus, UsageError};
use crate::config::{CONFIG_FILE, Config, TrackerConfig, write_atomic};
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
    /// Redmine: the server's base URL.
    #[arg(long, required_if_eq("tracker", "redmine"))]
    url: Option<String>,
    /// Redmine: the identifier of the project this site shares.
    #[arg(long, required_if_eq("tracker", "redmine"))]
    project: Option<String>,
    /// Redmine: a file holding the API key (relative to the site folder);
    /// without it the key comes from FERRY_REDMINE_API_KEY.
    #[arg(long)]
    api_key_file: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum TrackerKind {
    /// The embedded SQLite tracker.
    Local,
    /// A Redmine server (REST API).
    Redmine,
}

impl TrackerKind {
    fn name(self) -> &'static str {
        match self {
            TrackerKind::Local => "local",
            TrackerKind::Redmine => "redmine",
        }
    }
}

/// The scaffold's tracker section, which `--tracker redmine` replaces.
const LOCAL_TRACKER: &str =
    "  # `local` is the embedded tracker (a SQLite file); see `ferry tracker --help`.
  kind: local
  path: tracker.db
";

/// The tracker section for a Redmine site. Values are written as JSON strings,
/// which YAML reads as they are whatever they contain.
fn redmine_section(args: &InitArgs) -> String {
    let quote =
        |s: &Option<String>| serde_json::to_string(s.as_deref().unwrap_or("")).unwrap_or_default();
    let mut section = format!(
        "  # Redmine's REST API (docs/redmine.md). The API key comes from the key file\n  \
         # named here or from FERRY_REDMINE_API_KEY, never from this file.\n  \
         kind: redmine\n  url: {}\n  project: {}\n",
        quote(&args.url),
        quote(&args.project)
    );
    if args.api_key_file.is_some() {
        section.push_str(&format!("  api_key_file: {}\n", quote(&args.api_key_file)));
    }
    section
}

/// Runs `ferry init`.
pub fn run(args: InitArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    if !is_plain_name(&args.site) {
        return Err(UsageError(format!(
            "{:?} is not a valid site name: use letters, digits, '-', '_' and '.'",
            args.site
        ))
        .into());
    }
    let dir = ctx.dir.clone();
    for (path, created) in scaffold(&dir, &args.site)? {
        if created && path == CONFIG_FILE && matches!(args.tracker, TrackerKind::Redmine) {
            let file = dir.join(CONFIG_FILE);
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            write_atomic(
                &file,
                text.replace(LOCAL_TRACKER, &redmine_section(&args))
                    .as_bytes(),
            )?;
        }
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
    let kept = match config.site.tracker {
        TrackerConfig::Local { .. } => TrackerKind::Local,
        TrackerConfig::Redmine { .. } => TrackerKind::Redmine,
    };
    if kept != args.tracker {
        writeln!(
            ctx.out,
            "note: {CONFIG_FILE} already configures the {} tracker; it was kept",
            kept.name()
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

//! `ferry init`: scaffold a site folder.

use std::io::Write;

use super::{Ctx, ExitStatus, UsageError};
use std::collections::BTreeMap;

use anyhow::Context;

use crate::config::{CONFIG_FILE, Config, TrackerConfig, write_atomic};
use crate::replica::is_plain_name;
use crate::site::{LOCAL_TRACKER_YAML, Missing, Site, ensure_signing_key, scaffold};
use crate::tracker::jira::{
    ENV_API_TOKEN, ENV_EMAIL, ENV_PAT, Flavour, InternalComments, JiraConfig,
};
use crate::tracker::{DEFAULT_CONCURRENCY, Needs, TrackerError};

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
    /// Redmine or Jira: the server's base URL.
    #[arg(long, required_if_eq_any([("tracker", "redmine"), ("tracker", "jira")]))]
    url: Option<String>,
    /// Jira: cloud (REST v3, e-mail + API token) or datacenter (REST v2, personal
    /// access token).
    #[arg(long, value_enum, required_if_eq("tracker", "jira"))]
    flavour: Option<Flavour>,
    /// Redmine: the project identifier; Jira: the project key whose issues sync sees.
    #[arg(long, required_if_eq_any([("tracker", "redmine"), ("tracker", "jira")]))]
    project: Option<String>,
    /// Redmine: a file holding the API key (relative to the site folder);
    /// without it the key comes from FERRY_REDMINE_API_KEY.
    #[arg(long)]
    api_key_file: Option<String>,
    /// Jira: a file holding the API token (Cloud) or personal access token (Data
    /// Center), first line, relative to the site folder; the environment wins.
    #[arg(long, value_name = "FILE")]
    token_file: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum TrackerKind {
    /// The embedded SQLite tracker.
    Local,
    /// A Redmine server (REST API).
    Redmine,
    /// A Jira Cloud or Data Center project.
    Jira,
}

impl TrackerKind {
    fn name(self) -> &'static str {
        match self {
            TrackerKind::Local => "local",
            TrackerKind::Redmine => "redmine",
            TrackerKind::Jira => "jira",
        }
    }
}

/// The `tracker:` block for a Redmine site. Values are written as JSON strings,
/// which YAML reads as they are whatever they contain.
fn redmine_yaml(args: &InitArgs) -> String {
    let quote =
        |s: &Option<String>| serde_json::to_string(s.as_deref().unwrap_or("")).unwrap_or_default();
    let mut section = format!(
        "  # Redmine's REST API (docs/redmine.md). The API key comes from the key file\n  \
         # named here or from FERRY_REDMINE_API_KEY, never from this file.\n  \
         kind: redmine\n  url: {}\n  project: {}",
        quote(&args.url),
        quote(&args.project)
    );
    if args.api_key_file.is_some() {
        section.push_str(&format!("\n  api_key_file: {}", quote(&args.api_key_file)));
    }
    section
}

/// The `tracker:` block `ferry.yaml` starts with.
fn tracker_yaml(args: &InitArgs) -> Result<String, UsageError> {
    match args.tracker {
        TrackerKind::Local => return Ok(LOCAL_TRACKER_YAML.into()),
        TrackerKind::Redmine => return Ok(redmine_yaml(args)),
        TrackerKind::Jira => {}
    }
    let (Some(url), Some(flavour), Some(project)) = (&args.url, args.flavour, &args.project) else {
        return Err(UsageError(
            "--tracker jira needs --url, --flavour and --project".into(),
        ));
    };
    // The checks `ferry.yaml` gets at every load, before anything is written.
    JiraConfig {
        url: url.clone(),
        flavour,
        project: project.clone(),
        jql: String::new(),
        fields: Vec::new(),
        default_type: String::new(),
        internal_comments: InternalComments::default(),
        token_file: None,
        transition_fields: BTreeMap::new(),
        concurrency: DEFAULT_CONCURRENCY,
        email: None,
    }
    .check()
    .map_err(|e| UsageError(format!("{e} (from --url and --project)")))?;
    // JSON strings are YAML strings: no quoting rules to get wrong.
    let quote = |s: &str| serde_json::Value::from(s).to_string();
    let (flavour, secrets, token) = match flavour {
        Flavour::Cloud => (
            "cloud",
            format!("{ENV_EMAIL} and {ENV_API_TOKEN}"),
            "API token",
        ),
        Flavour::Datacenter => ("datacenter", ENV_PAT.to_string(), "personal access token"),
    };
    let token_file = match &args.token_file {
        Some(file) => format!("\n  token_file: {}", quote(file)),
        None => "\n  # token_file: jira.token".into(),
    };
    let email = match flavour {
        "cloud" => {
            "\n  # The account's e-mail, when not in the environment (not a secret):\n  \
                    # email: ferry@example.com"
        }
        _ => "",
    };
    Ok(format!(
        "  # A Jira project. Credentials come from the environment ({secrets}),
  # or from the file token_file names (first line: the {token}, relative to
  # this folder; the environment wins); never from this file. See docs/jira.md.
  kind: jira
  url: {}
  flavour: {flavour}
  project: {}{token_file}{email}
  # Extra JQL ANDed with the project (no ORDER BY):
  # jql: component = Printers
  # Further fields sync carries, by their Jira name:
  # fields: [Severity, Fix versions]
  # Issue type of created issues that name none:
  # default_type: Task
  # How internal comments are restricted (role, group, or servicedesk):
  # internal_comments: {{type: role, value: Administrators}}
  # Values for fields a workflow transition requires when the incoming rule
  # gives none (a done status usually needs a Resolution):
  # transition_fields: {{Resolution: Done}}
  # Requests about single issues run at once (comment lists):
  # concurrency: 4",
        quote(url),
        quote(project)
    ))
}

/// The incoming rule `init` scaffolds.
const INCOMING_RULE: &str = "rules/incoming.rhai";

/// The status map of the incoming rule template, which names statuses a Jira
/// project may not have.
const TEMPLATE_STATUS_MAP: &str = "let statuses = #{ \"Open\": \"Open\", \"In Progress\": \
     \"In Progress\", \"Resolved\": \"Resolved\", \"Closed\": \"Closed\" };";

/// `rule` with the template's status map replaced by one from each of
/// `statuses` to itself (a peer with the same names needs no edit; another
/// one's names go on the left); `None` when the rule no longer has the
/// template's map.
fn tracker_status_map(rule: &str, statuses: &[String]) -> Option<String> {
    if !rule.contains(TEMPLATE_STATUS_MAP) {
        return None;
    }
    // A JSON string is a rhai string literal: quotes and backslashes escaped.
    let quote = |s: &str| serde_json::Value::from(s).to_string();
    let pairs: Vec<String> = statuses
        .iter()
        .map(|s| format!("{}: {}", quote(s), quote(s)))
        .collect();
    let map = format!(
        "// This tracker's statuses, as `ferry init` found them: {}.\n\
         let statuses = #{{ {} }};",
        statuses.join(", "),
        pairs.join(", ")
    );
    Some(rule.replacen(TEMPLATE_STATUS_MAP, &map, 1))
}

/// Runs `ferry init`.
pub fn run(args: InitArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    let tracker = tracker_yaml(&args)?;
    if !is_plain_name(&args.site) {
        return Err(UsageError(format!(
            "{:?} is not a valid site name: use letters, digits, '-', '_' and '.'",
            args.site
        ))
        .into());
    }
    let dir = ctx.dir.clone();
    for (path, created) in scaffold(&dir, &args.site, &tracker)? {
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
        TrackerConfig::Redmine(_) => TrackerKind::Redmine,
        TrackerConfig::Jira(_) => TrackerKind::Jira,
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
    let site = Site::open_with(&dir, Missing::Create)?;
    // A new site soon imports; whether a rule deletes is `ferry doctor`'s to say.
    let needs = Needs {
        import: true,
        delete: false,
    };
    let mut failed = Vec::new();
    for probe in site.tracker.preflight(needs) {
        match probe.outcome {
            Ok(detail) => writeln!(ctx.out, "ok   {}: {detail}", probe.name)?,
            Err((problem, fix)) => failed.push(format!("{}: {problem}\n  → {fix}", probe.name)),
        }
    }
    if !failed.is_empty() {
        // The files stay: fix the setting or the account, and run init again.
        return Err(TrackerError::Unavailable(failed.join("\n")).into());
    }
    if let Some(statuses) = site.tracker.statuses()?
        && !statuses.is_empty()
    {
        let rule = dir.join(INCOMING_RULE);
        let text = std::fs::read_to_string(&rule)
            .with_context(|| format!("cannot read {}", rule.display()))?;
        // Only the template's map is replaced: one someone wrote stays theirs.
        if let Some(text) = tracker_status_map(&text, &statuses) {
            write_atomic(&rule, text.as_bytes())?;
            writeln!(
                ctx.out,
                "status map in {INCOMING_RULE}: this tracker's statuses {}; \
                 put the peer's name for each on the left",
                statuses.join(", ")
            )?;
        }
    }
    drop(site);
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

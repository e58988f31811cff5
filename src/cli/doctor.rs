//! `ferry doctor`: everything a run needs, checked one by one, each failure with
//! what to do about it. For a new site, a moved site, and the morning after cron
//! mailed an error.
//!
//! Nothing is changed: no lock taken, no ref moved, nothing pushed or sent (the
//! mail server and the channels are connected to and left).

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use super::{Ctx, ExitStatus};
use crate::config::Config;
use crate::engine::load_rule;
use crate::exchange::{Exchange, own_branch};
use crate::maintenance;
use crate::replica::Format;
use crate::signing::{SignaturePolicy, SiteKey};
use crate::site::{EXCHANGE_DIR, LEDGER_FILE, Missing, open_ledger, open_tracker, state_folder};
use crate::tracker::Needs;
use crate::transport::{TransportError, open_channel};

/// Check everything a sync needs, one line per check with what to do when it
/// fails: configuration, rule scripts, signing key, trusted peer keys, tracker
/// (for Jira also the account, the project and each permission sync needs),
/// channels (fetch, and push permission), mail server, ledger, disk space.
///
/// Exit status 1 when a check fails. Nothing is changed or sent.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Print a JSON array of checks: name, ok, detail, fix.
    #[arg(long)]
    json: bool,
    /// Free space the state folder's disk must have, in MiB.
    #[arg(long, default_value_t = 100, value_name = "MIB")]
    min_free_mib: u64,
}

/// One check's outcome.
#[derive(Debug, Serialize)]
struct Check {
    name: String,
    ok: bool,
    /// Passed, but something needs a look (it does not fail the run).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    warning: bool,
    detail: String,
    /// What to do, when it failed or warns.
    fix: Option<String>,
}

struct Checks(Vec<Check>);

impl Checks {
    fn pass(&mut self, name: impl Into<String>, detail: impl Into<String>) {
        self.0.push(Check {
            name: name.into(),
            ok: true,
            warning: false,
            detail: detail.into(),
            fix: None,
        });
    }

    fn warn(&mut self, name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) {
        self.0.push(Check {
            name: name.into(),
            ok: true,
            warning: true,
            detail: detail.into(),
            fix: Some(fix.into()),
        });
    }

    fn fail(&mut self, name: impl Into<String>, detail: impl ToString, fix: impl Into<String>) {
        self.0.push(Check {
            name: name.into(),
            ok: false,
            warning: false,
            detail: detail.to_string(),
            fix: Some(fix.into()),
        });
    }
}

/// Runs `ferry doctor`.
pub fn run(args: DoctorArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    let mut checks = Checks(Vec::new());
    diagnose(&ctx.dir, args.min_free_mib, &mut checks);
    let failed = checks.0.iter().any(|c| !c.ok);
    if args.json {
        writeln!(
            ctx.out.raw(),
            "{}",
            serde_json::to_string_pretty(&checks.0)?
        )?;
    } else {
        for c in &checks.0 {
            writeln!(
                ctx.out,
                "{} {}: {}",
                match (c.ok, c.warning) {
                    (false, _) => "FAIL",
                    (true, true) => "WARN",
                    (true, false) => "ok  ",
                },
                c.name,
                c.detail
            )?;
            if let Some(fix) = &c.fix {
                writeln!(ctx.out, "     → {fix}")?;
            }
        }
    }
    Ok(if failed {
        ExitStatus::IssueErrors
    } else {
        ExitStatus::Success
    })
}

/// What the site's connections ask of the tracker. A site without connections
/// yet is taken to import, as a new site soon will.
fn needs(config: &Config) -> Needs {
    let importing: Vec<_> = config
        .connections
        .values()
        .filter(|c| c.settings.direction.imports())
        .collect();
    Needs {
        import: config.connections.is_empty() || !importing.is_empty(),
        delete: importing
            .iter()
            .any(|c| may_delete(&config.resolve(&c.settings.incoming))),
    }
}

/// Whether an incoming rule script sets `delete_issue = true` outside a
/// comment: then the tracker account needs the right to delete. Read as text,
/// since whether it does depends on the replicas it will see.
fn may_delete(script: &Path) -> bool {
    std::fs::read_to_string(script).is_ok_and(|text| {
        text.lines().any(|line| {
            let code = line.split("//").next().unwrap_or_default();
            let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
            code.contains("delete_issue=true")
        })
    })
}

/// Which exchange format this site writes for `peer`, and why: a peer on an
/// older ferry holds the pair on the older format (see docs/reference.md,
/// "Exchange formats").
fn format_check(exchange: &Exchange, site: &str, peer: &str, checks: &mut Checks) {
    let name = format!("format {peer}");
    let own = Format::own();
    let layout = exchange
        .resolve(&own_branch(site, peer))
        .and_then(|head| head.map(|head| exchange.layout(head)).transpose());
    match (exchange.peer_format(site, peer), layout) {
        (Ok(Some(announced)), _) if announced < own => checks.warn(
            name,
            format!(
                "{peer} announces that it reads exchange format {announced} only (an older \
                 ferry), so this site writes format {announced} for it: each commit rewrites \
                 the whole tree of every project it touches"
            ),
            format!(
                "upgrade ferry at {peer}; after its next run both branches move to format \
                 {own} on their own"
            ),
        ),
        (Ok(Some(announced)), _) => checks.pass(
            name,
            format!("this site writes exchange format {own} for {peer}, which reads {announced}"),
        ),
        (Ok(None), Ok(Some(Some(layout)))) => checks.pass(
            name,
            format!(
                "{peer} has announced no format (it has written nothing yet); this site keeps \
                 its branch in format {layout}"
            ),
        ),
        (Ok(None), Ok(_)) => checks.pass(
            name,
            format!("{peer} has announced no format yet; this site writes format {own}"),
        ),
        (Err(e), _) | (_, Err(e)) => checks.fail(
            name,
            e,
            "move the exchange clone aside; the next `ferry pull` makes a new one",
        ),
    }
}

fn diagnose(dir: &Path, min_free_mib: u64, checks: &mut Checks) {
    let config = match Config::load(dir) {
        Ok(config) => {
            checks.pass(
                "config",
                format!(
                    "ferry.yaml and {} connection file{} are valid",
                    config.connections.len(),
                    if config.connections.len() == 1 {
                        ""
                    } else {
                        "s"
                    }
                ),
            );
            config
        }
        Err(e) => {
            // Nothing else can be checked without a configuration.
            checks.fail(
                "config",
                e,
                "fix the file named above (`ferry init` scaffolds a site)",
            );
            return;
        }
    };
    let state = match state_folder(&config, Missing::Refuse) {
        Ok(state) => state,
        Err(e) => {
            // Every other check reads or writes the state folder.
            checks.fail(
                "state",
                crate::words::error_chain(&e),
                "fix `state:` in ferry.yaml, or restore the folder (see docs/operations.md, disaster recovery)",
            );
            return;
        }
    };
    // On a full disk SQLite and git report errors that read like damage; the
    // advice for damage (restore, relink) would then be wrong.
    let full_disk = crate::disk::full_disk_advice(&state);
    let or_full = |advice: &str| full_disk.clone().unwrap_or_else(|| advice.to_string());

    let ledger = match open_ledger(&config, Missing::Refuse).and_then(|l| {
        l.quick_check()?;
        Ok(l)
    }) {
        Ok(ledger) => {
            checks.pass(
                "ledger",
                format!("{} is healthy", state.join(LEDGER_FILE).display()),
            );
            Some(ledger)
        }
        Err(e) => {
            checks.fail(
                "ledger",
                crate::words::error_chain(&e),
                or_full(
                    "restore the ledger from a backup, or move it aside and run `ferry relink`",
                ),
            );
            None
        }
    };

    let key = match SiteKey::load(&config.signing_key_path()) {
        Ok(key) => {
            checks.pass(
                "signing key",
                format!(
                    "{} ({})",
                    key.path().display(),
                    key.public_key().fingerprint(Default::default())
                ),
            );
            Some(key)
        }
        Err(e) => {
            checks.fail(
                "signing key",
                e,
                "run `ferry init` in the site folder to create one, or name a key with `signing_key:` in ferry.yaml",
            );
            None
        }
    };

    match open_tracker(&config).and_then(|t| t.instance().map(|i| (t, i))) {
        Ok((tracker, instance)) => {
            checks.pass(
                "tracker",
                format!("{} tracker at {} answers", instance.kind, instance.location),
            );
            for probe in tracker.preflight(needs(&config)) {
                match probe.outcome {
                    Ok(detail) => checks.pass(probe.name, detail),
                    Err((problem, fix)) => checks.fail(probe.name, problem, fix),
                }
            }
        }
        Err(e) => checks.fail(
            "tracker",
            e,
            or_full("check the tracker settings in ferry.yaml and that the tracker is up"),
        ),
    }

    // With the site's key, the channel check tells this site's commits from
    // others on its own branch; nothing is signed.
    let exchange = Exchange::open_or_init(&state.join(EXCHANGE_DIR)).map(|mut exchange| {
        if let Some(key) = key {
            exchange.sign_with(key);
        }
        exchange
    });
    if let Err(e) = &exchange {
        checks.fail(
            "exchange clone",
            e,
            or_full("move the folder aside; the next `ferry pull` makes a new clone"),
        );
    }
    for c in config.connections.values() {
        let peer = &c.peer;
        for (direction, script) in [
            ("incoming", &c.settings.incoming),
            ("outgoing", &c.settings.outgoing),
        ] {
            let name = format!("rules {peer} {direction}");
            match load_rule(&config, script) {
                Ok(_) => checks.pass(name, format!("{} compiles", script.display())),
                Err(e) => checks.fail(
                    name,
                    e,
                    "fix the script; `ferry rules test` tries it on past exchanges",
                ),
            }
        }
        let name = format!("trust {peer}");
        match (c.settings.signatures, c.trust.keys.len()) {
            (SignaturePolicy::Off, _) => {
                checks.pass(name, "signatures off: nothing is checked (labs only)")
            }
            (_, 0) => checks.fail(
                name,
                format!("no key of {peer} is trusted, so nothing from {peer} can be imported"),
                format!(
                    "ask {peer} for `ferry key show` and run `ferry connection trust {peer} KEY`"
                ),
            ),
            (_, n) => checks.pass(
                name,
                format!("{n} key{} of {peer} trusted", if n == 1 { "" } else { "s" }),
            ),
        }
        if let Ok(exchange) = &exchange {
            format_check(exchange, config.site_name(), peer, checks);
            let name = format!("channel {peer}");
            let channel = open_channel(&c.settings.channel, &config.root, &c.trust);
            match channel.check(exchange, config.site_name(), peer, &c.trust) {
                Ok(detail) => checks.pass(name, format!("{}: {detail}", channel.describe())),
                Err(e) => {
                    let fix = match &e {
                        TransportError::ForeignOwnCommit { .. } => format!(
                            "put the channel's branch back to this site's tip, or adopt the \
                             tip if this site made it with an old key: the commands are above; \
                             until then every sync with {peer} stops at its push"
                        ),
                        TransportError::Refused { .. } => format!(
                            "ask {peer} what wrote that commit: this site imports nothing \
                             from {peer} until its branch holds only commits it admits"
                        ),
                        TransportError::PeerBranchGone { .. } => format!(
                            "ask {peer} to run `ferry sync`, which pushes its branch again, or \
                             restore the channel from a backup"
                        ),
                        _ => "check the channel URL in the connection file, the network path \
                              and the credentials"
                            .to_string(),
                    };
                    checks.fail(name, e, fix)
                }
            }
        }
    }

    storage(&config, checks);

    // Bundles waiting for a predecessor, as the last fetch found them: the
    // link is silent though something came.
    for c in config.connections.values() {
        let Some(ledger) = &ledger else {
            break;
        };
        let peer = &c.peer;
        match ledger.waiting(peer) {
            Ok(waiting) if waiting.is_empty() => {}
            Ok(waiting) => checks.warn(
                format!("inbox {peer}"),
                format!(
                    "{} bundle{} from {peer} wait{} for a predecessor that has not arrived: {}",
                    waiting.len(),
                    crate::words::plural(waiting.len()),
                    if waiting.len() == 1 { "s" } else { "" },
                    waiting
                        .iter()
                        .map(|w| format!("{} (needs {}, since {})", w.file, w.needs, w.since))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                format!(
                    "ask {peer} to send the missing bundle again, or a bundle made after what \
                     this site has (`ferry bundle create --after COMMIT` at {peer}, with the \
                     last commit `ferry status` shows as fetched here)"
                ),
            ),
            Err(e) => checks.fail(
                format!("inbox {peer}"),
                e,
                "restore the ledger from a backup, or move it aside and run `ferry relink`",
            ),
        }
    }

    if let Some(notify) = &config.notify {
        match crate::notify::check_server(notify) {
            Ok(true) => checks.pass("mail server", format!("{} accepts connections", notify.server)),
            Ok(false) => checks.fail(
                "mail server",
                format!("{} answered, but not as a working SMTP server", notify.server),
                "check the url in notify.yaml",
            ),
            Err(e) => checks.fail(
                "mail server",
                e,
                "check the url in notify.yaml, the network path, FERRY_SMTP_USER/FERRY_SMTP_PASSWORD and ca_file",
            ),
        }
    }

    match crate::disk::free_mib(&state) {
        Ok(free) if free >= min_free_mib => {
            checks.pass("disk", format!("{free} MiB free for {}", state.display()))
        }
        Ok(free) => checks.fail(
            "disk",
            format!(
                "only {free} MiB free for {} (wanted {min_free_mib})",
                state.display()
            ),
            "free some space: a full disk stops every run (node-level error)",
        ),
        Err(e) => checks.fail(
            "disk",
            format!("cannot measure free space: {e}"),
            "check the state folder exists",
        ),
    }
}

/// The size of the clone and of each folder channel, against the thresholds
/// of automatic maintenance; channels on a server are out of reach.
fn storage(config: &Config, checks: &mut Checks) {
    let settings = &config.site.maintenance;
    for target in crate::site::maintenance_targets(config, |_| true) {
        let name = format!("storage {}", target.describe());
        let Some(dir) = target.dir() else {
            checks.pass(
                name,
                "on a server: ferry cannot see or compact its repository; whoever runs \
                 the server does (`git gc` there, or the hosting's housekeeping)",
            );
            continue;
        };
        if !dir.is_dir() {
            // The channel check above says what is wrong with it.
            continue;
        }
        match maintenance::measure(dir) {
            Ok(storage) if settings.exceeded(&storage) => checks.warn(
                name,
                format!(
                    "{storage}: above the thresholds ({} packs, {} loose objects)",
                    settings.packs, settings.loose_objects
                ),
                if settings.auto {
                    "run `ferry maintenance`; a run that changes something does it by itself, \
                     so if this stays, read the maintenance warnings of the last runs"
                        .to_string()
                } else {
                    "run `ferry maintenance` (`maintenance.auto` is off in ferry.yaml: \
                     schedule it, or turn it back on)"
                        .to_string()
                },
            ),
            Ok(storage) => checks.pass(name, storage.to_string()),
            Err(e) => checks.fail(
                name,
                e,
                "check that the folder is readable by the user running ferry",
            ),
        }
    }
}

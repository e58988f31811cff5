//! `ferry connection ...`: the links of this site to its peers.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use super::{Ctx, ExitStatus, UsageError, operator};
use crate::config::{
    AckRelease, AttachmentSettings, BundleSettings, CONNECTIONS_DIR, ChannelSetting, Config,
    ConnectionFile, DEFAULT_MAX_BUNDLE_BYTES, Direction, ReleaseSettings, ReviewSettings,
    SyncMethod, validate_connection,
};
use crate::ledger::Ledger;
use crate::replica::is_plain_name;
use crate::signing::{SignaturePolicy, add_trusted_key, parse_public_key};
use crate::site::Missing;
use crate::words::plural;

/// Manage the connections to peer sites.
#[derive(Debug, clap::Subcommand)]
pub enum ConnectionCommand {
    /// Add a connection to a peer site (writes connections/PEER.yaml).
    Add(AddArgs),
    /// List the connections.
    List,
    /// Trust a peer's signing key (appends to connections/PEER.allowed_signers).
    Trust(TrustArgs),
    /// Stop a connection: `ferry sync` and the steps skip it (nothing pulled,
    /// imported, exported or pushed) until it is resumed.
    ///
    /// Nothing is lost meanwhile: the tracker keeps its changes and the export
    /// cursor stays where it was; the peer's commits wait in the channel.
    Pause(PeerArg),
    /// Let a paused connection run again; the next sync carries everything that
    /// happened while it was paused.
    Resume(PeerArg),
}

/// Names one connection.
#[derive(Debug, clap::Args)]
pub struct PeerArg {
    /// The peer site's name.
    peer: String,
}

/// Add a connection to a peer site.
#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// The peer site's name (as it named itself in its ferry.yaml).
    peer: String,
    /// The intermediate git repository: a path (relative to the site folder) or any
    /// git URL (file://, git://, ssh://, https://).
    #[arg(long, required_unless_present = "outbox", conflicts_with_all = ["outbox", "inbox"])]
    channel: Option<String>,
    /// Instead of --channel, exchange bundle files: the folder `ferry sync` writes
    /// this site's bundles to (must exist; relative to the site folder).
    #[arg(long, value_name = "DIR", requires = "inbox")]
    outbox: Option<PathBuf>,
    /// With --outbox: the folder the peer's bundles arrive in.
    #[arg(long, value_name = "DIR", requires = "outbox")]
    inbox: Option<PathBuf>,
    /// Project mapping LOCAL=REMOTE (repeat for several projects).
    #[arg(long = "project", value_name = "LOCAL=REMOTE", required = true)]
    projects: Vec<String>,
    /// Which local issues start being shared, e.g.
    /// 'labels = escalate AND status != Closed' (see docs/query.md).
    #[arg(long, default_value = "")]
    query: String,
    /// Which way issues flow.
    #[arg(long, value_enum, default_value = "both")]
    direction: Direction,
    /// When the connection syncs.
    #[arg(long, value_enum, default_value = "auto")]
    method: SyncMethod,
    /// Whether incoming commits must be signed by a key trusted with
    /// `ferry connection trust`; `off` is for labs only.
    #[arg(long, value_enum, default_value = "required")]
    signatures: SignaturePolicy,
    /// Import only what a reviewer approved (`ferry review approve`).
    #[arg(long)]
    review_required: bool,
    /// Send only what a release officer released (`ferry release approve`):
    /// exports are committed here and wait.
    #[arg(long)]
    release_required: bool,
    /// Do not send attachments larger than this many bytes.
    #[arg(long, value_name = "BYTES")]
    max_attachment_bytes: Option<u64>,
    /// Replace an existing connection to this peer.
    #[arg(long)]
    force: bool,
}

/// Trust a peer's signing key: commits from PEER are imported only when signed by
/// a trusted key. Appends to connections/PEER.allowed_signers.
#[derive(Debug, clap::Args)]
pub struct TrustArgs {
    /// The peer site's name.
    peer: String,
    /// The peer's public key: the line `ferry key show` prints at the peer
    /// (`ssh-ed25519 AAAA… ferry@peer`), or the path of a .pub file.
    key: String,
}

/// Runs a connection subcommand.
pub fn run(cmd: ConnectionCommand, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    match cmd {
        ConnectionCommand::Add(args) => add(args, ctx),
        ConnectionCommand::List => list(ctx),
        ConnectionCommand::Pause(args) => pause(args, ctx),
        ConnectionCommand::Resume(args) => resume(args, ctx),
        ConnectionCommand::Trust(args) => trust(args, ctx),
    }
}

/// The ledger of the site, opened without the site lock: pausing must work while a
/// long sync runs (it takes effect at the next run; SQLite serialises the writes).
fn ledger_for(ctx: &Ctx, peer: &str) -> anyhow::Result<Ledger> {
    let config = Config::load(&ctx.dir)?;
    config.connection(peer)?;
    crate::site::open_ledger(&config, Missing::Refuse)
}

fn pause(args: PeerArg, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    let ledger = ledger_for(ctx, &args.peer)?;
    match ledger.pause(&args.peer, &operator())? {
        Some(pause) => writeln!(
            ctx.out,
            "connection to {} was already paused (since {} by {})",
            args.peer, pause.since, pause.by
        )?,
        None => writeln!(
            ctx.out,
            "connection to {} paused; `ferry connection resume {}` lets it flow again",
            args.peer, args.peer
        )?,
    }
    Ok(ExitStatus::Success)
}

fn resume(args: PeerArg, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    let ledger = ledger_for(ctx, &args.peer)?;
    match ledger.resume(&args.peer)? {
        Some(pause) => writeln!(
            ctx.out,
            "connection to {} resumed (paused since {} by {}); the next sync carries \
             everything since",
            args.peer, pause.since, pause.by
        )?,
        None => writeln!(ctx.out, "connection to {} was not paused", args.peer)?,
    }
    Ok(ExitStatus::Success)
}

fn trust(args: TrustArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    let config = Config::load(&ctx.dir)?;
    let connection = config.connection(&args.peer)?;
    let key = parse_public_key(&args.key).map_err(UsageError)?;
    let fingerprint = key.fingerprint(ssh_key::HashAlg::Sha256);
    let file = connection.trust.file.display();
    if add_trusted_key(&connection.trust, &key)? {
        writeln!(
            ctx.out,
            "{} now trusts {fingerprint} for commits from {} ({file})",
            config.site_name(),
            args.peer
        )?;
    } else {
        writeln!(
            ctx.out,
            "{fingerprint} is already trusted for commits from {} ({file})",
            args.peer
        )?;
    }
    if connection.settings.signatures == SignaturePolicy::Off {
        writeln!(
            ctx.out,
            "note: {} has `signatures: off`, so nothing is checked until it is `required`",
            connection.file.display()
        )?;
    }
    Ok(ExitStatus::Success)
}

fn add(args: AddArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    let config = Config::load(&ctx.dir)?;
    if !is_plain_name(&args.peer) {
        return Err(UsageError(format!("{:?} is not a valid peer name", args.peer)).into());
    }
    if args.peer == config.site_name() {
        return Err(UsageError(format!("a site cannot connect to itself ({})", args.peer)).into());
    }
    let mut projects = BTreeMap::new();
    for pair in &args.projects {
        let Some((local, remote)) = pair.split_once('=') else {
            return Err(UsageError(format!(
                "--project {pair:?}: expected LOCAL=REMOTE, e.g. --project SUP=ENG"
            ))
            .into());
        };
        projects.insert(local.trim().to_string(), remote.trim().to_string());
    }
    let file = ctx
        .dir
        .join(CONNECTIONS_DIR)
        .join(format!("{}.yaml", args.peer));
    if file.exists() && !args.force {
        return Err(UsageError(format!(
            "{} exists; edit it, or pass --force to replace it",
            file.display()
        ))
        .into());
    }
    let channel = match (args.channel, args.outbox, args.inbox) {
        (Some(url), _, _) => ChannelSetting::Git(url),
        (None, Some(outbox), Some(inbox)) => ChannelSetting::Bundles(BundleSettings {
            outbox,
            inbox,
            max_bytes: DEFAULT_MAX_BUNDLE_BYTES,
            encrypt: false,
        }),
        _ => {
            return Err(
                UsageError("give --channel URL, or --outbox DIR and --inbox DIR".into()).into(),
            );
        }
    };
    let settings = ConnectionFile {
        channel,
        direction: args.direction,
        method: args.method,
        projects,
        query: args.query,
        outgoing: "rules/outgoing.rhai".into(),
        incoming: "rules/incoming.rhai".into(),
        stale_after_hours: None,
        conflicts: Default::default(),
        review: ReviewSettings {
            required: args.review_required,
        },
        release: ReleaseSettings {
            required: args.release_required,
            acks: AckRelease::Auto,
        },
        signatures: args.signatures,
        attachments: AttachmentSettings {
            max_bytes: args.max_attachment_bytes,
        },
    };
    // Refuse a bad query now, with its position, rather than at 3 a.m.
    validate_connection(&file, &settings)?;
    let text = format!(
        "# Connection of {} to {}, written by `ferry connection add`; edit freely.\n{}",
        config.site_name(),
        args.peer,
        serde_yaml::to_string(&settings)?
    );
    crate::config::write_atomic(&file, text.as_bytes())?;
    writeln!(
        ctx.out,
        "connection {} -> {} added ({})",
        config.site_name(),
        args.peer,
        file.display()
    )?;
    Ok(ExitStatus::Success)
}

fn list(ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    let config = Config::load(&ctx.dir)?;
    if config.connections.is_empty() {
        writeln!(
            ctx.out,
            "no connections; add one with `ferry connection add`"
        )?;
    }
    for c in config.connections.values() {
        let projects: Vec<String> = c
            .settings
            .projects
            .iter()
            .map(|(l, r)| format!("{l}={r}"))
            .collect();
        let trust = match (c.settings.signatures, c.trust.keys.len()) {
            (SignaturePolicy::Off, _) => "signatures off".to_string(),
            (SignaturePolicy::Required, 0) => "trusts no key".to_string(),
            (SignaturePolicy::Required, n) => format!("trusts {n} key{}", plural(n)),
        };
        writeln!(
            ctx.out,
            "{}\t{}\t{:?}/{:?}\t{}\t{}\t{trust}",
            c.peer,
            c.settings.channel,
            c.settings.direction,
            c.settings.method,
            projects.join(","),
            if c.settings.query.is_empty() {
                "(all issues)"
            } else {
                &c.settings.query
            }
        )?;
    }
    Ok(ExitStatus::Success)
}

//! `ferry bundle create`.

use std::io::Write;
use std::path::PathBuf;

use crate::cli::{Ctx, ExitStatus, UsageError};
use crate::config::ChannelSetting;
use crate::site::Site;
use crate::transport::bundle;
use crate::words::{plural, short_id};

/// Write this site's branch for a peer as a git bundle file.
///
/// The bundle holds only the commits the peer has not acknowledged yet (the
/// `ack` in the peer's site.yaml, received with its last import); the first one,
/// or one made with --full, holds the whole branch. Run `ferry export` first: the
/// bundle carries what is exported. `git bundle verify FILE` accepts the result,
/// unless the connection encrypts (`encrypt: true`): then FILE must end in
/// .bundle.age and is the bundle sealed (age) for the peer's trusted keys.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The peer the bundle is for.
    #[arg(long, value_name = "PEER")]
    connection: String,
    /// The bundle file to write (replaced if it exists).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Include the whole branch, not only what the peer has not acknowledged
    /// (when the peer lost its state, or a bundle is missing).
    #[arg(long)]
    full: bool,
    /// Include only what came after COMMIT of the branch, not after the peer's
    /// ack (when the peer is known to have COMMIT, e.g. from an earlier bundle).
    #[arg(long, value_name = "COMMIT", conflicts_with = "full")]
    after: Option<String>,
}

/// Writes the bundle and says what it holds.
pub fn run(args: CreateArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    let site = Site::open(&ctx.dir)?;
    let connection = site.config.connection(&args.connection)?.clone();
    let peer = connection.peer.clone();
    // Behind a release gate, the branch is what was released: bring it up to
    // date as a push would.
    crate::engine::release::settle(&site, &connection)?;
    let plan = match &args.after {
        Some(after) => Some(plan_after(&site, &peer, after)?),
        None => bundle::plan(&site.exchange, site.name(), &peer, args.full)?,
    };
    let Some(plan) = plan else {
        writeln!(
            ctx.out,
            "bundle {peer}: nothing to send, {peer} acknowledged everything up to {}; \
             pass --full for a bundle of the whole branch",
            site.exchange
                .resolve(&crate::exchange::own_branch(site.name(), &peer))?
                .map_or_else(String::new, short_id)
        )?;
        return Ok(ExitStatus::Success);
    };
    let seal_for = match &connection.settings.channel {
        ChannelSetting::Bundles(settings) if settings.encrypt => connection.trust.keys.clone(),
        _ => Vec::new(),
    };
    if !seal_for.is_empty() && !bundle::is_encrypted(&args.out) {
        return Err(UsageError(format!(
            "{} is sealed for {peer} (`encrypt: true` in its connection): name it *{}",
            args.out.display(),
            bundle::ENCRYPTED_SUFFIX
        ))
        .into());
    }
    let bytes = bundle::write(&site.exchange, &plan, &args.out, &seal_for)?;
    let commits = site
        .exchange
        .commits_between(plan.prerequisites.first().copied(), plan.tip)?
        .len();
    let scope = match plan.prerequisites.first() {
        Some(ack) => format!("after {}, which {peer} acknowledged", short_id(*ack)),
        None => "full".to_string(),
    };
    writeln!(
        ctx.out,
        "bundle {peer}: wrote {} ({bytes} bytes, {commits} commit{}, {scope}) up to {}",
        args.out.display(),
        plural(commits),
        short_id(plan.tip)
    )?;
    Ok(ExitStatus::Success)
}

/// The plan of a bundle holding what came after `after` on the branch for `peer`.
fn plan_after(site: &Site, peer: &str, after: &str) -> anyhow::Result<bundle::Plan> {
    let refname = crate::exchange::own_branch(site.name(), peer);
    let Some(tip) = site.exchange.resolve(&refname)? else {
        return Err(
            UsageError(format!("nothing exported for {peer} yet: run ferry export")).into(),
        );
    };
    let base = site
        .exchange
        .repo()
        .revparse_single(after)
        .and_then(|object| object.peel_to_commit())
        .map_err(|_| UsageError(format!("--after {after}: no such commit")))?
        .id();
    if !site.exchange.is_ancestor(base, tip)? {
        return Err(UsageError(format!(
            "--after {after}: not a commit of {refname}, which is at {}",
            short_id(tip)
        ))
        .into());
    }
    if base == tip {
        return Err(UsageError(format!(
            "--after {after}: that is the tip of {refname}, nothing comes after it"
        ))
        .into());
    }
    Ok(bundle::Plan {
        refname,
        tip,
        prerequisites: vec![base],
    })
}

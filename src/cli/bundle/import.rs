//! `ferry bundle import`.

use std::path::PathBuf;

use anyhow::Context;

use crate::cli::{Ctx, ExitStatus, UsageError, report};
use crate::config::{ChannelSetting, DEFAULT_MAX_BUNDLE_BYTES};
use crate::engine;
use crate::exchange::peer_branch;
use crate::site::Site;
use crate::transport::{Limits, bundle};

/// Verify a peer's bundle file, take its commits, and import them.
///
/// The bundle must carry exactly the peer's branch for this site, build on what
/// this site already has, and pass every check of incoming data (paths, modes,
/// sizes, replicas); otherwise nothing is applied and the command fails naming
/// what was wrong. Then the import runs as in `ferry import`. The file itself is
/// left where it is. A FILE ending in .bundle.age is opened first with this
/// site's signing key (it was sealed for it).
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The bundle file.
    file: PathBuf,
    /// The peer it comes from (by default, the one its branch names).
    #[arg(long, value_name = "PEER")]
    connection: Option<String>,
}

/// Verifies, unpacks, imports, reports.
pub fn run(args: ImportArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    let mut site = Site::open(&ctx.dir)?;
    let me = site.name().to_string();
    let peer = match args.connection {
        Some(peer) => peer,
        None if bundle::is_encrypted(&args.file) => {
            return Err(UsageError(format!(
                "{} is sealed, so its branch cannot be read: pass --connection PEER",
                args.file.display()
            ))
            .into());
        }
        None => {
            let header = bundle::read_header(&args.file)
                .with_context(|| format!("bundle {}", args.file.display()))?;
            let peers: Vec<&str> = header
                .refs
                .iter()
                .filter_map(|(refname, _)| {
                    site.config
                        .connections
                        .keys()
                        .find(|peer| *refname == peer_branch(&me, peer))
                        .map(String::as_str)
                })
                .collect();
            match peers.as_slice() {
                [peer] => peer.to_string(),
                _ => {
                    let refs: Vec<String> = header
                        .refs
                        .iter()
                        .map(|(r, _)| bundle::shown_ref(r))
                        .collect();
                    return Err(UsageError(format!(
                        "{}: its refs ({}) name no connection of {me}; pass --connection PEER",
                        args.file.display(),
                        refs.join(", ")
                    ))
                    .into());
                }
            }
        }
    };
    let connection = site.config.connection(&peer)?.clone();
    let max_bytes = match &connection.settings.channel {
        ChannelSetting::Bundles(settings) => settings.max_bytes,
        ChannelSetting::Git(_) => DEFAULT_MAX_BUNDLE_BYTES,
    };
    let refusing = || format!("refusing bundle {}", args.file.display());
    // The plaintext of a sealed bundle, removed when the command ends.
    let plain = if bundle::is_encrypted(&args.file) {
        Some(bundle::open_sealed(&site.exchange, &args.file, max_bytes).with_context(refusing)?)
    } else {
        None
    };
    let file = plain.as_ref().map_or(args.file.as_path(), |p| p.path());
    let fetched = bundle::verify(
        &site.exchange,
        &me,
        &peer,
        file,
        max_bytes,
        &connection.trust,
        &Limits::default(),
    )
    .and_then(bundle::Verified::apply)
    .with_context(refusing)?;
    report::fetched(&mut ctx.out, &peer, &fetched)?;
    let imported = engine::import(&mut site, &connection)?;
    report::imported(&mut ctx.out, &peer, &imported, ctx.listing)?;
    Ok(if imported.errors.is_empty() {
        ExitStatus::Success
    } else {
        ExitStatus::IssueErrors
    })
}

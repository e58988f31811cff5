//! `ferry tracker attach`: attach a file to an issue.

use std::io::Write;

use anyhow::Context;

use crate::attachment::copy_hashing;
use crate::cli::{Ctx, ExitStatus};
use crate::tracker::{NewAttachment, Tracker};

use super::{Actor, find_live, open};

/// Attach a file to an issue; prints the attachment's id, size and SHA-256.
#[derive(Debug, clap::Args)]
pub struct AttachArgs {
    /// The issue key (SUP-1).
    key: String,
    /// The file to attach; its content is copied into the tracker.
    file: std::path::PathBuf,
    /// The name the tracker shows [default: the file's name].
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    actor: Actor,
}

/// Hashes the file, then stores it; the tracker checks the hash again as it
/// copies, so a file that changes meanwhile is refused rather than stored torn.
pub fn run(args: AttachArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    let mut tracker = open(ctx)?;
    let issue = find_live(&tracker, &args.key)?;
    let name = match args.name {
        Some(name) => name,
        None => args
            .file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .with_context(|| format!("{} names no file", args.file.display()))?,
    };
    let mut file = std::fs::File::open(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let (size, sha256) = copy_hashing(&mut file, &mut std::io::sink())
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let author = args.actor.name();
    let attached = tracker.attach(
        &issue.id,
        &NewAttachment {
            name: &name,
            author: &author,
            path: &args.file,
            size,
            sha256: &sha256,
        },
    )?;
    writeln!(
        ctx.out,
        "{} {} bytes sha256 {}",
        attached.id, attached.size, attached.sha256
    )?;
    Ok(ExitStatus::Success)
}

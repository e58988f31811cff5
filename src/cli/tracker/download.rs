//! `ferry tracker download`: write an attachment's content to a file.

use std::io::Write;

use anyhow::Context;

use crate::attachment::HashingWriter;
use crate::cli::{Ctx, ExitStatus};
use crate::tracker::Tracker;

use super::{find, find_attachment, open};

/// Write one attachment of an issue to a file.
#[derive(Debug, clap::Args)]
pub struct DownloadArgs {
    /// The issue key (SUP-1).
    key: String,
    /// The attachment's name, or its id when several share a name.
    name: String,
    /// Where to write it; an existing file is replaced only once the whole
    /// content is written and its SHA-256 checked.
    #[arg(long, value_name = "FILE")]
    out: std::path::PathBuf,
}

/// Streams the content into a temporary file beside `--out`, checks its
/// SHA-256 against the one the tracker recorded, then renames it into place.
pub fn run(args: DownloadArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    let tracker = open(ctx)?;
    let issue = find(&tracker, &args.key)?;
    let attachment = find_attachment(&issue, &args.name)?;
    let dir = match args.out.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let file = tempfile::NamedTempFile::new_in(&dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    let mut writer = HashingWriter::new(file);
    tracker.read_attachment(&issue.id, &attachment.id, &mut writer)?;
    let (mut file, size, sha256) = writer.finish();
    anyhow::ensure!(
        sha256 == attachment.sha256 && size == attachment.size,
        "{} attachment {}: the tracker holds {size} bytes hashing to {sha256}, but recorded \
         {} bytes with {}; {} was not written",
        issue.key,
        attachment.name,
        attachment.size,
        attachment.sha256,
        args.out.display()
    );
    file.as_file_mut().flush()?;
    file.persist(&args.out)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    writeln!(
        ctx.out,
        "{} ({size} bytes, sha256 {sha256}) -> {}",
        attachment.name,
        args.out.display()
    )?;
    Ok(ExitStatus::Success)
}

//! `ferry tracker generate`: fill the tracker with synthetic issues.

use std::io::Write;

use crate::cli::{Ctx, ExitStatus};
use crate::tracker::local::GenerateShape;

use super::open;

/// Create N synthetic issues, for demos and benchmarks.
///
/// Realistic mixes of types, statuses, priorities, labels (some "escalate"),
/// components, custom fields and comments (some internal). The same seed gives the
/// same issues; set FERRY_NOW to fix the timestamps too.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// How many issues.
    count: usize,
    /// Project key.
    #[arg(long, value_name = "KEY", default_value = "GEN")]
    project: String,
    /// Seed of the pseudo-random generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Spread the issues round-robin over N projects, named KEY1..KEYN
    /// (zero-padded: GEN001..GEN100 for 100).
    #[arg(long, value_name = "N", default_value_t = 1)]
    projects: usize,
    /// Give every issue exactly N public comments (default: 0 to 5, some internal).
    #[arg(long, value_name = "N")]
    comments: Option<usize>,
}

/// Generates the issues in one transaction and prints how many and which keys.
pub fn run(args: GenerateArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    let mut tracker = open(ctx)?;
    let shape = GenerateShape {
        projects: args.projects,
        comments: args.comments,
    };
    let keys = tracker.generate(args.count, &args.project, args.seed, &shape)?;
    match (keys.first(), keys.last()) {
        (Some(first), Some(last)) => writeln!(
            ctx.out,
            "generated {} issues: {first} .. {last}",
            keys.len()
        )?,
        _ => writeln!(ctx.out, "generated no issues")?,
    }
    Ok(ExitStatus::Success)
}

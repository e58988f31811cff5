//! `ferry rules test`: try edited rule scripts on what was really exchanged.

use std::io::Write;
use std::path::PathBuf;

use super::terminal::one_line;
use super::{Ctx, ExitStatus};
use crate::engine::{self, SyncOptions, Verdict};
use crate::site::Site;
use crate::words::plural;

/// Work with the connection's rule scripts.
#[derive(Debug, clap::Subcommand)]
pub enum RulesCommand {
    /// Replay the last exchanged commits through the rule scripts (as edited now,
    /// or the candidate files given) and show what they would do differently:
    /// incoming, what would change in the tracker; outgoing, which replica fields
    /// would differ from what was sent. Nothing is written.
    ///
    /// Exit status 1 when a script fails on something, so a rules repository can
    /// run it in its own CI.
    Test(TestArgs),
}

/// Options of `ferry rules test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Only this connection.
    #[arg(long, value_name = "PEER")]
    connection: Option<String>,
    /// How many commits of each direction to replay.
    #[arg(long, default_value_t = 10, value_name = "N")]
    last: usize,
    /// A candidate incoming script instead of the connection's.
    #[arg(long, value_name = "FILE")]
    incoming: Option<PathBuf>,
    /// A candidate outgoing script instead of the connection's.
    #[arg(long, value_name = "FILE")]
    outgoing: Option<PathBuf>,
    /// Print a JSON array, one object per connection.
    #[arg(long)]
    json: bool,
}

/// Runs a rules subcommand.
pub fn run(cmd: RulesCommand, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    match cmd {
        RulesCommand::Test(args) => test(args, ctx),
    }
}

fn test(args: TestArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    let site = Site::open(&ctx.dir)?;
    let connections = engine::selected(
        &site,
        &SyncOptions {
            connection: args.connection,
        },
    )?;
    let mut tests = Vec::new();
    for c in &connections {
        let incoming_path = args.incoming.clone().unwrap_or(c.settings.incoming.clone());
        let outgoing_path = args.outgoing.clone().unwrap_or(c.settings.outgoing.clone());
        let incoming = engine::load_rule(&site.config, &incoming_path)?;
        let outgoing = engine::load_rule(&site.config, &outgoing_path)?;
        let test = engine::rules_test(&site, c, &incoming, &outgoing, args.last)?;
        tests.push((test, incoming_path, outgoing_path));
    }
    let failed = tests.iter().any(|(t, _, _)| t.has_errors());
    if args.json {
        let all: Vec<&engine::RulesTest> = tests.iter().map(|(t, _, _)| t).collect();
        writeln!(ctx.out.raw(), "{}", serde_json::to_string_pretty(&all)?)?;
    } else {
        for (test, incoming, outgoing) in &tests {
            render(ctx, test, incoming, outgoing)?;
        }
    }
    Ok(if failed {
        ExitStatus::IssueErrors
    } else {
        ExitStatus::Success
    })
}

fn render(
    ctx: &mut Ctx,
    test: &engine::RulesTest,
    incoming: &std::path::Path,
    outgoing: &std::path::Path,
) -> std::io::Result<()> {
    let peer = &test.peer;
    writeln!(
        ctx.out,
        "{peer} incoming ({}): {} replica{} replayed",
        incoming.display(),
        test.incoming.len(),
        plural(test.incoming.len())
    )?;
    for i in &test.incoming {
        let name = match (&i.remote_key, &i.local_key) {
            (Some(remote), Some(local)) => format!("{} → {local}", one_line(remote)),
            (Some(remote), None) => one_line(remote).into_owned(),
            _ => one_line(&i.path).into_owned(),
        };
        let outcome = match &i.verdict {
            Verdict::Nothing => "no difference".to_string(),
            Verdict::Update {
                changes,
                comments,
                delete,
            } => {
                let mut parts: Vec<String> = changes.iter().map(super::review::describe).collect();
                if *comments > 0 {
                    parts.push(format!("would add {comments} comment{}", plural(*comments)));
                }
                if *delete {
                    parts.push("would delete the local issue".into());
                }
                format!("would change {}", parts.join("; "))
            }
            Verdict::Create { project } => format!("would create an issue in {project}"),
            Verdict::Skip => "would skip it".to_string(),
            Verdict::Error { message } => format!("FAILS: {}", one_line(message)),
        };
        writeln!(ctx.out, "  {name}: {outcome}")?;
    }
    writeln!(
        ctx.out,
        "{peer} outgoing ({}): {} issue{} replayed",
        outgoing.display(),
        test.outgoing.len(),
        plural(test.outgoing.len())
    )?;
    for o in &test.outgoing {
        let outcome = if let Some(error) = &o.error {
            format!("FAILS: {error}")
        } else if o.unshared {
            "would stop sharing it".to_string()
        } else if o.changed.is_empty() {
            "no difference".to_string()
        } else {
            format!("would send different {}", o.changed.join(", "))
        };
        writeln!(ctx.out, "  {}: {outcome}", o.key)?;
    }
    Ok(())
}

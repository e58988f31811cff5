//! `ferry completions SHELL` and `ferry man`: generated from the same clap
//! definitions as the parser, so they can never disagree with it.

use clap::CommandFactory;

use super::{Cli, Ctx, ExitStatus};

/// Print a shell completion script, e.g. `ferry completions bash >
/// /etc/bash_completion.d/ferry`.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// Print the man page (roff), e.g. `ferry man > /usr/local/share/man/man1/ferry.1`.
#[derive(Debug, clap::Args)]
pub struct ManArgs {}

/// Runs `ferry completions`.
pub fn completions(args: CompletionsArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    // clap_complete panics when its writer fails; render first, so a closed pipe
    // (`ferry completions bash | head`) is an ordinary, quiet write error.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "ferry", &mut script);
    ctx.out.raw().write_all(&script)?;
    Ok(ExitStatus::Success)
}

/// Runs `ferry man`.
pub fn man(_args: ManArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    clap_mangen::Man::new(Cli::command()).render(ctx.out.raw())?;
    Ok(ExitStatus::Success)
}

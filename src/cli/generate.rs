//! `ferry completions SHELL` and `ferry man`: generated from the same clap
//! definitions as the parser, so they can never disagree with it.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::CommandFactory;
use clap_mangen::roff::{Roff, roman};

use super::{Cli, Ctx, ExitStatus};

/// Print a shell completion script, e.g. `ferry completions bash >
/// /etc/bash_completion.d/ferry`.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// Print the man page (roff), e.g. `ferry man > /usr/local/share/man/man1/ferry.1`,
/// or write one page per command with --out.
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Write one page per command and subcommand into DIR (ferry.1,
    /// ferry-sync.1, ferry-tracker-show.1, …) instead of printing ferry.1.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

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
pub fn man(args: ManArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    let mut pages = Vec::new();
    // The built command knows each subcommand's page name (`ferry-tracker-show`);
    // `help` is a flag on every page, not a page of its own.
    let mut cli = Cli::command().disable_help_subcommand(true);
    cli.build();
    man_pages(&cli, None, &mut pages)?;
    let Some(out) = args.out else {
        ctx.out.raw().write_all(&pages[0].1)?;
        return Ok(ExitStatus::Success);
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    for (name, page) in &pages {
        let path = out.join(name);
        std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
    }
    writeln!(
        ctx.out,
        "wrote {} man pages to {}",
        pages.len(),
        out.display()
    )?;
    Ok(ExitStatus::Success)
}

/// Renders the page of `cmd` and of each of its visible subcommands, depth first,
/// as (file name, roff). SEE ALSO names the parent's page and the subcommands'.
fn man_pages(
    cmd: &clap::Command,
    parent: Option<&str>,
    pages: &mut Vec<(String, Vec<u8>)>,
) -> std::io::Result<()> {
    let page_name =
        |cmd: &clap::Command| cmd.get_display_name().unwrap_or(cmd.get_name()).to_owned();
    let name = page_name(cmd);
    let subcommands: Vec<&clap::Command> = cmd
        .get_subcommands()
        .filter(|sub| !sub.is_hide_set())
        .collect();
    // No date (the pages of one version are the same whenever they are made):
    // the source fills the footer's middle then.
    let man =
        clap_mangen::Man::new(cmd.clone()).source(format!("ferry {}", env!("CARGO_PKG_VERSION")));
    let mut page = Vec::new();
    man.render(&mut page)?;
    let see_also: Vec<String> = parent
        .map(str::to_owned)
        .into_iter()
        .chain(subcommands.iter().map(|sub| page_name(sub)))
        .map(|page| format!("{page}(1)"))
        .collect();
    if !see_also.is_empty() {
        // Without a second preamble: page names hold no apostrophe to escape.
        let section = Roff::new()
            .control("SH", ["SEE ALSO"])
            .text([roman(see_also.join(", "))])
            .to_roff();
        page.extend_from_slice(section.as_bytes());
    }
    pages.push((man.get_filename(), page));
    for sub in subcommands {
        man_pages(sub, Some(&name), pages)?;
    }
    Ok(())
}

//! Shell completions and man pages for a clap command line: the one implementation behind
//! the `completions SHELL` and `man [DIR]` subcommands of both `xfer` and `xferd`.
//!
//! Both work from the parser definition alone, so they need no config file, no home
//! directory and no server; the Debian package build runs them on the fresh binaries.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::Command;
pub use clap_complete::Shell;

/// Arguments of a `completions` subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Arguments of a `man` subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct ManArgs {
    /// Write NAME.1 and one page per subcommand here (created if missing); without it,
    /// NAME.1 goes to standard output.
    #[arg(value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Prints the completion script for `args.shell` to standard output.
pub fn print_completions(cmd: Command, args: &CompletionsArgs) -> io::Result<()> {
    to_stdout(&completions(cmd, args.shell))
}

/// Prints the top-level page to standard output, or writes every page into `args.dir`
/// and names each file written.
pub fn print_man(cmd: Command, args: &ManArgs) -> io::Result<()> {
    match &args.dir {
        None => to_stdout(&man_page(cmd)?),
        Some(dir) => {
            let mut listing = String::new();
            for path in write_man_pages(cmd, dir)? {
                listing.push_str(&format!("wrote {}\n", path.display()));
            }
            to_stdout(listing.as_bytes())
        }
    }
}

/// The completion script for `shell`.
pub fn completions(mut cmd: Command, shell: Shell) -> Vec<u8> {
    let name = cmd.get_name().to_owned();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut out);
    out
}

/// The top-level page, `NAME.1`, as roff.
pub fn man_page(cmd: Command) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut out)?;
    Ok(out)
}

/// Writes `NAME.1` and one page per visible subcommand, nested ones included
/// (`NAME-SUB.1`, `NAME-SUB-SUBSUB.1`), into `dir`, creating it. Returns the files
/// written, the top-level page first.
pub fn write_man_pages(cmd: Command, dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    // Building gives subcommands their page names (`xfer-push`); clap's implicit `help`
    // subcommand would only add a page about itself.
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    // Every page names the program and version it documents (`xfer 0.1.0`), as the
    // top-level one does; subcommands carry no version of their own.
    let source = format!(
        "{} {}",
        cmd.get_name(),
        cmd.get_version().unwrap_or_default()
    );
    let mut written = Vec::new();
    write_tree(cmd, &source, dir, &mut written)?;
    Ok(written)
}

fn write_tree(
    cmd: Command,
    source: &str,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> io::Result<()> {
    let subs: Vec<Command> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    let page = clap_mangen::Man::new(cmd).source(source);
    written.push(page.generate_to(dir)?);
    for sub in subs {
        write_tree(sub, source, dir, written)?;
    }
    Ok(())
}

/// Writes everything at once: a reader that goes away (`| head`) is an error to report,
/// not a panic halfway through.
fn to_stdout(bytes: &[u8]) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()
}

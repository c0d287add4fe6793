//! `headroom completions SHELL`: shell completions generated from the clap
//! definition itself, so they can never disagree with the parser. The .deb
//! ships the bash, zsh and fish files this prints.

use super::CmdResult;
use clap_complete::Shell;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Shell to print completions for.
    #[arg(value_enum)]
    pub shell: Shell,
}

pub fn run(args: Args, mut cmd: clap::Command) -> CmdResult {
    let name = cmd.get_name().to_string();
    clap_complete::generate(args.shell, &mut cmd, name, &mut std::io::stdout().lock());
    Ok(ExitCode::SUCCESS)
}

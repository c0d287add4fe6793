//! `headroom completions SHELL`: not built yet.

use super::CmdResult;

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args, _cmd: clap::Command) -> CmdResult {
    anyhow::bail!("`headroom completions` is not implemented yet")
}

//! `headroom probe`: not built yet; see the open issue for it.

use super::CmdResult;

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> CmdResult {
    anyhow::bail!("`headroom probe` is not implemented yet")
}

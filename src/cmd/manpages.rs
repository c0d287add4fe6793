//! `headroom manpages DIR` (hidden): one roff man page per subcommand,
//! generated from the clap definition by clap_mangen. Packaging runs it; users
//! read the result with `man headroom-fleet`.

use super::CmdResult;
use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Directory to write headroom.1 and headroom-SUBCOMMAND.1 into (created if missing).
    pub dir: PathBuf,
}

pub fn run(args: Args, cmd: clap::Command) -> CmdResult {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    clap_mangen::generate_to(cmd, &args.dir)
        .with_context(|| format!("cannot write man pages to {}", args.dir.display()))?;
    Ok(ExitCode::SUCCESS)
}

//! One file per subcommand: its clap `Args` and a `run` that calls the crate
//! doing the work. Exit codes are documented in README.md.

pub mod bench;
pub mod bench_probe;
pub mod completions;
pub mod fleet;
pub mod flood;
pub mod manpages;
pub mod preflight;
pub mod probe;
pub mod serve;
pub mod serve_workers;
pub mod status;
pub mod top;
pub mod up;

/// A command that could not do its job (bad input, missing privilege, unknown pid).
pub const EXIT_ERROR: u8 = 3;

/// Result of every subcommand: the process exit code, or an error to print.
pub type CmdResult = anyhow::Result<std::process::ExitCode>;

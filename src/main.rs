//! `headroom`: one binary, one subcommand per job. Argument parsing lives
//! here; every subcommand's work lives in its crate, reached through
//! `src/cmd/<name>.rs`. The command files do not import each other: what
//! two of them share, and what needs more than one of the crates, sits
//! beside `cmd/` (`dashboard`, `bench_support`).

mod bench_support;
mod cmd;
mod dashboard;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "headroom", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
// Parsed once at start; boxing every subcommand's Args would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Predict how many more connections a process (or a port's service) can take, and which limit stops it first.
    Status(cmd::status::Args),
    /// Run the bundled MCP server (TCP, stdio, Streamable HTTP).
    Serve(cmd::serve::Args),
    /// Watch fds, sockets and accept queues (eBPF, or /proc polling) and export Prometheus metrics.
    Probe(cmd::probe::Args),
    /// Check a host against a limits profile, apply it, roll it back.
    Preflight(cmd::preflight::Args),
    /// Live dashboard of headroom against each predicted breaking point.
    Top(cmd::top::Args),
    /// Start the server on defaults and watch it in the dashboard.
    Up(cmd::up::Args),
    /// Open connections or MCP sessions against a server until it breaks, and compare with the prediction.
    Flood(cmd::flood::Args),
    /// Ranked advice from live signals: what was seen, the remedy in its owner's terms, the capacity it buys, where to write it.
    Advise(cmd::advise::Args),
    /// Benchmarks: memory per session, throughput, open rate.
    Bench(cmd::bench::Args),
    /// Hosts sorted by least headroom, read from Prometheus.
    Fleet(cmd::fleet::Args),
    /// Print shell completions.
    Completions(cmd::completions::Args),
    /// Write a man page per subcommand into a directory (packaging).
    #[command(hide = true)]
    Manpages(cmd::manpages::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Status(a) => cmd::status::run(a),
        Command::Serve(a) => cmd::serve::run(a),
        Command::Probe(a) => cmd::probe::run(a),
        Command::Preflight(a) => cmd::preflight::run(a),
        Command::Top(a) => cmd::top::run(a),
        Command::Up(a) => cmd::up::run(a),
        Command::Advise(a) => cmd::advise::run(a),
        Command::Flood(a) => cmd::flood::run(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::Fleet(a) => cmd::fleet::run(a),
        Command::Completions(a) => {
            cmd::completions::run(a, <Cli as clap::CommandFactory>::command())
        }
        Command::Manpages(a) => cmd::manpages::run(a, <Cli as clap::CommandFactory>::command()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("headroom: {e:#}");
            ExitCode::from(cmd::EXIT_ERROR)
        }
    }
}

//! `headroom flood`: open connections or MCP sessions against a loopback (or
//! namespaced) server until it breaks, name the cause, and set the breaking
//! point beside the capacity model's prediction.

use super::{CmdResult, EXIT_ERROR};
use anyhow::Context;
use headroom_core::{ModelConfig, Prediction};
use headroom_flood::{FloodReport, Mode, Plan, PredictionCheck};
use headroom_probe::Target;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Clone, Copy, clap::ValueEnum)]
enum ModeArg {
    /// Open TCP connections and hold them.
    Connect,
    /// Also complete the MCP initialize handshake.
    Mcp,
    /// MCP sessions, then pipelined tools/call (tool `echo`) on all of them.
    Bomb,
}

#[derive(clap::Args)]
pub struct Args {
    /// Server address: 127.0.0.0/8 or ::1 (or any address with --allow-netns-target).
    #[arg(long, required_unless_present = "worker_spec")]
    target: Option<SocketAddr>,
    /// Connections to open at most.
    #[arg(long, short = 'n', default_value_t = 1000)]
    connections: u64,
    /// Connection attempts per second over all workers (0: as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Longest time the open phase may take (10s, 500ms, 2m).
    #[arg(long, default_value = "30s", value_parser = headroom_flood::parse_duration)]
    duration: Duration,
    #[arg(long, value_enum, default_value = "mcp")]
    mode: ModeArg,
    /// Attempts in flight at once, per worker.
    #[arg(long, default_value_t = 128)]
    concurrency: u32,
    /// Timeout of one attempt (connect plus handshake) and of one reply.
    #[arg(long, default_value = "3s", value_parser = headroom_flood::parse_duration)]
    timeout: Duration,
    /// Connect mode: listen this long on each new connection for a refusal
    /// line or close before counting it as held.
    #[arg(long, default_value = "50ms", value_parser = headroom_flood::parse_duration)]
    settle: Duration,
    /// Consecutive failures that make the breaking point.
    #[arg(long, default_value_t = 50)]
    fail_streak: u64,
    /// Hold every session this long once opened.
    #[arg(long, default_value = "0s", value_parser = headroom_flood::parse_duration)]
    hold: Duration,
    /// Length of the message-bombing phase (mode bomb).
    #[arg(long, default_value = "5s", value_parser = headroom_flood::parse_duration)]
    bomb_duration: Duration,
    /// Requests in flight per session while bombing.
    #[arg(long, default_value_t = 8)]
    window: u32,
    /// Skip the final ping of every held session (mcp, bomb).
    #[arg(long)]
    no_ping: bool,
    /// Loopback source addresses 127.0.0.1..N (0: as many as the port range needs).
    #[arg(long, default_value_t = 0)]
    sources: u32,
    /// Client processes (0: as many as our descriptor limit needs).
    #[arg(long, default_value_t = 0)]
    workers: u32,
    /// The server's pid on this host: print the model's prediction beside the result.
    #[arg(long, conflicts_with = "port")]
    pid: Option<u32>,
    /// The server's port on this host (every process listening on it).
    #[arg(long)]
    port: Option<u16>,
    /// Allow a non-loopback target; only honoured inside `ip netns exec`.
    #[arg(long)]
    allow_netns_target: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Internal: run as one worker process of a flood.
    #[arg(long, hide = true)]
    worker_spec: Option<String>,
}

pub fn run(args: Args) -> CmdResult {
    super::grow_heap_in_large_steps();
    if let Some(spec) = &args.worker_spec {
        headroom_flood::worker_main(spec).context("flood worker")?;
        return Ok(ExitCode::SUCCESS);
    }
    let plan = Plan {
        target: args.target.expect("clap requires --target"),
        mode: match args.mode {
            ModeArg::Connect => Mode::Connect,
            ModeArg::Mcp => Mode::Mcp,
            ModeArg::Bomb => Mode::Bomb,
        },
        connections: args.connections,
        rate: args.rate,
        concurrency: args.concurrency,
        sources: args.sources,
        workers: args.workers,
        duration: args.duration,
        timeout: args.timeout,
        settle: args.settle,
        fail_streak: args.fail_streak,
        hold: args.hold,
        bomb: args.bomb_duration,
        window: args.window,
        ping: !args.no_ping,
        allow_netns_target: args.allow_netns_target,
    }
    .resolve()?;

    // The model's word comes first: a prediction taken before the flood,
    // from the idle server, is a prediction and not a measurement.
    let prediction = predict_target(args.pid, args.port)?;

    let exe =
        std::env::current_exe().context("cannot find our own executable for worker processes")?;
    let mut report = headroom_flood::run(
        &plan,
        |spec| {
            let mut c = std::process::Command::new(&exe);
            c.args(["flood", "--worker-spec", spec]);
            c
        },
        |_| {},
    )?;
    if let Some(p) = prediction {
        let measured = report.measured();
        report.prediction = Some(PredictionCheck {
            predicted_max_connections: p.predicted_max_connections,
            binding: p.binding.clone(),
            explanation: p
                .binding_constraint()
                .map(|c| c.explanation.clone())
                .unwrap_or_default(),
            measured,
            ratio: if p.predicted_max_connections > 0 {
                measured as f64 / p.predicted_max_connections as f64
            } else {
                0.0
            },
        });
    }
    print(&report, args.json)
}

/// The capacity model's prediction for the server at `pid` or on `port`.
fn predict_target(pid: Option<u32>, port: Option<u16>) -> anyhow::Result<Option<Prediction>> {
    let target = match (pid, port) {
        (Some(pid), _) => Target::Pid(pid),
        (None, Some(port)) => Target::Port(port),
        (None, None) => return Ok(None),
    };
    let snap = headroom_probe::snapshot(&target)
        .with_context(|| format!("reading the limits of {target} for the prediction"))?;
    Ok(Some(headroom_core::predict(&snap, &ModelConfig::default())))
}

fn print(report: &FloodReport, json: bool) -> CmdResult {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", report.render());
    }
    // A flood that could not open a single connection found no server.
    Ok(if report.opened == 0 {
        ExitCode::from(EXIT_ERROR)
    } else {
        ExitCode::SUCCESS
    })
}

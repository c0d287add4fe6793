//! `headroom flood`: open connections or MCP sessions against a loopback (or
//! namespaced) server until it breaks, name the cause, and set the breaking
//! point beside the capacity model's prediction.

use super::{CmdResult, EXIT_ERROR};
use anyhow::Context;
use headroom_core::{Constraint, ModelConfig, Prediction, TcpState};
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
    let client_ports = prediction.as_ref().and_then(|_| client_ports(&plan));

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
        report.prediction = Some(PredictionCheck::new(
            &p,
            client_ports.as_ref(),
            report.measured(),
        ));
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

/// The flood's own wall, taken with the server's prediction: ephemeral
/// ports per (source address, destination) in this namespace, less the
/// ports its source addresses already hold to the target. `None` when
/// sock_diag or the port range cannot be read (the server's prediction
/// then stands alone).
fn client_ports(plan: &Plan) -> Option<Constraint> {
    let range = headroom_flood::orchestrate::port_range()?;
    let sources = headroom_flood::spec::source_addresses(&plan.target, plan.sources).ok()?;
    // connect() reuses a TIME_WAIT port to the same destination when
    // tcp_tw_reuse allows it (2, the default: on loopback).
    let tw_reuse = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_tw_reuse")
        .ok()
        .and_then(|v| v.trim().parse::<u8>().ok())
        .unwrap_or(0);
    let tw_free = tw_reuse == 1 || (tw_reuse == 2 && plan.target.ip().is_loopback());
    let in_use = headroom_probe::poll::diag::dump_tcp()
        .ok()?
        .iter()
        .filter(|s| s.remote == plan.target)
        .filter(|s| sources.is_empty() || sources.contains(&s.local.ip()))
        .filter(|s| !(tw_free && s.state == TcpState::TimeWait as u8))
        .count() as u64;
    Some(headroom_core::ephemeral_ports_per_destination(
        range,
        u64::from(plan.sources.max(1)),
        in_use,
        0,
    ))
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

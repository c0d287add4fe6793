//! `headroom flood`: open connections, MCP sessions or a real server's
//! protocol against a loopback (or namespaced) server until it breaks, name
//! the cause, and set the breaking point beside the capacity model's
//! prediction. While it floods, it watches the server from here: the
//! listener's accept queue (sock_diag) and the server's descriptor tables
//! (/proc), so that connections waiting in the backlog are never called held.

use super::{CmdResult, EXIT_ERROR};
use anyhow::Context;
use headroom_core::{Constraint, ModelConfig, Prediction, TcpState};
use headroom_flood::{FloodReport, Mode, Observer, Plan, ProtoOptions, QueueSample};
use headroom_probe::poll::diag;
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
    /// Redis: PING, expecting +PONG.
    Redis,
    /// memcached: version, expecting VERSION.
    Memcached,
    /// HTTP/1.1: GET with keep-alive, reading the whole response.
    Http,
    /// PostgreSQL: the startup message (--pg-user, --pg-database).
    Postgres,
    /// Send a line (--send), expect a line back (--expect).
    Line,
}

impl ModeArg {
    fn mode(self) -> Mode {
        match self {
            ModeArg::Connect => Mode::Connect,
            ModeArg::Mcp => Mode::Mcp,
            ModeArg::Bomb => Mode::Bomb,
            ModeArg::Redis => Mode::Redis,
            ModeArg::Memcached => Mode::Memcached,
            ModeArg::Http => Mode::Http,
            ModeArg::Postgres => Mode::Postgres,
            ModeArg::Line => Mode::Line,
        }
    }
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
    /// Skip the end check of every held connection (the MCP ping, the
    /// protocol's request again, in connect mode a look at whether it is open).
    #[arg(long)]
    no_ping: bool,
    /// Line mode: the line sent on each connection.
    #[arg(long, default_value = "ping")]
    send: String,
    /// Line mode: the prefix the reply line must start with (default: any line).
    #[arg(long)]
    expect: Option<String>,
    /// Postgres mode: the role in the startup message.
    #[arg(long, default_value = "postgres")]
    pg_user: String,
    /// Postgres mode: the database (default: the role's name).
    #[arg(long)]
    pg_database: Option<String>,
    /// HTTP mode: the path requested.
    #[arg(long, default_value = "/")]
    http_path: String,
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
    #[command(flatten)]
    app: super::AppArgs,
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
        mode: args.mode.mode(),
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
        proto: ProtoOptions {
            send: Some(args.send.clone()),
            expect: args.expect.clone(),
            pg_user: Some(args.pg_user.clone()),
            pg_database: args.pg_database.clone(),
            http_path: Some(args.http_path.clone()),
        },
    }
    .resolve()?;

    // The model's word comes first: a prediction taken before the flood,
    // from the idle server, is a prediction and not a measurement.
    let prediction = predict_target(args.pid, args.port, &args.app.options()?)?;
    let client_ports = prediction.as_ref().and_then(|_| client_ports(&plan));
    let sources =
        headroom_flood::spec::source_addresses(&plan.target, plan.sources).unwrap_or_default();
    let mut watch = Watch::new(plan.target, args.pid, sources);

    // Workers run this very binary: /proc/self/exe still names it when a
    // rebuild or an upgrade has replaced the file meanwhile.
    let exe = match std::path::Path::new("/proc/self/exe") {
        p if p.exists() => p.to_path_buf(),
        _ => std::env::current_exe()
            .context("cannot find our own executable for worker processes")?,
    };
    let mut report = headroom_flood::run_observed(
        &plan,
        |spec| {
            let mut c = std::process::Command::new(&exe);
            c.args(["flood", "--worker-spec", spec]);
            c
        },
        &mut watch,
        |_| {},
    )?;
    if let Some(p) = prediction {
        report.check_prediction(&p, client_ports.as_ref());
    }
    print(&report, args.json)
}

/// The capacity model's prediction for the server at `pid` or on `port`,
/// with the server recognised and its own cap read (headroom-apps).
fn predict_target(
    pid: Option<u32>,
    port: Option<u16>,
    apps: &headroom_apps::Options,
) -> anyhow::Result<Option<Prediction>> {
    let target = match (pid, port) {
        (Some(pid), _) => Target::Pid(pid),
        (None, Some(port)) => Target::Port(port),
        (None, None) => return Ok(None),
    };
    let snap = headroom_probe::app_snapshot(&target, apps)
        .with_context(|| format!("reading the limits of {target} for the prediction"))?;
    // `--pid`/`--port` name a server on this host, and the flood runs here
    // too: both ends of every connection draw from the host's file table,
    // kernel memory and tcp_mem.
    let cfg = ModelConfig {
        client_on_host: true,
        ..ModelConfig::default()
    };
    Ok(Some(headroom_core::predict(&snap, &cfg)))
}

/// The server as the flood sees it from where it runs: the target
/// listener's accept queue (sock_diag, in this network namespace) and the
/// descriptor tables of the processes behind it (/proc).
struct Watch {
    target: SocketAddr,
    /// `--pid`, else the processes holding the target's listener.
    pids: Vec<u32>,
    /// The flood's source addresses; empty: the kernel picks one.
    sources: Vec<std::net::IpAddr>,
}

impl Watch {
    fn new(target: SocketAddr, pid: Option<u32>, sources: Vec<std::net::IpAddr>) -> Watch {
        let pids = match pid {
            Some(p) => vec![p],
            None => headroom_probe::pids_on_port(target.port()).unwrap_or_default(),
        };
        Watch {
            target,
            pids,
            sources,
        }
    }
}

impl Observer for Watch {
    fn accept_queue(&mut self) -> Option<QueueSample> {
        let port = self.target.port();
        let socks = diag::dump(diag::Query::listeners(Some(port))).ok()?;
        // The listener the target reaches: bound to its address or to the
        // wildcard (all sockets of a SO_REUSEPORT group, summed).
        let ours: Vec<&diag::DiagSocket> = socks
            .iter()
            .filter(|s| s.local.port() == port)
            .filter(|s| s.local.ip() == self.target.ip() || s.local.ip().is_unspecified())
            .collect();
        (!ours.is_empty()).then(|| QueueSample {
            depth: ours.iter().map(|s| u64::from(s.rqueue)).sum(),
            limit: ours.iter().map(|s| u64::from(s.wqueue)).sum(),
        })
    }

    fn server_at_nofile(&mut self) -> Option<String> {
        self.pids.iter().find_map(|&pid| {
            let p = headroom_probe::poll::process::read_process_counted(pid)
                .ok()?
                .info;
            let soft = p.nofile_soft?;
            (p.open_fds >= soft).then(|| {
                format!(
                    "pid {pid} ({}) holds {} of its {soft} descriptors (RLIMIT_NOFILE)",
                    p.comm, p.open_fds
                )
            })
        })
    }

    /// The server's established sockets on the target whose peer is one of
    /// the flood's addresses and that have a socket inode: accept() gave
    /// them to the server. A connection still in the accept queue, or
    /// half-open because the queue was full at its last ACK, has none.
    fn accepted(&mut self) -> Option<u64> {
        let socks = diag::dump(diag::Query {
            states: 1 << TcpState::Established as u8,
            local_port: Some(self.target.port()),
        })
        .ok()?;
        let n = socks
            .iter()
            .filter(|s| s.local == self.target && s.inode != 0)
            .filter(|s| self.sources.is_empty() || self.sources.contains(&s.remote.ip()))
            .count();
        Some(n as u64)
    }
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
    let tw_reuse = headroom_host::Host::system()
        .sysctl_u64("net.ipv4.tcp_tw_reuse")
        .unwrap_or(0);
    let tw_free = tw_reuse == 1 || (tw_reuse == 2 && plan.target.ip().is_loopback());
    let ours = || -> Option<Vec<diag::DiagSocket>> {
        Some(
            diag::dump_tcp()
                .ok()?
                .into_iter()
                .filter(|s| s.remote == plan.target)
                .filter(|s| sources.is_empty() || sources.contains(&s.local.ip()))
                .collect(),
        )
    };
    let closing = |s: &diag::DiagSocket| {
        [TcpState::FinWait1, TcpState::FinWait2, TcpState::Closing]
            .iter()
            .any(|&t| s.state == t as u8)
    };
    let time_wait = |s: &diag::DiagSocket| s.state == TcpState::TimeWait as u8;
    // The prediction's own query (headroom-apps asking the server) may
    // still be closing: let it reach TIME_WAIT first, for at most a second.
    let mut now = ours()?;
    let end = std::time::Instant::now() + Duration::from_secs(1);
    while tw_free && now.iter().any(closing) && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
        now = ours()?;
    }
    if tw_free && now.iter().any(time_wait) {
        // tcp_tw_reuse hands a TIME_WAIT port back only once the last
        // timestamp it saw is a second old: a port the prediction's own
        // query just left would not be free yet for a flood that takes
        // less than that.
        std::thread::sleep(Duration::from_millis(1100));
    }
    let in_use = now.iter().filter(|s| !(tw_free && time_wait(s))).count() as u64;
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

//! `headroom bench`: memory per idle session, open rate, and echo
//! throughput over TCP and Streamable HTTP, beside a bare line server and
//! the official Rust MCP SDK (rmcp, `examples/rmcp_echo.rs`) serving the
//! same tool. The servers run as child processes (`headroom serve`,
//! `headroom bench bare-server`, `rmcp_echo`); this process is the one
//! client for all of them, and throughput rounds are interleaved so noise
//! from other work hits every server alike. Numbers are printed, never
//! asserted.

use super::CmdResult;
use crate::bench_support::{bare_line_server, tcp_slab_bytes};
use anyhow::{bail, Context};
use headroom_flood::bench::{self, ChildServer, Killed};
use headroom_server::subscriptions::SubscriptionConfig;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

// `bench probe`: the eBPF probe's cost and its no-drop check.
mod probe;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub what: Option<What>,
    /// Print results as one JSON object.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(clap::Subcommand)]
pub enum What {
    /// RSS per idle initialized session, and the rate they were opened at.
    Sessions {
        #[arg(long, default_value_t = 15_000)]
        sessions: usize,
        /// Concurrent openers.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Server runtime layout: per-core or multi.
        #[arg(long, default_value = "per-core")]
        runtime: String,
        #[command(flatten)]
        rmcp: RmcpArg,
    },
    /// tools/call echo throughput and latency, beside a bare line server and
    /// the official Rust SDK (rmcp) serving the same tool.
    Throughput {
        #[arg(long, default_value_t = 100)]
        sessions: usize,
        #[arg(long, default_value_t = 16)]
        in_flight: usize,
        /// Seconds of load per server, split into --rounds.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Rounds, each server in turn, so noise from other work hits all alike.
        #[arg(long, default_value_t = 5)]
        rounds: u32,
        #[command(flatten)]
        rmcp: RmcpArg,
    },
    /// Streamable HTTP (stateless, JSON responses): tools/call echo from N
    /// keep-alive HTTP/1.1 clients, `headroom serve --http` beside rmcp.
    Http {
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Seconds of load per server, split into --rounds.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Rounds, each server in turn, so noise from other work hits all alike.
        #[arg(long, default_value_t = 5)]
        rounds: u32,
        #[command(flatten)]
        rmcp: RmcpArg,
    },
    /// Sequential connect+initialize rate per runtime layout (the measurement the layout was chosen from).
    Layout {
        #[arg(long, default_value_t = 5_000)]
        sessions: usize,
    },
    /// CPU per refresh of `headroom top`'s poll source at N held connections:
    /// a full pass every refresh (before) beside the incremental source (after).
    Top {
        #[arg(long, default_value_t = 20_000)]
        connections: u64,
        /// Refreshes measured of each kind (interleaved, so both see the same noise).
        #[arg(long, default_value_t = 10)]
        refreshes: u32,
        /// Resync period assumed for the amortised figure at 1 refresh/s (`top --resync`).
        #[arg(long, default_value_t = 30)]
        resync: u32,
    },
    /// Throughput with the eBPF probe detached vs attached (off/on rounds,
    /// steady echo load and connection churn), then no lost event at
    /// `--rate` new connections/s. Needs root (eBPF).
    Probe {
        /// Rounds per condition, alternating off, on, off, on, ...
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Seconds of echo load per round.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        #[arg(long, default_value_t = 100)]
        sessions: usize,
        #[arg(long, default_value_t = 16)]
        in_flight: usize,
        /// Seconds of connect+reset churn per round (0: no churn figure).
        #[arg(long, default_value_t = 2.0)]
        churn_seconds: f64,
        /// Connections opened in the no-drop run.
        #[arg(long, default_value_t = 100_000)]
        connections: u64,
        /// New connections per second in the no-drop run (0: as fast as possible).
        #[arg(long, default_value_t = 20_000.0)]
        rate: f64,
        /// Client threads opening connections.
        #[arg(long, default_value_t = 4)]
        threads: usize,
        /// The probe's refresh interval in seconds (`headroom probe --interval`).
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Attach the TIME_WAIT timer programs too (`headroom probe --time-wait-events`).
        #[arg(long)]
        time_wait_events: bool,
    },
    /// Run the line server that does no protocol work (used by `throughput`).
    #[command(hide = true)]
    BareServer {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
}

/// Where the rmcp comparator is (`examples/rmcp_echo.rs`).
#[derive(clap::Args, Clone)]
pub struct RmcpArg {
    /// The rmcp comparator binary, or `none` to measure headroom alone
    /// [default: examples/rmcp_echo next to this binary; build it with
    /// `cargo build --release --example rmcp_echo`].
    #[arg(long = "rmcp", value_name = "PATH|none")]
    path: Option<String>,
}

impl RmcpArg {
    /// The comparator to run, or why there is none (said in the output).
    fn locate(&self) -> anyhow::Result<Result<PathBuf, String>> {
        match self.path.as_deref() {
            Some("none") => Ok(Err("not measured (--rmcp none)".into())),
            Some(p) => {
                let p = PathBuf::from(p);
                if !p.is_file() {
                    bail!("--rmcp {}: no such file", p.display());
                }
                Ok(Ok(p))
            }
            None => {
                let exe = std::env::current_exe().context("locating the headroom binary")?;
                let p = exe
                    .parent()
                    .context("the headroom binary has no directory")?
                    .join("examples")
                    .join("rmcp_echo");
                if p.is_file() {
                    Ok(Ok(p))
                } else {
                    let why = format!(
                        "not measured: no rmcp comparator at {} (build it with `cargo build --release --example rmcp_echo`, or pass --rmcp PATH)",
                        p.display()
                    );
                    eprintln!("headroom bench: rmcp {why}");
                    Ok(Err(why))
                }
            }
        }
    }
}

fn client_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// Opens `n` idle initialized sessions on `srv`, each subscribed to
/// `subscribe` when given; RSS per session, the open rate, and the server's
/// CPU over 2 s while they sit idle.
fn sessions_on(
    srv: &ChildServer,
    n: usize,
    concurrency: usize,
    subscribe: Option<&str>,
) -> anyhow::Result<Value> {
    let rt = client_runtime()?;
    std::thread::sleep(Duration::from_millis(300));
    let rss0 = srv.rss();
    let k0 = tcp_slab_bytes();
    let (held, took) = rt
        .block_on(bench::open_sessions_subscribed(
            srv.addr,
            n,
            concurrency,
            subscribe,
        ))
        .context("opening sessions")?;
    std::thread::sleep(Duration::from_secs(1));
    let rss1 = srv.rss();
    let k1 = tcp_slab_bytes();
    // The opening's tail (the sampler's first passes, replies in flight)
    // is over by now; what follows is the cost of sitting idle.
    std::thread::sleep(Duration::from_secs(2));
    let cpu0 = bench::process_cpu_seconds(srv.pid());
    std::thread::sleep(Duration::from_secs(2));
    let idle_cpu = bench::process_cpu_seconds(srv.pid()) - cpu0;
    let per = (rss1.saturating_sub(rss0)) as f64 / n as f64;
    let out = json!({
        "subscribed_to": subscribe,
        "server_cpu_seconds_idle_2s": idle_cpu,
        "sessions": n,
        "concurrency": concurrency,
        "open_seconds": took.as_secs_f64(),
        "sessions_per_second": n as f64 / took.as_secs_f64(),
        "server_rss_before_bytes": rss0,
        "server_rss_after_bytes": rss1,
        "rss_per_session_bytes": per,
        // Slab growth over the open, host-wide: both ends' sockets are on
        // this host, so this is a client+server pair (the server's half is
        // about half of it).
        "kernel_slab_bytes_per_connection_pair": (k1.saturating_sub(k0)) as f64 / n as f64,
    });
    drop(held);
    Ok(out)
}

fn sessions(n: usize, concurrency: usize, runtime: &str, rmcp: &RmcpArg) -> anyhow::Result<Value> {
    let rmcp = rmcp.locate()?;
    let srv = ChildServer::serve(&["--runtime", runtime])?;
    let mut h = sessions_on(&srv, n, concurrency, None)?;
    drop(srv);
    h["runtime"] = json!(runtime);
    let mut out = h.clone();
    // The same sessions each subscribed to the capacity resource, on a fresh
    // server: what a quiet subscription costs in memory and idle CPU. A
    // server holds at most `per_server` subscriptions (it refuses past it).
    let subscribed = n.min(SubscriptionConfig::default().per_server);
    let srv = ChildServer::serve(&["--runtime", runtime])?;
    out["with_subscription"] =
        sessions_on(&srv, subscribed, concurrency, Some("headroom://capacity"))?;
    drop(srv);
    // The same client against rmcp, one server at a time (RSS is per process).
    let r = match &rmcp {
        Ok(path) => {
            let srv = ChildServer::spawn_program(path, &["--tcp", "127.0.0.1:0"])?;
            let mut r = sessions_on(&srv, n, concurrency, None)?;
            r["runtime"] = srv.ready["runtime"].clone();
            Some(r)
        }
        Err(_) => None,
    };
    let ratio = |k: &str| {
        r.as_ref()
            .map(|r| json!(h[k].as_f64().unwrap_or(0.0) / r[k].as_f64().unwrap_or(f64::NAN)))
            .unwrap_or(Value::Null)
    };
    out["rmcp"] = match (&r, &rmcp) {
        (Some(r), _) => r.clone(),
        (None, Err(why)) => json!({ "skipped": why }),
        (None, Ok(_)) => Value::Null,
    };
    out["rss_per_session_headroom_to_rmcp"] = ratio("rss_per_session_bytes");
    out["open_rate_headroom_to_rmcp"] = ratio("sessions_per_second");
    Ok(out)
}

fn check_rounds(seconds: u64, rounds: u32) -> anyhow::Result<Duration> {
    if rounds == 0 || seconds == 0 {
        bail!("--seconds and --rounds must be at least 1");
    }
    Ok(Duration::from_secs_f64(seconds as f64 / rounds as f64))
}

fn throughput(
    sessions: usize,
    in_flight: usize,
    seconds: u64,
    rounds: u32,
    rmcp: &RmcpArg,
) -> anyhow::Result<Value> {
    if sessions == 0 || in_flight == 0 {
        bail!("--sessions and --in-flight must be at least 1");
    }
    let per_round = check_rounds(seconds, rounds)?;
    let rmcp = rmcp.locate()?;
    let rt = client_runtime()?;
    let bare = ChildServer::spawn(&["bench", "bare-server"])?;
    let mcp = ChildServer::serve(&[])?;
    let rm = match &rmcp {
        Ok(p) => Some(ChildServer::spawn_program(p, &["--tcp", "127.0.0.1:0"])?),
        Err(_) => None,
    };
    // (address, is an MCP server) in the order each round visits them.
    let mut targets = vec![(bare.addr, false), (mcp.addr, true)];
    if let Some(r) = &rm {
        targets.push((r.addr, true));
    }
    let mut s = bench::interleaved(&rt, targets.len(), rounds, |i| {
        let (addr, is_mcp) = targets[i];
        Box::pin(bench::throughput_samples(
            addr,
            sessions,
            in_flight,
            per_round,
            bench::ECHO_CALL,
            is_mcp,
        ))
    })?;
    let b = s[0].summary();
    let m = s[1].summary();
    let r = s.get_mut(2).map(|r| r.summary());
    Ok(json!({
        "sessions": sessions,
        "in_flight": in_flight,
        "rounds": rounds,
        "headroom_serve": m,
        "bare_line_server": b,
        "rmcp": match (&r, &rmcp) {
            (Some(r), _) => json!(r),
            (None, Err(why)) => json!({ "skipped": why }),
            (None, Ok(_)) => Value::Null,
        },
        "rmcp_runtime": rm.as_ref().map_or(Value::Null, |r| r.ready["runtime"].clone()),
        "ratio_to_bare": m.calls_per_second / b.calls_per_second,
        "ratio_to_rmcp": r.as_ref().map_or(Value::Null, |r| json!(m.calls_per_second / r.calls_per_second)),
    }))
}

fn http(clients: usize, seconds: u64, rounds: u32, rmcp: &RmcpArg) -> anyhow::Result<Value> {
    if clients == 0 {
        bail!("--clients must be at least 1");
    }
    let per_round = check_rounds(seconds, rounds)?;
    let rmcp = rmcp.locate()?;
    let rt = client_runtime()?;
    let hr = ChildServer::spawn(&["serve", "--http", "127.0.0.1:0", "--json"])?;
    let rm = match &rmcp {
        Ok(p) => Some(ChildServer::spawn_program(p, &["--http", "127.0.0.1:0"])?),
        Err(_) => None,
    };
    let mut targets = vec![hr.addr];
    if let Some(r) = &rm {
        targets.push(r.addr);
    }
    let mut s = bench::interleaved(&rt, targets.len(), rounds, |i| {
        Box::pin(bench::http_throughput(
            targets[i],
            clients,
            per_round,
            bench::HTTP_ECHO_CALL,
        ))
    })?;
    let h = s[0].summary();
    let r = s.get_mut(1).map(|r| r.summary());
    let req = bench::HTTP_ECHO_CALL;
    Ok(json!({
        "clients": clients,
        "rounds": rounds,
        "request": {
            "method": "POST",
            "path": "/mcp",
            "headers": req.headers.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>(),
            "body": req.body,
        },
        "headroom_serve": h,
        "rmcp": match (&r, &rmcp) {
            (Some(r), _) => json!(r),
            (None, Err(why)) => json!({ "skipped": why }),
            (None, Ok(_)) => Value::Null,
        },
        "rmcp_runtime": rm.as_ref().map_or(Value::Null, |r| r.ready["runtime"].clone()),
        "ratio_to_rmcp": r.as_ref().map_or(Value::Null, |r| json!(h.calls_per_second / r.calls_per_second)),
    }))
}

fn layout(n: usize) -> anyhow::Result<Value> {
    let rt = client_runtime()?;
    let mut out = serde_json::Map::new();
    for runtime in ["per-core", "multi"] {
        let srv = ChildServer::serve(&["--runtime", runtime])?;
        let (held, took) = rt.block_on(bench::open_sessions(srv.addr, n, 1))?;
        drop(held);
        out.insert(
            runtime.to_string(),
            json!({"sessions": n, "sequential_sessions_per_second": n as f64 / took.as_secs_f64()}),
        );
    }
    Ok(Value::Object(out))
}

/// What must agree between a full pass and a quick one.
fn poll_key(s: &headroom_core::Snapshot) -> impl PartialEq + std::fmt::Debug {
    let procs: Vec<(u32, u64, u64)> = s
        .processes
        .iter()
        .map(|p| (p.pid, p.open_fds, p.connections))
        .collect();
    (procs, s.listeners.clone(), s.sockets.clone())
}

fn top(n: u64, refreshes: u32, resync: u32) -> anyhow::Result<Value> {
    use headroom_probe::{PollSource, Target};
    use std::time::Instant;
    if refreshes == 0 || resync == 0 {
        bail!("--refreshes and --resync must be at least 1");
    }
    // Worker processes: one process may not hold 20,000 fds here.
    let srv = ChildServer::serve(&["--workers", "auto"])?;
    let exe = std::env::current_exe().context("locating the headroom binary")?;
    let _flood = Killed(
        Command::new(exe)
            .args([
                "flood",
                "--mode",
                "connect",
                "--hold",
                "600s",
                "--duration",
                "120s",
            ])
            .args([
                "--target",
                &srv.addr.to_string(),
                "--connections",
                &n.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting headroom flood")?,
    );
    let target = Target::Port(srv.addr.port());
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let held = headroom_probe::snapshot(&target)?.connections();
        if held >= n {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {held} of {n} connections held after 180 s");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    // Settled: let the last accepts land.
    std::thread::sleep(Duration::from_secs(2));

    let mut inc = PollSource::new().incremental(Duration::from_secs(3600));
    let t = bench::cpu_seconds();
    inc.snapshot(&target)?;
    let first = bench::cpu_seconds() - t;
    let (mut full, mut quick, mut agree) = (Vec::new(), Vec::new(), 0);
    for _ in 0..refreshes {
        let t = bench::cpu_seconds();
        let a = PollSource::new().snapshot(&target)?;
        full.push(bench::cpu_seconds() - t);
        let t = bench::cpu_seconds();
        let b = inc.snapshot(&target)?;
        quick.push(bench::cpu_seconds() - t);
        if poll_key(&a) == poll_key(&b) {
            agree += 1;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let passes = inc.passes();
    if passes.quick != refreshes as u64 {
        bail!("expected {refreshes} quick passes, got {passes:?}");
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (before, after_quick) = (mean(&full), mean(&quick));
    // One full pass per resync period, quick passes in between.
    let after = (before + (resync - 1) as f64 * after_quick) / resync as f64;
    Ok(json!({
        "connections": n,
        "processes": headroom_probe::snapshot(&target)?.processes.len(),
        "refreshes": refreshes,
        "before_cpu_seconds_per_refresh": before,
        "after_quick_pass_cpu_seconds": after_quick,
        "after_first_full_pass_cpu_seconds": first,
        "resync_seconds": resync,
        "after_cpu_seconds_per_refresh_amortised": after,
        "before_percent_of_a_core_at_1_refresh_per_s": before * 100.0,
        "after_percent_of_a_core_at_1_refresh_per_s": after * 100.0,
        "quick_equal_to_full": format!("{agree}/{refreshes}"),
    }))
}

pub fn run(args: Args) -> CmdResult {
    let result = match args.what {
        Some(What::BareServer { listen, threads }) => {
            bare_line_server(listen, threads, |a| {
                println!("{}", json!({"listen": a.to_string()}))
            })?;
            return Ok(ExitCode::SUCCESS);
        }
        Some(What::Sessions {
            sessions: n,
            concurrency,
            runtime,
            rmcp,
        }) => {
            if runtime != "per-core" && runtime != "multi" {
                bail!("--runtime must be per-core or multi");
            }
            if n == 0 {
                bail!("--sessions must be at least 1");
            }
            json!({"sessions": sessions(n, concurrency, &runtime, &rmcp)?})
        }
        Some(What::Throughput {
            sessions,
            in_flight,
            seconds,
            rounds,
            rmcp,
        }) => json!({"throughput": throughput(sessions, in_flight, seconds, rounds, &rmcp)?}),
        Some(What::Http {
            clients,
            seconds,
            rounds,
            rmcp,
        }) => json!({"http": http(clients, seconds, rounds, &rmcp)?}),
        Some(What::Layout { sessions }) => json!({"layout": layout(sessions)?}),
        Some(What::Top {
            connections,
            refreshes,
            resync,
        }) => json!({"top": top(connections, refreshes, resync)?}),
        Some(What::Probe {
            rounds,
            seconds,
            sessions,
            in_flight,
            churn_seconds,
            connections,
            rate,
            threads,
            interval,
            time_wait_events,
        }) => {
            if !(interval > 0.0 && interval <= 3600.0) {
                bail!("--interval must be between 0 and 3600 seconds");
            }
            let o = probe::Opts {
                rounds,
                seconds,
                sessions,
                in_flight,
                churn_seconds,
                connections,
                rate,
                threads,
                interval: Duration::from_secs_f64(interval),
                options: headroom_probe::ebpf::Options { time_wait_events },
            };
            json!({"probe": probe::run(&o)?})
        }
        None => {
            let rmcp = RmcpArg { path: None };
            json!({
                "sessions": sessions(15_000, 64, "per-core", &rmcp)?,
                "throughput": throughput(100, 16, 5, 5, &rmcp)?,
                "http": http(64, 5, 5, &rmcp)?,
                "layout": layout(5_000)?,
            })
        }
    };
    if args.json {
        println!("{result}");
    } else {
        println!("{}", serde_json::to_string_pretty(&result)?);
    }
    Ok(ExitCode::SUCCESS)
}

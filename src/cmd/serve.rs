//! `headroom serve`: the bundled MCP server over TCP (newline-delimited
//! JSON-RPC), stdio and Streamable HTTP, with its limits, token and
//! Prometheus metrics.

use super::CmdResult;
use anyhow::{bail, Context};
use headroom_server::capacity_metrics::CapacityMetrics;
use headroom_server::tcp::{Layout, Limits, TcpServer};
use headroom_server::tools::{self, ServerState, CAPACITY_URI};
use headroom_server::{Engine, EngineConfig, Metrics};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

// `--workers`: the supervisor and the worker side, on this command's `Args`.
mod workers;

#[derive(clap::Args)]
pub struct Args {
    /// TCP address to serve newline-delimited JSON-RPC on (port 0: any free port)
    /// [default: 127.0.0.1:8707, unless --http or --stdio is given].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Serve MCP over Streamable HTTP at http://ADDR/mcp (beside --listen when both are given).
    /// On a loopback address, Host and Origin must name this machine (DNS-rebinding protection).
    #[arg(long, value_name = "ADDR")]
    pub http: Option<SocketAddr>,
    /// Serve one session over stdin/stdout instead of TCP (for MCP clients that launch servers).
    #[arg(long, conflicts_with = "listen")]
    pub stdio: bool,
    /// Refuse connections beyond this many (the fd limit caps it in any case).
    #[arg(long)]
    pub max_connections: Option<u64>,
    /// Largest message (one line) accepted; a longer one gets an error and the connection is closed.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_message_bytes: usize,
    /// Asynchronous requests one session may have in flight.
    #[arg(long, default_value_t = 16)]
    pub max_in_flight: usize,
    /// Close a connection after this many seconds without a message.
    #[arg(long, default_value_t = 300)]
    pub idle_timeout: u64,
    /// Close a connection whose client has not read its replies for this many seconds.
    #[arg(long, default_value_t = 10)]
    pub write_timeout: u64,
    /// Close a connection whose current line has been incomplete for this many seconds (slow loris).
    #[arg(long, default_value_t = 10)]
    pub line_timeout: u64,
    /// On SIGTERM/SIGINT: seconds to let in-flight requests finish before connections are cut.
    #[arg(long, default_value_t = 10)]
    pub drain_timeout: u64,
    /// File holding a shared token; sessions must present it in params._meta["headroom/token"]
    /// of initialize (or of each 2026-07-28 request). Never logged.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// TCP_DEFER_ACCEPT for the TCP listener, in seconds (0: off): a connection reaches accept()
    /// with its first message, one wakeup instead of two. Every MCP client speaks first; a client
    /// that connects and stays silent is accepted (or refused) only after about this long.
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub defer_accept: u32,
    /// Serve Prometheus metrics on this address (GET /metrics).
    #[arg(long)]
    pub metrics: Option<SocketAddr>,
    /// Threads (each a current-thread runtime with its own SO_REUSEPORT listener); default: one per core.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Runtime layout: `per-core` (measured faster here) or `multi` (one multi-thread runtime, for comparison).
    #[arg(long, default_value = "per-core", value_parser = ["per-core", "multi"])]
    pub runtime: String,
    /// Directory of preflight profiles (*.yaml) to offer as resources, searched before the usual places and the built-in ones.
    #[arg(long)]
    pub profiles: Option<PathBuf>,
    /// Print the listening addresses and limits as one JSON line on stdout once serving (TCP only).
    #[arg(long)]
    pub json: bool,
    /// Entries per page of tools/list, resources/list and prompts/list.
    #[arg(long, default_value_t = 50, hide = true)]
    pub page_size: usize,
    /// Offer the `measure_service` tool: an agent may flood a service on this host's loopback
    /// (bounded: 20,000 connections, 60 s, one at a time) to measure its breaking point.
    #[arg(long)]
    pub allow_measure: bool,
    /// Worker processes sharing the port (SO_REUSEPORT), each with its own fd table, under one
    /// supervisor; `auto`: enough that the per-process fd limit does not bind --max-connections.
    #[arg(long, value_name = "N|auto")]
    pub workers: Option<String>,
    /// Internal: this process is worker N of a `--workers` service.
    #[arg(long, hide = true, requires = "worker_fds")]
    pub worker_index: Option<usize>,
    /// Internal: the worker table and channel descriptors, `SHM,CHAN`.
    #[arg(long, hide = true)]
    pub worker_fds: Option<String>,
}

fn read_token(path: &PathBuf) -> anyhow::Result<String> {
    let t = std::fs::read_to_string(path)
        .with_context(|| format!("reading token file {}", path.display()))?;
    let t = t.trim().to_string();
    if t.is_empty() {
        bail!("token file {} is empty", path.display());
    }
    Ok(t)
}

pub fn run(args: Args) -> CmdResult {
    super::grow_heap_in_large_steps();
    if let Some(spec) = &args.workers {
        return workers::supervise(&args, spec);
    }
    if args.max_message_bytes < 64 {
        bail!("--max-message-bytes must be at least 64");
    }
    if args.max_in_flight == 0 {
        bail!("--max-in-flight must be at least 1");
    }
    let token = args.token_file.as_ref().map(read_token).transpose()?;
    let http_token = token.clone();
    let mut loader = headroom_preflight::Loader::default();
    if let Some(d) = &args.profiles {
        loader.dirs.insert(0, d.clone());
    }
    let profiles = tools::load_profiles(&loader);
    let metrics = Metrics::new();
    let capacity_metrics = CapacityMetrics::register(&metrics);
    let state = Arc::new(ServerState::default());
    let mut registry = tools::registry(state.clone(), profiles);
    if args.allow_measure {
        headroom_server::measure_tool::register(&mut registry);
    }
    let config = EngineConfig {
        page_size: args.page_size.max(1),
        max_in_flight: args.max_in_flight,
        token,
        instructions: Some(
            "headroom: call host_capacity to see which limit stops this server first and how many more connections fit; listeners shows accept queues."
                .into(),
        ),
        ..Default::default()
    };
    let engine = Engine::new(registry, config, Some(metrics.clone()));

    // The control runtime: signals, metrics endpoint, capacity sampler. Built
    // before the TCP transport counts fds, so its own fds are accounted for.
    let control = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the control runtime")?;
    let metrics_listener = match args.metrics {
        Some(addr) => Some(
            control
                .block_on(tokio::net::TcpListener::bind(addr))
                .with_context(|| format!("binding --metrics {addr}"))?,
        ),
        None => None,
    };
    let metrics_addr = metrics_listener
        .as_ref()
        .map(|l| l.local_addr())
        .transpose()?;
    let (mut sigterm, mut sigint) = control.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        Ok::<_, std::io::Error>((
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        ))
    })?;
    let _guard = control.enter();
    if let Some(l) = metrics_listener {
        let metrics = metrics.clone();
        control.spawn(headroom_server::exporter::serve(l, move || {
            let page = metrics.render();
            std::future::ready(page)
        }));
    }
    control.spawn(sample_capacity(
        engine.clone(),
        state.clone(),
        capacity_metrics,
    ));

    let http = match args.http {
        Some(addr) => Some(http::start(
            addr,
            &args,
            http_token,
            engine.clone(),
            &metrics,
        )?),
        None => None,
    };
    if let Some(h) = &http {
        let _ = state.http.set(h.stats.clone());
    }
    let http_addr = http.as_ref().map(|h| h.addr);

    if args.stdio {
        state.active.store(1, Ordering::Relaxed);
        let stop = async move {
            tokio::select! {
                _ = sigterm.recv() => {},
                _ = sigint.recv() => {},
            }
        };
        control
            .block_on(headroom_server::stdio::serve_process_stdio(
                engine,
                args.max_message_bytes,
                stop,
            ))
            .context("stdio transport")?;
        if let Some(h) = http {
            h.stop(Duration::from_secs(args.drain_timeout));
        }
        return Ok(ExitCode::SUCCESS);
    }

    let listen = match (args.listen, &http) {
        (Some(l), _) => l,
        (None, None) => SocketAddr::from(([127, 0, 0, 1], 8707)),
        (None, Some(h)) => {
            // Streamable HTTP only.
            eprintln!(
                "headroom serve: MCP over Streamable HTTP on http://{}/mcp{}",
                h.addr,
                metrics_addr
                    .map(|a| format!(", metrics on http://{a}/metrics"))
                    .unwrap_or_default()
            );
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "http": h.addr.to_string(),
                        "metrics": metrics_addr.map(|a| a.to_string()),
                        "pid": std::process::id(),
                    })
                );
            }
            control.block_on(async {
                tokio::select! {
                    _ = sigterm.recv() => {},
                    _ = sigint.recv() => {},
                }
            });
            let h = http.expect("matched Some");
            return Ok(if h.stop(Duration::from_secs(args.drain_timeout)) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
    };

    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let layout = if args.runtime == "multi" {
        Layout::MultiThread(threads)
    } else {
        Layout::PerCore(threads)
    };
    let limits = Limits {
        max_connections: args.max_connections,
        max_message_bytes: args.max_message_bytes,
        idle_timeout: Duration::from_secs(args.idle_timeout.max(1)),
        write_timeout: Duration::from_secs(args.write_timeout.max(1)),
        line_timeout: Duration::from_secs(args.line_timeout.max(1)),
        defer_accept_secs: args.defer_accept,
        ..Default::default()
    };
    let server = TcpServer::bind(listen, layout, &limits)
        .with_context(|| format!("binding --listen {listen}"))?;
    let addr = server.local_addr();
    let (server, worker) = workers::attach(&args, server)?;
    let running = server
        .start(engine, state.clone(), limits)
        .context("starting the TCP transport")?;
    let ceiling = running.ceiling;
    let mut supervisor_gone = match worker {
        Some(w) => {
            w.ready(ceiling);
            control.spawn(w.channel(metrics.clone()))
        }
        None => control.spawn(std::future::pending()),
    };
    eprintln!(
        "headroom serve: MCP over TCP on {addr} ({threads} thread(s), {}), at most {ceiling} connections{}{}",
        args.runtime,
        http_addr.map(|a| format!(", Streamable HTTP on http://{a}/mcp")).unwrap_or_default(),
        metrics_addr.map(|a| format!(", metrics on http://{a}/metrics")).unwrap_or_default()
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "listen": addr.to_string(),
                "http": http_addr.map(|a| a.to_string()),
                "metrics": metrics_addr.map(|a| a.to_string()),
                "max_connections": ceiling,
                "threads": threads,
                "runtime": args.runtime,
                "pid": std::process::id(),
            })
        );
    }
    control.block_on(async {
        tokio::select! {
            _ = sigterm.recv() => {},
            _ = sigint.recv() => {},
            _ = &mut supervisor_gone => {},
        }
    });
    let open = running.connections();
    eprintln!(
        "headroom serve: draining {open} connection(s) (up to {}s)",
        args.drain_timeout
    );
    running.stop();
    let http_drained = http.is_none_or(|h| h.stop(Duration::from_secs(args.drain_timeout)));
    if running.join(Duration::from_secs(args.drain_timeout)) && http_drained {
        eprintln!("headroom serve: drained, exiting");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("headroom serve: drain timeout: connections still open were cut");
        Ok(ExitCode::from(1))
    }
}

/// Samples this process's capacity (every 2 s, or less often when a sample
/// is costly): exports the prediction (per
/// constraint, as the probe does) and tells subscribers of
/// headroom://capacity when the binding limit or the predicted maximum
/// changed.
async fn sample_capacity(engine: Arc<Engine>, state: Arc<ServerState>, metrics: CapacityMetrics) {
    let mut last: Option<(String, u64)> = None;
    // Not at once: a sample holds a few descriptors for a moment (the fd
    // directory, a netlink socket), and a snapshot taken from outside just
    // after start would count them against this process's capacity.
    let mut wait = Duration::from_secs(2);
    let mut sampler = Some(headroom_server::capacity::Sampler::new());
    loop {
        tokio::time::sleep(wait).await;
        let active = state.connections();
        let started = std::time::Instant::now();
        let mut s = sampler.take().unwrap_or_default();
        let p = match tokio::task::spawn_blocking(move || {
            let (_, p) = s.capacity(active);
            (s, p)
        })
        .await
        {
            Ok((s, p)) => {
                sampler = Some(s);
                p
            }
            // The sample panicked: a fresh sampler next time.
            Err(_) => headroom_server::capacity::capacity(active).1,
        };
        wait = headroom_server::capacity::next_sample_in(started.elapsed());
        metrics.set_prediction(&p);
        let now = (p.binding.clone(), p.predicted_max_connections);
        if last.as_ref().is_some_and(|l| *l != now) {
            engine.resource_updated(CAPACITY_URI);
        }
        last = Some(now);
    }
}

/// The Streamable HTTP transport of `headroom serve`: its own multi-thread
/// runtime (HTTP connections are few and busy, unlike TCP's many idle ones).
mod http {
    use super::Args;
    use anyhow::Context;
    use headroom_server::http::{EngineProtocol, HttpConfig, HttpServer};
    use headroom_server::{Engine, Metrics};
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    pub struct Running {
        pub addr: SocketAddr,
        pub stats: Arc<headroom_server::http::HttpStats>,
        runtime: tokio::runtime::Runtime,
        stop: tokio::sync::oneshot::Sender<()>,
        served: tokio::task::JoinHandle<std::io::Result<()>>,
    }

    pub fn start(
        addr: SocketAddr,
        args: &Args,
        token: Option<String>,
        engine: Arc<Engine>,
        metrics: &Metrics,
    ) -> anyhow::Result<Running> {
        let threads = args
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("headroom-http")
            .enable_all()
            .build()
            .context("building the HTTP runtime")?;
        let config = HttpConfig {
            max_connections: args.max_connections.map_or(10_000, |n| n as usize),
            max_body_bytes: args.max_message_bytes,
            read_timeout: Duration::from_secs(args.line_timeout.max(1)),
            write_timeout: Duration::from_secs(args.write_timeout.max(1)),
            token,
            ..Default::default()
        };
        let server = runtime
            .block_on(HttpServer::bind(addr, config, EngineProtocol::new(engine)))
            .with_context(|| format!("binding --http {addr}"))?
            .with_metrics(metrics);
        let addr = server.local_addr()?;
        let stats = server.stats();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = runtime.spawn(server.serve(async {
            let _ = stopped.await;
        }));
        Ok(Running {
            addr,
            stats,
            runtime,
            stop,
            served,
        })
    }

    impl Running {
        /// Stops accepting, gives open exchanges `drain` to finish; true if
        /// the accept loop ended cleanly.
        pub fn stop(self, drain: Duration) -> bool {
            let _ = self.stop.send(());
            let ok = self
                .runtime
                .block_on(async { tokio::time::timeout(drain, self.served).await })
                .is_ok_and(|r| r.is_ok_and(|r| r.is_ok()));
            self.runtime.shutdown_timeout(drain);
            ok
        }
    }
}

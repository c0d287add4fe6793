//! `headroom bench`: memory per idle session, open rate, and echo
//! throughput beside a bare line server. The servers run as child
//! processes (`headroom serve`, `headroom bench bare-server`); this process
//! is the client. Numbers are printed, never asserted.

use super::CmdResult;
use anyhow::{bail, Context};
use headroom_server::bench;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

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
    },
    /// tools/call echo throughput and latency, beside a bare line server.
    Throughput {
        #[arg(long, default_value_t = 100)]
        sessions: usize,
        #[arg(long, default_value_t = 16)]
        in_flight: usize,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// Sequential connect+initialize rate per runtime layout (the measurement the layout was chosen from).
    Layout {
        #[arg(long, default_value_t = 5_000)]
        sessions: usize,
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

/// A child server, killed on drop.
struct ChildServer {
    child: Child,
    addr: SocketAddr,
}

impl ChildServer {
    fn spawn(args: &[&str]) -> anyhow::Result<ChildServer> {
        let exe = std::env::current_exe().context("locating the headroom binary")?;
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the server under test")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
        let v: Value =
            serde_json::from_str(&line).with_context(|| format!("server ready line {line:?}"))?;
        let addr = v["listen"].as_str().context("no listen address")?.parse()?;
        Ok(ChildServer { child, addr })
    }

    fn serve(extra: &[&str]) -> anyhow::Result<ChildServer> {
        let mut a = vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--json",
            "--idle-timeout",
            "3600",
        ];
        a.extend_from_slice(extra);
        ChildServer::spawn(&a)
    }

    fn rss(&self) -> u64 {
        bench::rss_of(self.child.id())
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn sessions(n: usize, concurrency: usize, runtime: &str) -> anyhow::Result<Value> {
    let srv = ChildServer::serve(&["--runtime", runtime])?;
    let rt = client_runtime()?;
    std::thread::sleep(Duration::from_millis(300));
    let rss0 = srv.rss();
    let k0 = bench::tcp_slab_bytes();
    let (held, took) = rt
        .block_on(bench::open_sessions(srv.addr, n, concurrency))
        .context("opening sessions")?;
    std::thread::sleep(Duration::from_secs(1));
    let rss1 = srv.rss();
    let k1 = bench::tcp_slab_bytes();
    let per = (rss1.saturating_sub(rss0)) as f64 / n as f64;
    let out = json!({
        "sessions": n,
        "concurrency": concurrency,
        "runtime": runtime,
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

fn throughput(sessions: usize, in_flight: usize, seconds: u64) -> anyhow::Result<Value> {
    let rt = client_runtime()?;
    let d = Duration::from_secs(seconds);
    let bare = ChildServer::spawn(&["bench", "bare-server"])?;
    let b = rt.block_on(bench::throughput(
        bare.addr,
        sessions,
        in_flight,
        d,
        bench::ECHO_CALL,
        false,
    ))?;
    drop(bare);
    let mcp = ChildServer::serve(&[])?;
    let m = rt.block_on(bench::throughput(
        mcp.addr,
        sessions,
        in_flight,
        d,
        bench::ECHO_CALL,
        true,
    ))?;
    drop(mcp);
    Ok(json!({
        "sessions": sessions,
        "in_flight": in_flight,
        "headroom_serve": m,
        "bare_line_server": b,
        "ratio_to_bare": m.calls_per_second / b.calls_per_second,
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

pub fn run(args: Args) -> CmdResult {
    let result = match args.what {
        Some(What::BareServer { listen, threads }) => {
            bench::bare_line_server(listen, threads, |a| {
                println!("{}", json!({"listen": a.to_string()}))
            })?;
            return Ok(ExitCode::SUCCESS);
        }
        Some(What::Sessions {
            sessions: n,
            concurrency,
            runtime,
        }) => {
            if runtime != "per-core" && runtime != "multi" {
                bail!("--runtime must be per-core or multi");
            }
            json!({"sessions": sessions(n, concurrency, &runtime)?})
        }
        Some(What::Throughput {
            sessions,
            in_flight,
            seconds,
        }) => json!({"throughput": throughput(sessions, in_flight, seconds)?}),
        Some(What::Layout { sessions }) => json!({"layout": layout(sessions)?}),
        None => json!({
            "sessions": sessions(15_000, 64, "per-core")?,
            "throughput": throughput(100, 16, 5)?,
            "layout": layout(5_000)?,
        }),
    };
    if args.json {
        println!("{result}");
    } else {
        println!("{}", serde_json::to_string_pretty(&result)?);
    }
    Ok(ExitCode::SUCCESS)
}

//! headroom-conformance: the "everything" fixture set the official MCP
//! conformance suite (`@modelcontextprotocol/conformance`) expects — tools
//! such as `test_simple_text` and `test_sampling`, resources such as
//! `test://static-text`, prompts such as `test_simple_prompt` — registered in
//! the headroom engine's own [`Registry`] and served over Streamable HTTP by
//! the same library `headroom serve` uses. None of this is in `headroom
//! serve`'s tool list; the crate is `publish = false` and never packaged.
//!
//! `headroom-conformance --http 127.0.0.1:0` prints `http://ADDR/mcp` on
//! stdout once it serves, then runs until SIGTERM/SIGINT.

mod fixtures;
mod tasks;

use anyhow::Context;
use clap::Parser;
use headroom_mcp::http::{EngineProtocol, HttpConfig, HttpServer};
use headroom_mcp::{Engine, EngineConfig};
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "headroom-conformance",
    about = "MCP conformance fixtures (the suite's everything server) on the headroom server library"
)]
struct Cli {
    /// Address to serve Streamable HTTP on (http://ADDR/mcp); port 0 picks a free port.
    #[arg(long, value_name = "ADDR")]
    http: SocketAddr,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("headroom-conformance: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("building the runtime")?;
    runtime.block_on(async {
        let registry = fixtures::registry();
        let config = EngineConfig {
            name: "headroom-conformance".into(),
            title: Some("headroom conformance fixtures".into()),
            ..Default::default()
        };
        let engine = Engine::new(registry, config, None);
        let http = HttpConfig {
            // The suite's reconnection scenario measures the client's wait.
            sse_retry: Duration::from_millis(500),
            ..Default::default()
        };
        let server = HttpServer::bind(cli.http, http, EngineProtocol::new(engine))
            .await
            .with_context(|| format!("binding --http {}", cli.http))?;
        let addr = server.local_addr()?;
        let mut out = std::io::stdout();
        writeln!(out, "http://{addr}/mcp")?;
        out.flush()?;
        let stop = async {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return std::future::pending().await;
            };
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        };
        server.serve(stop).await.context("serving")?;
        Ok(())
    })
}

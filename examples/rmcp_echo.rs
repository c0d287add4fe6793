//! The comparator for `headroom bench`: the official Rust MCP SDK (rmcp)
//! serving the same `echo` tool as `headroom serve` (same input schema, same
//! result: one text content block), so the benchmarks can put the two side
//! by side with one client. Not shipped: it is an example of the root
//! package and only `headroom bench` runs it.
//!
//! `rmcp_echo --tcp ADDR`: newline-delimited JSON-RPC over TCP, rmcp's
//! async-rw transport, one rmcp session per connection.
//! `rmcp_echo --http ADDR`: rmcp's `StreamableHttpService` at `/mcp`,
//! stateless (`legacy_session_mode` off) with JSON responses, served by
//! axum, the way rmcp's own examples and tests serve it.
//!
//! The runtime is what an rmcp server gets from `#[tokio::main]`: tokio's
//! multi-thread runtime with one worker per core. The first stdout line is
//! `{"listen": ADDR, ...}`, which is what `headroom bench` waits for.

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorData,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{RoleServer, ServerHandler, ServiceExt};
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

/// headroom's echo tool definition (server/src/tools.rs), verbatim.
static ECHO: LazyLock<Tool> = LazyLock::new(|| {
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "message": {"type": "string"},
            "delay_ms": {"type": "integer", "minimum": 0, "maximum": 60000},
            "steps": {"type": "integer", "minimum": 1, "maximum": 100}
        },
        "required": ["message"]
    });
    let schema = schema.as_object().expect("an object schema").clone();
    let mut tool = Tool::new(
        "echo",
        "Returns its message. With delay_ms it answers later and, when the request has a progressToken, reports progress in `steps` steps (for load and cancellation tests).",
        Arc::new(schema),
    )
    .with_annotations(
        ToolAnnotations::new()
            .read_only(true)
            .open_world(false),
    );
    tool.title = Some("Echo".into());
    tool
});

#[derive(Clone, Copy, Default)]
struct Echo;

impl ServerHandler for Echo {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        (name == "echo").then(|| ECHO.clone())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(vec![ECHO.clone()]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if request.name != "echo" {
            return Err(ErrorData::invalid_params(
                format!("unknown tool {}", request.name),
                None,
            ));
        }
        let message = request
            .arguments
            .as_ref()
            .and_then(|a| a.get("message"))
            .and_then(|m| m.as_str());
        let Some(message) = message else {
            return Ok(CallToolResult::error(vec![ContentBlock::text(
                "message (a string) is required",
            )])
            .into());
        };
        let mut result = CallToolResult::success(vec![ContentBlock::text(message)]);
        // headroom leaves isError out of a success; so does this.
        result.is_error = None;
        Ok(result.into())
    }
}

/// Raises the soft nofile limit to the hard one, as `headroom serve` does,
/// so a session count is not cut short by the default 1024.
fn raise_nofile() {
    // SAFETY: getrlimit/setrlimit with a struct we own.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

fn ready(addr: SocketAddr, transport: &str) {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "{}",
        serde_json::json!({
            "listen": addr.to_string(),
            "transport": transport,
            "runtime": format!("tokio multi-thread, {workers} workers (#[tokio::main] default)"),
            "pid": std::process::id(),
        })
    );
}

async fn serve_tcp(addr: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    ready(listener.local_addr()?, "tcp");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            if let Ok(running) = Echo.serve(stream).await {
                let _ = running.waiting().await;
            }
        });
    }
}

async fn serve_http(addr: SocketAddr) -> std::io::Result<()> {
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None);
    let service: StreamableHttpService<Echo, LocalSessionManager> =
        StreamableHttpService::new(|| Ok(Echo), Default::default(), config);
    let router = axum::Router::new().nest_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    ready(listener.local_addr()?, "http");
    axum::serve(listener, router).await
}

fn usage() -> ! {
    eprintln!("usage: rmcp_echo --tcp ADDR | --http ADDR");
    std::process::exit(2)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, addr] = args.as_slice() else {
        usage()
    };
    let Ok(addr) = addr.parse::<SocketAddr>() else {
        eprintln!("rmcp_echo: {addr:?} is not an address like 127.0.0.1:0");
        std::process::exit(2)
    };
    raise_nofile();
    match mode.as_str() {
        "--tcp" => serve_tcp(addr).await,
        "--http" => serve_http(addr).await,
        _ => usage(),
    }
}

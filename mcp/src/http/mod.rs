//! Streamable HTTP transport: MCP on one endpoint, `/mcp`.
//!
//! POST carries one JSON-RPC message. A request is answered with JSON when the
//! engine replies before it has anything else to say, and with an SSE stream as
//! soon as it sends progress, logging or a server-to-client request first.
//! An `initialize` opens a session (`Mcp-Session-Id`); DELETE ends it; GET opens
//! the session's standalone stream or resumes any stream with `Last-Event-ID`.
//! Requests without a session are served statelessly (the 2026-07-28 era).
//!
//! The same limits as the TCP transport, said in HTTP: past the connection or
//! session limit a 503 with a JSON-RPC error body and `Retry-After`; an
//! oversize body a 413 without reading it; a client too slow to send its headers
//! or body is cut off.

mod engine;
mod guard;
pub mod protocol;
mod session;

use crate::{jsonrpc, version};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use protocol::{Outbound, Protocol};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use session::{Session, Sessions, STANDALONE};
use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

pub use engine::EngineProtocol;
pub use protocol::{BoxFuture, ProtocolSession, Sink};

/// Limits and settings of the HTTP transport.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Open TCP connections served at once; past it, 503.
    pub max_connections: usize,
    /// Initialize-era sessions alive at once; past it, 503.
    pub max_sessions: usize,
    /// Largest request body; larger gets 413.
    pub max_body_bytes: usize,
    /// Time a client has to send a request's headers, and again its body.
    pub read_timeout: Duration,
    /// A session unused this long is forgotten.
    pub session_idle: Duration,
    /// `retry:` sent in SSE priming events: how long a client waits to reconnect.
    pub sse_retry: Duration,
    /// Bearer token every request must carry, when set.
    pub token: Option<String>,
    /// Enforce Host/Origin naming this machine (DNS-rebinding protection).
    /// [`HttpServer::bind`] turns it on for a loopback address.
    pub check_origin: bool,
    /// Seconds in the `Retry-After` of a 503.
    pub retry_after_secs: u32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_connections: 10_000,
            max_sessions: 10_000,
            max_body_bytes: 1 << 20,
            read_timeout: Duration::from_secs(10),
            session_idle: Duration::from_secs(30 * 60),
            sse_retry: Duration::from_millis(1000),
            token: None,
            check_origin: false,
            retry_after_secs: 1,
        }
    }
}

/// Counters of the HTTP transport, read by the metrics exporter.
#[derive(Debug, Default)]
pub struct HttpStats {
    pub connections_active: AtomicUsize,
    pub connections_accepted: AtomicU64,
    /// Refused at the connection limit.
    pub refused_connections: AtomicU64,
    /// Refused at the session limit.
    pub refused_sessions: AtomicU64,
    /// Bodies over the size limit.
    pub refused_oversize: AtomicU64,
    /// Requests refused by Host/Origin or token checks.
    pub refused_forbidden: AtomicU64,
    /// Clients cut off for sending too slowly.
    pub timeouts: AtomicU64,
    pub requests: AtomicU64,
    pub sessions_opened: AtomicU64,
    pub bytes_in: AtomicU64,
}

impl crate::transport::OpenConnections for HttpStats {
    fn open_connections(&self) -> u64 {
        self.connections_active.load(Ordering::Relaxed) as u64
    }
}

struct Shared {
    protocol: Arc<dyn Protocol>,
    sessions: Sessions,
    config: HttpConfig,
    stats: Arc<HttpStats>,
    /// Prometheus counters labelled transport="http", when exported.
    metrics: Option<Arc<crate::metrics::TransportMetrics>>,
}

impl Shared {
    /// Counts a refusal in the Prometheus metrics (`reason` names the limit).
    fn count_refused(&self, reason: &str) {
        if let Some(tm) = &self.metrics {
            tm.refused(reason);
        }
    }
}

/// A bound Streamable HTTP server, not yet serving.
pub struct HttpServer {
    listener: TcpListener,
    shared: Arc<Shared>,
}

const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";

fn rpc_error(id: Value, code: i32, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response()
}

fn error_response(status: StatusCode, id: Value, code: i32, message: &str) -> Response {
    json_response(status, &rpc_error(id, code, message))
}

fn unavailable(retry_after: u32, message: &str) -> Response {
    let mut r = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        Value::Null,
        jsonrpc::SERVER_ERROR,
        message,
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    r
}

impl HttpServer {
    /// Binds `addr`. DNS-rebinding protection is switched on when the address
    /// is loopback (whatever the config says), since that is the case it exists for.
    pub async fn bind(
        addr: SocketAddr,
        mut config: HttpConfig,
        protocol: Arc<dyn Protocol>,
    ) -> std::io::Result<HttpServer> {
        let listener = TcpListener::bind(addr).await?;
        if addr.ip().is_loopback() {
            config.check_origin = true;
        }
        Ok(HttpServer::from_listener(listener, config, protocol))
    }

    /// Serves on a listener the caller bound.
    pub fn from_listener(
        listener: TcpListener,
        config: HttpConfig,
        protocol: Arc<dyn Protocol>,
    ) -> HttpServer {
        let shared = Arc::new(Shared {
            protocol,
            sessions: Sessions::new(config.max_sessions),
            config,
            stats: Arc::new(HttpStats::default()),
            metrics: None,
        });
        HttpServer { listener, shared }
    }

    /// Also counts connections, refusals and bytes in the server's Prometheus
    /// metrics, labelled transport="http" (the engine labels its messages the same way).
    pub fn with_metrics(mut self, metrics: &crate::Metrics) -> HttpServer {
        let tm = metrics.transport(crate::Transport::Http);
        Arc::get_mut(&mut self.shared)
            .expect("not serving yet: the only handle")
            .metrics = Some(tm);
        self
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn stats(&self) -> Arc<HttpStats> {
        self.shared.stats.clone()
    }

    /// Serves until `shutdown` resolves; then stops accepting and returns.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        let shared = self.shared;
        let reaper = {
            let shared = shared.clone();
            tokio::spawn(async move {
                let every = (shared.config.session_idle / 4).max(Duration::from_secs(1));
                loop {
                    tokio::time::sleep(every).await;
                    shared.sessions.reap(shared.config.session_idle);
                }
            })
        };
        tokio::pin!(shutdown);
        let result = loop {
            let (stream, _peer) = tokio::select! {
                _ = &mut shutdown => break Ok(()),
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    // Out of fds or similar: back off instead of spinning.
                    Err(e) if is_transient(&e) => { tokio::time::sleep(Duration::from_millis(20)).await; continue }
                    Err(e) => break Err(e),
                },
            };
            let _ = stream.set_nodelay(true);
            shared
                .stats
                .connections_accepted
                .fetch_add(1, Ordering::Relaxed);
            let over = shared
                .stats
                .connections_active
                .fetch_add(1, Ordering::AcqRel)
                >= shared.config.max_connections;
            if let (Some(tm), false) = (&shared.metrics, over) {
                tm.accepted.inc();
                tm.active.inc();
            }
            let shared = shared.clone();
            tokio::spawn(async move {
                serve_connection(stream, shared.clone(), over).await;
                shared
                    .stats
                    .connections_active
                    .fetch_sub(1, Ordering::AcqRel);
                if let (Some(tm), false) = (&shared.metrics, over) {
                    tm.active.dec();
                }
            });
        };
        reaper.abort();
        result
    }
}

fn is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::ECONNABORTED)
    )
}

async fn serve_connection(stream: tokio::net::TcpStream, shared: Arc<Shared>, over_limit: bool) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(shared.config.read_timeout);
    let io = TokioIo::new(stream);
    if over_limit {
        // One answer naming the limit, then the connection closes.
        shared
            .stats
            .refused_connections
            .fetch_add(1, Ordering::Relaxed);
        shared.count_refused("max-connections");
        let retry = shared.config.retry_after_secs;
        let svc = hyper::service::service_fn(move |_req| async move {
            let mut r = unavailable(retry, "connection limit reached (--max-connections)");
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            Ok::<_, std::convert::Infallible>(r)
        });
        let _ = builder.keep_alive(false).serve_connection(io, svc).await;
        return;
    }
    let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let shared = shared.clone();
        async move { Ok::<_, std::convert::Infallible>(route(shared, req.map(Body::new)).await) }
    });
    let _ = builder.serve_connection(io, svc).await;
}

async fn route(shared: Arc<Shared>, req: Request) -> Response {
    shared.stats.requests.fetch_add(1, Ordering::Relaxed);
    if req.uri().path() != "/mcp" {
        return (
            StatusCode::NOT_FOUND,
            "not found: the MCP endpoint is /mcp\n",
        )
            .into_response();
    }
    if shared.config.check_origin {
        if let Err(why) = guard::check_rebinding(req.headers()) {
            shared
                .stats
                .refused_forbidden
                .fetch_add(1, Ordering::Relaxed);
            shared.count_refused("forbidden");
            return error_response(
                StatusCode::FORBIDDEN,
                Value::Null,
                jsonrpc::SERVER_ERROR,
                why,
            );
        }
    }
    if let Some(token) = &shared.config.token {
        if !guard::check_bearer(req.headers(), token) {
            shared
                .stats
                .refused_forbidden
                .fetch_add(1, Ordering::Relaxed);
            shared.count_refused("forbidden");
            let mut r = error_response(
                StatusCode::UNAUTHORIZED,
                Value::Null,
                jsonrpc::SERVER_ERROR,
                "missing or wrong bearer token",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    match *req.method() {
        Method::POST => post(State(shared), req).await,
        Method::GET => get(State(shared), req).await,
        Method::DELETE => delete(State(shared), req.headers()).await,
        _ => {
            let mut r = StatusCode::METHOD_NOT_ALLOWED.into_response();
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
            r
        }
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Reads the body within the size and time limits.
async fn read_body(shared: &Shared, req: Request) -> Result<Bytes, Response> {
    let max = shared.config.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        shared
            .stats
            .refused_oversize
            .fetch_add(1, Ordering::Relaxed);
        shared.count_refused("max-message-bytes");
        let mut r = error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            Value::Null,
            jsonrpc::INVALID_REQUEST,
            &format!("message larger than {max} bytes (--max-message-bytes)"),
        );
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        r
    };
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let limited = http_body_util::Limited::new(req.into_body(), max);
    match tokio::time::timeout(shared.config.read_timeout, limited.collect()).await {
        Ok(Ok(collected)) => {
            let bytes = collected.to_bytes();
            shared
                .stats
                .bytes_in
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            if let Some(tm) = &shared.metrics {
                tm.received.inc_by(bytes.len() as u64);
            }
            Ok(bytes)
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(_)) => Err(error_response(
            StatusCode::BAD_REQUEST,
            Value::Null,
            jsonrpc::INVALID_REQUEST,
            "request body could not be read",
        )),
        Err(_) => {
            shared.stats.timeouts.fetch_add(1, Ordering::Relaxed);
            shared.count_refused("timeout");
            let mut r = error_response(
                StatusCode::REQUEST_TIMEOUT,
                Value::Null,
                jsonrpc::INVALID_REQUEST,
                "request body not received in time",
            );
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            Err(r)
        }
    }
}

/// The fields of an inbound message the transport routes on, borrowed from
/// the body (the engine parses the message itself).
#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow)]
    params: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
struct PeekParams<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    uri: Option<Cow<'a, str>>,
    #[serde(rename = "taskId", borrow)]
    task_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    arguments: Option<&'a RawValue>,
    #[serde(rename = "_meta", borrow)]
    meta: Option<PeekMeta<'a>>,
}

#[derive(Deserialize, Default)]
struct PeekMeta<'a> {
    #[serde(rename = "io.modelcontextprotocol/protocolVersion", borrow)]
    version: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct PeekReply {
    error: Option<PeekError>,
    result: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct PeekError {
    code: i32,
}

fn raw_id(id: Option<&RawValue>) -> Value {
    id.and_then(|r| serde_json::from_str(r.get()).ok())
        .unwrap_or(Value::Null)
}

/// HTTP status for a stateless-era error reply (2026-07-28 transport rules).
fn stateless_status(reply: &[u8]) -> StatusCode {
    let code = serde_json::from_slice::<PeekReply>(reply)
        .ok()
        .and_then(|r| r.error)
        .map(|e| e.code);
    match code {
        None => StatusCode::OK,
        Some(-32601) => StatusCode::NOT_FOUND,
        Some(-32700 | -32600 | -32602 | -32020 | -32021 | -32022) => StatusCode::BAD_REQUEST,
        Some(_) => StatusCode::OK,
    }
}

fn reply_succeeded(reply: &[u8]) -> bool {
    serde_json::from_slice::<PeekReply>(reply).is_ok_and(|r| r.result.is_some())
}

/// SEP-2243 custom headers: every argument a tool's schema marks with
/// `x-mcp-header` travels again in `Mcp-Param-{header}` (verbatim, or
/// `=?base64?...?=` for values a header cannot carry) and must equal the body.
fn check_param_headers(
    headers: &HeaderMap,
    params: &PeekParams,
    mirrored: &[(String, String)],
) -> Result<(), String> {
    if mirrored.is_empty() {
        return Ok(());
    }
    let args: serde_json::Map<String, Value> = params
        .arguments
        .and_then(|a| serde_json::from_str(a.get()).ok())
        .unwrap_or_default();
    for (arg, name) in mirrored {
        let header = header_str(headers, &format!("mcp-param-{name}"));
        let body = match args.get(arg) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(Cow::Borrowed(s.as_str())),
            Some(v) => Some(Cow::Owned(v.to_string())),
        };
        match (header, body) {
            (None, None) => {}
            (None, Some(_)) => {
                return Err(format!(
                    "missing Mcp-Param-{name} header for argument {arg:?}"
                ))
            }
            (Some(_), None) => {
                return Err(format!(
                    "Mcp-Param-{name} header sent but argument {arg:?} is absent"
                ))
            }
            (Some(h), Some(b)) => {
                let decoded = decode_param(h)
                    .ok_or_else(|| format!("Mcp-Param-{name}: invalid Base64 value"))?;
                if decoded != b {
                    return Err(format!(
                        "Mcp-Param-{name} header differs from argument {arg:?}"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A `Mcp-Param-*` value: `=?base64?...?=` decoded (strict, padded
/// standard alphabet, UTF-8), anything else literal.
fn decode_param(v: &str) -> Option<Cow<'_, str>> {
    use base64::Engine as _;
    match v
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        Some(b64) => {
            let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
            String::from_utf8(bytes).ok().map(Cow::Owned)
        }
        None => Some(Cow::Borrowed(v)),
    }
}

/// 2026-07-28 transport checks of a stateless request (SEP-2243, SEP-2575):
/// the version header must be present and equal `_meta`'s, and `Mcp-Method` /
/// `Mcp-Name` must repeat the body.
fn check_stateless_headers(
    headers: &HeaderMap,
    method: &str,
    params: &PeekParams,
) -> Result<(), (i32, String)> {
    let Some(header_version) = header_str(headers, VERSION_HEADER) else {
        return Err((
            jsonrpc::HEADER_MISMATCH,
            "missing MCP-Protocol-Version header".into(),
        ));
    };
    if let Some(v) = params.meta.as_ref().and_then(|m| m.version.as_deref()) {
        if v != header_version {
            return Err((
                jsonrpc::HEADER_MISMATCH,
                format!("MCP-Protocol-Version header {header_version:?} differs from _meta {v:?}"),
            ));
        }
    }
    match header_str(headers, "mcp-method") {
        Some(m) if m == method => {}
        Some(m) => {
            return Err((
                jsonrpc::HEADER_MISMATCH,
                format!("Mcp-Method header {m:?} differs from the body's method {method:?}"),
            ))
        }
        None => return Err((jsonrpc::HEADER_MISMATCH, "missing Mcp-Method header".into())),
    }
    let named = match method {
        "tools/call" | "prompts/get" => params.name.as_deref(),
        "resources/read" => params.uri.as_deref(),
        // SEP-2663: task methods route on the task id.
        "tasks/get" | "tasks/update" | "tasks/cancel" => params.task_id.as_deref(),
        _ => None,
    };
    if let Some(name) = named {
        match header_str(headers, "mcp-name") {
            Some(n) if n == name => {}
            Some(n) => {
                return Err((
                    jsonrpc::HEADER_MISMATCH,
                    format!("Mcp-Name header {n:?} differs from the body's {name:?}"),
                ))
            }
            None => return Err((jsonrpc::HEADER_MISMATCH, "missing Mcp-Name header".into())),
        }
    }
    Ok(())
}

async fn post(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let headers = req.headers().clone();
    let content_type = header_str(&headers, header::CONTENT_TYPE.as_str()).unwrap_or("");
    if !content_type
        .to_ascii_lowercase()
        .starts_with("application/json")
    {
        return error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Value::Null,
            jsonrpc::INVALID_REQUEST,
            "Content-Type must be application/json",
        );
    }
    let body = match read_body(&shared, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return error_response(
            StatusCode::BAD_REQUEST,
            Value::Null,
            jsonrpc::INVALID_REQUEST,
            "expected one JSON-RPC message (batches are not supported)",
        );
    }
    let peek: Peek = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) if e.is_data() => {
            return error_response(
                StatusCode::BAD_REQUEST,
                Value::Null,
                jsonrpc::INVALID_REQUEST,
                &format!("invalid request: {e}"),
            )
        }
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                Value::Null,
                jsonrpc::PARSE_ERROR,
                &format!("parse error: {e}"),
            )
        }
    };
    let is_request = peek.method.is_some() && peek.id.is_some();
    let rid = peek.id;

    let session = match header_str(&headers, SESSION_HEADER) {
        Some(sid) => match shared.sessions.get(sid) {
            Some(s) => Some(s),
            None => {
                return error_response(
                    StatusCode::NOT_FOUND,
                    raw_id(rid),
                    jsonrpc::SESSION_NOT_FOUND,
                    "session not found (expired or deleted): initialize again",
                )
            }
        },
        None => None,
    };
    let params: PeekParams = peek
        .params
        .and_then(|p| serde_json::from_str(p.get()).ok())
        .unwrap_or_default();
    let meta_version = params.meta.as_ref().and_then(|m| m.version.as_deref());
    let header_version = header_str(&headers, VERSION_HEADER);
    // A stateless-era request: `_meta` names a revision, or the header names one
    // past the initialize era. The engine answers version errors for those itself.
    let stateless = session.is_none()
        && (meta_version.is_some() || header_version.is_some_and(version::stateless_era));
    if let (Some(v), false) = (header_version, stateless) {
        let supported = shared.protocol.supported_versions();
        if !supported.contains(&v) {
            let body = json!({"jsonrpc": "2.0", "id": raw_id(rid), "error": {
                "code": jsonrpc::UNSUPPORTED_PROTOCOL_VERSION,
                "message": format!("unsupported MCP-Protocol-Version {v:?}"),
                "data": {"supported": supported, "requested": v}}});
            return json_response(StatusCode::BAD_REQUEST, &body);
        }
    }

    if let Some(session) = session {
        session.touch();
        let protocol = session.protocol.clone();
        if !is_request {
            protocol.handle(body.clone(), Sink::channel(1).0).await;
            return StatusCode::ACCEPTED.into_response();
        }
        return answer(
            &shared,
            Some(session),
            protocol,
            body.clone(),
            raw_id(rid),
            &headers,
            None,
            false,
        )
        .await;
    }

    if peek.method.as_deref() == Some("initialize") && !stateless {
        if shared.sessions.len() >= shared.sessions.max {
            shared
                .stats
                .refused_sessions
                .fetch_add(1, Ordering::Relaxed);
            shared.count_refused("max-sessions");
            return unavailable(
                shared.config.retry_after_secs,
                "session limit reached (--max-sessions)",
            );
        }
        let (unrelated, rx) = Sink::channel(session::LIVE_BUFFER);
        let protocol = shared.protocol.open(unrelated);
        let new = Session::new(session::new_session_id(), protocol.clone());
        session::spawn_unrelated_pump(&new, rx);
        return answer(
            &shared,
            None,
            protocol,
            body.clone(),
            raw_id(rid),
            &headers,
            Some(new),
            false,
        )
        .await;
    }

    // No session and not initialize: the stateless era, one protocol state per request.
    if !stateless {
        // An initialize-era client that lost its session, or never initialized.
        if !is_request {
            return StatusCode::ACCEPTED.into_response();
        }
        return error_response(
            StatusCode::BAD_REQUEST,
            raw_id(rid),
            jsonrpc::SERVER_ERROR,
            "missing Mcp-Session-Id: initialize first",
        );
    }
    if is_request {
        let method = peek.method.as_deref().unwrap_or("");
        if let Err((code, message)) = check_stateless_headers(&headers, method, &params) {
            return error_response(StatusCode::BAD_REQUEST, raw_id(rid), code, &message);
        }
        if let (Some(tool), "tools/call") = (params.name.as_deref(), method) {
            let mirrored = shared.protocol.param_headers(tool);
            if let Err(message) = check_param_headers(&headers, &params, mirrored) {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    raw_id(rid),
                    jsonrpc::HEADER_MISMATCH,
                    &message,
                );
            }
        }
    }
    let rid = raw_id(rid);
    let protocol = shared.protocol.open(Sink::channel(1).0);
    if !is_request {
        protocol.handle(body.clone(), Sink::channel(1).0).await;
        return StatusCode::ACCEPTED.into_response();
    }
    answer(
        &shared,
        None,
        protocol,
        body.clone(),
        rid,
        &headers,
        None,
        true,
    )
    .await
}

/// Adds a session whose initialize succeeded; past `--max-sessions`, the
/// 503 to answer with instead (and the refusal counted).
fn register_session(shared: &Shared, new: &Arc<Session>) -> Option<Response> {
    if shared.sessions.insert(new.clone()).is_err() {
        shared
            .stats
            .refused_sessions
            .fetch_add(1, Ordering::Relaxed);
        shared.count_refused("max-sessions");
        return Some(unavailable(
            shared.config.retry_after_secs,
            "session limit reached (--max-sessions)",
        ));
    }
    shared.stats.sessions_opened.fetch_add(1, Ordering::Relaxed);
    None
}

fn bytes_response(status: StatusCode, body: Bytes) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// Runs one request and answers it: JSON when the reply comes before anything
/// else, an SSE stream from the first related message on.
#[allow(clippy::too_many_arguments)]
async fn answer(
    shared: &Arc<Shared>,
    session: Option<Arc<Session>>,
    protocol: Arc<dyn ProtocolSession>,
    msg: Bytes,
    rid: Value,
    headers: &HeaderMap,
    new_session: Option<Arc<Session>>,
    stateless: bool,
) -> Response {
    let (related, mut rx) = session::request_sink();
    let mut work = protocol.handle(msg, related);
    let wants_json = guard::accepts(headers, "application/json");
    let wants_sse = guard::accepts(headers, "text/event-stream");
    let internal = |rid: &Value| {
        Bytes::from(
            serde_json::to_vec(&rpc_error(
                rid.clone(),
                jsonrpc::INTERNAL_ERROR,
                "the request's handler ended without a reply",
            ))
            .unwrap_or_default(),
        )
    };

    // Wait for either the reply or the first related message.
    let first = tokio::select! {
        biased;
        reply = &mut work => match rx.try_recv() {
            // Messages came with the reply: they go first, so this is a stream.
            Ok(out) => Err((Some(out), Some(reply))),
            Err(_) => Ok(reply),
        },
        out = rx.recv() => match out {
            Some(out) => Err((Some(out), None)),
            // The handler let go of the related channel without a word
            // (it can before its reply is handed over): nothing but the
            // reply is coming, so it is still a JSON answer, not a stream.
            None => Ok((&mut work).await),
        },
    };
    match first {
        Ok(reply) => {
            let reply = reply.unwrap_or_else(|| internal(&rid));
            let mut status = if stateless {
                stateless_status(&reply)
            } else {
                StatusCode::OK
            };
            let mut sid = None;
            if let Some(new) = new_session {
                if reply_succeeded(&reply) {
                    if let Some(full) = register_session(shared, &new) {
                        return full;
                    }
                    sid = HeaderValue::from_str(&new.id).ok();
                } else {
                    status = StatusCode::BAD_REQUEST;
                }
            }
            let mut r = if wants_json || !wants_sse {
                bytes_response(status, reply)
            } else {
                // An SSE-only client: one event, the reply.
                sse_response(Body::from(session::sse_event("0-1", &reply)))
            };
            if let Some(sid) = sid {
                r.headers_mut().insert(SESSION_HEADER, sid);
            }
            r
        }
        Err((first_out, early_reply)) => {
            // The handler has more to say than a reply: stream it.
            let session = session.or(new_session.clone());
            let (live_tx, live_rx) = mpsc::channel::<Bytes>(session::LIVE_BUFFER);
            let retry = shared.config.sse_retry;
            let stream_no = session.as_ref().map(|s| {
                let n = s.new_stream(live_tx.clone());
                let _ = live_tx.try_send(s.priming(n, retry));
                n
            });
            if let Some(new) = &new_session {
                // Initialize answered over SSE: register the session now.
                if let Some(full) = register_session(shared, new) {
                    return full;
                }
            }
            let stream_session = session.clone();
            let loose = live_tx.clone();
            let gone = live_tx.clone();
            drop(live_tx);
            // False once a stream without a session (stateless: nothing to
            // resume from) has lost its reader, or its reader fell behind:
            // the request is dropped then (a subscriptions/listen ends).
            let deliver = move |out: Option<Outbound>| match (out, &stream_session, stream_no) {
                (Some(Outbound::Message(data)), Some(s), Some(n)) => {
                    s.push(n, &data);
                    true
                }
                (Some(Outbound::Message(data)), _, _) => {
                    loose.try_send(session::sse_event("0-1", &data)).is_ok()
                }
                (Some(Outbound::CloseStream), Some(s), Some(n)) => {
                    s.detach(n);
                    true
                }
                _ => true,
            };
            let sessionless = stream_no.is_none();
            tokio::spawn(async move {
                if !deliver(first_out) && sessionless {
                    return;
                }
                let reply = match early_reply {
                    Some(reply) => reply,
                    None => loop {
                        tokio::select! {
                            reply = &mut work => break reply,
                            out = rx.recv() => if !deliver(out) && sessionless {
                                return;
                            },
                            _ = gone.closed(), if sessionless => return,
                        }
                    },
                };
                // Messages sent just before the reply come before it.
                while let Ok(out) = rx.try_recv() {
                    deliver(Some(out));
                }
                let reply = reply.unwrap_or_else(|| internal(&rid));
                deliver(Some(Outbound::Message(reply)));
                if let (Some(s), Some(n)) = (&session, stream_no) {
                    s.finish(n);
                }
            });
            let mut r = sse_response(Body::from_stream(ReceiverStream::new(live_rx).map_ok()));
            if let Some(new) = new_session {
                if let Ok(v) = HeaderValue::from_str(&new.id) {
                    r.headers_mut().insert(SESSION_HEADER, v);
                }
            }
            r
        }
    }
}

trait MapOk: Sized {
    fn map_ok(self) -> OkStream<Self>;
}
impl MapOk for ReceiverStream<Bytes> {
    fn map_ok(self) -> OkStream<Self> {
        OkStream(self)
    }
}
/// A stream of frames as the `Result` items a body stream wants.
struct OkStream<S>(S);
impl<S: tokio_stream::Stream<Item = Bytes> + Unpin> tokio_stream::Stream for OkStream<S> {
    type Item = Result<Bytes, std::convert::Infallible>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::pin::Pin::new(&mut self.0)
            .poll_next(cx)
            .map(|o| o.map(Ok))
    }
}

fn sse_response(body: Body) -> Response {
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

async fn get(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let headers = req.headers();
    if !guard::accepts(headers, "text/event-stream") {
        return error_response(
            StatusCode::NOT_ACCEPTABLE,
            Value::Null,
            jsonrpc::INVALID_REQUEST,
            "GET needs Accept: text/event-stream",
        );
    }
    let Some(sid) = header_str(headers, SESSION_HEADER) else {
        // Stateless: nothing to stream outside a request.
        let mut r = StatusCode::METHOD_NOT_ALLOWED.into_response();
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    };
    let Some(session) = shared.sessions.get(sid) else {
        return error_response(
            StatusCode::NOT_FOUND,
            Value::Null,
            jsonrpc::SESSION_NOT_FOUND,
            "session not found",
        );
    };
    session.touch();
    let (live_tx, live_rx) = mpsc::channel::<Bytes>(session::LIVE_BUFFER);
    if let Some(last) = header_str(headers, "last-event-id") {
        if session.resume(last, live_tx).is_none() {
            return error_response(
                StatusCode::NOT_FOUND,
                Value::Null,
                jsonrpc::INVALID_PARAMS,
                "Last-Event-ID names no stream this session remembers",
            );
        }
    } else {
        let _ = live_tx.try_send(session.priming(STANDALONE, shared.config.sse_retry));
        if !session.attach_standalone(live_tx) {
            return error_response(
                StatusCode::CONFLICT,
                Value::Null,
                jsonrpc::SERVER_ERROR,
                "this session's GET stream is already open",
            );
        }
    }
    sse_response(Body::from_stream(ReceiverStream::new(live_rx).map_ok()))
}

async fn delete(State(shared): State<Arc<Shared>>, headers: &HeaderMap) -> Response {
    let Some(sid) = header_str(headers, SESSION_HEADER) else {
        return error_response(
            StatusCode::BAD_REQUEST,
            Value::Null,
            jsonrpc::SERVER_ERROR,
            "DELETE needs Mcp-Session-Id",
        );
    };
    match shared.sessions.remove(sid) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => error_response(
            StatusCode::NOT_FOUND,
            Value::Null,
            jsonrpc::SESSION_NOT_FOUND,
            "session not found",
        ),
    }
}

#[cfg(test)]
mod tests;

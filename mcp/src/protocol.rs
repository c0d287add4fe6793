//! The MCP protocol engine: an [`Engine`] (registry, configuration, shared
//! by every connection) and a [`Session`] per connection or HTTP session, a
//! state machine that takes one inbound message and appends the outbound
//! ones. No I/O here: transports read, call [`Session::handle`], write.
//!
//! Both protocol eras are served by one session:
//! - initialize era (2024-11-05, 2025-03-26, 2025-06-18, 2025-11-25):
//!   `initialize` selects it for the connection; afterwards every request is
//!   served under the negotiated revision;
//! - stateless era (2026-07-28): a request whose `params._meta` carries
//!   `io.modelcontextprotocol/protocolVersion` is served on its own, with the
//!   client capabilities from the same `_meta`.

use crate::jsonrpc::{self, Kind};
use crate::metrics::{Metrics, TransportMetrics};
use crate::registry::{
    Args, LogLevel, Registry, RpcError, ToolCtx, ToolEvent, ToolFuture, ToolOutput, ToolResult,
};
pub use crate::transport::Transport;
use futures_util::future::{AbortHandle, Abortable, Aborted};
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// Initialize-era revisions, newest first.
pub const LEGACY_VERSIONS: [&str; 4] = ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];
pub const LATEST_LEGACY: &str = "2025-11-25";
/// Stateless-era revisions.
pub const STATELESS_VERSIONS: [&str; 1] = ["2026-07-28"];
pub const PROTOCOL_VERSION_KEY: &str = "io.modelcontextprotocol/protocolVersion";
pub const CLIENT_CAPABILITIES_KEY: &str = "io.modelcontextprotocol/clientCapabilities";
pub const LOG_LEVEL_KEY: &str = "io.modelcontextprotocol/logLevel";
pub const SERVER_INFO_KEY: &str = "io.modelcontextprotocol/serverInfo";
/// Where a client presents the `--token-file` token, in both eras:
/// `params._meta["headroom/token"]` of `initialize`, or of a stateless request.
pub const TOKEN_META_KEY: &str = "headroom/token";

/// Methods whose stateless results carry `ttlMs` and `cacheScope`.
const CACHEABLE: [&str; 6] = [
    "prompts/list",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "server/discover",
    "tools/list",
];

/// Engine settings that every session of a server shares.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub name: String,
    pub title: Option<String>,
    pub version: String,
    pub instructions: Option<String>,
    /// Entries per page of the list methods.
    pub page_size: usize,
    /// Asynchronous requests one session may have running.
    pub max_in_flight: usize,
    /// The shared token; `None`: no authentication.
    pub token: Option<String>,
    /// `ttlMs` on cacheable stateless results.
    pub list_ttl_ms: u64,
    /// Resource subscriptions: bounds, pacing and change rules.
    pub subscriptions: crate::subscriptions::SubscriptionConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            name: "headroom".into(),
            title: Some("headroom".into()),
            version: env!("CARGO_PKG_VERSION").into(),
            instructions: None,
            page_size: 50,
            max_in_flight: 16,
            token: None,
            list_ttl_ms: 0,
            subscriptions: Default::default(),
        }
    }
}

/// The shared half of the server: what it offers and how.
pub struct Engine {
    pub registry: Registry,
    pub config: EngineConfig,
    pub metrics: Option<Arc<Metrics>>,
    /// Tasks of every session (tasks extension).
    pub tasks: Arc<crate::tasks::TaskStore>,
    /// Resource subscriptions of every session, and their samplers.
    pub hub: Arc<crate::subscriptions::Hub>,
    /// The initialize result of each initialize-era revision (in the order
    /// of [`LEGACY_VERSIONS`]), serialized on first use: it depends only on
    /// the revision and the configuration, and building it as a JSON tree
    /// per session was the largest allocation cost of opening one.
    initialize_results: [std::sync::OnceLock<Box<RawValue>>; LEGACY_VERSIONS.len()],
}

impl Engine {
    pub fn new(
        registry: Registry,
        config: EngineConfig,
        metrics: Option<Arc<Metrics>>,
    ) -> Arc<Engine> {
        let hub = crate::subscriptions::Hub::new(config.subscriptions.clone());
        Arc::new(Engine {
            registry,
            config,
            metrics,
            tasks: Arc::new(crate::tasks::TaskStore::new(Default::default())),
            hub,
            initialize_results: Default::default(),
        })
    }

    /// Tells every session subscribed to `uri` that it changed
    /// (`notifications/resources/updated`, at most one per subscription per
    /// interval). A resource a registry watcher covers is sampled now
    /// instead, and its change rules decide.
    pub fn resource_updated(&self, uri: &str) {
        self.hub.updated(uri);
    }

    /// The `initialize` result for an initialize-era `version`.
    fn initialize_result(&self, version: &'static str) -> &RawValue {
        let i = LEGACY_VERSIONS
            .iter()
            .position(|v| *v == version)
            .expect("an initialize-era revision");
        self.initialize_results[i].get_or_init(|| {
            let mut r = json!({
                "protocolVersion": version,
                "capabilities": self.capabilities(version),
                "serverInfo": self.server_info(),
            });
            if !at_least(version, "2025-06-18") {
                r["serverInfo"]
                    .as_object_mut()
                    .expect("object")
                    .remove("title");
            }
            if let Some(i) = &self.config.instructions {
                r["instructions"] = json!(i);
            }
            serde_json::value::to_raw_value(&r).expect("a JSON value serializes")
        })
    }

    fn token_ok(&self, presented: Option<&Value>) -> bool {
        match &self.config.token {
            None => true,
            Some(t) => presented
                .and_then(Value::as_str)
                .is_some_and(|p| constant_time_eq(p.as_bytes(), t.as_bytes())),
        }
    }

    fn server_info(&self) -> Value {
        let mut v = json!({"name": self.config.name, "version": self.config.version});
        if let Some(t) = &self.config.title {
            v["title"] = json!(t);
        }
        v
    }

    fn capabilities(&self, version: &str) -> Value {
        let mut caps = json!({
            "tools": {"listChanged": false},
            "resources": {"subscribe": true, "listChanged": false},
            "prompts": {"listChanged": false},
        });
        if version != "2024-11-05" {
            caps["completions"] = json!({});
        }
        if !is_stateless(version) {
            caps["logging"] = json!({});
        } else {
            // Stateless: subscriptions/listen replaces resources/subscribe.
            caps["resources"] = json!({"subscribe": true, "listChanged": false});
            if self.offers_tasks() {
                caps["extensions"] = json!({(crate::tasks::TASKS_EXTENSION): {}});
            }
        }
        caps
    }

    /// True when some tool may run as a task.
    fn offers_tasks(&self) -> bool {
        self.registry
            .tools
            .iter()
            .any(|t| t.task_support != crate::tasks::TaskSupport::Forbidden)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn is_stateless(version: &str) -> bool {
    STATELESS_VERSIONS.contains(&version)
}

/// Revision ordering: "2025-06-18" >= "2025-03-26" (dates compare as text).
fn at_least(version: &str, min: &str) -> bool {
    version >= min
}

/// What the transport should do after a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Write what is in the output, then close (unauthorized).
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing selected yet: `initialize` or a stateless request decides.
    Fresh,
    /// Initialize era at this revision.
    Legacy { version: &'static str },
}

/// How one request is served.
#[derive(Clone, Copy)]
struct Mode {
    version: &'static str,
    stateless: bool,
}

/// One connection's (or HTTP session's) protocol state. Small on purpose:
/// an idle initialized session is a few dozen bytes plus the engine handle.
pub struct Session {
    engine: Arc<Engine>,
    tm: Option<Arc<TransportMetrics>>,
    state: State,
    authed: bool,
    log_level: LogLevel,
    client_caps: Option<Arc<Value>>,
    asyncs: Option<Box<Asyncs>>,
    /// Resource subscriptions, allocated on the first.
    subs: Option<Box<crate::subscriptions::SessionSubs>>,
}

type CallFuture = Pin<Box<dyn Future<Output = (u64, Result<ToolResult, Aborted>)> + Send>>;

/// Running asynchronous calls, allocated on the first one.
struct Asyncs {
    futs: FuturesUnordered<CallFuture>,
    inflight: Vec<InFlight>,
    tx: mpsc::UnboundedSender<ToolEvent>,
    rx: mpsc::UnboundedReceiver<ToolEvent>,
    next_key: u64,
    next_request_id: u64,
    client_requests: Vec<(u64, oneshot::Sender<Result<Value, RpcError>>)>,
    /// Requests whose tools asked to end their response stream
    /// ([`Session::take_stream_closes`]).
    stream_closes: Vec<Box<RawValue>>,
}

struct InFlight {
    key: u64,
    id: Box<RawValue>,
    abort: AbortHandle,
    mode: Mode,
    progress_token: Option<Value>,
    log_level: Option<LogLevel>,
    started: Instant,
}

/// Something that happened beside the inbound stream: a tool finished or
/// reported, a subscribed resource changed. Feed it to [`Session::on_event`].
pub struct SessionEvent(EventInner);

enum EventInner {
    Done(u64, Result<ToolResult, Aborted>),
    Tool(ToolEvent),
    /// A subscribed resource changed, or a coalesced notification is due.
    Subs,
}

impl Session {
    pub fn new(engine: Arc<Engine>, transport: Transport) -> Session {
        let tm = engine.metrics.as_ref().map(|m| m.transport(transport));
        let authed = engine.config.token.is_none();
        Session {
            engine,
            tm,
            state: State::Fresh,
            authed,
            log_level: LogLevel::Info,
            client_caps: None,
            asyncs: None,
            subs: None,
        }
    }

    /// The negotiated initialize-era revision, if `initialize` happened.
    pub fn protocol_version(&self) -> Option<&'static str> {
        match self.state {
            State::Legacy { version } => Some(version),
            State::Fresh => None,
        }
    }

    /// Mark the session as authenticated by the transport (HTTP bearer token).
    pub fn set_authenticated(&mut self) {
        self.authed = true;
    }

    /// Asynchronous requests running now.
    pub fn in_flight(&self) -> usize {
        self.asyncs.as_ref().map_or(0, |a| a.inflight.len())
    }

    /// False when the session has its maximum of requests in flight: the
    /// transport should stop reading until an event completes one.
    pub fn can_accept(&self) -> bool {
        self.in_flight() < self.engine.config.max_in_flight
    }

    /// True when [`Session::next_event`] can ever yield (calls running or a
    /// subscription held).
    pub fn has_pending(&self) -> bool {
        self.asyncs
            .as_ref()
            .is_some_and(|a| !a.inflight.is_empty() || !a.client_requests.is_empty())
            || self.subs.is_some()
    }

    /// Cancels every running call (transport closing); no replies are written.
    pub fn abort_all(&mut self) {
        if let Some(a) = &mut self.asyncs {
            for f in a.inflight.drain(..) {
                f.abort.abort();
            }
        }
    }

    /// Waits for the next event; pending forever when there is nothing to
    /// wait for (so it can sit in a `select!`). Cancel-safe.
    pub fn next_event(&mut self) -> impl Future<Output = SessionEvent> + '_ {
        std::future::poll_fn(move |cx| self.poll_event(cx))
    }

    pub fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<SessionEvent> {
        if let Some(a) = &mut self.asyncs {
            // Tool events first: progress sent before a tool returned is
            // written before its response, never after.
            if let Poll::Ready(Some(ev)) = a.rx.poll_recv(cx) {
                return Poll::Ready(SessionEvent(EventInner::Tool(ev)));
            }
            if !a.futs.is_empty() {
                if let Poll::Ready(Some((key, r))) = a.futs.poll_next_unpin(cx) {
                    return Poll::Ready(SessionEvent(EventInner::Done(key, r)));
                }
            }
        }
        if let Some(s) = &mut self.subs {
            if s.poll(cx).is_ready() {
                return Poll::Ready(SessionEvent(EventInner::Subs));
            }
        }
        Poll::Pending
    }

    /// The id of the request an event belongs to (a call's progress, log,
    /// server-to-client request or completion), so a transport with one
    /// stream per request (Streamable HTTP) can deliver it there.
    pub fn event_request_id(&self, ev: &SessionEvent) -> Option<&RawValue> {
        let key = match &ev.0 {
            EventInner::Done(key, _) => *key,
            EventInner::Tool(
                ToolEvent::Progress { key, .. }
                | ToolEvent::Log { key, .. }
                | ToolEvent::Request { key, .. }
                | ToolEvent::CloseStream { key },
            ) => *key,
            EventInner::Subs => return None,
        };
        self.find_inflight(key).map(|f| &*f.id)
    }

    /// Ids of requests whose tools called [`ToolCtx::close_stream`] since the
    /// last call; transports without per-request streams need not call it.
    pub fn take_stream_closes(&mut self) -> Vec<Box<RawValue>> {
        let closes = self
            .asyncs
            .as_mut()
            .map(|a| std::mem::take(&mut a.stream_closes))
            .unwrap_or_default();
        self.shrink_asyncs();
        closes
    }

    /// Applies an event, appending any messages it produces to `out`.
    pub fn on_event(&mut self, ev: SessionEvent, out: &mut Vec<u8>) {
        match ev.0 {
            EventInner::Done(key, Err(Aborted)) => self.forget(key),
            EventInner::Done(key, Ok(result)) => {
                // Progress and logs the tool sent just before returning go
                // out first: nothing about a call follows its response.
                let mut early = Vec::new();
                if let Some(a) = &mut self.asyncs {
                    while let Ok(ev) = a.rx.try_recv() {
                        early.push(ev);
                    }
                }
                for ev in early {
                    self.on_event(SessionEvent(EventInner::Tool(ev)), out);
                }
                let Some(f) = self.take_inflight(key) else {
                    return;
                };
                self.write_tool_result(out, &f.id, f.mode, result);
                self.observe(f.started);
                self.shrink_asyncs();
            }
            EventInner::Tool(ToolEvent::Progress {
                key,
                progress,
                total,
                message,
            }) => {
                let Some(f) = self.find_inflight(key) else {
                    return;
                };
                let Some(token) = &f.progress_token else {
                    return;
                };
                let mut p = json!({"progressToken": token, "progress": progress});
                if let Some(t) = total {
                    p["total"] = json!(t);
                }
                if let Some(m) = message {
                    if f.mode.stateless || at_least(f.mode.version, "2025-03-26") {
                        p["message"] = json!(m);
                    }
                }
                jsonrpc::write_notification(out, "notifications/progress", &p);
            }
            EventInner::Tool(ToolEvent::Log { key, level, data }) => {
                let Some(f) = self.find_inflight(key) else {
                    return;
                };
                let min = if f.mode.stateless {
                    f.log_level
                } else {
                    Some(self.log_level)
                };
                if min.is_some_and(|m| level >= m) {
                    jsonrpc::write_notification(
                        out,
                        "notifications/message",
                        &json!({"level": level.as_str(), "logger": "headroom", "data": data}),
                    );
                }
            }
            EventInner::Tool(ToolEvent::Request {
                key,
                method,
                params,
                reply,
            }) => {
                if self.find_inflight(key).is_none() {
                    return;
                }
                let a = self.asyncs.as_mut().expect("in flight implies asyncs");
                let id = a.next_request_id;
                a.next_request_id += 1;
                a.client_requests.push((id, reply));
                jsonrpc::write_request(out, id, &method, &params);
            }
            EventInner::Tool(ToolEvent::CloseStream { key }) => {
                let Some(id) = self.find_inflight(key).map(|f| f.id.clone()) else {
                    return;
                };
                let a = self.asyncs.as_mut().expect("in flight implies asyncs");
                a.stream_closes.push(id);
            }
            EventInner::Subs => {
                if let Some(s) = &mut self.subs {
                    s.deliver(out);
                }
            }
        }
    }

    /// Handles one inbound message (one line, without its newline),
    /// appending every reply to `out` as newline-terminated JSON.
    pub fn handle(&mut self, line: &[u8], out: &mut Vec<u8>) -> Flow {
        match jsonrpc::classify(line) {
            Err(e) => {
                self.count_message("invalid");
                self.error(out, e.id, e.code, e.message, None);
                Flow::Continue
            }
            Ok(Kind::Notification { method, params }) => {
                self.count_message(metric_method(&method));
                self.notification(&method, params);
                Flow::Continue
            }
            Ok(Kind::Response { id, result }) => {
                self.count_message("response");
                self.client_response(id, result);
                Flow::Continue
            }
            Ok(Kind::Request { id, method, params }) => {
                self.count_message(metric_method(&method));
                let started = Instant::now();
                let before = self.in_flight();
                let flow = self.request(id, &method, params, out);
                // An asynchronous call is timed when it completes.
                if self.in_flight() <= before {
                    self.observe(started);
                }
                flow
            }
        }
    }

    fn count_message(&self, method: &'static str) {
        if let Some(tm) = &self.tm {
            tm.message(method);
        }
    }

    fn observe(&self, started: Instant) {
        if let Some(tm) = &self.tm {
            tm.observe(started.elapsed());
        }
    }

    fn error(
        &self,
        out: &mut Vec<u8>,
        id: Option<&RawValue>,
        code: i32,
        msg: &str,
        data: Option<&Value>,
    ) {
        if let Some(tm) = &self.tm {
            tm.error(code);
        }
        jsonrpc::write_error(out, id, code, msg, data);
    }

    fn rpc_error(&self, out: &mut Vec<u8>, id: &RawValue, e: &RpcError) {
        self.error(out, Some(id), e.code, &e.message, e.data.as_ref());
    }

    fn notification(&mut self, method: &str, params: Option<&RawValue>) {
        // Initialized, roots/list_changed, progress from the client: nothing to do.
        if method != "notifications/cancelled" {
            return;
        }
        let Some(p) = params.and_then(|p| serde_json::from_str::<Value>(p.get()).ok()) else {
            return;
        };
        let Some(rid) = p.get("requestId") else {
            return;
        };
        let rid = rid.to_string();
        if let Some(a) = &mut self.asyncs {
            if let Some(i) = a.inflight.iter().position(|f| f.id.get() == rid) {
                // The spec: no response for a cancelled request.
                a.inflight.swap_remove(i).abort.abort();
            }
        }
        // A subscriptions/listen ends when it is cancelled.
        if let Some(s) = &mut self.subs {
            if s.remove_listen(&rid) && s.is_empty() {
                self.subs = None;
            }
        }
    }

    fn client_response(&mut self, id: &RawValue, result: Result<&RawValue, &RawValue>) {
        let Ok(n) = id.get().parse::<u64>() else {
            return;
        };
        let Some(a) = &mut self.asyncs else { return };
        let Some(i) = a.client_requests.iter().position(|(rid, _)| *rid == n) else {
            return;
        };
        let (_, reply) = a.client_requests.swap_remove(i);
        let value = match result {
            Ok(r) => Ok(serde_json::from_str(r.get()).unwrap_or(Value::Null)),
            Err(e) => {
                let e: Value = serde_json::from_str(e.get()).unwrap_or(Value::Null);
                Err(RpcError {
                    code: e["code"].as_i64().unwrap_or(jsonrpc::INTERNAL_ERROR as i64) as i32,
                    message: e["message"].as_str().unwrap_or("error").to_string(),
                    data: e.get("data").cloned(),
                })
            }
        };
        let _ = reply.send(value);
    }

    fn request(
        &mut self,
        id: &RawValue,
        method: &str,
        params: Option<&RawValue>,
        out: &mut Vec<u8>,
    ) -> Flow {
        let mut p: Args = match params {
            None => Map::new(),
            Some(raw) => match serde_json::from_str(raw.get()) {
                Ok(m) => m,
                Err(_) => {
                    self.error(
                        out,
                        Some(id),
                        jsonrpc::INVALID_PARAMS,
                        "params must be an object",
                        None,
                    );
                    return Flow::Continue;
                }
            },
        };
        let meta = p.get("_meta").and_then(Value::as_object);
        let envelope = meta.is_some_and(|m| m.contains_key(PROTOCOL_VERSION_KEY));

        let mode = match self.state {
            State::Legacy { version } => Mode {
                version,
                stateless: false,
            },
            State::Fresh if method == "initialize" && !envelope => {
                return self.initialize(id, &p, out)
            }
            State::Fresh if envelope => {
                let meta = meta.expect("envelope implies meta");
                match self.stateless_envelope(meta) {
                    Ok(version) => Mode {
                        version,
                        stateless: true,
                    },
                    Err((e, close)) => {
                        self.rpc_error(out, id, &e);
                        return if close { Flow::Close } else { Flow::Continue };
                    }
                }
            }
            State::Fresh if method == "ping" => {
                jsonrpc::write_result(out, id, &json!({}));
                return Flow::Continue;
            }
            State::Fresh => {
                let msg = if meta.is_some() {
                    "params._meta is missing the required io.modelcontextprotocol/protocolVersion and io.modelcontextprotocol/clientCapabilities keys"
                } else {
                    "not initialized: send initialize first (2025-11-25 and older), or carry io.modelcontextprotocol/protocolVersion and io.modelcontextprotocol/clientCapabilities in params._meta (2026-07-28)"
                };
                self.error(out, Some(id), jsonrpc::INVALID_PARAMS, msg, None);
                return Flow::Continue;
            }
        };

        let result: Result<Map<String, Value>, RpcError> = match (method, mode.stateless) {
            ("ping", false) => Ok(Map::new()),
            ("initialize", false) => Err(RpcError::new(jsonrpc::INVALID_REQUEST, "already initialized")),
            ("server/discover", true) => Ok(self.discover()),
            ("tools/list", _) => self.list(&p, mode, "tools"),
            ("tools/call", _) => return self.tools_call(id, &mut p, mode, out),
            ("resources/list", _) => self.list(&p, mode, "resources"),
            ("resources/templates/list", _) => self.list(&p, mode, "resourceTemplates"),
            ("resources/read", _) => self.read(&p, mode),
            ("resources/subscribe", false) => self.subscribe(&p, true),
            ("resources/unsubscribe", false) => self.subscribe(&p, false),
            ("subscriptions/listen", true) => return self.listen(id, &p, mode, out),
            ("prompts/list", _) => self.list(&p, mode, "prompts"),
            ("prompts/get", _) => self.prompt(&p),
            ("completion/complete", _) => self.complete(&p),
            (m, _) if crate::tasks::is_task_method(m) => {
                if crate::tasks::declared(&self.request_caps(&p, mode)) {
                    self.engine.tasks.request(m, &p)
                } else {
                    Err(crate::tasks::missing_extension(m))
                }
            }
            ("logging/setLevel", false) => match p.get("level").and_then(Value::as_str).and_then(LogLevel::parse) {
                Some(l) => {
                    self.log_level = l;
                    Ok(Map::new())
                }
                None => Err(RpcError::invalid_params("level must be one of debug, info, notice, warning, error, critical, alert, emergency")),
            },
            _ => Err(RpcError::new(jsonrpc::METHOD_NOT_FOUND, format!("method not found: {method}"))),
        };
        match result {
            Ok(r) => self.write_ok(out, id, method, mode, r),
            Err(e) => self.rpc_error(out, id, &e),
        }
        Flow::Continue
    }

    /// Validates a stateless request's `_meta`; on error, whether to close.
    fn stateless_envelope(
        &mut self,
        meta: &Map<String, Value>,
    ) -> Result<&'static str, (RpcError, bool)> {
        if !meta.contains_key(CLIENT_CAPABILITIES_KEY) {
            return Err((
                RpcError::invalid_params(format!(
                    "params._meta is missing the required envelope key {CLIENT_CAPABILITIES_KEY}"
                )),
                false,
            ));
        }
        let Some(requested) = meta[PROTOCOL_VERSION_KEY].as_str() else {
            return Err((
                RpcError::invalid_params("the protocol-version envelope value must be a string"),
                false,
            ));
        };
        let Some(version) = STATELESS_VERSIONS.iter().find(|v| **v == requested) else {
            return Err((
                RpcError::new(
                    jsonrpc::UNSUPPORTED_PROTOCOL_VERSION,
                    "Unsupported protocol version",
                )
                .with_data(json!({"supported": STATELESS_VERSIONS, "requested": requested})),
                false,
            ));
        };
        if !self.authed {
            if !self.engine.token_ok(meta.get(TOKEN_META_KEY)) {
                return Err((unauthorized(), true));
            }
            self.authed = true;
        }
        Ok(version)
    }

    fn initialize(&mut self, id: &RawValue, p: &Args, out: &mut Vec<u8>) -> Flow {
        let Some(requested) = p.get("protocolVersion").and_then(Value::as_str) else {
            self.error(
                out,
                Some(id),
                jsonrpc::INVALID_PARAMS,
                "initialize needs params.protocolVersion",
                None,
            );
            return Flow::Continue;
        };
        if !self.authed {
            let token = p.get("_meta").and_then(|m| m.get(TOKEN_META_KEY));
            if !self.engine.token_ok(token) {
                self.rpc_error(out, id, &unauthorized());
                return Flow::Close;
            }
            self.authed = true;
        }
        let version = LEGACY_VERSIONS
            .iter()
            .copied()
            .find(|v| *v == requested)
            .unwrap_or(LATEST_LEGACY);
        self.state = State::Legacy { version };
        let caps = p.get("capabilities").cloned().unwrap_or_else(|| json!({}));
        self.client_caps = Some(Arc::new(caps));
        jsonrpc::write_result(out, id, self.engine.initialize_result(version));
        Flow::Continue
    }

    fn discover(&self) -> Map<String, Value> {
        let v = STATELESS_VERSIONS[0];
        let mut r = json!({
            "supportedVersions": STATELESS_VERSIONS,
            "capabilities": self.engine.capabilities(v),
            "serverInfo": self.engine.server_info(),
            "_meta": {(SERVER_INFO_KEY): self.engine.server_info()},
        });
        if let Some(i) = &self.engine.config.instructions {
            r["instructions"] = json!(i);
        }
        into_map(r)
    }

    fn write_ok(
        &self,
        out: &mut Vec<u8>,
        id: &RawValue,
        method: &str,
        mode: Mode,
        mut r: Map<String, Value>,
    ) {
        if mode.stateless {
            if CACHEABLE.contains(&method) {
                r.entry("ttlMs")
                    .or_insert(json!(self.engine.config.list_ttl_ms));
                r.entry("cacheScope").or_insert(json!("private"));
            }
            r.entry("resultType").or_insert(json!("complete"));
            // Every stateless result names its server (`_meta` serverInfo stamp).
            let meta = r.entry("_meta").or_insert_with(|| json!({}));
            if let Some(m) = meta.as_object_mut() {
                m.entry(SERVER_INFO_KEY)
                    .or_insert_with(|| self.engine.server_info());
            }
        }
        jsonrpc::write_result(out, id, &r);
    }

    fn list(&self, p: &Args, mode: Mode, key: &str) -> Result<Map<String, Value>, RpcError> {
        let reg = &self.engine.registry;
        let items: Vec<Value> = match key {
            "tools" => reg
                .tools
                .iter()
                .map(|t| shape_tool(&t.definition, mode))
                .collect(),
            "resources" => reg.resources.iter().map(|r| r.definition.clone()).collect(),
            "resourceTemplates" => reg.resource_templates.clone(),
            _ => reg.prompts.iter().map(|p| p.definition.clone()).collect(),
        };
        let start = match p.get("cursor") {
            None | Some(Value::Null) => 0,
            Some(c) => c
                .as_str()
                .and_then(|c| c.strip_prefix("o:"))
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|n| *n <= items.len())
                .ok_or_else(|| RpcError::invalid_params("invalid cursor"))?,
        };
        let page = self.engine.config.page_size.max(1);
        let end = (start + page).min(items.len());
        let mut r = Map::new();
        r.insert(key.to_string(), Value::Array(items[start..end].to_vec()));
        if end < items.len() {
            r.insert("nextCursor".into(), json!(format!("o:{end}")));
        }
        Ok(r)
    }

    fn read(&self, p: &Args, mode: Mode) -> Result<Map<String, Value>, RpcError> {
        let uri = p
            .get("uri")
            .and_then(Value::as_str)
            .ok_or_else(|| RpcError::invalid_params("resources/read needs params.uri"))?;
        let reg = &self.engine.registry;
        let contents = match reg.find_resource(uri) {
            Some(r) => (r.read)(uri)?,
            None => match reg.resource_fallback.as_ref().and_then(|f| f(uri)) {
                Some(r) => r?,
                None => {
                    // 2026-07-28 says -32602; the initialize era -32002.
                    let code = if mode.stateless {
                        jsonrpc::INVALID_PARAMS
                    } else {
                        jsonrpc::RESOURCE_NOT_FOUND
                    };
                    return Err(RpcError::new(code, format!("resource not found: {uri}"))
                        .with_data(json!({"uri": uri})));
                }
            },
        };
        let mut r = Map::new();
        r.insert("contents".into(), Value::Array(contents));
        Ok(r)
    }

    fn subscribe(&mut self, p: &Args, on: bool) -> Result<Map<String, Value>, RpcError> {
        let uri = p
            .get("uri")
            .and_then(Value::as_str)
            .ok_or_else(|| RpcError::invalid_params("needs params.uri"))?;
        if on {
            crate::listen::subscribable(&self.engine.registry, uri, jsonrpc::RESOURCE_NOT_FOUND)?;
            self.add_subscription(uri, None)?;
        } else if let Some(s) = &mut self.subs {
            s.remove_uri(uri);
            if s.is_empty() {
                self.subs = None;
            }
        }
        Ok(Map::new())
    }

    /// Subscribes this session to `uri` (`listen`: for that
    /// `subscriptions/listen` request).
    fn add_subscription(&mut self, uri: &str, listen: Option<&RawValue>) -> Result<(), RpcError> {
        let engine = self.engine.clone();
        let s = self.subs.get_or_insert_with(|| {
            Box::new(crate::subscriptions::SessionSubs::new(engine.hub.clone()))
        });
        let r = s.add(uri, listen, || engine.registry.watcher(uri));
        if s.is_empty() {
            self.subs = None;
        }
        r
    }

    /// `subscriptions/listen` (2026-07-28): acknowledged now, answered only
    /// when the server ends it; cancelled by the client (or the transport closing).
    fn listen(&mut self, id: &RawValue, p: &Args, mode: Mode, out: &mut Vec<u8>) -> Flow {
        let caps = self.request_caps(p, mode);
        let held = self.subs.as_ref().map_or(0, |s| s.len());
        let plan = crate::listen::plan(&self.engine, p, &caps, id, held, self.has_listen(id));
        let accepted = match plan {
            Ok(a) => a,
            Err(e) => {
                self.rpc_error(out, id, &e);
                return Flow::Continue;
            }
        };
        for uri in &accepted {
            if let Err(e) = self.add_subscription(uri, Some(id)) {
                if let Some(s) = &mut self.subs {
                    s.remove_listen(id.get());
                    if s.is_empty() {
                        self.subs = None;
                    }
                }
                self.rpc_error(out, id, &e);
                return Flow::Continue;
            }
        }
        crate::listen::acknowledge(out, id, &accepted);
        Flow::Continue
    }

    fn has_listen(&self, id: &RawValue) -> bool {
        self.subs.as_ref().is_some_and(|s| s.has_listen(id.get()))
    }

    /// True while the session holds a resource subscription: a subscriber
    /// waits quietly, so transports do not count it idle.
    pub fn subscribed(&self) -> bool {
        self.subs.is_some()
    }

    fn prompt(&self, p: &Args) -> Result<Map<String, Value>, RpcError> {
        let name = p
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| RpcError::invalid_params("prompts/get needs params.name"))?;
        let prompt = self
            .engine
            .registry
            .find_prompt(name)
            .ok_or_else(|| RpcError::invalid_params(format!("unknown prompt: {name}")))?;
        let args = p
            .get("arguments")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        match &prompt.get_with_params {
            Some(get) => Ok(into_map(get(&args, p)?)),
            None => Ok(into_map((prompt.get)(&args)?)),
        }
    }

    fn complete(&self, p: &Args) -> Result<Map<String, Value>, RpcError> {
        let r = p
            .get("ref")
            .ok_or_else(|| RpcError::invalid_params("completion/complete needs params.ref"))?;
        let arg = p
            .get("argument")
            .ok_or_else(|| RpcError::invalid_params("completion/complete needs params.argument"))?;
        let (name, value) = (
            arg["name"].as_str().unwrap_or_default(),
            arg["value"].as_str().unwrap_or_default(),
        );
        let reg = &self.engine.registry;
        let values = match r["type"].as_str() {
            Some("ref/prompt") => {
                let pname = r["name"].as_str().unwrap_or_default();
                let prompt = reg
                    .find_prompt(pname)
                    .ok_or_else(|| RpcError::invalid_params(format!("unknown prompt: {pname}")))?;
                prompt
                    .complete
                    .as_ref()
                    .map(|c| c(name, value))
                    .unwrap_or_default()
            }
            Some("ref/resource") => {
                let uri = r["uri"].as_str().unwrap_or_default();
                reg.template_complete
                    .as_ref()
                    .map(|c| c(uri, name, value))
                    .unwrap_or_default()
            }
            _ => {
                return Err(RpcError::invalid_params(
                    "ref.type must be ref/prompt or ref/resource",
                ))
            }
        };
        let total = values.len();
        let values: Vec<String> = values.into_iter().take(100).collect();
        Ok(into_map(
            json!({"completion": {"values": values, "total": total, "hasMore": total > 100}}),
        ))
    }

    fn tools_call(&mut self, id: &RawValue, p: &mut Args, mode: Mode, out: &mut Vec<u8>) -> Flow {
        let Some(name) = p.get("name").and_then(Value::as_str) else {
            self.error(
                out,
                Some(id),
                jsonrpc::INVALID_PARAMS,
                "tools/call needs params.name",
                None,
            );
            return Flow::Continue;
        };
        let engine = self.engine.clone();
        let found = engine.registry.find_tool(name);
        let Some(tool) = found else {
            let msg = format!("unknown tool: {name}");
            self.error(out, Some(id), jsonrpc::INVALID_PARAMS, &msg, None);
            return Flow::Continue;
        };
        let name = &tool.name;
        let args = match p.remove("arguments") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m,
            Some(_) => {
                self.error(
                    out,
                    Some(id),
                    jsonrpc::INVALID_PARAMS,
                    "arguments must be an object",
                    None,
                );
                return Flow::Continue;
            }
        };
        let continuation = match continuation(p, mode) {
            Ok(c) => c,
            Err(e) => {
                self.rpc_error(out, id, &e);
                return Flow::Continue;
            }
        };
        let meta = p.get("_meta").and_then(Value::as_object);
        let caps = self.request_caps(p, mode);
        if let Some(req) = tool.requires {
            if mode.stateless && caps.get(req).is_none() {
                let e = RpcError::new(
                    jsonrpc::MISSING_CLIENT_CAPABILITY,
                    format!("tool {name} needs the client capability {req:?}, which this request did not declare"),
                )
                .with_data(json!({"requiredCapabilities": {req: {}}}));
                self.rpc_error(out, id, &e);
                return Flow::Continue;
            }
        }
        let as_task = tool.task_support != crate::tasks::TaskSupport::Forbidden
            && tool.is_async
            && crate::tasks::declared(&caps);
        if tool.task_support == crate::tasks::TaskSupport::Required && !as_task {
            self.rpc_error(
                out,
                id,
                &crate::tasks::missing_extension(&format!("tool {name}")),
            );
            return Flow::Continue;
        }
        if as_task {
            let (tx, rx) = mpsc::unbounded_channel();
            let ctx = ToolCtx {
                key: 0,
                protocol_version: mode.version,
                client_capabilities: caps,
                has_progress_token: false,
                events: Some(tx),
                stateless: mode.stateless,
                continuation,
                task: true,
            };
            match (tool.handler)(args, ctx) {
                ToolFuture::Ready(r) => self.write_tool_result(out, id, mode, r),
                ToolFuture::Pending(fut) => {
                    let shape =
                        Box::new(move |r: ToolResult| r.map(|o| shape_tool_output(o, mode)));
                    match self.engine.tasks.create(fut, rx, shape) {
                        Ok(r) => self.write_ok(out, id, "tools/call", mode, r),
                        Err(e) => self.rpc_error(out, id, &e),
                    }
                }
            }
            return Flow::Continue;
        }
        let progress_token = meta.and_then(|m| m.get("progressToken")).cloned();
        if !tool.is_async {
            let ctx = ToolCtx {
                key: 0,
                protocol_version: mode.version,
                client_capabilities: caps,
                has_progress_token: false,
                events: None,
                stateless: mode.stateless,
                continuation,
                task: false,
            };
            match (tool.handler)(args, ctx) {
                ToolFuture::Ready(r) => self.write_tool_result(out, id, mode, r),
                ToolFuture::Pending(_) => unreachable!("sync tools return Ready"),
            }
            return Flow::Continue;
        }
        if self
            .asyncs
            .as_ref()
            .is_some_and(|a| a.inflight.iter().any(|f| f.id.get() == id.get()))
        {
            self.error(
                out,
                Some(id),
                jsonrpc::INVALID_REQUEST,
                "duplicate id: a request with this id is still in flight",
                None,
            );
            return Flow::Continue;
        }
        if !self.can_accept() {
            let max = self.engine.config.max_in_flight;
            self.error(
                out,
                Some(id),
                jsonrpc::LIMIT_REACHED,
                &format!("too many requests in flight on this session (max-in-flight {max})"),
                Some(&json!({"limit": "max-in-flight", "max": max})),
            );
            return Flow::Continue;
        }
        let log_level = meta
            .and_then(|m| m.get(LOG_LEVEL_KEY))
            .and_then(Value::as_str)
            .and_then(LogLevel::parse);
        let a = self.asyncs.get_or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            Box::new(Asyncs {
                futs: FuturesUnordered::new(),
                inflight: Vec::new(),
                tx,
                rx,
                next_key: 1,
                next_request_id: 1,
                client_requests: Vec::new(),
                stream_closes: Vec::new(),
            })
        });
        let key = a.next_key;
        a.next_key += 1;
        let ctx = ToolCtx {
            key,
            protocol_version: mode.version,
            client_capabilities: caps,
            has_progress_token: progress_token.is_some(),
            events: Some(a.tx.clone()),
            stateless: mode.stateless,
            continuation,
            task: false,
        };
        let fut = match (tool.handler)(args, ctx) {
            ToolFuture::Ready(r) => {
                self.write_tool_result(out, id, mode, r);
                return Flow::Continue;
            }
            ToolFuture::Pending(f) => f,
        };
        let (abort, reg) = AbortHandle::new_pair();
        let call = Abortable::new(fut, reg);
        a.futs.push(Box::pin(async move { (key, call.await) }));
        a.inflight.push(InFlight {
            key,
            id: id.to_owned(),
            abort,
            mode,
            progress_token,
            log_level,
            started: Instant::now(),
        });
        Flow::Continue
    }

    /// The client capabilities a request is served with: its `_meta`'s
    /// (2026-07-28, or an initialize-era request that carries them), else the
    /// session's from `initialize`.
    fn request_caps(&self, p: &Args, mode: Mode) -> Arc<Value> {
        let per_request = p
            .get("_meta")
            .and_then(|m| m.get(CLIENT_CAPABILITIES_KEY))
            .cloned();
        match per_request {
            Some(c) => Arc::new(c),
            None if mode.stateless => Arc::new(json!({})),
            None => self
                .client_caps
                .clone()
                .unwrap_or_else(|| Arc::new(json!({}))),
        }
    }

    fn write_tool_result(&self, out: &mut Vec<u8>, id: &RawValue, mode: Mode, r: ToolResult) {
        match r {
            Err(e) => self.rpc_error(out, id, &e),
            Ok(o) => {
                let r = shape_tool_output(o, mode);
                self.write_ok(out, id, "tools/call", mode, r);
            }
        }
    }

    fn find_inflight(&self, key: u64) -> Option<&InFlight> {
        self.asyncs.as_ref()?.inflight.iter().find(|f| f.key == key)
    }

    fn take_inflight(&mut self, key: u64) -> Option<InFlight> {
        let a = self.asyncs.as_mut()?;
        let i = a.inflight.iter().position(|f| f.key == key)?;
        Some(a.inflight.swap_remove(i))
    }

    fn forget(&mut self, key: u64) {
        self.take_inflight(key);
        self.shrink_asyncs();
    }

    /// Frees the async machinery once nothing runs, so a session that made
    /// one slow call does not keep its channel forever.
    fn shrink_asyncs(&mut self) {
        if self.asyncs.as_ref().is_some_and(|a| {
            a.inflight.is_empty()
                && a.futs.is_empty()
                && a.client_requests.is_empty()
                && a.stream_closes.is_empty()
        }) {
            self.asyncs = None;
        }
    }
}

/// A stateless retry's `inputResponses` and `requestState`, moved out of
/// params. Each input response must be an object (an elicitation, sampling or
/// roots result): anything else is -32602 (SEP-2322).
fn continuation(p: &mut Args, mode: Mode) -> Result<Option<Arc<Args>>, RpcError> {
    if !mode.stateless {
        return Ok(None);
    }
    let mut c = Map::new();
    for k in ["inputResponses", "requestState"] {
        if let Some(v) = p.remove(k) {
            c.insert(k.into(), v);
        }
    }
    match c.get("inputResponses") {
        None => {}
        Some(Value::Object(r)) => {
            if let Some((k, _)) = r.iter().find(|(_, v)| !v.is_object()) {
                return Err(RpcError::invalid_params(format!(
                    "inputResponses[{k:?}] must be an object (the result of the input request)"
                )));
            }
        }
        Some(_) => {
            return Err(RpcError::invalid_params(
                "inputResponses must be an object keyed like the inputRequests",
            ))
        }
    }
    Ok((!c.is_empty()).then(|| Arc::new(c)))
}

fn unauthorized() -> RpcError {
    RpcError::new(
        jsonrpc::UNAUTHORIZED,
        format!("unauthorized: present the server token in params._meta[\"{TOKEN_META_KEY}\"]"),
    )
}

fn into_map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => {
            let mut m = Map::new();
            m.insert("value".into(), other);
            m
        }
    }
}

/// A tools/list entry as the revision knows it.
fn shape_tool(def: &Value, mode: Mode) -> Value {
    let mut d = def.clone();
    if !mode.stateless {
        let m = d.as_object_mut().expect("tool definitions are objects");
        if !at_least(mode.version, "2025-06-18") {
            m.remove("outputSchema");
            m.remove("title");
        }
        if !at_least(mode.version, "2025-03-26") {
            m.remove("annotations");
        }
        if !at_least(mode.version, "2025-11-25") {
            m.remove("icons");
            m.remove("execution");
        }
    }
    d
}

fn shape_tool_output(o: ToolOutput, mode: Mode) -> Map<String, Value> {
    let mut r = Map::new();
    r.insert("content".into(), Value::Array(o.content));
    if let Some(s) = o.structured {
        if mode.stateless || at_least(mode.version, "2025-06-18") {
            r.insert("structuredContent".into(), s);
        }
    }
    if o.is_error {
        r.insert("isError".into(), Value::Bool(true));
    }
    for (k, v) in o.extra {
        r.insert(k, v);
    }
    r
}

/// Bounded label set for the messages metric.
fn metric_method(m: &str) -> &'static str {
    crate::metrics::METHOD_LABELS
        .iter()
        .copied()
        .find(|k| *k == m)
        .unwrap_or("other")
}

#[cfg(test)]
#[path = "protocol_tests.rs"]
mod tests;

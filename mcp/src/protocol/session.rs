//! One session's state machine: the era it is in, and the dispatch of one
//! inbound message to its handler.

use super::engine::Engine;
use super::inflight::Asyncs;
use super::shape::Mode;
use crate::jsonrpc::{self, Kind};
use crate::metrics::TransportMetrics;
use crate::registry::{Args, LogLevel, RpcError};
use crate::transport::Transport;
use crate::version::{PROTOCOL_VERSION_KEY, TOKEN_META_KEY};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Instant;

/// What the transport should do after a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Write what is in the output, then close (unauthorized).
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    /// Nothing selected yet: `initialize` or a stateless request decides.
    Fresh,
    /// Initialize era at this revision.
    Legacy { version: &'static str },
}

/// One connection's (or HTTP session's) protocol state. Small on purpose:
/// an idle initialized session is a few dozen bytes plus the engine handle.
pub struct Session {
    pub(super) engine: Arc<Engine>,
    pub(super) tm: Option<Arc<TransportMetrics>>,
    pub(super) state: State,
    pub(super) authed: bool,
    pub(super) log_level: LogLevel,
    pub(super) client_caps: Option<Arc<Value>>,
    pub(super) asyncs: Option<Box<Asyncs>>,
    /// Resource subscriptions, allocated on the first.
    pub(super) subs: Option<Box<crate::subscriptions::SessionSubs>>,
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

    pub(super) fn count_message(&self, method: &'static str) {
        if let Some(tm) = &self.tm {
            tm.message(method);
        }
    }

    pub(super) fn observe(&self, started: Instant) {
        if let Some(tm) = &self.tm {
            tm.observe(started.elapsed());
        }
    }

    pub(super) fn error(
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

    pub(super) fn rpc_error(&self, out: &mut Vec<u8>, id: &RawValue, e: &RpcError) {
        self.error(out, Some(id), e.code, &e.message, e.data.as_ref());
    }

    pub(super) fn notification(&mut self, method: &str, params: Option<&RawValue>) {
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

    pub(super) fn client_response(&mut self, id: &RawValue, result: Result<&RawValue, &RawValue>) {
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

    pub(super) fn request(
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

    /// True while the session holds a resource subscription: a subscriber
    /// waits quietly, so transports do not count it idle.
    pub fn subscribed(&self) -> bool {
        self.subs.is_some()
    }
}

pub(super) fn unauthorized() -> RpcError {
    RpcError::new(
        jsonrpc::UNAUTHORIZED,
        format!("unauthorized: present the server token in params._meta[\"{TOKEN_META_KEY}\"]"),
    )
}

/// Bounded label set for the messages metric.
pub(super) fn metric_method(m: &str) -> &'static str {
    crate::metrics::METHOD_LABELS
        .iter()
        .copied()
        .find(|k| *k == m)
        .unwrap_or("other")
}

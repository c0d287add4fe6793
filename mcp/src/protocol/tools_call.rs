//! `tools/call`: checks, then the call run inline, beside the session, or
//! as a task.

use super::inflight::{Asyncs, InFlight};
use super::session::{Flow, Session};
use super::shape::{shape_tool_output, Mode};
use crate::jsonrpc;
use crate::registry::{
    Args, LogLevel, RpcError, TaskSupport, ToolCtx, ToolEvent, ToolFuture, ToolResult,
};
use crate::tasks;
use crate::version::{CLIENT_CAPABILITIES_KEY, LOG_LEVEL_KEY};
use futures_util::future::{AbortHandle, Abortable};
use futures_util::stream::FuturesUnordered;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// Where an admitted `tools/call` runs.
enum Run {
    /// A synchronous tool: answered inline.
    Inline,
    /// Beside the session, cancellable, under this key.
    Beside {
        key: u64,
        progress_token: Option<Value>,
        log_level: Option<LogLevel>,
    },
    /// As a task (tasks extension); the tool reports on this channel.
    Task(mpsc::UnboundedReceiver<ToolEvent>),
}

/// The async machinery of a session, allocated on its first call beside it.
fn new_asyncs() -> Box<Asyncs> {
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
}

impl Session {
    pub(super) fn tools_call(
        &mut self,
        id: &RawValue,
        p: &mut Args,
        mode: Mode,
        out: &mut Vec<u8>,
    ) -> Flow {
        if let Err(e) = self.call_tool(id, p, mode, out) {
            self.rpc_error(out, id, &e);
        }
        Flow::Continue
    }

    /// Checks a call, then runs it where its tool and the client allow. An
    /// error is the call's reply.
    fn call_tool(
        &mut self,
        id: &RawValue,
        p: &mut Args,
        mode: Mode,
        out: &mut Vec<u8>,
    ) -> Result<(), RpcError> {
        let Some(name) = p.get("name").and_then(Value::as_str) else {
            return Err(RpcError::invalid_params("tools/call needs params.name"));
        };
        let engine = self.engine.clone();
        let Some(tool) = engine.registry.find_tool(name) else {
            return Err(RpcError::invalid_params(format!("unknown tool: {name}")));
        };
        let name = &tool.name;
        let args = match p.remove("arguments") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m,
            Some(_) => return Err(RpcError::invalid_params("arguments must be an object")),
        };
        let continuation = continuation(p, mode)?;
        let meta = p.get("_meta").and_then(Value::as_object);
        let caps = self.request_caps(p, mode);
        if let Some(req) = tool.requires {
            if mode.stateless && caps.get(req).is_none() {
                return Err(RpcError::new(
                    jsonrpc::MISSING_CLIENT_CAPABILITY,
                    format!("tool {name} needs the client capability {req:?}, which this request did not declare"),
                )
                .with_data(json!({"requiredCapabilities": {req: {}}})));
            }
        }
        let as_task =
            tool.task_support != TaskSupport::Forbidden && tool.is_async && tasks::declared(&caps);
        if tool.task_support == TaskSupport::Required && !as_task {
            return Err(tasks::missing_extension(&format!("tool {name}")));
        }
        let (run, events) = if as_task {
            let (tx, rx) = mpsc::unbounded_channel();
            (Run::Task(rx), Some(tx))
        } else if !tool.is_async {
            (Run::Inline, None)
        } else {
            let progress_token = meta.and_then(|m| m.get("progressToken")).cloned();
            let log_level = meta
                .and_then(|m| m.get(LOG_LEVEL_KEY))
                .and_then(Value::as_str)
                .and_then(LogLevel::parse);
            let (key, tx) = self.admit_call(id)?;
            let run = Run::Beside {
                key,
                progress_token,
                log_level,
            };
            (run, Some(tx))
        };
        let (key, has_progress_token) = match &run {
            Run::Beside {
                key,
                progress_token,
                ..
            } => (*key, progress_token.is_some()),
            Run::Inline | Run::Task(_) => (0, false),
        };
        let ctx = ToolCtx {
            key,
            protocol_version: mode.version,
            client_capabilities: caps,
            has_progress_token,
            events,
            stateless: mode.stateless,
            continuation,
            task: matches!(run, Run::Task(_)),
        };
        match ((tool.handler)(args, ctx), run) {
            (ToolFuture::Ready(r), _) => self.write_tool_result(out, id, mode, r),
            (ToolFuture::Pending(fut), Run::Task(rx)) => {
                let shape = Box::new(move |r: ToolResult| r.map(|o| shape_tool_output(o, mode)));
                let r = self.engine.tasks.create(fut, rx, shape)?;
                self.write_ok(out, id, "tools/call", mode, r);
            }
            (
                ToolFuture::Pending(fut),
                Run::Beside {
                    key,
                    progress_token,
                    log_level,
                },
            ) => {
                let (abort, reg) = AbortHandle::new_pair();
                let call = Abortable::new(fut, reg);
                let a = self.asyncs.get_or_insert_with(new_asyncs);
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
            }
            (ToolFuture::Pending(_), Run::Inline) => {
                return Err(RpcError::new(
                    jsonrpc::INTERNAL_ERROR,
                    format!("tool {name} is synchronous but did not answer at once"),
                ))
            }
        }
        Ok(())
    }

    /// Room for one more call beside the session: its key, and where it
    /// reports. Refused for an id still in flight or past `max_in_flight`.
    fn admit_call(
        &mut self,
        id: &RawValue,
    ) -> Result<(u64, mpsc::UnboundedSender<ToolEvent>), RpcError> {
        if self
            .asyncs
            .as_ref()
            .is_some_and(|a| a.inflight.iter().any(|f| f.id.get() == id.get()))
        {
            return Err(RpcError::new(
                jsonrpc::INVALID_REQUEST,
                "duplicate id: a request with this id is still in flight",
            ));
        }
        if !self.can_accept() {
            let max = self.engine.config.max_in_flight;
            return Err(RpcError::new(
                jsonrpc::LIMIT_REACHED,
                format!("too many requests in flight on this session (max-in-flight {max})"),
            )
            .with_data(json!({"limit": "max-in-flight", "max": max})));
        }
        let a = self.asyncs.get_or_insert_with(new_asyncs);
        let key = a.next_key;
        a.next_key += 1;
        Ok((key, a.tx.clone()))
    }

    /// The client capabilities a request is served with: its `_meta`'s
    /// (2026-07-28, or an initialize-era request that carries them), else the
    /// session's from `initialize`.
    pub(super) fn request_caps(&self, p: &Args, mode: Mode) -> Arc<Value> {
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

    pub(super) fn write_tool_result(
        &self,
        out: &mut Vec<u8>,
        id: &RawValue,
        mode: Mode,
        r: ToolResult,
    ) {
        match r {
            Err(e) => self.rpc_error(out, id, &e),
            Ok(o) => {
                let r = shape_tool_output(o, mode);
                self.write_ok(out, id, "tools/call", mode, r);
            }
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

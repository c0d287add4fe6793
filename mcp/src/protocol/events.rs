//! A session's side of its in-flight calls and subscriptions: waiting for
//! the next event and writing what it produced.

use super::inflight::{EventInner, InFlight, SessionEvent};
use super::session::Session;
use crate::jsonrpc;
use crate::registry::ToolEvent;
use crate::version::at_least;
use futures_util::future::Aborted;
use futures_util::stream::StreamExt;
use serde_json::json;
use serde_json::value::RawValue;
use std::future::Future;
use std::task::{Context, Poll};

impl Session {
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

    /// Ids of requests whose tools called [`ToolCtx::close_stream`](crate::ToolCtx::close_stream) since the
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

    pub(super) fn find_inflight(&self, key: u64) -> Option<&InFlight> {
        self.asyncs.as_ref()?.inflight.iter().find(|f| f.key == key)
    }

    pub(super) fn take_inflight(&mut self, key: u64) -> Option<InFlight> {
        let a = self.asyncs.as_mut()?;
        let i = a.inflight.iter().position(|f| f.key == key)?;
        Some(a.inflight.swap_remove(i))
    }

    pub(super) fn forget(&mut self, key: u64) {
        self.take_inflight(key);
        self.shrink_asyncs();
    }

    /// Frees the async machinery once nothing runs, so a session that made
    /// one slow call does not keep its channel forever.
    pub(super) fn shrink_asyncs(&mut self) {
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

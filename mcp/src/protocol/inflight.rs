//! The asynchronous tool calls of one session: their futures, what is known
//! of each while it runs, and the events they produce.

use super::shape::Mode;
use crate::registry::{LogLevel, RpcError, ToolEvent, ToolResult};
use futures_util::future::{AbortHandle, Aborted};
use futures_util::stream::FuturesUnordered;
use serde_json::value::RawValue;
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

pub(super) type CallFuture =
    Pin<Box<dyn Future<Output = (u64, Result<ToolResult, Aborted>)> + Send>>;

/// Running asynchronous calls, allocated on the first one.
pub(super) struct Asyncs {
    pub(super) futs: FuturesUnordered<CallFuture>,
    pub(super) inflight: Vec<InFlight>,
    pub(super) tx: mpsc::UnboundedSender<ToolEvent>,
    pub(super) rx: mpsc::UnboundedReceiver<ToolEvent>,
    pub(super) next_key: u64,
    pub(super) next_request_id: u64,
    pub(super) client_requests: Vec<(u64, oneshot::Sender<Result<Value, RpcError>>)>,
    /// Requests whose tools asked to end their response stream
    /// ([`Session::take_stream_closes`]).
    pub(super) stream_closes: Vec<Box<RawValue>>,
}

pub(super) struct InFlight {
    pub(super) key: u64,
    pub(super) id: Box<RawValue>,
    pub(super) abort: AbortHandle,
    pub(super) mode: Mode,
    pub(super) progress_token: Option<Value>,
    pub(super) log_level: Option<LogLevel>,
    pub(super) started: Instant,
}

/// Something that happened beside the inbound stream: a tool finished or
/// reported, a subscribed resource changed. Feed it to [`Session::on_event`](super::Session::on_event).
pub struct SessionEvent(pub(super) EventInner);

pub(super) enum EventInner {
    Done(u64, Result<ToolResult, Aborted>),
    Tool(ToolEvent),
    /// A subscribed resource changed, or a coalesced notification is due.
    Subs,
}

//! headroom-mcp: an MCP server library. A pure protocol engine
//! ([`protocol`]) that serves both MCP eras from one [`Registry`], and the
//! transports around it: newline-delimited JSON-RPC over TCP ([`tcp`]) and
//! stdio ([`stdio`]), Streamable HTTP ([`http`]) on the same engine. It
//! knows no tool of its own: a server fills a [`Registry`] and hands the
//! transports what they need of it through small traits ([`tcp::Host`]).
//!
//! # The engine API (for every transport)
//!
//! ```text
//! Registry ──> Engine (Arc, shared) ──> Session (one per connection / HTTP session)
//! ```
//!
//! - [`Registry`]: tools ([`Registry::tool`] synchronous, answered inline;
//!   [`Registry::async_tool`] / [`Registry::tool_with`] for calls that run
//!   beside the session with progress, logs, server-to-client requests and
//!   cancellation through their [`ToolCtx`]), resources, prompts, completion.
//! - [`Engine::new`]`(registry, EngineConfig, Option<Arc<Metrics>>)`: the
//!   shared part; [`Engine::resource_updated`] notifies subscribers.
//! - [`Session::new`]`(engine, Transport)`: per connection. Feed it one
//!   inbound message at a time, without the newline:
//!   [`Session::handle`]`(&[u8], &mut Vec<u8>) -> Flow`. Every outbound
//!   message is appended to the `Vec` as one JSON line ending in `\n`
//!   (split on `\n` to get messages: JSON text never contains a raw newline).
//!   A notification produces nothing; `Flow::Close` means write what is
//!   there, then close (bad token).
//! - Asynchronous work: when [`Session::has_pending`], await
//!   [`Session::next_event`] (cancel-safe, fine in `select!`) and pass the
//!   event to [`Session::on_event`]`(ev, &mut out)`: it appends the
//!   response of a finished call, progress and log notifications (always
//!   before that call's response, never after), server-to-client requests,
//!   and `notifications/resources/updated`. Cancellation
//!   (`notifications/cancelled`) drops the call's future; no reply follows.
//! - Backpressure: stop reading while `!`[`Session::can_accept`]
//!   (`max_in_flight` asynchronous calls running). On close, call
//!   [`Session::abort_all`]. HTTP's bearer token: [`Session::set_authenticated`].
//!
//! Eras: an `initialize` selects the initialize era (2024-11-05 ..
//! 2025-11-25) for the session; a request whose `params._meta` carries
//! `io.modelcontextprotocol/protocolVersion` is served statelessly
//! (2026-07-28, with `resultType`, `ttlMs`/`cacheScope`, -32022, -32021).
//!
//! The token (`--token-file`) travels in `params._meta["headroom/token"]`
//! of `initialize`, or of a stateless request ([`protocol::TOKEN_META_KEY`]).

pub mod framing;
pub mod http;
pub mod jsonrpc;
pub mod metrics;
pub mod protocol;
pub mod registry;
pub mod stdio;
pub mod subscriptions;
pub mod tasks;
pub mod tcp;
pub mod transport;
pub mod version;

pub use metrics::Metrics;
pub use protocol::{Engine, EngineConfig, Flow, Session, SessionEvent};
pub use registry::{
    Args, LogLevel, Registry, RpcError, ToolCtx, ToolFuture, ToolOutput, ToolResult,
};
pub use transport::{OpenConnections, Transport};

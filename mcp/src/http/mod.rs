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
//!
//! One file per job: settings and counters (`config`), binding, connections
//! and routing (`server`), what they share (`shared`), reading and checking
//! a request (`request`), POST (`post`), GET and DELETE (`streams`), reply
//! shapes (`reply`); sessions (`session`) and the engine behind them
//! (`engine`, `protocol`); Host and Origin checks (`guard`).

mod config;
mod engine;
mod guard;
mod post;
pub mod protocol;
mod reply;
mod request;
mod server;
mod session;
mod shared;
mod streams;

pub use config::{HttpConfig, HttpStats};
pub use engine::EngineProtocol;
pub use protocol::{BoxFuture, ProtocolSession, Sink};
pub use server::HttpServer;

#[cfg(test)]
mod tests;

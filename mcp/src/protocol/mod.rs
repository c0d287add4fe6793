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
//!
//! One file per job: [`Engine`] and its configuration (`engine`), the
//! session state machine and its dispatch (`session`), the in-flight calls
//! and what they report (`inflight`, `events`), the method handlers
//! (`handlers`, `tools_call`, `listen`), and how a revision shapes a result
//! (`shape`). The revisions themselves are [`crate::version`]'s.

mod engine;
mod events;
mod handlers;
mod inflight;
mod listen;
mod session;
mod shape;
mod tools_call;

pub use crate::transport::Transport;
pub use crate::version::{
    CLIENT_CAPABILITIES_KEY, LATEST_LEGACY, LEGACY_VERSIONS, LOG_LEVEL_KEY, PROTOCOL_VERSION_KEY,
    SERVER_INFO_KEY, STATELESS_VERSIONS, TOKEN_META_KEY,
};
pub use engine::{Engine, EngineConfig};
pub use inflight::SessionEvent;
pub use session::{Flow, Session};

#[cfg(test)]
mod tests;

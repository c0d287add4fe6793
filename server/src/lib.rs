//! headroom-server: `headroom serve`, the headroom MCP server on the
//! headroom-mcp library. Headroom's own tools, resources and prompt
//! ([`tools`]: host_capacity, service_capacity, advise, preflight_check),
//! the capacity reader and sampler behind them ([`capacity`], [`watch`]),
//! the live numbers the transports keep for them ([`state`]), the
//! `--workers` supervisor and its workers, and the Prometheus exporter.
//! The engine and transports are re-exported from headroom-mcp.
//!
//! The token (`--token-file`) travels in `params._meta["headroom/token"]`
//! of `initialize`, or of a stateless request ([`protocol::TOKEN_META_KEY`]).

pub mod advise_tool;
pub mod capacity;
pub mod capacity_metrics;
pub mod measure_tool;
pub mod service;
pub mod state;
pub mod tools;
pub mod watch;

pub use headroom_mcp::{
    framing, http, jsonrpc, protocol, registry, stdio, subscriptions, tasks, tcp,
};
pub use headroom_mcp::{
    Args, Engine, EngineConfig, Flow, LogLevel, Metrics, Registry, RpcError, Session, SessionEvent,
    ToolCtx, ToolFuture, ToolOutput, ToolResult, Transport,
};
pub mod exporter;
pub mod supervisor;
pub mod workers;

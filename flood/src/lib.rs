//! headroom-flood: finds a server's breaking point by flooding it, and names
//! the cause, so the capacity model's prediction can be set beside it.
//!
//! A flood opens TCP connections (`connect`), MCP sessions (`mcp`) or
//! sessions that then carry pipelined `tools/call` (`bomb`), or speaks a
//! real server's protocol on each connection so that the server proves it
//! serves it (`redis`, `memcached`, `http`, `postgres`, `line`; see
//! [`proto`]), against a loopback (or namespaced) target, until a sustained
//! failure, a count or a time limit. It goes past one process's descriptor
//! limit with several worker processes (re-executions of the binary, see
//! [`orchestrate`]) and past one source address's port range with several
//! 127.0.0.x sources. Failures are told apart by kind ([`FailureKind`]): the
//! server's own refusal (JSON-RPC, Redis, PostgreSQL, memcached), EMFILE,
//! EADDRNOTAVAIL, timeout, reset, a server that stopped accepting... The
//! caller may show it the server's side ([`Observer`]): the listener's accept
//! queue, so that connections waiting in the backlog are never called held.

pub mod bench;
pub mod mcp;
pub mod orchestrate;
pub mod outcome;
pub mod proto;
mod render;
pub mod report;
mod session;
pub mod spec;
pub mod summary;
pub mod worker;

pub use orchestrate::{run, run_observed, worker_main, FloodError, Observer, Plan};
pub use outcome::{Failure, FailureKind};
pub use report::StopReason;
pub use spec::{parse_duration, Mode, ProtoOptions};
pub use summary::{BreakingPoint, FloodReport, PredictionCheck, QueueSample, ServerView};

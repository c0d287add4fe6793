//! headroom-flood: finds a server's breaking point by flooding it, and names
//! the cause, so the capacity model's prediction can be set beside it.
//!
//! A flood opens TCP connections (`connect`), MCP sessions (`mcp`) or
//! sessions that then carry pipelined `tools/call` (`bomb`) against a
//! loopback (or namespaced) target, until a sustained failure, a count or a
//! time limit. It goes past one process's descriptor limit with several
//! worker processes (re-executions of the binary, see [`orchestrate`]) and
//! past one source address's port range with several 127.0.0.x sources.
//! Failures are told apart by kind ([`FailureKind`]): the server's own
//! JSON-RPC refusal, EMFILE, EADDRNOTAVAIL, timeout, reset...

pub mod orchestrate;
pub mod outcome;
pub mod report;
pub mod spec;
pub mod worker;

pub use orchestrate::{run, worker_main, FloodError, Plan};
pub use outcome::{Failure, FailureKind};
pub use report::{BreakingPoint, FloodReport, PredictionCheck, StopReason};
pub use spec::{parse_duration, Mode};

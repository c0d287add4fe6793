//! headroom-core: the one vocabulary every part of headroom reads and writes,
//! and the pure capacity model over it.
//!
//! A [`Snapshot`] is what a host (and one process, or one multi-process
//! service) looks like at one instant. [`predict`] turns it into a
//! [`Prediction`]: the named [`Constraint`]s, the binding one and the maximum
//! number of concurrent connections. Nothing here touches the kernel, a socket
//! or a clock: fixtures in, numbers out. The probe fills snapshots, the server,
//! dashboard, preflight and exporter consume them.

pub mod app;
mod app_model;
pub mod metrics;
pub mod model;
pub mod prom;
pub mod snapshot;

pub use app::{AppCap, AppInfo, AtCap, CapSource, ProcessLimit};
pub use model::{
    accept_queue_capacity, effective_backlog, ephemeral_ports_per_destination, fd_capacity,
    predict, time_to_limit, Constraint, ModelConfig, NextWall, Prediction, Scope,
};
pub use snapshot::{
    FdError, Listener, MemoryPerConnection, NetStat, ProcessInfo, Snapshot, Source, SystemLimits,
    TcpState,
};

/// Version of every JSON document headroom prints (`status --json`,
/// `probe --once --json`, ...). Bumped on any incompatible change; see
/// docs/json.md.
pub const SCHEMA_VERSION: u32 = 2;

//! What the TCP transport is configured with and needs of the server
//! around it: limits, thread layout, the [`Host`] it counts connections
//! in, and the [`Service`] a worker of a multi-process service belongs to.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// Limits every connection lives under.
#[derive(Debug, Clone)]
pub struct Limits {
    /// `--max-connections`; the fd capacity caps it in any case.
    pub max_connections: Option<u64>,
    pub max_message_bytes: usize,
    /// No complete message for this long: closed.
    pub idle_timeout: Duration,
    /// Output not drained for this long (client not reading): closed.
    pub write_timeout: Duration,
    /// A line started but not finished for this long (slow loris): closed.
    pub line_timeout: Duration,
    /// Stop reading while this much output waits to be written.
    pub out_high_water: usize,
    /// Listen backlog (the kernel caps it at net.core.somaxconn).
    pub backlog: i32,
    /// TCP_DEFER_ACCEPT, seconds (0: off): the kernel hands a connection
    /// to accept() with its first message, one wakeup instead of two (every
    /// MCP client speaks first). A client that connects and stays silent is
    /// accepted (or refused) only after about this long.
    pub defer_accept_secs: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: None,
            max_message_bytes: 1 << 20,
            idle_timeout: Duration::from_secs(300),
            write_timeout: Duration::from_secs(10),
            line_timeout: Duration::from_secs(10),
            out_high_water: 1 << 20,
            backlog: 4096,
            defer_accept_secs: 0,
        }
    }
}

/// How the accept loops and connections are spread over threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// N current-thread runtimes, N SO_REUSEPORT listeners (the default).
    PerCore(usize),
    /// One multi-thread runtime with N workers and one listener.
    MultiThread(usize),
}

/// What the transport needs of the server around it: where it counts its
/// connections (the server reports them) and the descriptor capacity its
/// connection ceiling is held to.
pub trait Host: Send + Sync {
    /// Connections open now (the count the ceiling is checked against).
    fn active(&self) -> &AtomicU64;
    /// Where the ceiling fixed at start is published.
    fn ceiling(&self) -> &AtomicU64;
    /// Connections refused since start.
    fn refused(&self) -> &AtomicU64;
    /// Connections the descriptors left now admit, read when serving starts.
    fn fd_capacity(&self) -> FdCapacity;
}

/// Connections the process's descriptor table admits, and what that was
/// computed from (named in the refusal line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdCapacity {
    /// `u64::MAX` when the limit is unknown.
    pub connections: u64,
    /// RLIMIT_NOFILE's soft limit, when known.
    pub soft: Option<u64>,
    /// Descriptors open at start.
    pub open: u64,
    /// Descriptors kept back for everything else.
    pub reserve: u64,
}

/// One process of a multi-process service (`serve --workers`, see
/// `serve --workers`): service-wide admission, and somewhere to send a
/// connection this process has no room for.
pub trait Service: Send + Sync {
    /// Counts a connection this process is about to serve against the
    /// service-wide limit; `Err((reason, refusal line))` when it is full.
    fn admit(&self) -> Result<(), (&'static str, Vec<u8>)>;
    /// An admitted connection closed.
    fn release(&self);
    /// This process is at its ceiling: pass the connection (its fd) on.
    /// True when it was passed; the caller then closes its copy.
    fn overflow(&self, fd: std::os::fd::RawFd) -> bool;
    /// A connection passed in arrived (before the ceiling check).
    fn adopted(&self);
}

/// Connections passed in by a `--workers` supervisor, served by the first runtime.
pub type AdoptedRx = tokio::sync::mpsc::UnboundedReceiver<std::net::TcpStream>;

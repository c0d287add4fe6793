//! The transport's settings and its counters.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Limits and settings of the HTTP transport.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Open TCP connections served at once; past it, 503.
    pub max_connections: usize,
    /// Initialize-era sessions alive at once; past it, 503.
    pub max_sessions: usize,
    /// Largest request body; larger gets 413.
    pub max_body_bytes: usize,
    /// Time a client has to send a request's headers, and again its body.
    pub read_timeout: Duration,
    /// A write the client has not taken for this long (it does not read: a
    /// stalled subscriber on an SSE stream) closes the connection.
    pub write_timeout: Duration,
    /// A session unused this long is forgotten.
    pub session_idle: Duration,
    /// `retry:` sent in SSE priming events: how long a client waits to reconnect.
    pub sse_retry: Duration,
    /// Bearer token every request must carry, when set.
    pub token: Option<String>,
    /// Enforce Host/Origin naming this machine (DNS-rebinding protection).
    /// [`HttpServer::bind`](super::HttpServer::bind) turns it on for a loopback address.
    pub check_origin: bool,
    /// Seconds in the `Retry-After` of a 503.
    pub retry_after_secs: u32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_connections: 10_000,
            max_sessions: 10_000,
            max_body_bytes: 1 << 20,
            read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            session_idle: Duration::from_secs(30 * 60),
            sse_retry: Duration::from_millis(1000),
            token: None,
            check_origin: false,
            retry_after_secs: 1,
        }
    }
}

/// Counters of the HTTP transport, read by the metrics exporter.
#[derive(Debug, Default)]
pub struct HttpStats {
    pub connections_active: AtomicUsize,
    pub connections_accepted: AtomicU64,
    /// Refused at the connection limit.
    pub refused_connections: AtomicU64,
    /// Refused at the session limit.
    pub refused_sessions: AtomicU64,
    /// Bodies over the size limit.
    pub refused_oversize: AtomicU64,
    /// Requests refused by Host/Origin or token checks.
    pub refused_forbidden: AtomicU64,
    /// Clients cut off for sending too slowly.
    pub timeouts: AtomicU64,
    /// Clients cut off for not reading what they were sent.
    pub write_timeouts: AtomicU64,
    pub requests: AtomicU64,
    pub sessions_opened: AtomicU64,
    pub bytes_in: AtomicU64,
}

impl crate::transport::OpenConnections for HttpStats {
    fn open_connections(&self) -> u64 {
        self.connections_active.load(Ordering::Relaxed) as u64
    }
}

//! What every accept loop and connection of one TCP server shares: the
//! engine, limits, ceiling and why it is what it is; per thread, the stop
//! signal and connection count.

use crate::jsonrpc;
use crate::metrics::TransportMetrics;
use crate::protocol::Engine;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;

use super::config::{Host, Limits, Service};

#[derive(Debug, Clone, Copy)]
pub(super) enum Reason {
    MaxConnections,
    Nofile { soft: u64, open: u64, reserve: u64 },
}

pub(super) struct Shared {
    pub(super) engine: Arc<Engine>,
    pub(super) state: Arc<dyn Host>,
    pub(super) limits: Limits,
    pub(super) ceiling: u64,
    pub(super) reason: Reason,
    pub(super) tm: Option<Arc<TransportMetrics>>,
    pub(super) service: Option<Arc<dyn Service>>,
}

impl Shared {
    pub(super) fn refusal(&self) -> (&'static str, Vec<u8>) {
        match self.reason {
            Reason::MaxConnections => (
                "max-connections",
                jsonrpc::refusal_line(
                    "max-connections",
                    self.ceiling,
                    &format!("connection refused: max-connections {} reached", self.ceiling),
                ),
            ),
            Reason::Nofile {
                soft,
                open,
                reserve,
            } => (
                "nofile",
                jsonrpc::refusal_line(
                    "nofile",
                    self.ceiling,
                    &format!(
                        "connection refused: nofile capacity {} reached (RLIMIT_NOFILE soft {soft} - {open} fds open at start - {reserve} reserve)",
                        self.ceiling,
                    ),
                ),
            ),
        }
    }
}

/// Per accept-loop (per thread) stop signal and connection count: nothing
/// here is touched by another thread on the hot path.
#[derive(Default)]
pub(super) struct Local {
    pub(super) stopping: AtomicBool,
    pub(super) notify: Notify,
    pub(super) conns: AtomicUsize,
    pub(super) idle: Notify,
}

impl Local {
    pub(super) async fn wait_idle(&self) {
        loop {
            let n = self.idle.notified();
            if self.conns.load(Ordering::SeqCst) == 0 {
                return;
            }
            n.await;
        }
    }
}

//! The live numbers `headroom serve` keeps of its own connections: counted
//! by the transports, reported by the tools, and the descriptor capacity
//! the TCP ceiling is held to (the model's `fd_capacity`, so the server
//! refuses exactly where `headroom status` predicts).

use headroom_core::{fd_capacity, ModelConfig};
use headroom_mcp::tcp::{FdCapacity, Host};
use headroom_mcp::OpenConnections;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// Live numbers the tools report, owned by the transports.
#[derive(Default)]
pub struct ServerState {
    /// TCP (and stdio) connections open now: the count the TCP ceiling is
    /// checked against.
    pub active: AtomicU64,
    /// The connection ceiling (min of --max-connections and fd capacity).
    pub ceiling: AtomicU64,
    /// Connections refused since start.
    pub refused: AtomicU64,
    /// The Streamable HTTP transport's connections, when it runs: they
    /// hold descriptors of the same table.
    pub http: OnceLock<Arc<dyn OpenConnections>>,
}

impl std::fmt::Debug for ServerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerState")
            .field("active", &self.active)
            .field("ceiling", &self.ceiling)
            .field("refused", &self.refused)
            .field("http", &self.http.get().map(|h| h.open_connections()))
            .finish()
    }
}

impl ServerState {
    /// Connections open now over every transport.
    pub fn connections(&self) -> u64 {
        let http = self.http.get().map_or(0, |h| h.open_connections());
        self.active.load(Ordering::Relaxed) + http
    }
}

impl Host for ServerState {
    fn active(&self) -> &AtomicU64 {
        &self.active
    }
    fn ceiling(&self) -> &AtomicU64 {
        &self.ceiling
    }
    fn refused(&self) -> &AtomicU64 {
        &self.refused
    }
    fn fd_capacity(&self) -> FdCapacity {
        let (soft, _) = crate::capacity::nofile();
        let open = crate::capacity::open_fds();
        let model = ModelConfig::default();
        FdCapacity {
            connections: soft.map_or(u64::MAX, |s| fd_capacity(s, open, &model)),
            soft,
            open,
            reserve: model.fd_reserve,
        }
    }
}

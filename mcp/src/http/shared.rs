//! What every connection and request of one HTTP server shares.

use super::config::{HttpConfig, HttpStats};
use super::protocol::Protocol;
use super::session::Sessions;
use std::sync::Arc;

pub(super) struct Shared {
    pub(super) protocol: Arc<dyn Protocol>,
    pub(super) sessions: Sessions,
    pub(super) config: HttpConfig,
    pub(super) stats: Arc<HttpStats>,
    /// Prometheus counters labelled transport="http", when exported.
    pub(super) metrics: Option<Arc<crate::metrics::TransportMetrics>>,
}

impl Shared {
    /// Counts a refusal in the Prometheus metrics (`reason` names the limit).
    pub(super) fn count_refused(&self, reason: &str) {
        if let Some(tm) = &self.metrics {
            tm.refused(reason);
        }
    }
}

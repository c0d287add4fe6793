//! The model's prediction for this process, exported beside the MCP
//! metrics under the names and labels `headroom probe` uses, so the rules
//! and `headroom fleet` read a server and a probe alike (and name its
//! binding constraint).

use headroom_core::Prediction;
use headroom_mcp::Metrics;
use headroom_probe::export::CapacityGauges;

pub struct CapacityMetrics(CapacityGauges);

impl CapacityMetrics {
    /// Registers the gauges in the server's metrics registry.
    pub fn register(metrics: &Metrics) -> CapacityMetrics {
        CapacityMetrics(
            CapacityGauges::register(&metrics.registry).expect("metric names are unique"),
        )
    }

    pub fn set_prediction(&self, p: &Prediction) {
        self.0.set(p);
    }
}

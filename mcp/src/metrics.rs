//! The MCP server's Prometheus metrics (names from `headroom_core::metrics`),
//! labelled by transport; a server registers its own beside them in
//! [`Metrics::registry`]. Label lookups happen once per transport, not per
//! message: the hot path touches only atomics.

use headroom_core::metrics as names;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::transport::Transport;

/// Every metric of one server process.
pub struct Metrics {
    pub registry: Registry,
    active: IntGaugeVec,
    accepted: IntCounterVec,
    refused: IntCounterVec,
    pub connections_max: IntGauge,
    messages: IntCounterVec,
    errors: IntCounterVec,
    latency: HistogramVec,
    received: IntCounterVec,
    sent: IntCounterVec,
    per_transport: Mutex<Vec<Arc<TransportMetrics>>>,
}

/// The metrics of one transport, labels resolved.
pub struct TransportMetrics {
    transport: Transport,
    pub active: IntGauge,
    pub accepted: IntCounter,
    pub received: IntCounter,
    pub sent: IntCounter,
    latency: Histogram,
    messages: Vec<(&'static str, IntCounter)>,
    errors: IntCounterVec,
    refused: IntCounterVec,
}

/// The `method` label values of the messages counter: the methods the
/// protocol knows, then `invalid`, `response` and `other` (bounded: a client
/// cannot grow the label set).
pub const METHOD_LABELS: [&str; 22] = [
    "initialize",
    "ping",
    "server/discover",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "subscriptions/listen",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
    "invalid",
    "response",
    "other",
];

impl TransportMetrics {
    pub fn message(&self, method: &'static str) {
        if let Some((_, c)) = self.messages.iter().find(|(m, _)| *m == method) {
            c.inc();
        }
    }
    pub fn error(&self, code: i32) {
        self.errors
            .with_label_values(&[self.transport.as_str(), &code.to_string()])
            .inc();
    }
    pub fn observe(&self, d: Duration) {
        self.latency.observe(d.as_secs_f64());
    }
    /// Counts one refused connection; `reason` is a limit name.
    pub fn refused(&self, reason: &str) {
        self.refused
            .with_label_values(&[self.transport.as_str(), reason])
            .inc();
    }
    pub fn refused_count(&self, reason: &str) -> u64 {
        self.refused
            .with_label_values(&[self.transport.as_str(), reason])
            .get()
    }
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let registry = Registry::new();
        let t = &["transport"];
        let active = IntGaugeVec::new(
            Opts::new(names::SERVER_CONNECTIONS_ACTIVE, "Connections open now"),
            t,
        )
        .unwrap();
        let accepted = IntCounterVec::new(
            Opts::new(
                names::SERVER_CONNECTIONS_ACCEPTED_TOTAL,
                "Connections accepted and served",
            ),
            t,
        )
        .unwrap();
        let refused = IntCounterVec::new(
            Opts::new(
                names::SERVER_CONNECTIONS_REFUSED_TOTAL,
                "Connections refused with an error line, by the limit that refused them",
            ),
            &["transport", "reason"],
        )
        .unwrap();
        let connections_max = IntGauge::new(
            names::SERVER_CONNECTIONS_MAX,
            "Connection ceiling: min(--max-connections, fd capacity at start)",
        )
        .unwrap();
        let messages = IntCounterVec::new(
            Opts::new(
                names::SERVER_MESSAGES_TOTAL,
                "Inbound JSON-RPC messages by method",
            ),
            &["transport", "method"],
        )
        .unwrap();
        let errors = IntCounterVec::new(
            Opts::new(
                names::SERVER_ERRORS_TOTAL,
                "JSON-RPC error responses by code",
            ),
            &["transport", "code"],
        )
        .unwrap();
        let latency = HistogramVec::new(
            HistogramOpts::new(
                names::SERVER_REQUEST_DURATION_SECONDS,
                "Time from request read to response written to the buffer",
            )
            .buckets(vec![
                0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            t,
        )
        .unwrap();
        let received = IntCounterVec::new(
            Opts::new(
                names::SERVER_RECEIVED_BYTES_TOTAL,
                "Bytes read from clients",
            ),
            t,
        )
        .unwrap();
        let sent = IntCounterVec::new(
            Opts::new(names::SERVER_SENT_BYTES_TOTAL, "Bytes written to clients"),
            t,
        )
        .unwrap();
        for c in [
            Box::new(active.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(accepted.clone()),
            Box::new(refused.clone()),
            Box::new(connections_max.clone()),
            Box::new(messages.clone()),
            Box::new(errors.clone()),
            Box::new(latency.clone()),
            Box::new(received.clone()),
            Box::new(sent.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Arc::new(Metrics {
            registry,
            active,
            accepted,
            refused,
            connections_max,
            messages,
            errors,
            latency,
            received,
            sent,
            per_transport: Mutex::new(Vec::new()),
        })
    }

    /// The label-resolved metrics of one transport (created once, shared).
    pub fn transport(&self, transport: Transport) -> Arc<TransportMetrics> {
        let mut v = self.per_transport.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = v.iter().find(|t| t.transport == transport) {
            return t.clone();
        }
        let l = transport.as_str();
        let t = Arc::new(TransportMetrics {
            transport,
            active: self.active.with_label_values(&[l]),
            accepted: self.accepted.with_label_values(&[l]),
            received: self.received.with_label_values(&[l]),
            sent: self.sent.with_label_values(&[l]),
            latency: self.latency.with_label_values(&[l]),
            messages: METHOD_LABELS
                .iter()
                .map(|m| (*m, self.messages.with_label_values(&[l, m])))
                .collect(),
            errors: self.errors.clone(),
            refused: self.refused.clone(),
        });
        v.push(t.clone());
        t
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(buf).expect("exposition format is UTF-8")
    }
}

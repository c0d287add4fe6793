//! What workers send back (over a pipe, as JSON): counts, failures by kind
//! and latency histograms that merge exactly. The merged report is in
//! [`crate::summary`].

use crate::outcome::{Failure, FailureKind, RpcError};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Why the open phase ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// Every requested connection was attempted.
    Target,
    /// The open phase ran out of time.
    Duration,
    /// `fail_streak` consecutive failures: the breaking point.
    Failure,
}

/// Latencies in microseconds, as (value, count) pairs so that workers'
/// histograms merge exactly.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded(pub Vec<(u64, u64)>);

impl Recorded {
    pub fn from_histogram(h: &Histogram<u64>) -> Recorded {
        Recorded(
            h.iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
        )
    }

    pub fn add_to(&self, h: &mut Histogram<u64>) {
        for &(v, n) in &self.0 {
            let _ = h.record_n(v, n);
        }
    }
}

/// A new histogram of microseconds, 3 significant digits, growing as needed.
pub fn histogram() -> Histogram<u64> {
    let mut h = Histogram::new(3).expect("3 significant digits is valid");
    h.auto(true);
    h
}

/// Percentiles of one latency distribution, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        let ms = |us: u64| us as f64 / 1000.0;
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// Failure counts by kind, with the first detail seen for each kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failures {
    pub counts: BTreeMap<FailureKind, u64>,
    pub details: BTreeMap<FailureKind, String>,
    /// The first refusal line the server sent.
    #[serde(default)]
    pub refusal: Option<RpcError>,
}

impl Failures {
    pub fn record(&mut self, f: &Failure) {
        *self.counts.entry(f.kind).or_default() += 1;
        self.details
            .entry(f.kind)
            .or_insert_with(|| f.detail.clone());
        if self.refusal.is_none() {
            self.refusal = f.refusal.clone();
        }
    }

    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    pub fn count(&self, kind: FailureKind) -> u64 {
        self.counts.get(&kind).copied().unwrap_or(0)
    }

    pub fn merge(&mut self, other: &Failures) {
        for (k, n) in &other.counts {
            *self.counts.entry(*k).or_default() += n;
        }
        for (k, d) in &other.details {
            self.details.entry(*k).or_insert_with(|| d.clone());
        }
        if self.refusal.is_none() {
            self.refusal = other.refusal.clone();
        }
    }

    /// The most frequent kind of failed attempt (ties: the more specific,
    /// earlier in the enum). Held connections the server closed while idle
    /// are no failed attempt and never the dominant kind.
    pub fn dominant(&self) -> Option<FailureKind> {
        self.counts
            .iter()
            .filter(|(k, n)| **n > 0 && **k != FailureKind::ClosedIdle)
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(k, _)| *k)
    }
}

/// The bomb phase of one worker.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BombStats {
    pub sessions: u64,
    pub sent: u64,
    /// Successful replies (a result that is not a tool error).
    pub replies: u64,
    /// JSON-RPC errors and tool errors.
    pub errors: u64,
    /// Requests never answered: the session broke or timed out.
    pub lost: u64,
    pub elapsed_ms: u64,
    pub latency: Recorded,
    pub failures: Failures,
    /// Sessions that finished their bomb run (internal bookkeeping).
    #[serde(default)]
    pub sessions_done: u64,
}

/// The ping round of one worker.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingStats {
    pub sessions: u64,
    pub replies: u64,
    pub failed: u64,
    pub latency: Recorded,
}

/// One worker's account. Sent twice: after the open phase (`final_` false)
/// and after bomb/ping (`final_` true).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerReport {
    pub index: u32,
    pub final_: bool,
    pub attempted: u64,
    pub opened: u64,
    /// Sessions still held (opened minus those the server dropped since).
    pub held: u64,
    pub stop: StopReason,
    pub open_ms: u64,
    /// Opened count when the first failure happened.
    pub first_failure_after: Option<u64>,
    pub failures: Failures,
    pub latency: Recorded,
    /// RLIMIT_NOFILE soft limit the worker ran with.
    pub nofile: u64,
    /// CPU (user + system) the worker process used in the open phase, µs.
    #[serde(default)]
    pub open_cpu_us: u64,
    pub bomb: Option<BombStats>,
    /// The end check: MCP `ping`, the protocol's request again, or in
    /// connect mode a look at whether the connection is still open.
    pub ping: Option<PingStats>,
    /// Protocol modes: connections that got a good reply in the open phase.
    #[serde(default)]
    pub served_total: u64,
    /// Served connections the server closed while idle in the open phase.
    #[serde(default)]
    pub closed_idle: u64,
    /// Protocol modes, open-phase report: (CLOCK_MONOTONIC µs, +1 served /
    /// -1 closed by the server), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<(u64, i64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dominant_failure_kind() {
        let mut f = Failures::default();
        f.record(&Failure::new(FailureKind::Timeout, "t"));
        f.record(&Failure::new(FailureKind::Eaddrnotavail, "e"));
        f.record(&Failure::new(FailureKind::Eaddrnotavail, "e2"));
        assert_eq!(f.dominant(), Some(FailureKind::Eaddrnotavail));
        assert_eq!(f.details[&FailureKind::Eaddrnotavail], "e");
        assert_eq!(Failures::default().dominant(), None);
        // Idle closes of held connections are not what broke the flood.
        for _ in 0..5 {
            f.record(&Failure::new(FailureKind::ClosedIdle, "c"));
        }
        assert_eq!(f.dominant(), Some(FailureKind::Eaddrnotavail));
    }

    #[test]
    fn worker_report_reads_without_the_new_fields() {
        let old = r#"{"index":0,"final_":false,"attempted":1,"opened":1,"held":1,"stop":"target","open_ms":1,"first_failure_after":null,"failures":{"counts":{},"details":{}},"latency":[],"nofile":1024,"bomb":null,"ping":null}"#;
        let w: WorkerReport = serde_json::from_str(old).unwrap();
        assert_eq!((w.served_total, w.closed_idle, w.timeline.len()), (0, 0, 0));
    }
}

//! What workers send back (over a pipe, as JSON) and the merged report a
//! flood prints.

use crate::outcome::{Failure, FailureKind, RpcError};
use crate::spec::Mode;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;

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

    /// The most frequent kind (ties: the more specific, earlier in the enum).
    pub fn dominant(&self) -> Option<FailureKind> {
        self.counts
            .iter()
            .filter(|(_, n)| **n > 0)
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
    pub ping: Option<PingStats>,
}

/// The comparison a flood prints when it knows the server's pid or port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictionCheck {
    pub predicted_max_connections: u64,
    pub binding: String,
    pub explanation: String,
    /// What the flood measured: the breaking point, or the sessions held
    /// when the flood stopped without breaking.
    pub measured: u64,
    /// measured / predicted.
    pub ratio: f64,
}

impl PredictionCheck {
    /// The model's word on how many connections this flood can hold: the
    /// server's prediction (connections it can still take), or the flood's
    /// own wall when that comes first, the ephemeral ports of its source
    /// addresses to this destination (`client_ports`, a constraint whose
    /// `max_connections` counts new connections only).
    pub fn new(
        server: &headroom_core::Prediction,
        client_ports: Option<&headroom_core::Constraint>,
        measured: u64,
    ) -> PredictionCheck {
        let server_room = server
            .predicted_max_connections
            .saturating_sub(server.connections);
        let (predicted, binding, explanation) = match client_ports {
            Some(c) if c.max_connections < server_room => (
                c.max_connections,
                c.name.clone(),
                format!("{} (the client's side)", c.explanation),
            ),
            _ => (
                server_room,
                server.binding.clone(),
                server
                    .binding_constraint()
                    .map(|c| c.explanation.clone())
                    .unwrap_or_default(),
            ),
        };
        PredictionCheck {
            predicted_max_connections: predicted,
            binding,
            explanation,
            measured,
            ratio: if predicted > 0 {
                measured as f64 / predicted as f64
            } else {
                0.0
            },
        }
    }
}

/// Bomb phase totals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BombSummary {
    pub sessions: u64,
    pub sent: u64,
    pub replies: u64,
    pub errors: u64,
    pub lost: u64,
    pub seconds: f64,
    /// Successful replies per second over the phase.
    pub messages_per_second: f64,
    pub latency: Latency,
    pub failures: BTreeMap<FailureKind, u64>,
}

/// Ping round totals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PingSummary {
    pub sessions: u64,
    pub replies: u64,
    pub failed: u64,
    pub latency: Latency,
}

/// The breaking point: how many were held when sustained failure set in, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreakingPoint {
    pub connections: u64,
    pub cause: FailureKind,
    pub cause_text: String,
    /// The server's refusal line or the OS error, first seen.
    pub detail: String,
}

/// Everything a flood measured. `--json` prints exactly this.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FloodReport {
    pub schema_version: u32,
    pub target: SocketAddr,
    pub mode: Mode,
    pub workers: u32,
    pub sources: u32,
    pub requested: u64,
    pub attempted: u64,
    pub opened: u64,
    /// Held at the end of the open phase.
    pub held: u64,
    pub open_seconds: f64,
    /// Opened per second over the open phase.
    pub open_rate_per_second: f64,
    /// CPU the flood's workers used in the open phase (user + system,
    /// summed), in seconds: on a host shared with the server, the client's
    /// share of the cores is what the server did not get.
    #[serde(default)]
    pub client_cpu_seconds: f64,
    /// `client_cpu_seconds` per opened connection, in µs.
    #[serde(default)]
    pub client_cpu_us_per_open: f64,
    pub stop: StopReason,
    /// Connect (+ handshake in mcp/bomb) latency.
    pub latency: Latency,
    pub first_failure_after: Option<u64>,
    pub failures: BTreeMap<FailureKind, u64>,
    pub failure_details: BTreeMap<FailureKind, String>,
    /// The server's first refusal line: its code, message and, from
    /// headroom serve, the limit it hit and its maximum.
    pub server_refusal: Option<RpcError>,
    pub breaking_point: Option<BreakingPoint>,
    /// Sessions the server dropped after the open phase (hold, bomb, ping).
    pub dropped_later: u64,
    pub bomb: Option<BombSummary>,
    pub ping: Option<PingSummary>,
    /// Set by the caller when it could read the server's limits.
    pub prediction: Option<PredictionCheck>,
}

impl FloodReport {
    /// Merges the open-phase reports and final reports of all workers.
    pub fn merge(
        target: SocketAddr,
        mode: Mode,
        sources: u32,
        requested: u64,
        opened: &[WorkerReport],
        finals: &[WorkerReport],
    ) -> FloodReport {
        let mut failures = Failures::default();
        let mut lat = histogram();
        let (mut attempted, mut n_opened, mut held, mut open_ms) = (0, 0, 0, 0);
        let mut cpu_us = 0u64;
        let mut stop = StopReason::Target;
        let mut first_failure_after: Option<u64> = None;
        for w in opened {
            attempted += w.attempted;
            n_opened += w.opened;
            held += w.held;
            open_ms = open_ms.max(w.open_ms);
            cpu_us += w.open_cpu_us;
            stop = stop.max(w.stop);
            failures.merge(&w.failures);
            w.latency.add_to(&mut lat);
            // Workers run side by side: the flood's first failure came after
            // roughly this worker's count times the number of workers.
            if let Some(f) = w.first_failure_after {
                let scaled = f * opened.len() as u64;
                first_failure_after = Some(first_failure_after.map_or(scaled, |x| x.min(scaled)));
            }
        }
        if opened.len() == 1 {
            first_failure_after = opened[0].first_failure_after;
        }
        let open_seconds = open_ms as f64 / 1000.0;
        let breaking_point = (stop == StopReason::Failure).then(|| {
            let cause = failures.dominant().unwrap_or(FailureKind::Other);
            BreakingPoint {
                connections: held,
                cause,
                cause_text: cause.describe().to_string(),
                detail: failures.details.get(&cause).cloned().unwrap_or_default(),
            }
        });

        let final_held: u64 = finals.iter().map(|w| w.held).sum();
        let bombs: Vec<&BombStats> = finals.iter().filter_map(|w| w.bomb.as_ref()).collect();
        let bomb = (!bombs.is_empty()).then(|| {
            let mut h = histogram();
            let mut f = Failures::default();
            let mut s = BombSummary {
                sessions: 0,
                sent: 0,
                replies: 0,
                errors: 0,
                lost: 0,
                seconds: 0.0,
                messages_per_second: 0.0,
                latency: Latency::default(),
                failures: BTreeMap::new(),
            };
            for b in &bombs {
                s.sessions += b.sessions;
                s.sent += b.sent;
                s.replies += b.replies;
                s.errors += b.errors;
                s.lost += b.lost;
                s.seconds = s.seconds.max(b.elapsed_ms as f64 / 1000.0);
                b.latency.add_to(&mut h);
                f.merge(&b.failures);
            }
            s.messages_per_second = rate(s.replies, s.seconds);
            s.latency = Latency::of(&h);
            s.failures = f.counts;
            s
        });
        let pings: Vec<&PingStats> = finals.iter().filter_map(|w| w.ping.as_ref()).collect();
        let ping = (!pings.is_empty()).then(|| {
            let mut h = histogram();
            for p in &pings {
                p.latency.add_to(&mut h);
            }
            PingSummary {
                sessions: pings.iter().map(|p| p.sessions).sum(),
                replies: pings.iter().map(|p| p.replies).sum(),
                failed: pings.iter().map(|p| p.failed).sum(),
                latency: Latency::of(&h),
            }
        });

        FloodReport {
            schema_version: headroom_core::SCHEMA_VERSION,
            target,
            mode,
            workers: opened.len() as u32,
            sources,
            requested,
            attempted,
            opened: n_opened,
            held,
            open_seconds,
            open_rate_per_second: rate(n_opened, open_seconds),
            client_cpu_seconds: cpu_us as f64 / 1e6,
            client_cpu_us_per_open: if n_opened == 0 {
                0.0
            } else {
                cpu_us as f64 / n_opened as f64
            },
            stop,
            latency: Latency::of(&lat),
            first_failure_after,
            server_refusal: failures.refusal.clone(),
            failures: failures.counts,
            failure_details: failures.details,
            breaking_point,
            dropped_later: if finals.is_empty() {
                0
            } else {
                held.saturating_sub(final_held)
            },
            bomb,
            ping,
            prediction: None,
        }
    }

    /// What the comparison with a prediction measures: the breaking point
    /// when there was one, else what was held.
    pub fn measured(&self) -> u64 {
        self.breaking_point
            .as_ref()
            .map_or(self.held, |b| b.connections)
    }

    /// Human-readable report.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "flood {} mode {} · {} worker process(es) · {} source address(es)",
            self.target,
            self.mode.as_str(),
            self.workers,
            self.sources.max(1)
        );
        let _ = writeln!(
            o,
            "opened   {} of {} attempted ({} requested) in {:.2} s: {:.0}/s; held {}",
            self.opened,
            self.attempted,
            self.requested,
            self.open_seconds,
            self.open_rate_per_second,
            self.held
        );
        let l = &self.latency;
        let _ = writeln!(
            o,
            "latency  p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms",
            l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
        );
        if self.client_cpu_seconds > 0.0 {
            let _ = writeln!(
                o,
                "client   {:.2} s CPU in the open phase (all workers, user+system): {:.1} us per opened",
                self.client_cpu_seconds, self.client_cpu_us_per_open
            );
        }
        let stop = match self.stop {
            StopReason::Target => "every requested connection attempted",
            StopReason::Duration => "duration reached",
            StopReason::Failure => "sustained failure",
        };
        let _ = writeln!(o, "stopped  {stop}");
        for (k, n) in &self.failures {
            let d = self
                .failure_details
                .get(k)
                .map(String::as_str)
                .unwrap_or("");
            let _ = writeln!(o, "failure  {n} x {}: {d}", k.describe());
        }
        if let Some(b) = &self.breaking_point {
            let _ = writeln!(
                o,
                "BREAKING POINT {} connections: {}",
                b.connections, b.cause_text
            );
            if !b.detail.is_empty() {
                let _ = writeln!(o, "         {}", b.detail);
            }
        }
        if self.dropped_later > 0 {
            let _ = writeln!(
                o,
                "dropped  {} held sessions closed by the server later",
                self.dropped_later
            );
        }
        if let Some(b) = &self.bomb {
            let _ = writeln!(
                o,
                "bomb     {} sessions: {} replies, {} errors, {} lost in {:.2} s: {:.0} msg/s; p50 {:.2} ms p99 {:.2} ms",
                b.sessions, b.replies, b.errors, b.lost, b.seconds, b.messages_per_second, b.latency.p50_ms, b.latency.p99_ms
            );
        }
        if let Some(p) = &self.ping {
            let _ = writeln!(
                o,
                "ping     {} of {} sessions answered ({} failed); p99 {:.2} ms",
                p.replies, p.sessions, p.failed, p.latency.p99_ms
            );
        }
        if let Some(p) = &self.prediction {
            let _ = writeln!(
                o,
                "model    predicted {} ({}), measured {}: ratio {:.3}\n         {}",
                p.predicted_max_connections, p.binding, p.measured, p.ratio, p.explanation
            );
        }
        o
    }
}

fn rate(n: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        n as f64 / seconds
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(index: u32, opened: u64, stop: StopReason, refused: u64) -> WorkerReport {
        let mut failures = Failures::default();
        for _ in 0..refused {
            failures.record(&Failure::new(FailureKind::Refused, "-32000: full"));
        }
        let mut h = histogram();
        for v in 1..=opened {
            h.record(v * 100).unwrap();
        }
        WorkerReport {
            index,
            final_: false,
            attempted: opened + refused,
            opened,
            held: opened,
            stop,
            open_ms: 500,
            first_failure_after: (refused > 0).then_some(opened),
            failures,
            latency: Recorded::from_histogram(&h),
            nofile: 20000,
            open_cpu_us: opened * 50,
            bomb: None,
            ping: None,
        }
    }

    #[test]
    fn merge_sums_workers_and_names_the_breaking_point() {
        let a = worker(0, 300, StopReason::Failure, 40);
        let b = worker(1, 170, StopReason::Target, 10);
        let r = FloodReport::merge(
            "127.0.0.1:1".parse().unwrap(),
            Mode::Mcp,
            1,
            600,
            &[a, b],
            &[],
        );
        assert_eq!((r.attempted, r.opened, r.held), (520, 470, 470));
        assert_eq!(r.stop, StopReason::Failure);
        assert_eq!(r.failures[&FailureKind::Refused], 50);
        let bp = r.breaking_point.as_ref().unwrap();
        assert_eq!(bp.connections, 470);
        assert_eq!(bp.cause, FailureKind::Refused);
        assert_eq!(bp.detail, "-32000: full");
        assert_eq!(
            r.server_refusal, None,
            "Failure::new carries no refusal object"
        );
        assert_eq!(r.latency.count, 470);
        assert_eq!(r.open_rate_per_second, 940.0);
        // 50 us per opened in each worker: (300 + 170) x 50 us.
        assert_eq!(r.client_cpu_seconds, 0.0235);
        assert_eq!(r.client_cpu_us_per_open, 50.0);
        assert_eq!(r.measured(), 470);
        // Two side-by-side workers: first failure after about 2 x 170.
        assert_eq!(r.first_failure_after, Some(340));
    }

    #[test]
    fn prediction_check_takes_the_clients_port_wall_when_it_comes_first() {
        let server = headroom_core::Prediction {
            connections: 10,
            predicted_max_connections: 59_850,
            binding: "nofile".into(),
            constraints: Vec::new(),
            processes: 3,
            next_wall: None,
        };
        // 30,000 ports, one source, none in use: the flood's wall.
        let ports = headroom_core::ephemeral_ports_per_destination((30000, 59999), 1, 0, 0);
        let c = PredictionCheck::new(&server, Some(&ports), 30_000);
        assert_eq!(c.predicted_max_connections, 30_000);
        assert_eq!(c.binding, "ephemeral-ports");
        assert!(
            c.explanation.ends_with("(the client's side)"),
            "{}",
            c.explanation
        );
        assert_eq!(c.ratio, 1.0);
        // Two sources: the server's room (59,850 less the 10 it holds) comes first.
        let ports = headroom_core::ephemeral_ports_per_destination((30000, 59999), 2, 0, 0);
        let c = PredictionCheck::new(&server, Some(&ports), 59_840);
        assert_eq!(
            (c.predicted_max_connections, c.binding.as_str()),
            (59_840, "nofile")
        );
        let c = PredictionCheck::new(&server, None, 0);
        assert_eq!((c.predicted_max_connections, c.ratio), (59_840, 0.0));
    }

    #[test]
    fn no_breaking_point_when_target_reached() {
        let r = FloodReport::merge(
            "127.0.0.1:1".parse().unwrap(),
            Mode::Connect,
            1,
            100,
            &[worker(0, 100, StopReason::Target, 0)],
            &[],
        );
        assert_eq!(r.breaking_point, None);
        assert_eq!(r.measured(), 100);
        assert!(r.render().contains("every requested connection attempted"));
    }

    #[test]
    fn first_refusal_object_survives_merge() {
        let mut a = worker(0, 10, StopReason::Failure, 0);
        let refusal = RpcError {
            code: -32000,
            message: "full".into(),
            limit: Some("nofile".into()),
            max: Some(10),
        };
        a.failures.record(&Failure::refused(refusal.clone()));
        let b = worker(1, 10, StopReason::Failure, 3);
        let r = FloodReport::merge(
            "127.0.0.1:1".parse().unwrap(),
            Mode::Mcp,
            1,
            30,
            &[b, a],
            &[],
        );
        assert_eq!(r.server_refusal, Some(refusal));
        assert_eq!(r.failures[&FailureKind::Refused], 4);
    }

    #[test]
    fn dominant_failure_kind() {
        let mut f = Failures::default();
        f.record(&Failure::new(FailureKind::Timeout, "t"));
        f.record(&Failure::new(FailureKind::Eaddrnotavail, "e"));
        f.record(&Failure::new(FailureKind::Eaddrnotavail, "e2"));
        assert_eq!(f.dominant(), Some(FailureKind::Eaddrnotavail));
        assert_eq!(f.details[&FailureKind::Eaddrnotavail], "e");
        assert_eq!(Failures::default().dominant(), None);
    }

    #[test]
    fn report_json_field_names() {
        let r = FloodReport::merge(
            "127.0.0.1:1".parse().unwrap(),
            Mode::Mcp,
            1,
            10,
            &[worker(0, 5, StopReason::Failure, 5)],
            &[],
        );
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["mode"], "mcp");
        assert_eq!(v["stop"], "failure");
        assert_eq!(v["failures"]["refused"], 5);
        assert_eq!(v["breaking_point"]["cause"], "refused");
        assert_eq!(v["breaking_point"]["connections"], 5);
    }
}

//! The merged report a flood prints: the workers' accounts summed, the
//! breaking point named, and what the flood saw of the server itself (its
//! listener's accept queue, a full descriptor table) folded in.

use crate::outcome::{FailureKind, RpcError};
use crate::report::{histogram, BombStats, Failures, Latency, PingStats, StopReason, WorkerReport};
use crate::spec::Mode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// The comparison a flood prints when it knows the server's pid or port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictionCheck {
    pub predicted_max_connections: u64,
    pub binding: String,
    pub explanation: String,
    /// What the flood measured: the connections the server served at the
    /// breaking point, the most it held at once when it closes idle ones to
    /// make room, or what it still served at the end when nothing broke.
    pub measured: u64,
    /// Which of those `measured` is: `breaking_point.held`, `held_at_once`
    /// or `held`.
    #[serde(default)]
    pub measured_as: String,
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
            measured_as: String::new(),
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
    /// Connections the flood had open when it broke. Protocol and MCP
    /// modes: the served ones. Connect mode: every completed handshake,
    /// including those waiting in the listener's backlog.
    pub connections: u64,
    /// Of them, the ones the server had accepted and served: `connections`
    /// less `queued` in connect mode, `connections` otherwise.
    #[serde(default)]
    pub held: u64,
    /// The listener's accept-queue depth then (connections the kernel
    /// completed that the server did not accept); `null`: not readable from
    /// where the flood runs.
    #[serde(default)]
    pub queued: Option<u64>,
    pub cause: FailureKind,
    pub cause_text: String,
    /// The server's refusal line or the OS error, first seen.
    pub detail: String,
    /// What the flood saw of the server itself then: a process whose
    /// descriptor table was full, the accept queue.
    #[serde(default)]
    pub observed: Option<String>,
}

/// The target listener's accept queue, as sock_diag reports it (summed over
/// the sockets of a SO_REUSEPORT group).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSample {
    /// Connections waiting for accept().
    pub depth: u64,
    /// The backlog in force, min(listen backlog, somaxconn).
    pub limit: u64,
}

/// What the flood saw of the server from where it runs, read by the
/// orchestrator's caller (sock_diag for the queue, /proc for descriptors).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerView {
    /// The accept queue when the open phase ended (with every connection
    /// still held: the state at the breaking point).
    pub queue_at_break: Option<QueueSample>,
    /// Highest depth sampled during the open phase.
    pub queue_peak: Option<u64>,
    /// The accept queue at the end, after the hold and the end check.
    pub queue_end: Option<QueueSample>,
    /// A server process seen with a full descriptor table during the open
    /// phase, as one line (`pid 4242 (nginx) holds 200 of its 200 descriptors`).
    pub server_at_nofile: Option<String>,
    /// Connections the server had accepted and held when the open phase
    /// ended, and at the end (see [`crate::orchestrate::Observer::accepted`]).
    pub accepted_at_break: Option<u64>,
    pub accepted_end: Option<u64>,
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
    /// Connections still served at the end, after the end check: MCP and
    /// protocol modes, those that answered it; connect mode, those still
    /// open that the server accepted (its own sockets, where it runs on
    /// this host; else open less those waiting in its backlog, `queued`).
    pub held: u64,
    /// The listener's accept-queue depth at the end: connections the kernel
    /// completed that the server never accepted. `null`: not readable from
    /// where the flood runs.
    #[serde(default)]
    pub queued: Option<u64>,
    /// The listener's backlog in force (sock_diag), when read.
    #[serde(default)]
    pub accept_queue_limit: Option<u64>,
    /// Protocol modes: connections that got a good reply in the open phase,
    /// whether the server kept them or not.
    #[serde(default)]
    pub served_total: Option<u64>,
    /// Protocol modes: the most connections served and open at the same
    /// moment over all workers (from their time-stamped open and close events).
    #[serde(default)]
    pub held_at_once: Option<u64>,
    /// Protocol modes: served connections the server closed while idle
    /// during the open phase (nginx making room for new ones).
    #[serde(default)]
    pub closed_by_server: Option<u64>,
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
    /// Sessions the server dropped after the open phase (hold, bomb, end check).
    pub dropped_later: u64,
    pub bomb: Option<BombSummary>,
    /// The end check of every held connection: MCP `ping`, the protocol's
    /// request again, or in connect mode a look at whether it is still open.
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
                held,
                queued: None,
                cause,
                cause_text: cause.describe().to_string(),
                detail: failures.details.get(&cause).cloned().unwrap_or_default(),
                observed: None,
            }
        });
        let protocol = mode.is_protocol();
        let served_total: u64 = opened.iter().map(|w| w.served_total).sum();
        let closed_idle: u64 = opened.iter().map(|w| w.closed_idle).sum();
        let at_once = protocol.then(|| held_at_once(opened).unwrap_or(held));
        // A server that closed idle connections while it kept serving new
        // ones did not break: it makes room. Its capacity is what it held at once.
        let breaking_point = match (breaking_point, at_once) {
            (None, Some(peak)) if closed_idle > 0 && served_total > peak => {
                let cause = FailureKind::ClosesIdle;
                Some(BreakingPoint {
                    connections: peak,
                    held: peak,
                    queued: None,
                    cause,
                    cause_text: cause.describe().to_string(),
                    detail: format!(
                        "served {served_total} connections in all, at most {peak} at once; closed {closed_idle} idle ones to make room"
                    ),
                    observed: None,
                })
            }
            (bp, _) => bp,
        };

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
            held: if finals.is_empty() { held } else { final_held },
            queued: None,
            accept_queue_limit: None,
            served_total: protocol.then_some(served_total),
            held_at_once: at_once,
            closed_by_server: protocol.then_some(closed_idle),
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

    /// What the comparison with a prediction measures: what the server
    /// served at the breaking point (at most at once, for one that closes
    /// idle connections to make room), else what it still served at the end.
    pub fn measured(&self) -> u64 {
        self.breaking_point.as_ref().map_or(self.held, |b| b.held)
    }

    /// The field [`FloodReport::measured`] is.
    pub fn measured_as(&self) -> &'static str {
        match &self.breaking_point {
            Some(b) if b.cause == FailureKind::ClosesIdle => "held_at_once",
            Some(_) => "breaking_point.held",
            None => "held",
        }
    }

    /// Sets the model's prediction beside what was measured.
    pub fn check_prediction(
        &mut self,
        server: &headroom_core::Prediction,
        client_ports: Option<&headroom_core::Constraint>,
    ) {
        let mut c = PredictionCheck::new(server, client_ports, self.measured());
        c.measured_as = self.measured_as().to_string();
        self.prediction = Some(c);
    }

    /// Folds in what the flood saw of the server: connections waiting in the
    /// listener's backlog are not held (connect mode subtracts them), a
    /// missing reply while that backlog held connections is the server
    /// having stopped accepting, and a full descriptor table in the server
    /// names EMFILE as the cause.
    pub fn observe(&mut self, view: &ServerView) {
        self.queued = view.queue_end.map(|q| q.depth);
        self.accept_queue_limit = view.queue_end.or(view.queue_at_break).map(|q| q.limit);
        if self.mode == Mode::Connect {
            self.held = connect_held(self.held, self.queued, view.accepted_end);
        }
        let backlog = view.queue_at_break.is_some_and(|q| q.depth > 0);
        if backlog {
            if let Some(n) = self.failures.remove(&FailureKind::NoReply) {
                *self
                    .failures
                    .entry(FailureKind::BacklogFilling)
                    .or_default() += n;
                if let Some(d) = self.failure_details.remove(&FailureKind::NoReply) {
                    self.failure_details.insert(FailureKind::BacklogFilling, d);
                }
            }
        }
        let mode = self.mode;
        let Some(bp) = self.breaking_point.as_mut() else {
            return;
        };
        bp.queued = view.queue_at_break.map(|q| q.depth);
        if mode == Mode::Connect {
            bp.held = connect_held(bp.connections, bp.queued, view.accepted_at_break);
        }
        let mut seen = Vec::new();
        if let Some(line) = &view.server_at_nofile {
            seen.push(line.clone());
        }
        if let Some(q) = view.queue_at_break.filter(|q| q.depth > 0) {
            seen.push(format!(
                "{} connections waiting in the listener's accept queue (limit {})",
                q.depth, q.limit
            ));
        }
        bp.observed = (!seen.is_empty()).then(|| seen.join("; "));
        if bp.cause == FailureKind::NoReply && backlog {
            bp.cause = FailureKind::BacklogFilling;
        }
        // The server's own refusals name their cause; a client that only saw
        // silence, a close or a reset learns it from the server's fd table.
        let silent = matches!(
            bp.cause,
            FailureKind::NoReply
                | FailureKind::BacklogFilling
                | FailureKind::Timeout
                | FailureKind::Closed
                | FailureKind::Reset
        );
        if let (true, Some(line)) = (silent, &view.server_at_nofile) {
            bp.detail = format!("{line}; the client saw: {}", bp.cause.describe());
            bp.cause = FailureKind::ServerEmfile;
        }
        bp.cause_text = bp.cause.describe().to_string();
    }
}

/// Connect mode's held: of the connections the flood has open, those the
/// server accepted. Counted on the server's side where it can be seen (one
/// reading: a connection waiting in the accept queue, or half-open because
/// the queue was full at its last ACK, has no socket there yet); otherwise
/// open less queued, two readings that a server churning its backlog can
/// set a few apart.
fn connect_held(open: u64, queued: Option<u64>, accepted: Option<u64>) -> u64 {
    match accepted {
        Some(a) => open.min(a),
        None => open.saturating_sub(queued.unwrap_or(0)),
    }
}

fn rate(n: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        n as f64 / seconds
    } else {
        0.0
    }
}

/// The most connections served and open at one moment, over every worker's
/// timeline; `None` when no worker sent one.
pub fn held_at_once(workers: &[WorkerReport]) -> Option<u64> {
    if workers.iter().all(|w| w.timeline.is_empty()) {
        return None;
    }
    let mut events: Vec<(u64, i64)> = workers
        .iter()
        .flat_map(|w| w.timeline.iter().copied())
        .collect();
    // At the same microsecond a close counts before an open: never more
    // than were really held.
    events.sort_unstable();
    let (mut now, mut peak) = (0i64, 0i64);
    for (_, d) in events {
        now += d;
        peak = peak.max(now);
    }
    Some(peak as u64)
}
#[cfg(test)]
#[path = "summary_tests.rs"]
mod tests;

//! The human-readable form of a [`FloodReport`].

use crate::report::StopReason;
use crate::spec::Mode;
use crate::summary::FloodReport;

impl FloodReport {
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
            "opened   {} of {} attempted ({} requested) in {:.2} s: {:.0}/s",
            self.opened,
            self.attempted,
            self.requested,
            self.open_seconds,
            self.open_rate_per_second,
        );
        let queued = match (self.queued, self.accept_queue_limit) {
            (Some(q), Some(l)) => format!("; {q} waiting in the listener's backlog (limit {l})"),
            (Some(q), None) => format!("; {q} waiting in the listener's backlog"),
            _ => String::new(),
        };
        let _ = writeln!(o, "held     {} still served at the end{queued}", self.held);
        if let (Some(total), Some(once)) = (self.served_total, self.held_at_once) {
            let _ = writeln!(
                o,
                "served   {total} in all, at most {once} at once; {} closed by the server while idle",
                self.closed_by_server.unwrap_or(0)
            );
        }
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
            let queued = match b.queued {
                Some(q) if q > 0 && self.mode == Mode::Connect => {
                    format!(" ({} open, {q} of them in the backlog)", b.connections)
                }
                Some(q) if q > 0 => format!(" ({q} more waiting in the backlog)"),
                _ => String::new(),
            };
            let _ = writeln!(
                o,
                "BREAKING POINT {} connections held{queued}: {}",
                b.held, b.cause_text
            );
            if !b.detail.is_empty() {
                let _ = writeln!(o, "         {}", b.detail);
            }
            if let Some(seen) = &b.observed {
                let _ = writeln!(o, "         server: {seen}");
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
            let (label, what) = match self.mode {
                Mode::Mcp | Mode::Bomb => ("ping    ", "sessions answered"),
                Mode::Connect => ("check   ", "connections still open"),
                _ => ("check   ", "connections answered again"),
            };
            let _ = writeln!(
                o,
                "{label} {} of {} {what} ({} failed); p99 {:.2} ms",
                p.replies, p.sessions, p.failed, p.latency.p99_ms
            );
        }
        if let Some(p) = &self.prediction {
            let _ = writeln!(
                o,
                "model    predicted {} ({}), measured {} ({}): ratio {:.3}\n         {}",
                p.predicted_max_connections,
                p.binding,
                p.measured,
                p.measured_as,
                p.ratio,
                p.explanation
            );
        }
        o
    }
}

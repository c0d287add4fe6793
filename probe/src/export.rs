//! Prometheus exposition of a probe reading: what the probe sees (fds,
//! accept queues, sockets by state, fd errors), what the capacity model
//! predicts from it, and the probe's own health (source, eBPF on or off,
//! events dropped). Names come from `headroom_core::metrics`.

use headroom_core::{metrics as m, Prediction, Snapshot, TcpState};
use prometheus::{
    Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::ebpf::EbpfExtras;

/// One reading of the probe: the snapshot, its prediction, and the eBPF
/// counters the snapshot has no field for (`None` when eBPF is off).
#[derive(Debug, Clone)]
pub struct Reading {
    pub snapshot: Snapshot,
    pub prediction: Prediction,
    pub ebpf: Option<EbpfExtras>,
    /// Why eBPF is off, when it is.
    pub ebpf_off_reason: Option<String>,
    /// Whether the target (pid or port) was found.
    pub target_up: bool,
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntGaugeVec> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

fn counter(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge0(r: &Registry, name: &str, help: &str) -> prometheus::Result<IntGauge> {
    let g = IntGauge::with_opts(Opts::new(name, help))?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

fn counter0(r: &Registry, name: &str, help: &str) -> prometheus::Result<IntCounter> {
    let c = IntCounter::with_opts(Opts::new(name, help))?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The capacity model's gauges, in the one layout every headroom target
/// exports (`headroom probe --listen`, `headroom serve --metrics`, and a
/// `serve --workers` supervisor for its whole service), so the rules, the
/// dashboard, `headroom fleet` and `headroom top --remote` read them alike:
/// the connections held, the predicted maximum labelled with its binding
/// constraint, and per constraint its limit, usage, headroom in connections
/// and a binding flag.
pub struct CapacityGauges {
    connections: IntGauge,
    predicted: IntGaugeVec,
    limit: IntGaugeVec,
    used: IntGaugeVec,
    headroom: IntGaugeVec,
    binding: IntGaugeVec,
}

impl CapacityGauges {
    /// The metric families this layout owns.
    pub const NAMES: [&'static str; 6] = [
        m::CONNECTIONS,
        m::PREDICTED_MAX_CONNECTIONS,
        m::CONSTRAINT_LIMIT,
        m::CONSTRAINT_USED,
        m::CONSTRAINT_HEADROOM,
        m::CONSTRAINT_BINDING,
    ];

    /// Creates the gauges and registers them in `r`.
    pub fn register(r: &Registry) -> prometheus::Result<CapacityGauges> {
        let c = &["constraint"];
        Ok(CapacityGauges {
            connections: gauge0(r, m::CONNECTIONS, "TCP connections the target holds.")?,
            predicted: gauge(
                r,
                m::PREDICTED_MAX_CONNECTIONS,
                "Predicted maximum concurrent connections (minimum over constraints).",
                c,
            )?,
            limit: gauge(
                r,
                m::CONSTRAINT_LIMIT,
                "Limit of each constraint, in its unit.",
                c,
            )?,
            used: gauge(
                r,
                m::CONSTRAINT_USED,
                "Usage of each constraint, in its unit.",
                c,
            )?,
            headroom: gauge(
                r,
                m::CONSTRAINT_HEADROOM,
                "Connections each constraint still allows.",
                c,
            )?,
            binding: gauge(
                r,
                m::CONSTRAINT_BINDING,
                "1 for the constraint that binds first.",
                c,
            )?,
        })
    }

    /// Replaces the exported values with `p`. Series of a constraint the
    /// prediction no longer has (conntrack unloaded, a cgroup limit lifted)
    /// and of a previous binding constraint disappear instead of lingering.
    pub fn set(&self, p: &Prediction) {
        for g in [
            &self.predicted,
            &self.limit,
            &self.used,
            &self.headroom,
            &self.binding,
        ] {
            g.reset();
        }
        self.connections.set(clamp(p.connections));
        self.predicted
            .with_label_values(&[&p.binding])
            .set(clamp(p.predicted_max_connections));
        for c in &p.constraints {
            let n = [c.name.as_str()];
            self.limit.with_label_values(&n).set(clamp(c.limit));
            self.used.with_label_values(&n).set(clamp(c.used));
            self.headroom
                .with_label_values(&n)
                .set(clamp(c.headroom_connections));
            self.binding
                .with_label_values(&n)
                .set(i64::from(c.name == p.binding));
        }
    }
}

/// The text exposition of `p` alone, in the [`CapacityGauges`] layout.
pub fn render_prediction(p: &Prediction) -> String {
    let r = Registry::new();
    match CapacityGauges::register(&r) {
        Ok(g) => g.set(p),
        Err(_) => return String::new(),
    }
    encode(&r)
}

fn encode(r: &Registry) -> String {
    let mut buf = Vec::new();
    if TextEncoder::new().encode(&r.gather(), &mut buf).is_err() {
        return String::new();
    }
    String::from_utf8(buf).unwrap_or_default()
}

/// Builds a registry holding `reading` (counters carry the kernel's totals).
pub fn registry(reading: &Reading) -> prometheus::Result<Registry> {
    let r = Registry::new();
    let s = &reading.snapshot;
    let p = &reading.prediction;

    // Probe health.
    gauge(
        &r,
        m::PROBE_SOURCE,
        "Where the numbers come from (1 for the active source).",
        &["source"],
    )?
    .with_label_values(&[s.source.as_str()])
    .set(1);
    let reason = reading.ebpf_off_reason.clone().unwrap_or_default();
    gauge(
        &r,
        m::PROBE_EBPF_ENABLED,
        "1 when the eBPF programs are attached; 0 with the reason they are not.",
        &["reason"],
    )?
    .with_label_values(&[&reason])
    .set(i64::from(reading.ebpf.is_some()));
    gauge0(
        &r,
        m::PROBE_TARGET_UP,
        "1 when the target process or port was found.",
    )?
    .set(i64::from(reading.target_up));
    if let Some(x) = &reading.ebpf {
        let c = counter(
            &r,
            m::PROBE_EVENTS_DROPPED_TOTAL,
            "Kernel events not counted because a bounded eBPF map was full.",
            &["map"],
        )?;
        for (map, n) in &x.dropped {
            c.with_label_values(&[map]).inc_by(*n);
        }
        let c = counter(
            &r,
            m::TCP_TRANSITIONS_TOTAL,
            "TCP transitions into each state on the target's ports since the probe attached (time_wait only with --time-wait-events).",
            &["state"],
        )?;
        for (st, n) in &x.transitions {
            c.with_label_values(&[st.label()]).inc_by(*n);
        }
    }

    // What the probe sees.
    gauge0(&r, m::OPEN_FDS, "File descriptors open in the target.")?.set(clamp(s.open_fds()));
    let limit: u64 = s.processes.iter().filter_map(|p| p.nofile_soft).sum();
    gauge0(
        &r,
        m::OPEN_FDS_LIMIT,
        "RLIMIT_NOFILE soft limit of the target (summed over its processes).",
    )?
    .set(clamp(limit));
    gauge0(
        &r,
        m::OPEN_FDS_PEAK,
        "Highest open fd count since the previous sample (eBPF), else the current count.",
    )?
    .set(clamp(
        s.processes
            .iter()
            .map(|p| p.open_fds_peak.max(p.open_fds))
            .sum(),
    ));
    let depth = gauge(
        &r,
        m::ACCEPT_QUEUE_DEPTH,
        "Connections waiting for accept().",
        &["listener"],
    )?;
    let peak = gauge(
        &r,
        m::ACCEPT_QUEUE_PEAK,
        "Highest accept queue depth since the previous sample.",
        &["listener"],
    )?;
    let qlimit = gauge(
        &r,
        m::ACCEPT_QUEUE_LIMIT,
        "Accept queue limit: min(listen backlog, somaxconn).",
        &["listener"],
    )?;
    let full = counter(
        &r,
        m::ACCEPT_QUEUE_FULL_TOTAL,
        "Times a queued connection left the accept queue full (eBPF).",
        &["listener"],
    )?;
    for l in &s.listeners {
        let a = l.address.as_str();
        depth
            .with_label_values(&[a])
            .set(clamp(l.accept_queue_depth));
        peak.with_label_values(&[a])
            .set(clamp(l.accept_queue_peak.max(l.accept_queue_depth)));
        qlimit
            .with_label_values(&[a])
            .set(clamp(l.accept_queue_limit));
        if let Some(n) = l.queue_full_events {
            full.with_label_values(&[a]).inc_by(n);
        }
    }
    counter0(
        &r,
        m::LISTEN_OVERFLOWS_TOTAL,
        "TcpExt ListenOverflows: SYNs or ACKs dropped because an accept queue was full.",
    )?
    .inc_by(s.netstat.listen_overflows);
    counter0(&r, m::LISTEN_DROPS_TOTAL, "TcpExt ListenDrops.")?.inc_by(s.netstat.listen_drops);
    let socks = gauge(
        &r,
        m::TCP_SOCKETS,
        "TCP sockets of the target by state (time_wait: on its ports).",
        &["state"],
    )?;
    for st in TcpState::ALL {
        socks
            .with_label_values(&[st.label()])
            .set(clamp(s.sockets.get(&st).copied().unwrap_or(0)));
    }
    let errs = counter(
        &r,
        m::FD_ERRORS_TOTAL,
        "Syscalls of the target that failed with EMFILE, ENFILE or EADDRNOTAVAIL.",
        &["errno", "syscall"],
    )?;
    for e in &s.fd_errors {
        errs.with_label_values(&[&e.errno, &e.syscall])
            .inc_by(e.count);
    }
    gauge0(
        &r,
        m::EPHEMERAL_PORTS,
        "Size of net.ipv4.ip_local_port_range.",
    )?
    .set(clamp(s.port_range_size()));

    // What the model predicts.
    CapacityGauges::register(&r)?.set(p);
    Ok(r)
}

/// The text exposition format of `reading`.
pub fn render(reading: &Reading) -> String {
    registry(reading).map(|r| encode(&r)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use headroom_core::Listener;

    #[test]
    fn exports_listeners_errors_and_health() {
        let mut reading = Reading {
            snapshot: Snapshot::default(),
            prediction: headroom_core::predict(&Snapshot::default(), &Default::default()),
            ebpf: None,
            target_up: true,
            ebpf_off_reason: Some("disabled by --no-ebpf".into()),
        };
        reading.snapshot.listeners.push(Listener {
            address: "127.0.0.1:9000".into(),
            port: 9000,
            accept_queue_depth: 3,
            accept_queue_limit: 8,
            accept_queue_peak: 9,
            queue_full_events: Some(2),
            inode: 1,
        });
        reading.snapshot.fd_errors.push(headroom_core::FdError {
            pid: 7,
            syscall: "accept4".into(),
            errno: "EMFILE".into(),
            count: 11,
        });
        let text = render(&reading);
        for line in [
            "headroom_accept_queue_depth{listener=\"127.0.0.1:9000\"} 3",
            "headroom_accept_queue_peak{listener=\"127.0.0.1:9000\"} 9",
            "headroom_accept_queue_limit{listener=\"127.0.0.1:9000\"} 8",
            "headroom_accept_queue_full_total{listener=\"127.0.0.1:9000\"} 2",
            "headroom_fd_errors_total{errno=\"EMFILE\",syscall=\"accept4\"} 11",
            "headroom_probe_ebpf_enabled{reason=\"disabled by --no-ebpf\"} 0",
            "headroom_probe_source{source=\"poll\"} 1",
            "headroom_probe_target_up 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
    }

    fn constraint(name: &str, limit: u64, used: u64, headroom: u64) -> headroom_core::Constraint {
        headroom_core::Constraint {
            name: name.into(),
            scope: headroom_core::Scope::Process,
            unit: "fds".into(),
            limit,
            used,
            reserve: 0,
            headroom,
            per_connection: 1,
            headroom_connections: headroom,
            max_connections: 5 + headroom,
            explanation: String::new(),
            remedy: String::new(),
        }
    }

    #[test]
    fn capacity_layout_replaces_stale_series() {
        let mut p = Prediction {
            connections: 5,
            predicted_max_connections: 189,
            binding: "nofile".into(),
            constraints: vec![
                constraint("nofile", 256, 35, 184),
                constraint("conntrack", 262144, 10, 262134),
            ],
            processes: 1,
            next_wall: None,
        };
        let text = render_prediction(&p);
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            samples,
            [
                "headroom_connections 5",
                "headroom_constraint_binding{constraint=\"conntrack\"} 0",
                "headroom_constraint_binding{constraint=\"nofile\"} 1",
                "headroom_constraint_headroom{constraint=\"conntrack\"} 262134",
                "headroom_constraint_headroom{constraint=\"nofile\"} 184",
                "headroom_constraint_limit{constraint=\"conntrack\"} 262144",
                "headroom_constraint_limit{constraint=\"nofile\"} 256",
                "headroom_constraint_used{constraint=\"conntrack\"} 10",
                "headroom_constraint_used{constraint=\"nofile\"} 35",
                "headroom_predicted_max_connections{constraint=\"nofile\"} 189",
            ]
        );

        // The same gauges, set again: conntrack gone, memory binding now.
        let r = Registry::new();
        let g = CapacityGauges::register(&r).unwrap();
        g.set(&p);
        p.constraints = vec![constraint("memory", 1000, 10, 7)];
        p.binding = "memory".into();
        p.predicted_max_connections = 12;
        g.set(&p);
        let text = encode(&r);
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            samples,
            [
                "headroom_connections 5",
                "headroom_constraint_binding{constraint=\"memory\"} 1",
                "headroom_constraint_headroom{constraint=\"memory\"} 7",
                "headroom_constraint_limit{constraint=\"memory\"} 1000",
                "headroom_constraint_used{constraint=\"memory\"} 10",
                "headroom_predicted_max_connections{constraint=\"memory\"} 12",
            ]
        );
        let families: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        let mut names = CapacityGauges::NAMES.to_vec();
        names.sort_unstable();
        assert_eq!(families, names);
    }
}

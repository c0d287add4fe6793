//! `--source http://HOST:PORT/metrics`: a remote `headroom probe` read over
//! its Prometheus endpoint. The page is parsed by core's
//! [`headroom_core::prom`]; the samples are turned back into the same
//! [`Snapshot`] and [`Prediction`] the local probe gives.

use crate::source::{Sample, Source, SourceError};
use headroom_core::metrics as m;
use headroom_core::prom::{self, Sample as Metric};
use headroom_core::{
    predict, Constraint, FdError, Listener, ModelConfig, Prediction, ProcessInfo, Scope, Snapshot,
    Source as DataSource, TcpState,
};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn unit_of(constraint: &str) -> &'static str {
    match constraint {
        "nofile" => "fds",
        "file-max" => "files",
        "memory" | "cgroup-memory" => "bytes",
        "conntrack" => "entries",
        "tcp-mem" => "bytes",
        "ephemeral-ports" => "ports",
        _ => "",
    }
}

fn scope_of(constraint: &str) -> Scope {
    match constraint {
        "nofile" | "cgroup-memory" => Scope::Process,
        _ => Scope::System,
    }
}

/// Rebuilds a sample from a probe's metrics. The remote's own constraint
/// figures are used as they are (the remote host's limits, not ours); only
/// when it exports none is the model run here on what it does export.
pub fn sample_from_metrics(metrics: &[Metric], origin: &str, taken_at_ms: u64) -> Sample {
    let mut snap = Snapshot {
        source: DataSource::Remote,
        source_note: None,
        taken_at_ms,
        ..Default::default()
    };
    let mut process = ProcessInfo::default();
    let mut have_process = false;
    let mut listeners: BTreeMap<String, Listener> = BTreeMap::new();
    let mut limit = BTreeMap::new();
    let mut used = BTreeMap::new();
    let mut headroom = BTreeMap::new();
    let mut max_conn = BTreeMap::new();
    let mut binding = None;
    let mut overall_max = None;
    let mut connections = None;
    let mut remote_source = None;
    // `headroom serve --metrics` exports its own connection count.
    let mut server_active: Option<u64> = None;

    for x in metrics {
        let v = x.value.max(0.0) as u64;
        let listener = || x.label("listener").unwrap_or("?").to_string();
        let constraint = x.label("constraint").map(str::to_string);
        match x.name.as_str() {
            n if n == m::OPEN_FDS => {
                process.open_fds += v;
                have_process = true;
            }
            n if n == m::OPEN_FDS_PEAK => process.open_fds_peak += v,
            n if n == m::OPEN_FDS_LIMIT => {
                process.nofile_soft = Some(process.nofile_soft.unwrap_or(0) + v)
            }
            n if n == m::CONNECTIONS => connections = Some(v),
            n if n == m::SERVER_CONNECTIONS_ACTIVE => {
                server_active = Some(server_active.unwrap_or(0) + v)
            }
            n if n == m::ACCEPT_QUEUE_DEPTH => {
                listeners.entry(listener()).or_default().accept_queue_depth = v
            }
            n if n == m::ACCEPT_QUEUE_PEAK => {
                listeners.entry(listener()).or_default().accept_queue_peak = v
            }
            n if n == m::ACCEPT_QUEUE_LIMIT => {
                listeners.entry(listener()).or_default().accept_queue_limit = v
            }
            n if n == m::ACCEPT_QUEUE_FULL_TOTAL => {
                listeners.entry(listener()).or_default().queue_full_events = Some(v)
            }
            n if n == m::LISTEN_OVERFLOWS_TOTAL => snap.netstat.listen_overflows = v,
            n if n == m::LISTEN_DROPS_TOTAL => snap.netstat.listen_drops = v,
            n if n == m::TCP_SOCKETS => {
                let state = x.label("state").unwrap_or("");
                if let Some(st) = TcpState::ALL.iter().find(|s| s.label() == state) {
                    if *st == TcpState::TimeWait {
                        snap.time_wait = v;
                    }
                    *snap.sockets.entry(*st).or_default() += v;
                }
            }
            n if n == m::FD_ERRORS_TOTAL => snap.fd_errors.push(FdError {
                pid: x.label("pid").and_then(|p| p.parse().ok()).unwrap_or(0),
                syscall: x.label("syscall").unwrap_or("?").to_string(),
                errno: x.label("errno").unwrap_or("?").to_string(),
                count: v,
            }),
            n if n == m::PROBE_SOURCE && x.value > 0.0 => {
                remote_source = x.label("source").map(str::to_string)
            }
            n if n == m::CONSTRAINT_LIMIT => {
                limit.insert(constraint.unwrap_or_default(), v);
            }
            n if n == m::CONSTRAINT_USED => {
                used.insert(constraint.unwrap_or_default(), v);
            }
            n if n == m::CONSTRAINT_HEADROOM => {
                headroom.insert(constraint.unwrap_or_default(), v);
            }
            n if n == m::CONSTRAINT_BINDING && x.value > 0.0 => binding = constraint,
            n if n == m::PREDICTED_MAX_CONNECTIONS => match constraint {
                Some(c) => {
                    max_conn.insert(c, v);
                }
                None => overall_max = Some(v),
            },
            _ => {}
        }
    }
    for (address, mut l) in listeners {
        l.port = address
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        l.address = address;
        snap.listeners.push(l);
    }
    snap.source_note = Some(match remote_source {
        Some(s) => format!("its source: {s}"),
        None => "remote".to_string(),
    });
    let conns = connections.or(server_active).unwrap_or_else(|| {
        snap.sockets
            .get(&TcpState::Established)
            .copied()
            .unwrap_or(0)
    });
    process.connections = conns;
    if process.open_fds_peak == 0 {
        process.open_fds_peak = process.open_fds;
    }
    if have_process || connections.is_some() {
        snap.processes.push(process);
    }

    let prediction = if limit.is_empty() && snap.processes.is_empty() {
        // Only the verdict is exported (a server's own metrics): show that.
        Prediction {
            connections: conns,
            predicted_max_connections: overall_max
                .or(max_conn.values().min().copied())
                .unwrap_or(0),
            binding: max_conn.keys().next().cloned().unwrap_or_default(),
            constraints: Vec::new(),
            processes: 0,
            next_wall: None,
        }
    } else if limit.is_empty() {
        let mut p = predict(&snap, &ModelConfig::default());
        p.connections = conns;
        p
    } else {
        let mut constraints: Vec<Constraint> = limit
            .iter()
            .map(|(name, &lim)| {
                let u = used.get(name).copied().unwrap_or(0);
                let h = headroom.get(name).copied().unwrap_or(lim.saturating_sub(u));
                // The exporter names the maximum of the binding constraint
                // only; for the others, the model's default cost per connection.
                let per_connection = match unit_of(name) {
                    "bytes" => ModelConfig::default().default_memory_per_connection.total(),
                    _ => 1,
                };
                let max = max_conn
                    .get(name)
                    .copied()
                    .unwrap_or(conns + h / per_connection);
                Constraint {
                    name: name.clone(),
                    scope: scope_of(name),
                    unit: unit_of(name).to_string(),
                    limit: lim,
                    used: u,
                    reserve: lim.saturating_sub(u).saturating_sub(h),
                    headroom: h,
                    per_connection,
                    headroom_connections: max.saturating_sub(conns),
                    max_connections: max,
                    explanation: format!("as reported by {origin}"),
                    remedy: "see `headroom status` on that host".to_string(),
                }
            })
            .collect();
        constraints.sort_by(|a, b| {
            a.max_connections
                .cmp(&b.max_connections)
                .then_with(|| a.name.cmp(&b.name))
        });
        let binding = binding
            .or_else(|| constraints.first().map(|c| c.name.clone()))
            .unwrap_or_default();
        // Binding first, as the local model orders them.
        if let Some(i) = constraints.iter().position(|c| c.name == binding) {
            let b = constraints.remove(i);
            constraints.insert(0, b);
        }
        let predicted = overall_max
            .or_else(|| constraints.first().map(|c| c.max_connections))
            .unwrap_or(0);
        Prediction {
            connections: conns,
            predicted_max_connections: predicted,
            binding,
            constraints,
            processes: snap.processes.len() as u64,
            next_wall: None,
        }
    };
    Sample {
        snapshot: snap,
        prediction,
    }
}

/// Reads a remote probe's `/metrics` once per refresh.
pub struct RemoteSource {
    url: String,
    agent: ureq::Agent,
}

impl RemoteSource {
    pub fn new(url: &str, timeout: Duration) -> RemoteSource {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .build();
        RemoteSource {
            url: url.to_string(),
            agent: config.into(),
        }
    }
}

impl Source for RemoteSource {
    fn describe(&self) -> String {
        format!("remote {}", self.url)
    }

    fn sample(&mut self) -> Result<Sample, SourceError> {
        let body = self
            .agent
            .get(&self.url)
            .call()
            .and_then(|mut r| r.body_mut().read_to_string())
            .map_err(|e| SourceError::Other(format!("{}: {e}", self.url)))?;
        let metrics =
            prom::parse(&body).map_err(|e| SourceError::Other(format!("{}: {e}", self.url)))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Ok(sample_from_metrics(&metrics, &self.url, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = r#"
# HELP headroom_open_fds File descriptors open in the target.
# TYPE headroom_open_fds gauge
headroom_open_fds{pid="4242"} 1010
headroom_open_fds_limit{pid="4242"} 20000
headroom_connections 1000
headroom_accept_queue_depth{listener="127.0.0.1:7878"} 3
headroom_accept_queue_peak{listener="127.0.0.1:7878"} 17
headroom_accept_queue_limit{listener="127.0.0.1:7878"} 4096
headroom_accept_queue_full_total{listener="127.0.0.1:7878"} 2
headroom_listen_overflows_total 5
headroom_tcp_sockets{state="established"} 1000
headroom_tcp_sockets{state="time_wait"} 12
headroom_tcp_sockets{state="listen"} 1
headroom_fd_errors_total{errno="EMFILE",syscall="accept4",pid="4242"} 7
headroom_probe_source{source="ebpf"} 1
headroom_probe_source{source="poll"} 0
headroom_constraint_limit{constraint="nofile"} 20000
headroom_constraint_used{constraint="nofile"} 1010
headroom_constraint_headroom{constraint="nofile"} 18958
headroom_constraint_binding{constraint="nofile"} 1
headroom_constraint_limit{constraint="memory"} 25769803776
headroom_constraint_used{constraint="memory"} 1073741824
headroom_constraint_headroom{constraint="memory"} 24696061952
headroom_constraint_binding{constraint="memory"} 0
headroom_predicted_max_connections{constraint="nofile"} 19958 1700000000000
"#;

    #[test]
    fn rebuilds_snapshot_and_prediction_from_a_probe() {
        let ms = prom::parse(EXPOSITION).unwrap();
        let s = sample_from_metrics(&ms, "http://h:9464/metrics", 5);
        let snap = &s.snapshot;
        assert_eq!(snap.source, DataSource::Remote);
        assert_eq!(snap.source_note.as_deref(), Some("its source: ebpf"));
        assert_eq!(snap.open_fds(), 1010);
        assert_eq!(snap.processes[0].nofile_soft, Some(20000));
        assert_eq!(snap.connections(), 1000);
        assert_eq!(snap.time_wait, 12);
        assert_eq!(snap.sockets[&TcpState::Established], 1000);
        assert_eq!(snap.netstat.listen_overflows, 5);
        let l = &snap.listeners[0];
        assert_eq!(
            (l.port, l.accept_queue_depth, l.accept_queue_peak),
            (7878, 3, 17)
        );
        assert_eq!((l.accept_queue_limit, l.queue_full_events), (4096, Some(2)));
        assert_eq!(snap.fd_errors[0].pid, 4242);
        assert_eq!(snap.fd_errors[0].count, 7);

        let p = &s.prediction;
        assert_eq!(p.binding, "nofile");
        assert_eq!(p.predicted_max_connections, 19958);
        assert_eq!(p.constraints.len(), 2);
        let c = p.binding_constraint().unwrap();
        assert_eq!(
            (c.limit, c.used, c.headroom, c.reserve),
            (20000, 1010, 18958, 32)
        );
        assert_eq!(c.headroom_connections, 18958);
        let mem = p.constraint("memory").unwrap();
        assert_eq!(mem.unit, "bytes");
        // Not exported: estimated at the model's default 6144 B per connection.
        assert_eq!(mem.max_connections, 1000 + 24696061952 / 6144);
    }

    #[test]
    fn a_servers_own_metrics_give_connections_and_the_verdict() {
        let ms = prom::parse(
            "headroom_server_connections_active{transport=\"tcp\"} 300\n\
             headroom_server_connections_active{transport=\"http\"} 5\n\
             headroom_predicted_max_connections 19949\n",
        )
        .unwrap();
        let s = sample_from_metrics(&ms, "x", 0);
        assert_eq!(s.prediction.connections, 305);
        assert_eq!(s.prediction.predicted_max_connections, 19949);
        assert!(s.prediction.constraints.is_empty());
    }

    #[test]
    fn without_constraint_metrics_the_model_runs_here() {
        let ms = prom::parse(
            "headroom_open_fds 100\nheadroom_open_fds_limit 1024\nheadroom_connections 90\n",
        )
        .unwrap();
        let s = sample_from_metrics(&ms, "x", 0);
        assert_eq!(s.prediction.binding, "nofile");
        // 1024 - 100 - 32 reserve = 892 more, plus 90 held.
        assert_eq!(s.prediction.predicted_max_connections, 982);
    }
}

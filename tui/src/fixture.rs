//! Fixed, plausible samples (this machine's shape: nofile 20000, 24 GiB) for
//! tests and for trying the dashboard without a server (`headroom top --demo`).

use crate::source::{Sample, Source, SourceError};
use headroom_core::{
    predict, Listener, ModelConfig, ProcessInfo, Snapshot, Source as DataSource, SystemLimits,
    TcpState,
};

/// A server (pid 4242) holding `connections` at `taken_at_ms`.
pub fn snapshot(taken_at_ms: u64, connections: u64) -> Snapshot {
    Snapshot {
        source: DataSource::Poll,
        taken_at_ms,
        netns: "net:[4026531840]".into(),
        processes: vec![ProcessInfo {
            pid: 4242,
            comm: "headroom".into(),
            nofile_soft: Some(20000),
            nofile_hard: Some(20000),
            open_fds: connections + 10,
            open_fds_peak: connections + 10,
            connections,
            rss_bytes: 8 << 20,
            ..Default::default()
        }],
        system: SystemLimits {
            nr_open: 1 << 20,
            file_max: 9_223_372_036_854_775_807,
            file_nr_allocated: 2000 + connections,
            somaxconn: 4096,
            tcp_max_syn_backlog: 4096,
            ip_local_port_range: (32768, 60999),
            mem_total_bytes: 24 << 30,
            mem_available_bytes: 23 << 30,
            page_size: 4096,
            ..Default::default()
        },
        sockets: [(TcpState::Established, connections), (TcpState::Listen, 1)]
            .into_iter()
            .collect(),
        listeners: vec![Listener {
            address: "127.0.0.1:7878".into(),
            port: 7878,
            accept_queue_depth: 0,
            accept_queue_limit: 4096,
            accept_queue_peak: 0,
            queue_full_events: None,
            inode: 1,
        }],
        ..Default::default()
    }
}

/// The snapshot with the model's prediction.
pub fn sample_of(snapshot: Snapshot) -> Sample {
    let prediction = predict(&snapshot, &ModelConfig::default());
    Sample {
        snapshot,
        prediction,
    }
}

pub fn sample(taken_at_ms: u64, connections: u64) -> Sample {
    sample_of(snapshot(taken_at_ms, connections))
}

/// A source that replays a server ramping up by `step` connections per
/// sample, one sample per second, until nofile stops it.
pub struct Demo {
    pub t_ms: u64,
    pub connections: u64,
    pub step: u64,
}

impl Source for Demo {
    fn describe(&self) -> String {
        "demo (fixture data)".to_string()
    }

    fn sample(&mut self) -> Result<Sample, SourceError> {
        let mut snap = snapshot(self.t_ms, self.connections);
        // Not /proc: the title bar shows this source's own description.
        snap.source = DataSource::Remote;
        let s = sample_of(snap);
        self.t_ms += 1000;
        self.connections =
            (self.connections + self.step).min(s.prediction.predicted_max_connections);
        Ok(s)
    }
}

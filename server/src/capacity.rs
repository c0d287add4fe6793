//! The capacity snapshot of this server process, for the `host_capacity`
//! tool, the `headroom://capacity` resource and the connection ceiling.
//!
//! The probe's poll source takes the snapshot; if it fails (a /proc that
//! hides things), a minimal, lenient reading through headroom-host stands in.

use headroom_core::{predict, ModelConfig, Prediction, ProcessInfo, Snapshot, SystemLimits};
use headroom_host::{process, Host};

/// RLIMIT_NOFILE of this process: (soft, hard), `None` for unlimited.
pub fn nofile() -> (Option<u64>, Option<u64>) {
    process::nofile().map_or((None, None), |l| (l.soft_limit(), l.hard_limit()))
}

/// File descriptors open in this process now (the probe's O(1) count).
pub fn open_fds() -> u64 {
    headroom_probe::poll::process::count_fds(std::process::id()).unwrap_or(0)
}

/// Resident set size of a process, bytes (0 when it cannot be read).
pub fn rss_of(pid: u32) -> u64 {
    Host::system().rss_bytes(pid).unwrap_or(0)
}

/// This process and its host as a [`Snapshot`]; `connections` is what the
/// server counts (it knows better than a socket scan).
pub fn snapshot_self(connections: u64) -> Snapshot {
    Sampler::full().snapshot(connections)
}

/// The fallback: getrlimit and a few /proc files.
pub fn minimal_snapshot(connections: u64) -> Snapshot {
    let (soft, hard) = nofile();
    let fds = open_fds();
    Snapshot {
        taken_at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        processes: vec![ProcessInfo {
            pid: std::process::id(),
            comm: "headroom".into(),
            nofile_soft: soft,
            nofile_hard: hard,
            open_fds: fds,
            open_fds_peak: fds,
            connections,
            rss_bytes: rss_of(std::process::id()),
            ..Default::default()
        }],
        system: minimal_system(&Host::system()),
        ..Default::default()
    }
}

/// The system limits the fallback knows, each one a default where it cannot
/// be read: a partial answer beats none when the probe has failed.
fn minimal_system(host: &Host) -> SystemLimits {
    let u64_or = |key: &str, default: u64| host.sysctl_u64(key).unwrap_or(default);
    let ports = host
        .sysctl_pair("net.ipv4.ip_local_port_range")
        .ok()
        .and_then(|(lo, hi)| Some((u16::try_from(lo).ok()?, u16::try_from(hi).ok()?)))
        .unwrap_or((32768, 60999));
    let mem = host.meminfo().unwrap_or_default();
    SystemLimits {
        nr_open: u64_or("fs.nr_open", 1 << 20),
        file_max: u64_or("fs.file-max", 0),
        file_nr_allocated: host.file_nr().map_or(0, |f| f.allocated),
        somaxconn: u64_or("net.core.somaxconn", 0),
        tcp_max_syn_backlog: u64_or("net.ipv4.tcp_max_syn_backlog", 0),
        ip_local_port_range: ports,
        mem_available_bytes: mem.available().unwrap_or(0),
        mem_total_bytes: mem.total().unwrap_or(0),
        page_size: process::page_size(),
        ..Default::default()
    }
}

/// How long to wait before the next background sample, given what the last
/// one cost: a full snapshot walks every fd and socket of the process, which
/// at 20,000 connections is tens of milliseconds, so the period stretches to
/// keep sampling near 1% of a core (at least 2 s, at most 60 s).
pub fn next_sample_in(last_cost: std::time::Duration) -> std::time::Duration {
    (last_cost * 100).clamp(
        std::time::Duration::from_secs(2),
        std::time::Duration::from_secs(60),
    )
}

/// Snapshot and prediction together, as the tool and resource return them
/// (a full pass: an agent asking gets every fd matched).
pub fn capacity(connections: u64) -> (Snapshot, Prediction) {
    Sampler::full().capacity(connections)
}

/// The capacity of a `serve --workers` service: its worker processes as one
/// target (per-process limits summed, system-wide ones counted once), each
/// holding the connections it counts itself (`(pid, connections)`).
pub fn service(workers: &[(u32, u64)]) -> Result<Prediction, headroom_probe::Error> {
    Sampler::full().service(workers)
}

/// How often a [`Sampler`] matches every descriptor to its socket again.
pub const SAMPLER_RESYNC: std::time::Duration = std::time::Duration::from_secs(60);

/// ... or, when a full pass costs more than 60 ms, once per 1,000 times its
/// cost (0.1% of a core per sampler). Measured at a million sessions (51
/// workers, 2,000,000 sockets on the host): a full pass dumps every socket
/// and cost each worker about 1.5 s, so full passes once a minute kept the
/// idle service at 1.4 cores.
pub const SAMPLER_RESYNC_PER_COST: u32 = 1000;

/// Repeated capacity samples (the server's background sampler, the
/// supervisor's scrapes): an incremental poll source, so a sample between
/// full passes costs a `stat` of the fd directory and a kernel-filtered
/// listener dump instead of a readlink per descriptor. At 10,000
/// connections per worker the full pass was about 7% of the server's CPU
/// under a connection flood (perf). Connection counts come from the server,
/// which knows them exactly, so the quick pass's estimate is never used.
pub struct Sampler {
    poll: headroom_probe::poll::PollSource,
}

impl Sampler {
    pub fn new() -> Sampler {
        Sampler {
            // The server counts its connections itself: a full pass need
            // not dump every socket of the host to count them again.
            poll: headroom_probe::poll::PollSource::new()
                .incremental(SAMPLER_RESYNC)
                .resync_per_cost(SAMPLER_RESYNC_PER_COST)
                .listeners_only(),
        }
    }

    /// A sampler that takes a full pass every time.
    fn full() -> Sampler {
        Sampler {
            poll: headroom_probe::poll::PollSource::new(),
        }
    }

    /// [`snapshot_self`] from this sampler's source; when the probe fails,
    /// the minimal reading, with a note saying why.
    pub fn snapshot(&mut self, connections: u64) -> Snapshot {
        let target = headroom_probe::Target::Pid(std::process::id());
        match self.poll.snapshot(&target) {
            Ok(mut snap) => {
                if let Some(p) = snap.processes.first_mut() {
                    p.connections = connections;
                }
                snap
            }
            Err(e) => {
                let mut snap = minimal_snapshot(connections);
                snap.source_note = Some(format!("probe failed ({e}); minimal /proc reading"));
                snap
            }
        }
    }

    /// [`capacity`] from this sampler's source.
    pub fn capacity(&mut self, connections: u64) -> (Snapshot, Prediction) {
        let snap = self.snapshot(connections);
        let p = predict(&snap, &ModelConfig::default());
        (snap, p)
    }

    /// [`service`], from the incremental source.
    pub fn service(&mut self, workers: &[(u32, u64)]) -> Result<Prediction, headroom_probe::Error> {
        let pids = workers.iter().map(|&(pid, _)| pid).collect();
        let mut snap = self.poll.snapshot(&headroom_probe::Target::Pids(pids))?;
        for p in &mut snap.processes {
            if let Some(&(_, n)) = workers.iter().find(|&&(pid, _)| pid == p.pid) {
                p.connections = n;
            }
        }
        Ok(predict(&snap, &ModelConfig::default()))
    }
}

impl Default for Sampler {
    fn default() -> Self {
        Sampler::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn minimal_system_reads_a_fixture_and_defaults_the_rest() {
        // No tempfile dev-dependency here: a per-process directory, removed
        // at the end.
        let root = std::env::temp_dir().join(format!("headroom-capacity-{}", std::process::id()));
        let put = |rel: &str, text: &str| {
            let p = root.join("proc").join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        put("sys/fs/nr_open", "1048576\n");
        put("sys/fs/file-nr", "2016\t0\t9223372036854775807\n");
        put("sys/net/core/somaxconn", "4096\n");
        put("sys/net/ipv4/ip_local_port_range", "1024\t65535\n");
        put("meminfo", "MemTotal: 4 kB\nMemAvailable: 2 kB\n");
        let s = minimal_system(&Host::at(&root));
        assert_eq!(
            (s.nr_open, s.file_max, s.file_nr_allocated),
            (1_048_576, 0, 2016)
        );
        assert_eq!((s.somaxconn, s.tcp_max_syn_backlog), (4096, 0));
        assert_eq!(s.ip_local_port_range, (1024, 65535));
        assert_eq!((s.mem_total_bytes, s.mem_available_bytes), (4096, 2048));
        put("sys/net/ipv4/ip_local_port_range", "1024\t70000\n");
        std::fs::remove_file(root.join("proc/sys/fs/nr_open")).unwrap();
        std::fs::remove_file(root.join("proc/meminfo")).unwrap();
        let s = minimal_system(&Host::at(&root));
        assert_eq!(s.nr_open, 1 << 20);
        assert_eq!(s.ip_local_port_range, (32768, 60999));
        assert_eq!((s.mem_total_bytes, s.mem_available_bytes), (0, 0));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn sampling_period_stretches_with_its_cost() {
        assert_eq!(
            next_sample_in(Duration::from_millis(1)),
            Duration::from_secs(2)
        );
        assert_eq!(
            next_sample_in(Duration::from_millis(50)),
            Duration::from_secs(5)
        );
        assert_eq!(
            next_sample_in(Duration::from_secs(2)),
            Duration::from_secs(60)
        );
    }
}

//! Fixture snapshots and a fixed [`Owners`] for the rules' unit tests.

use crate::{BootValue, NofileOwner, Owners};
use headroom_core::{
    AppCap, AppInfo, CapSource, Listener, ProcessInfo, Scope, Snapshot, SystemLimits,
};
use std::collections::BTreeMap;

/// One process (pid 42, nofile 20000, 10 fds, no connections) on a roomy host.
pub fn host() -> Snapshot {
    Snapshot {
        netns: "net:[4026531840]".into(),
        processes: vec![ProcessInfo {
            pid: 42,
            comm: "server".into(),
            nofile_soft: Some(20000),
            nofile_hard: Some(20000),
            open_fds: 10,
            open_fds_peak: 10,
            ..Default::default()
        }],
        system: SystemLimits {
            nr_open: 1 << 20,
            file_max: 9_223_372_036_854_775_807,
            file_nr_allocated: 2000,
            somaxconn: 4096,
            tcp_max_syn_backlog: 4096,
            ip_local_port_range: (32768, 60999),
            tcp_tw_reuse: 2,
            tcp_fin_timeout: 60,
            mem_total_bytes: 24 << 30,
            mem_available_bytes: 23 << 30,
            page_size: 4096,
            ..Default::default()
        },
        ..Default::default()
    }
}

pub fn listener(port: u16, depth: u64, peak: u64, limit: u64) -> Listener {
    Listener {
        address: format!("127.0.0.1:{port}"),
        port,
        accept_queue_depth: depth,
        accept_queue_limit: limit,
        accept_queue_peak: peak,
        queue_full_events: None,
        inode: 1,
    }
}

pub fn app(kind: &str, caps: Vec<AppCap>) -> AppInfo {
    AppInfo {
        kind: kind.into(),
        comm: kind.into(),
        caps,
        fds_per_connection: 1,
        fd_reserve: Some(32),
        ..Default::default()
    }
}

pub fn cap(name: &str, setting: &str, limit: u64, used: Option<u64>, read_from: &str) -> AppCap {
    AppCap {
        name: name.into(),
        scope: Scope::System,
        setting: setting.into(),
        limit,
        used,
        reserve: 0,
        per_connection: 1,
        source: CapSource::Live,
        read_from: read_from.into(),
        explanation: format!("{setting} {limit}"),
        remedy: format!("raise {setting}"),
    }
}

/// Owners from maps; a pid not in `nofile` belongs to root's session.
#[derive(Default)]
pub struct Owned {
    pub boot: BTreeMap<String, BootValue>,
    pub writers: BTreeMap<String, Vec<String>>,
    pub nofile: BTreeMap<u32, NofileOwner>,
}

impl Owners for Owned {
    fn sysctl_boot(&self, key: &str) -> Option<BootValue> {
        self.boot.get(key).cloned()
    }
    fn other_writers(&self, key: &str) -> Vec<String> {
        self.writers.get(key).cloned().unwrap_or_default()
    }
    fn nofile_owner(&self, pid: u32) -> NofileOwner {
        self.nofile
            .get(&pid)
            .cloned()
            .unwrap_or(NofileOwner::Session {
                user: "root".into(),
            })
    }
}

//! The profile's settings in the model's snapshot: what the capacity
//! model would see with a setting, or the whole profile, applied.

use super::rule::target;
use crate::profile::{NofileRule, Profile};
use crate::readings::Readings;
use headroom_core::{MemoryPerConnection, ModelConfig, Snapshot};

/// The snapshot the checks model: the readings' own, with the profile's
/// memory figure in place of the model's default cost, never in place of
/// a figure measured on the target.
pub(super) fn base_snapshot(profile: &Profile, r: &Readings, cfg: &ModelConfig) -> Snapshot {
    let mut base = r.snapshot.clone();
    let measured = base.memory_per_connection.is_some_and(|m| m.measured);
    if let Some(m) = profile.memory.as_ref().filter(|_| !measured) {
        let kernel = cfg
            .default_memory_per_connection
            .kernel_bytes
            .min(m.bytes_per_connection);
        base.memory_per_connection = Some(MemoryPerConnection {
            process_bytes: m.bytes_per_connection - kernel,
            kernel_bytes: kernel,
            measured: false,
            buffer_bytes: None,
        });
    }
    base
}

/// Puts a sysctl value into the snapshot fields the model reads.
pub(super) fn set_sysctl(snap: &mut Snapshot, key: &str, v: &[u64]) {
    let s = &mut snap.system;
    let first = v.first().copied().unwrap_or(0);
    match key {
        "fs.nr_open" => s.nr_open = first,
        "fs.file-max" => s.file_max = first,
        "net.core.somaxconn" => s.somaxconn = first,
        "net.ipv4.tcp_max_syn_backlog" => s.tcp_max_syn_backlog = first,
        "net.ipv4.ip_local_port_range" => {
            if let [lo, hi] = v {
                s.ip_local_port_range = (*lo as u16, *hi as u16);
            }
        }
        "net.ipv4.tcp_tw_reuse" => s.tcp_tw_reuse = first as u8,
        "net.ipv4.tcp_fin_timeout" => s.tcp_fin_timeout = first,
        "net.netfilter.nf_conntrack_max" => s.conntrack_max = Some(first),
        _ => {}
    }
}

/// Raises the processes' nofile to the rule, as a restart under
/// LimitNOFILE=/limits.d would; the kernel caps any rlimit at fs.nr_open.
pub(super) fn set_nofile(snap: &mut Snapshot, n: &NofileRule) {
    let cap = snap.system.nr_open.max(1);
    for p in &mut snap.processes {
        p.nofile_soft = p.nofile_soft.map(|s| s.max(n.soft).min(cap));
        p.nofile_hard = p.nofile_hard.map(|h| h.max(n.hard).min(cap));
    }
}

/// The snapshot with every setting of the profile applied.
pub fn applied_snapshot(profile: &Profile, r: &Readings) -> Snapshot {
    let mut snap = r.snapshot.clone();
    for (key, rule) in &profile.sysctls {
        if let Some(t) = r.numbers(key).and_then(|c| target(rule, &c)) {
            set_sysctl(&mut snap, key, &t);
        }
    }
    if let Some(n) = &profile.nofile {
        set_nofile(&mut snap, n);
    }
    snap
}

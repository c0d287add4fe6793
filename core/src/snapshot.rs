//! The snapshot: limits and usage of a host and its target process(es) at one
//! instant, with where the numbers came from.

use crate::app::AppInfo;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where a snapshot's numbers came from. Every output says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// eBPF programs on tracepoints, plus /proc for static limits.
    Ebpf,
    /// /proc, sysctl and sock_diag polling.
    #[default]
    Poll,
    /// A remote `headroom probe` read over its Prometheus endpoint.
    Remote,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Ebpf => "ebpf",
            Source::Poll => "poll",
            Source::Remote => "remote",
        }
    }
}

/// TCP states as the kernel numbers them (include/net/tcp_states.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TcpState {
    Established = 1,
    SynSent = 2,
    SynRecv = 3,
    FinWait1 = 4,
    FinWait2 = 5,
    TimeWait = 6,
    Close = 7,
    CloseWait = 8,
    LastAck = 9,
    Listen = 10,
    Closing = 11,
    NewSynRecv = 12,
}

impl TcpState {
    pub const ALL: [TcpState; 12] = [
        TcpState::Established,
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::FinWait1,
        TcpState::FinWait2,
        TcpState::TimeWait,
        TcpState::Close,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::Listen,
        TcpState::Closing,
        TcpState::NewSynRecv,
    ];

    /// From the kernel's numeric state; `None` for values the kernel does not define.
    pub fn from_kernel(n: u8) -> Option<TcpState> {
        TcpState::ALL.get((n as usize).checked_sub(1)?).copied()
    }

    /// The label used in metrics and tables (`established`, `time_wait`, ...).
    pub fn label(self) -> &'static str {
        match self {
            TcpState::Established => "established",
            TcpState::SynSent => "syn_sent",
            TcpState::SynRecv => "syn_recv",
            TcpState::FinWait1 => "fin_wait1",
            TcpState::FinWait2 => "fin_wait2",
            TcpState::TimeWait => "time_wait",
            TcpState::Close => "close",
            TcpState::CloseWait => "close_wait",
            TcpState::LastAck => "last_ack",
            TcpState::Listen => "listen",
            TcpState::Closing => "closing",
            TcpState::NewSynRecv => "new_syn_recv",
        }
    }
}

/// One process of the target (a single server, or one worker of a service).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub pid: u32,
    pub comm: String,
    /// RLIMIT_NOFILE soft limit (`None`: unlimited).
    pub nofile_soft: Option<u64>,
    /// RLIMIT_NOFILE hard limit (`None`: unlimited).
    pub nofile_hard: Option<u64>,
    /// File descriptors open now.
    pub open_fds: u64,
    /// Highest open fd count seen since the last read (eBPF), else `open_fds`.
    pub open_fds_peak: u64,
    /// TCP connections this process holds, not counting listeners.
    pub connections: u64,
    /// Resident set size.
    pub rss_bytes: u64,
    /// memory.max of the process's cgroup (v2) when one is set.
    pub cgroup_memory_limit_bytes: Option<u64>,
    /// memory.current of that cgroup.
    pub cgroup_memory_used_bytes: Option<u64>,
    /// CAP_SYS_ADMIN is in the effective set: the kernel lets such a
    /// process open files past fs.file-max.
    #[serde(default)]
    pub cap_sys_admin: bool,
}

/// Host-wide (or network-namespace-wide, for net.*) limits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SystemLimits {
    /// fs.nr_open: the ceiling for any RLIMIT_NOFILE.
    pub nr_open: u64,
    /// fs.file-max.
    pub file_max: u64,
    /// First field of fs.file-nr: file handles allocated system-wide.
    pub file_nr_allocated: u64,
    /// net.core.somaxconn.
    pub somaxconn: u64,
    /// net.ipv4.tcp_max_syn_backlog.
    pub tcp_max_syn_backlog: u64,
    /// net.ipv4.ip_local_port_range, inclusive.
    pub ip_local_port_range: (u16, u16),
    /// net.ipv4.tcp_tw_reuse (0, 1 or 2).
    pub tcp_tw_reuse: u8,
    /// net.ipv4.tcp_fin_timeout in seconds.
    pub tcp_fin_timeout: u64,
    /// MemAvailable from /proc/meminfo.
    pub mem_available_bytes: u64,
    /// MemTotal from /proc/meminfo.
    pub mem_total_bytes: u64,
    /// net.netfilter.nf_conntrack_max, when the module is loaded.
    pub conntrack_max: Option<u64>,
    /// net.netfilter.nf_conntrack_count, when the module is loaded.
    pub conntrack_count: Option<u64>,
    /// net.ipv4.tcp_mem in pages (min, pressure, max).
    pub tcp_mem_pages: Option<(u64, u64, u64)>,
    /// TCP memory in use, pages (/proc/net/sockstat `TCP: ... mem N`).
    pub tcp_mem_used_pages: Option<u64>,
    /// Page size in bytes (for the page-denominated numbers above).
    pub page_size: u64,
}

/// A listening socket and its accept queue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    /// Local address as text, e.g. `127.0.0.1:7878` or `[::]:8808`.
    pub address: String,
    pub port: u16,
    /// Connections completed by the kernel and waiting for accept() (rqueue).
    pub accept_queue_depth: u64,
    /// The accept queue's limit: min(listen backlog, somaxconn) (wqueue).
    pub accept_queue_limit: u64,
    /// Highest depth seen since the last read (eBPF), else the depth.
    pub accept_queue_peak: u64,
    /// Times the queue was found full (eBPF), when known.
    pub queue_full_events: Option<u64>,
    /// Socket inode, to tie the listener to its process.
    pub inode: u64,
}

/// TcpExt counters from /proc/net/netstat (namespace-wide).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetStat {
    pub listen_overflows: u64,
    pub listen_drops: u64,
}

/// Failed syscalls that mean a limit was hit (EMFILE, ENFILE, EADDRNOTAVAIL).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdError {
    pub pid: u32,
    pub syscall: String,
    /// Symbolic errno: `EMFILE`, `ENFILE` or `EADDRNOTAVAIL`.
    pub errno: String,
    pub count: u64,
}

/// Memory cost of one connection, and how that figure was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MemoryPerConnection {
    /// Process memory (RSS) per connection.
    pub process_bytes: u64,
    /// Kernel memory (socket buffers, slab) per connection.
    pub kernel_bytes: u64,
    /// `measured` from this process, or `configured` by the operator/default.
    pub measured: bool,
    /// The part of `kernel_bytes` that is socket buffer memory (what
    /// net.ipv4.tcp_mem counts: /proc/net/sockstat `mem` over TCP sockets),
    /// when measured; the rest is slab. `None`: not measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffer_bytes: Option<u64>,
}

impl MemoryPerConnection {
    pub fn total(&self) -> u64 {
        self.process_bytes + self.kernel_bytes
    }
}

/// Limits and usage at one instant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub source: Source,
    /// Why the source is what it is, e.g. "eBPF off: CAP_BPF missing".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_note: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub taken_at_ms: u64,
    /// The network namespace the net.* values were read in, e.g. `net:[4026531840]`.
    pub netns: String,
    /// The target's processes: one for a plain server, several for a service.
    pub processes: Vec<ProcessInfo>,
    pub system: SystemLimits,
    /// The target's TCP sockets by state (listeners included as LISTEN).
    pub sockets: BTreeMap<TcpState, u64>,
    pub listeners: Vec<Listener>,
    pub netstat: NetStat,
    /// TIME_WAIT sockets in the namespace (they belong to no process).
    pub time_wait: u64,
    pub fd_errors: Vec<FdError>,
    /// Known cost per connection; `None` lets the model use its default.
    pub memory_per_connection: Option<MemoryPerConnection>,
    /// The application behind the target and its own caps, when it was
    /// looked at (`headroom-apps`); `None`: not looked at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<AppInfo>,
}

impl Snapshot {
    /// Connections held by the target, over all its processes.
    pub fn connections(&self) -> u64 {
        self.processes.iter().map(|p| p.connections).sum()
    }

    /// File descriptors open in the target, over all its processes.
    pub fn open_fds(&self) -> u64 {
        self.processes.iter().map(|p| p.open_fds).sum()
    }

    /// Size of the ephemeral port range.
    pub fn port_range_size(&self) -> u64 {
        let (lo, hi) = self.system.ip_local_port_range;
        (hi as u64 + 1).saturating_sub(lo as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_state_round_trips_kernel_numbers() {
        for s in TcpState::ALL {
            assert_eq!(TcpState::from_kernel(s as u8), Some(s));
        }
        assert_eq!(TcpState::from_kernel(0), None);
        assert_eq!(TcpState::from_kernel(13), None);
        assert_eq!(TcpState::TimeWait.label(), "time_wait");
    }

    #[test]
    fn port_range_size_is_inclusive() {
        let mut s = Snapshot::default();
        s.system.ip_local_port_range = (32768, 60999);
        assert_eq!(s.port_range_size(), 28232);
    }
}

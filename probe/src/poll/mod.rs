//! The polling source: a [`Snapshot`] from /proc, /proc/sys, cgroup v2 and
//! sock_diag, taken in one pass.
//!
//! Sockets are tied to processes by inode: sock_diag reports each socket's
//! inode, /proc/PID/fd links name the inodes a process holds. net.* values
//! and sock_diag belong to a network namespace, so when the target lives in
//! another one they are read from a thread that has entered it (setns).

pub mod diag;
pub mod kmem;
pub mod netstat;
pub mod process;
pub mod sysctl;

use crate::{Error, Target};
use diag::DiagSocket;
use headroom_core::{
    Listener, MemoryPerConnection, ModelConfig, ProcessInfo, Snapshot, Source, SystemLimits,
    TcpState,
};
use kmem::KernelMemory;
use process::ProcScan;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const LISTEN: u8 = TcpState::Listen as u8;
const CLOSE: u8 = TcpState::Close as u8;
const TIME_WAIT: u8 = TcpState::TimeWait as u8;

/// Polls /proc and sock_diag. Keeps the last kernel-memory measurement so a
/// caller can show how `memory_per_connection` was obtained.
///
/// By default every snapshot is a full pass: every fd link of the target
/// read, every TCP socket of the namespace dumped and matched by inode. At
/// 20,000 connections that is a few hundred milliseconds of CPU, fine for
/// `status` and far too much for a dashboard refreshing every second. A
/// source made [`incremental`](PollSource::incremental) keeps what the last
/// full pass matched and, until the resync period has passed, refreshes
/// with O(1) reads per process (see [`PollSource::snapshot`]).
#[derive(Debug, Clone)]
pub struct PollSource {
    process_bytes_per_connection: u64,
    kernel_memory: Option<KernelMemory>,
    resync: Option<Duration>,
    /// With `resync`: full passes at most once per this many times their
    /// own cost (0: at the fixed period).
    resync_per_cost: u32,
    /// Full passes dump listeners only (the caller counts its connections).
    listeners_only: bool,
    last_full: Option<FullPass>,
    passes: Passes,
}

/// How many snapshots of each kind a source has taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Passes {
    pub full: u64,
    pub quick: u64,
}

/// What a full pass matched, kept for the quick passes after it.
#[derive(Debug, Clone)]
struct FullPass {
    at: Instant,
    /// What the full pass cost (wall time).
    cost: Duration,
    target: Target,
    port: Option<u16>,
    netns: String,
    /// (pid, open fds, connections) of each process, in snapshot order.
    procs: Vec<(u32, u64, u64)>,
    /// Inodes of the target's listeners, sorted.
    listener_inodes: Vec<u64>,
    sockets: BTreeMap<TcpState, u64>,
}

impl Default for PollSource {
    fn default() -> Self {
        PollSource::new()
    }
}

impl PollSource {
    pub fn new() -> PollSource {
        PollSource {
            process_bytes_per_connection: ModelConfig::default()
                .default_memory_per_connection
                .process_bytes,
            kernel_memory: None,
            resync: None,
            resync_per_cost: 0,
            listeners_only: false,
            last_full: None,
            passes: Passes::default(),
        }
    }

    /// Matches sockets to processes (a full pass) at most once per `resync`,
    /// refreshing cheaply in between; see [`PollSource::snapshot`].
    pub fn incremental(mut self, resync: Duration) -> PollSource {
        self.resync = Some(resync);
        self
    }

    /// Stretches the resync period to `factor` times what the last full
    /// pass cost, when that is longer: a full pass reads every descriptor of
    /// the target and dumps every TCP socket of the namespace, seconds of CPU
    /// at a million sockets, and every worker of a big service samples.
    pub fn resync_per_cost(mut self, factor: u32) -> PollSource {
        self.resync_per_cost = factor;
        self
    }

    /// For a caller that counts its own connections (the server's sampler):
    /// full passes of a pid target dump only the namespace's listeners, not
    /// every TCP socket, so connections and socket states other than LISTEN
    /// are left for the caller. At a million sessions the full dump is two
    /// million sockets for each worker that samples.
    pub fn listeners_only(mut self) -> PollSource {
        self.listeners_only = true;
        self
    }

    /// Snapshots taken so far, full and quick.
    pub fn passes(&self) -> Passes {
        self.passes
    }

    /// The process-side (RSS) cost of one connection to put beside the
    /// measured kernel side; polling cannot measure it from one instant.
    pub fn with_process_bytes_per_connection(mut self, bytes: u64) -> PollSource {
        self.process_bytes_per_connection = bytes;
        self
    }

    /// The kernel memory measurement of the last snapshot, when /proc/slabinfo
    /// was readable.
    pub fn kernel_memory(&self) -> Option<&KernelMemory> {
        self.kernel_memory.as_ref()
    }

    /// One snapshot of `target`.
    ///
    /// An incremental source takes a full pass first, then after every
    /// resync period, and whenever a quick pass sees something it cannot
    /// account for (a process gone, the port's listeners changed, the
    /// target moved namespace). A quick pass reads, per process, its limits,
    /// RSS, cgroup and fd count (`stat` of /proc/PID/fd), the listeners
    /// alone from sock_diag (filtered by the kernel to TCPF_LISTEN and, for
    /// a port, to that port) and the namespace counters. What it does not
    /// re-match it carries forward from the full pass:
    /// - connections of a process: its fd count now minus the fds that were
    ///   not connections at the full pass (exact while connections come and
    ///   go and the rest of its fd table stays put, the common case);
    /// - sockets by state: the full pass's, ESTABLISHED moved by the change
    ///   in connections, LISTEN recounted;
    /// - `time_wait`: the namespace's count from /proc/net/sockstat;
    /// - the kernel memory measurement (slabinfo is re-read at full passes).
    pub fn snapshot(&mut self, target: &Target) -> Result<Snapshot, Error> {
        if let (Some(every), Some(full)) = (self.resync, self.last_full.take()) {
            let every = resync_after(every, full.cost, self.resync_per_cost);
            if full.target == *target && full.at.elapsed() < every {
                // Anything unexpected (even an error) falls back to a full
                // pass, which then reports it properly.
                if let Ok(Some(snap)) = self.quick(&full) {
                    self.last_full = Some(full);
                    self.passes.quick += 1;
                    return Ok(snap);
                }
            }
        }
        let started = Instant::now();
        let snap = self.full(target)?;
        let cost = started.elapsed();
        self.passes.full += 1;
        if self.resync.is_some() {
            let port = match target {
                Target::Port(p) => Some(*p),
                _ => None,
            };
            self.last_full = Some(FullPass {
                at: Instant::now(),
                cost,
                target: target.clone(),
                port,
                netns: snap.netns.clone(),
                procs: snap
                    .processes
                    .iter()
                    .map(|p| (p.pid, p.open_fds, p.connections))
                    .collect(),
                listener_inodes: sorted(snap.listeners.iter().map(|l| l.inode)),
                sockets: snap.sockets.clone(),
            });
        }
        Ok(snap)
    }

    /// A refresh from what `full` matched; `None` when the target changed
    /// in a way that needs a full pass.
    fn quick(&mut self, full: &FullPass) -> Result<Option<Snapshot>, Error> {
        let Some(&(lead, _, _)) = full.procs.first() else {
            return Ok(None);
        };
        let own_netns = netns_of("self")?;
        let netns = if full.port.is_some() {
            own_netns.clone()
        } else {
            netns_of(&lead.to_string())?
        };
        if netns != full.netns {
            return Ok(None);
        }
        let mut procs = Vec::with_capacity(full.procs.len());
        for &(pid, _, _) in &full.procs {
            match process::read_process_counted(pid) {
                Ok(p) => procs.push(p),
                Err(_) => return Ok(None),
            }
        }

        let mut system = SystemLimits::default();
        sysctl::read_host(&mut system)?;
        let query = diag::Query::listeners(full.port);
        let read = move || -> Result<(SystemLimits, Vec<DiagSocket>), Error> {
            let mut s = system;
            sysctl::read_net(&mut s)?;
            Ok((s, diag::dump(query)?))
        };
        let (mut system, dump) = if full.port.is_some() || netns == own_netns {
            read()?
        } else {
            in_netns_of(lead, &netns, read)?
        };
        let mut listeners: Vec<&DiagSocket> = dump
            .iter()
            .filter(|s| {
                s.state == LISTEN
                    && (full.port == Some(s.local.port())
                        || full.listener_inodes.binary_search(&s.inode).is_ok())
            })
            .collect();
        listeners.sort_by_key(|s| listener_order(s));
        if sorted(listeners.iter().map(|s| s.inode)) != full.listener_inodes {
            return Ok(None);
        }

        let netstat = netstat::parse_netstat(&read_proc(&format!("/proc/{lead}/net/netstat"))?)?;
        let sockstat = netstat::parse_sockstat(&read_proc(&format!("/proc/{lead}/net/sockstat"))?)?;
        system.tcp_mem_used_pages = Some(sockstat.mem_pages);

        let processes: Vec<ProcessInfo> = procs
            .into_iter()
            .zip(&full.procs)
            .map(|(p, &(_, fds, conns))| ProcessInfo {
                connections: p.info.open_fds.saturating_sub(fds.saturating_sub(conns)),
                ..p.info
            })
            .collect();
        let before: u64 = full.procs.iter().map(|p| p.2).sum();
        let now: u64 = processes.iter().map(|p| p.connections).sum();
        let mut sockets = full.sockets.clone();
        let est = sockets.entry(TcpState::Established).or_default();
        *est = (*est + now).saturating_sub(before);
        sockets.insert(TcpState::Listen, listeners.len() as u64);
        sockets.retain(|_, n| *n > 0);

        Ok(Some(Snapshot {
            source: Source::Poll,
            source_note: None,
            taken_at_ms: now_ms(),
            netns,
            netstat,
            processes,
            listeners: listeners.into_iter().map(listener_of).collect(),
            sockets,
            time_wait: sockstat.tw,
            memory_per_connection: self.memory_per_connection(),
            system,
            ..Default::default()
        }))
    }

    fn memory_per_connection(&self) -> Option<MemoryPerConnection> {
        self.kernel_memory.as_ref().map(|k| MemoryPerConnection {
            process_bytes: self.process_bytes_per_connection,
            kernel_bytes: k.bytes_per_connection,
            // The process side is configured, not measured: say so.
            measured: false,
            buffer_bytes: k.buffer_bytes,
        })
    }

    /// One full pass: every fd link read, every socket dumped and matched.
    fn full(&mut self, target: &Target) -> Result<Snapshot, Error> {
        let own_netns = netns_of("self")?;
        // Resolve the target to processes; for a port this needs the socket
        // dump of our own namespace, which is then the right one to use.
        let (procs, port, dump) = match target {
            Target::Pid(pid) => (vec![process::read_process(*pid)?], None, None),
            Target::Pids(pids) if pids.is_empty() => return Err(Error::EmptyTarget),
            Target::Pids(pids) => {
                let mut pids = pids.clone();
                pids.sort_unstable();
                pids.dedup();
                let procs = pids
                    .iter()
                    .map(|p| process::read_process(*p))
                    .collect::<Result<Vec<_>, _>>()?;
                (procs, None, None)
            }
            Target::Port(port) => {
                let dump = diag::dump_tcp()?;
                let procs = owners_of_port(*port, &dump, &own_netns)?;
                (procs, Some(*port), Some(dump))
            }
        };

        let lead = procs[0].info.pid;
        let netns = if port.is_some() {
            own_netns.clone()
        } else {
            netns_of(&lead.to_string())?
        };

        let mut system = SystemLimits::default();
        sysctl::read_host(&mut system)?;
        let (net_sys, dump) = match dump {
            Some(d) => {
                let mut s = system.clone();
                sysctl::read_net(&mut s)?;
                (s, d)
            }
            None => {
                let base = system.clone();
                let query = if self.listeners_only {
                    diag::Query::listeners(None)
                } else {
                    diag::Query::all()
                };
                let read = move || -> Result<(SystemLimits, Vec<DiagSocket>), Error> {
                    let mut s = base;
                    sysctl::read_net(&mut s)?;
                    Ok((s, diag::dump(query)?))
                };
                if netns == own_netns {
                    read()?
                } else {
                    in_netns_of(lead, &netns, read)?
                }
            }
        };
        system = net_sys;

        // /proc/PID/net shows the namespace of PID, whoever reads it.
        let netstat = netstat::parse_netstat(&read_proc(&format!("/proc/{lead}/net/netstat"))?)?;
        let sockstat = netstat::parse_sockstat(&read_proc(&format!("/proc/{lead}/net/sockstat"))?)?;
        system.tcp_mem_used_pages = Some(sockstat.mem_pages);

        let mut snap = Snapshot {
            source: Source::Poll,
            source_note: None,
            taken_at_ms: now_ms(),
            netns,
            netstat,
            ..Default::default()
        };
        assign_sockets(&mut snap, &procs, &dump, port);

        let ipv6 = snap.listeners.iter().any(|l| l.address.starts_with('['));
        let epoll = procs.iter().any(|p| p.uses_epoll);
        self.kernel_memory = measure_kernel_memory(&sockstat, system.page_size, ipv6, epoll);
        snap.memory_per_connection = self.memory_per_connection();
        snap.system = system;
        Ok(snap)
    }
}

/// The period after which a full pass is taken again: the fixed period, or
/// `factor` times what the last one cost when that is longer.
pub fn resync_after(every: Duration, cost: Duration, factor: u32) -> Duration {
    every.max(cost.saturating_mul(factor))
}

/// Fills the snapshot's processes (with their connection counts), the
/// target's sockets by state, its listeners and the namespace's TIME_WAIT
/// count from one sock_diag dump.
/// `port`: the target is "whatever listens on this port", so its listeners
/// are every listener there, visible owner or not.
pub fn assign_sockets(
    snap: &mut Snapshot,
    procs: &[ProcScan],
    dump: &[DiagSocket],
    port: Option<u16>,
) {
    let mut owner: HashMap<u64, Vec<usize>> = HashMap::new();
    for (i, p) in procs.iter().enumerate() {
        for &ino in &p.socket_inodes {
            owner.entry(ino).or_default().push(i);
        }
    }
    let mut connections = vec![0u64; procs.len()];
    let owned = |s: &DiagSocket| s.inode != 0 && owner.contains_key(&s.inode);

    let mut listeners: Vec<&DiagSocket> = dump
        .iter()
        .filter(|s| s.state == LISTEN && (owned(s) || port == Some(s.local.port())))
        .collect();
    listeners.sort_by_key(|s| listener_order(s));
    let ports: BTreeSet<u16> = listeners.iter().map(|s| s.local.port()).collect();

    for s in dump {
        if s.state == TIME_WAIT {
            snap.time_wait += 1;
        }
        let mine = if owned(s) {
            if s.state != LISTEN && s.state != CLOSE {
                for &i in &owner[&s.inode] {
                    connections[i] += 1;
                }
            }
            true
        } else {
            // Request and TIME_WAIT sockets have no inode: they belong to the
            // listener whose port they were accepted on.
            (s.inode == 0 && s.state != LISTEN && ports.contains(&s.local.port()))
                || (s.state == LISTEN && port == Some(s.local.port()))
        };
        if mine {
            if let Some(st) = TcpState::from_kernel(s.state) {
                *snap.sockets.entry(st).or_default() += 1;
            }
        }
    }
    snap.listeners = listeners.into_iter().map(listener_of).collect();
    snap.processes = procs
        .iter()
        .zip(connections)
        .map(|(p, c)| ProcessInfo {
            connections: c,
            ..p.info.clone()
        })
        .collect();
}

/// The order listeners are shown in: by port, IPv4 first, by address.
fn listener_order(s: &DiagSocket) -> (u16, bool, std::net::IpAddr, u64) {
    (s.local.port(), s.local.is_ipv6(), s.local.ip(), s.inode)
}

fn listener_of(s: &DiagSocket) -> Listener {
    Listener {
        address: s.local.to_string(),
        port: s.local.port(),
        accept_queue_depth: s.rqueue as u64,
        accept_queue_limit: s.wqueue as u64,
        accept_queue_peak: s.rqueue as u64,
        queue_full_events: None,
        inode: s.inode,
    }
}

fn sorted(it: impl Iterator<Item = u64>) -> Vec<u64> {
    let mut v: Vec<u64> = it.collect();
    v.sort_unstable();
    v
}

/// Every process holding a listener on `port`, read from /proc. Processes we
/// may not look into are skipped, and named in the error when nobody else
/// owns the listeners.
fn owners_of_port(port: u16, dump: &[DiagSocket], netns: &str) -> Result<Vec<ProcScan>, Error> {
    let inodes: BTreeSet<u64> = dump
        .iter()
        .filter(|s| s.state == LISTEN && s.local.port() == port && s.inode != 0)
        .map(|s| s.inode)
        .collect();
    if inodes.is_empty() {
        return Err(Error::NoListener {
            port,
            netns: netns.to_string(),
        });
    }
    let mut found = Vec::new();
    let mut denied = 0;
    for pid in all_pids()? {
        let fds = match process::scan_fds(pid) {
            Ok(f) => f,
            Err(Error::Permission { .. }) => {
                denied += 1;
                continue;
            }
            Err(_) => continue, // exited meanwhile
        };
        if fds.socket_inodes.iter().any(|i| inodes.contains(i)) {
            match process::read_process_with(pid, fds) {
                Ok(p) => found.push(p),
                Err(Error::NoSuchPid(_)) => continue,
                Err(e) => return Err(e),
            }
        }
    }
    if found.is_empty() {
        let hint = if denied > 0 {
            format!("{denied} processes could not be read; run as root")
        } else {
            "the listener belongs to no process (it is being closed?)".to_string()
        };
        return Err(Error::NoOwner {
            port,
            listeners: inodes.len(),
            hint,
        });
    }
    Ok(found)
}

/// The pids of every process holding a TCP listener on `port` in the
/// calling thread's network namespace, sorted.
pub fn pids_on_port(port: u16) -> Result<Vec<u32>, Error> {
    let dump = diag::dump_tcp()?;
    let ns = netns_of("self")?;
    Ok(owners_of_port(port, &dump, &ns)?
        .into_iter()
        .map(|p| p.info.pid)
        .collect())
}

fn all_pids() -> Result<Vec<u32>, Error> {
    let rd = std::fs::read_dir("/proc").map_err(|e| Error::Io {
        what: "/proc".into(),
        source: e,
    })?;
    let mut pids: Vec<u32> = rd
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    Ok(pids)
}

fn read_proc(path: &str) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|e| Error::Io {
        what: path.to_string(),
        source: e,
    })
}

/// `net:[4026531840]` of a /proc entry (`self` or a pid).
pub fn netns_of(who: &str) -> Result<String, Error> {
    let path = format!("/proc/{who}/ns/net");
    match std::fs::read_link(&path) {
        Ok(l) => Ok(l.to_string_lossy().into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(match who.parse() {
            Ok(pid) => Error::NoSuchPid(pid),
            Err(_) => Error::Io {
                what: path,
                source: e,
            },
        }),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(Error::Permission {
            what: format!("reading the network namespace of {who}"),
            hint: "run as root or as the process's owner".into(),
        }),
        Err(e) => Err(Error::Io {
            what: path,
            source: e,
        }),
    }
}

/// Runs `f` on a thread that has joined the network namespace of `pid`
/// (setns affects only the calling thread; ours stays where it was).
fn in_netns_of<T: Send>(
    pid: u32,
    netns: &str,
    f: impl FnOnce() -> Result<T, Error> + Send,
) -> Result<T, Error> {
    let path = format!("/proc/{pid}/ns/net");
    let file = std::fs::File::open(&path).map_err(|e| Error::Io {
        what: path.clone(),
        source: e,
    })?;
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: a valid namespace fd; CLONE_NEWNET only changes this thread.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(Error::Permission {
                    what: format!("entering pid {pid}'s network namespace {netns}"),
                    hint: format!("needs CAP_SYS_ADMIN: {}", std::io::Error::last_os_error()),
                });
            }
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(Error::Netlink("namespace reader thread panicked".into())))
    })
}

fn measure_kernel_memory(
    sockstat: &netstat::SockStat,
    page_size: u64,
    ipv6: bool,
    epoll: bool,
) -> Option<KernelMemory> {
    // Root only (mode 0400): without it the model's default is used, and
    // status says so.
    let text = std::fs::read_to_string("/proc/slabinfo").ok()?;
    let slabs = kmem::parse_slabinfo(&text).ok()?;
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) }.max(1) as u64;
    // SK_MEMORY_PCPU_RESERVE: 1 MiB of pages when the sysctl is not there.
    let rsv = std::fs::read_to_string("/proc/sys/net/core/mem_pcpu_rsv")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or((1 << 20) / page_size.max(1));
    kmem::measure(&slabs, sockstat, page_size, cpus, rsv, ipv6, epoll)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resync_stretches_with_the_cost_of_a_full_pass() {
        let min = Duration::from_secs(60);
        assert_eq!(resync_after(min, Duration::from_millis(20), 1000), min);
        assert_eq!(
            resync_after(min, Duration::from_millis(1500), 1000),
            Duration::from_secs(1500)
        );
        assert_eq!(resync_after(min, Duration::from_secs(5), 0), min);
    }

    fn sock(state: TcpState, local: &str, remote: &str, q: (u32, u32), inode: u64) -> DiagSocket {
        DiagSocket {
            state: state as u8,
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            rqueue: q.0,
            wqueue: q.1,
            inode,
        }
    }

    fn proc_with(pid: u32, inodes: &[u64]) -> ProcScan {
        ProcScan {
            info: ProcessInfo {
                pid,
                open_fds: 10,
                ..Default::default()
            },
            socket_inodes: inodes.to_vec(),
            uses_epoll: false,
        }
    }

    /// Two workers on :8080 (v4 and v6 listeners), their connections,
    /// socket-less queue and TIME_WAIT sockets, and a stranger's sockets.
    fn dump() -> Vec<DiagSocket> {
        use TcpState::*;
        vec![
            sock(Listen, "0.0.0.0:8080", "0.0.0.0:0", (2, 128), 100),
            sock(Listen, "[::]:8080", "[::]:0", (0, 64), 200),
            sock(
                Established,
                "127.0.0.1:8080",
                "127.0.0.1:50001",
                (0, 0),
                101,
            ),
            sock(
                Established,
                "127.0.0.1:8080",
                "127.0.0.1:50002",
                (0, 0),
                102,
            ),
            sock(Established, "[::1]:8080", "[::1]:50003", (0, 0), 201),
            // In the accept queue: no inode yet.
            sock(Established, "127.0.0.1:8080", "127.0.0.1:50004", (0, 0), 0),
            sock(TimeWait, "127.0.0.1:8080", "127.0.0.1:50005", (0, 0), 0),
            // A worker's unconnected socket: no connection.
            sock(Close, "0.0.0.0:0", "0.0.0.0:0", (0, 0), 103),
            // Someone else's listener, connection and TIME_WAIT.
            sock(Listen, "127.0.0.1:9090", "0.0.0.0:0", (0, 4096), 900),
            sock(
                Established,
                "127.0.0.1:40000",
                "127.0.0.1:9090",
                (0, 0),
                901,
            ),
            sock(TimeWait, "127.0.0.1:9090", "127.0.0.1:40001", (0, 0), 0),
        ]
    }

    #[test]
    fn sockets_are_tied_to_processes_by_inode() {
        let procs = [
            proc_with(1, &[100, 101, 102, 103]),
            proc_with(2, &[200, 201]),
        ];
        let mut snap = Snapshot::default();
        assign_sockets(&mut snap, &procs, &dump(), None);
        assert_eq!(snap.processes.len(), 2);
        assert_eq!(snap.processes[0].connections, 2);
        assert_eq!(snap.processes[1].connections, 1);
        assert_eq!(snap.connections(), 3);
        assert_eq!(snap.time_wait, 2);
        let addrs: Vec<&str> = snap.listeners.iter().map(|l| l.address.as_str()).collect();
        assert_eq!(addrs, ["0.0.0.0:8080", "[::]:8080"]);
        assert_eq!(
            (
                snap.listeners[0].accept_queue_depth,
                snap.listeners[0].accept_queue_limit
            ),
            (2, 128)
        );
        assert_eq!(snap.listeners[1].inode, 200);
        use TcpState::*;
        let want: BTreeMap<TcpState, u64> =
            [(Established, 4), (Listen, 2), (TimeWait, 1), (Close, 1)].into();
        assert_eq!(snap.sockets, want);
    }

    #[test]
    fn port_target_takes_every_listener_on_the_port() {
        // Only worker 1 is visible; the port still has both listeners.
        let procs = [proc_with(1, &[100, 101])];
        let mut snap = Snapshot::default();
        assign_sockets(&mut snap, &procs, &dump(), Some(8080));
        assert_eq!(snap.listeners.len(), 2);
        assert_eq!(snap.processes[0].connections, 1);
        assert_eq!(snap.sockets[&TcpState::Listen], 2);
    }

    #[test]
    fn owners_of_an_empty_port_is_no_listener() {
        let e = owners_of_port(1, &dump(), "net:[1]").unwrap_err();
        assert_eq!(
            e.to_string(),
            "no TCP listener on port 1 in this network namespace (net:[1])"
        );
    }
}

#[cfg(test)]
mod incremental_tests {
    //! Quick passes against full passes on a live child server.
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::net::TcpStream;
    use std::process::{Child, Command, Stdio};

    /// Listens on a free port, prints it, accepts and holds connections,
    /// closes each when its peer does.
    const SERVER: &str = r#"
import socket, select
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(64)
print(l.getsockname()[1], flush=True)
conns = []
while True:
    r, _, _ = select.select([l] + conns, [], [])
    for s in r:
        if s is l:
            conns.append(l.accept()[0])
        elif not s.recv(1):
            conns.remove(s); s.close()
"#;

    struct Server(Child);
    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn wait_fds(pid: u32, want: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while process::count_fds(pid).unwrap() != want {
            assert!(Instant::now() < deadline, "pid {pid} never held {want} fds");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn same(quick: &Snapshot, full: &Snapshot) {
        let key = |s: &Snapshot| {
            let p: Vec<_> = s
                .processes
                .iter()
                .map(|p| (p.pid, p.open_fds, p.connections, p.nofile_soft))
                .collect();
            (p, s.listeners.clone(), s.sockets.clone(), s.netns.clone())
        };
        assert_eq!(key(quick), key(full));
        assert_eq!(quick.memory_per_connection, full.memory_per_connection);
    }

    #[test]
    fn quick_passes_agree_with_full_passes() {
        let mut child = Command::new("python3")
            .args(["-c", SERVER])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let server = Server(child);
        let pid = server.0.id();
        let port: u16 = line.trim().parse().unwrap();
        let target = Target::Port(port);
        let mut inc = PollSource::new().incremental(Duration::from_secs(3600));

        let first = inc.snapshot(&target).unwrap();
        assert_eq!(inc.passes(), Passes { full: 1, quick: 0 });
        let base = first.processes[0].open_fds;

        let mut clients: Vec<TcpStream> = (0..7)
            .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
            .collect();
        wait_fds(pid, base + 7);
        let q = inc.snapshot(&target).unwrap();
        assert_eq!(inc.passes(), Passes { full: 1, quick: 1 });
        assert_eq!(q.processes[0].connections, 7);
        same(&q, &PollSource::new().snapshot(&target).unwrap());

        clients.truncate(4);
        wait_fds(pid, base + 4);
        let q = inc.snapshot(&target).unwrap();
        assert_eq!(inc.passes(), Passes { full: 1, quick: 2 });
        assert_eq!(q.processes[0].connections, 4);
        assert_eq!(q.sockets[&TcpState::Established], 4);
        same(&q, &PollSource::new().snapshot(&target).unwrap());

        // The same numbers for the process as a pid target.
        let mut by_pid = PollSource::new().incremental(Duration::from_secs(3600));
        by_pid.snapshot(&Target::Pid(pid)).unwrap();
        clients.truncate(1);
        wait_fds(pid, base + 1);
        let q = by_pid.snapshot(&Target::Pid(pid)).unwrap();
        assert_eq!(by_pid.passes(), Passes { full: 1, quick: 1 });
        same(&q, &PollSource::new().snapshot(&Target::Pid(pid)).unwrap());
        assert_eq!(q.listeners.len(), 1);
        assert_eq!(q.listeners[0].port, port);

        // A resync period of zero: every snapshot is a full pass.
        let mut always = PollSource::new().incremental(Duration::ZERO);
        always.snapshot(&target).unwrap();
        always.snapshot(&target).unwrap();
        assert_eq!(always.passes(), Passes { full: 2, quick: 0 });

        // The server goes: the quick pass hands over to a full pass, which
        // reports it.
        drop(server);
        let e = inc.snapshot(&target).unwrap_err();
        assert!(matches!(e, Error::NoListener { .. }), "{e}");
        drop(clients);
    }
}

#[cfg(test)]
mod model_tests {
    //! Cases the core model's own tests do not cover, on snapshots shaped as
    //! the poll source builds them.
    use super::*;
    use headroom_core::predict;

    #[test]
    fn unlimited_soft_nofile_is_capped_by_nr_open() {
        let mut snap = Snapshot::default();
        let p = ProcScan {
            info: ProcessInfo {
                pid: 5,
                nofile_soft: None,
                nofile_hard: None,
                open_fds: 100,
                ..Default::default()
            },
            ..Default::default()
        };
        assign_sockets(&mut snap, &[p], &[], None);
        snap.system.nr_open = 1 << 20;
        let pred = predict(&snap, &ModelConfig::default());
        let c = pred.constraint("nofile").unwrap();
        assert_eq!(c.limit, 1 << 20);
        assert_eq!(pred.predicted_max_connections, (1 << 20) - 100 - 32);
        assert!(
            c.explanation.contains("soft unlimited"),
            "{}",
            c.explanation
        );
    }
}

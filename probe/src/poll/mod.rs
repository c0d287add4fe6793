//! The polling source: a [`Snapshot`] from /proc, /proc/sys, cgroup v2 and
//! sock_diag, taken in one pass.
//!
//! Sockets are tied to processes by inode: sock_diag reports each socket's
//! inode, /proc/PID/fd links name the inodes a process holds. net.* values
//! and sock_diag belong to a network namespace, so when the target lives in
//! another one they are read from a thread that has entered it (setns).
//!
//! The full pass (`full`) matches every socket; the incremental pass
//! (`quick`) refreshes from what the last full pass matched; `owners` finds
//! the processes behind a port.

pub mod diag;
pub mod kmem;
pub mod netstat;
pub mod process;
pub mod sysctl;

#[cfg(test)]
mod fixtures;
mod full;
mod owners;
mod quick;

pub use full::assign_sockets;
pub use owners::pids_on_port;

use crate::{Error, Target};
use diag::DiagSocket;
use headroom_core::{Listener, MemoryPerConnection, ModelConfig, Snapshot, TcpState};
use kmem::KernelMemory;
use std::collections::BTreeMap;
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

    pub(super) fn memory_per_connection(&self) -> Option<MemoryPerConnection> {
        self.kernel_memory.as_ref().map(|k| MemoryPerConnection {
            process_bytes: self.process_bytes_per_connection,
            kernel_bytes: k.bytes_per_connection,
            // The process side is configured, not measured: say so.
            measured: false,
            buffer_bytes: k.buffer_bytes,
        })
    }
}

/// The period after which a full pass is taken again: the fixed period, or
/// `factor` times what the last one cost when that is longer.
pub fn resync_after(every: Duration, cost: Duration, factor: u32) -> Duration {
    every.max(cost.saturating_mul(factor))
}

/// The listening TCP sockets of the calling thread's network namespace (on
/// `port` only, when given), in the order listeners are shown in. The
/// kernel filters by state, so the cost does not grow with connections:
/// /proc/net/tcp would print every socket of the host to show its listeners.
pub fn listening(port: Option<u16>) -> Result<Vec<Listener>, Error> {
    let mut socks = diag::dump(diag::Query::listeners(port))?;
    socks.sort_by_key(listener_order);
    Ok(socks.iter().map(listener_of).collect())
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

    #[test]
    fn listening_shows_one_port_with_its_queue() {
        // std listens with a backlog of 128; the kernel caps it at somaxconn.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let somaxconn = headroom_host::Host::system()
            .sysctl_u64("net.core.somaxconn")
            .unwrap();
        let got = listening(Some(port)).unwrap();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].address, format!("127.0.0.1:{port}"));
        assert_eq!(
            (got[0].accept_queue_depth, got[0].accept_queue_limit),
            (0, somaxconn.min(128))
        );
        // One connection the server has not accepted waits in its queue.
        let _c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let got = listening(Some(port)).unwrap();
        assert_eq!(got[0].accept_queue_depth, 1);
        drop(l);
        assert!(listening(Some(port)).unwrap().is_empty());
    }
}

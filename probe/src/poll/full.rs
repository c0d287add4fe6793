//! The full pass: every fd link of the target read, every TCP socket of the
//! namespace dumped and matched to its process by inode, and the kernel's
//! memory per connection measured from /proc/slabinfo.

use super::diag::{self, DiagSocket};
use super::kmem::{self, KernelMemory};
use super::owners::owners_of_port;
use super::process::{self, ProcScan};
use super::{
    in_netns_of, listener_of, listener_order, netns_of, netstat, now_ms, read_proc, sysctl,
    PollSource, CLOSE, LISTEN, TIME_WAIT,
};
use crate::{Error, Target};
use headroom_core::{ProcessInfo, Snapshot, Source, SystemLimits, TcpState};
use std::collections::{BTreeSet, HashMap};

impl PollSource {
    /// One full pass: every fd link read, every socket dumped and matched.
    pub(super) fn full(&mut self, target: &Target) -> Result<Snapshot, Error> {
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
    let rsv = headroom_host::Host::system()
        .sysctl_u64("net.core.mem_pcpu_rsv")
        .unwrap_or((1 << 20) / page_size.max(1));
    kmem::measure(&slabs, sockstat, page_size, cpus, rsv, ipv6, epoll)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{dump, proc_with};
    use super::*;
    use std::collections::BTreeMap;

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
}

#[cfg(test)]
mod model_tests {
    //! Cases the core model's own tests do not cover, on snapshots shaped as
    //! the poll source builds them.
    use super::*;
    use headroom_core::{predict, ModelConfig};

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

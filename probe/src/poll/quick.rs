//! The incremental (quick) pass: a refresh from what the last full pass
//! matched, with O(1) reads per process and a kernel-filtered listener dump.

use super::diag::{self, DiagSocket};
use super::{
    in_netns_of, listener_of, listener_order, netns_of, netstat, now_ms, process, read_proc,
    sorted, sysctl, FullPass, PollSource, LISTEN,
};
use crate::Error;
use headroom_core::{ProcessInfo, Snapshot, Source, SystemLimits, TcpState};

impl PollSource {
    /// A refresh from what `full` matched; `None` when the target changed
    /// in a way that needs a full pass.
    pub(super) fn quick(&mut self, full: &FullPass) -> Result<Option<Snapshot>, Error> {
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
}

#[cfg(test)]
mod incremental_tests {
    //! Quick passes against full passes on a live child server.
    use super::super::Passes;
    use super::*;
    use crate::Target;
    use std::io::{BufRead, BufReader};
    use std::net::TcpStream;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

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

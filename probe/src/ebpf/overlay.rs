//! [`EbpfProbe`] as an [`Overlay`] of a [`crate::Probe`]: after each polled
//! snapshot, what the programs saw since the previous one, filtered to the
//! snapshot's processes and ports.

use super::{EbpfProbe, Filter};
use crate::{Overlay, Target};
use headroom_core::{Snapshot, Source};

/// The eBPF probe, following one target.
pub struct EbpfOverlay {
    probe: EbpfProbe,
    /// The target's port, for a port target: its listeners may come and go.
    port: Option<u16>,
}

impl EbpfOverlay {
    /// Follows `target` with a loaded probe (a port target's port is
    /// watched even before anything listens on it).
    pub fn new(mut probe: EbpfProbe, target: &Target) -> Result<EbpfOverlay, super::Error> {
        let port = match target {
            Target::Port(p) => Some(*p),
            _ => None,
        };
        if let Some(p) = port {
            probe.watch_port(p)?;
        }
        Ok(EbpfOverlay { probe, port })
    }

    /// Tracepoints attached.
    pub fn attached(&self) -> &[String] {
        self.probe.attached()
    }
}

/// The filter for `snap`: its processes, and the target's port or else the
/// ports its processes listen on.
pub fn filter_for(snap: &Snapshot, port: Option<u16>) -> Filter {
    let mut ports: Vec<u16> = match port {
        Some(p) => vec![p],
        None => snap.listeners.iter().map(|l| l.port).collect(),
    };
    ports.sort_unstable();
    ports.dedup();
    if ports.is_empty() {
        ports.push(0); // a process without listeners: no port of its own
    }
    Filter {
        pids: snap.processes.iter().map(|p| p.pid).collect(),
        ports,
    }
}

impl Overlay for EbpfOverlay {
    fn source(&self) -> Source {
        Source::Ebpf
    }

    fn overlay(&mut self, snap: &mut Snapshot) -> Result<(), crate::Error> {
        for p in &snap.processes {
            self.probe
                .watch_pid(p.pid, p.open_fds)
                .map_err(|e| crate::Error::Ebpf(e.to_string()))?;
        }
        let filter = filter_for(snap, self.port);
        self.probe
            .overlay(snap, &filter)
            .map(|_| ())
            .map_err(|e| crate::Error::Ebpf(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use headroom_core::{Listener, ProcessInfo};

    #[test]
    fn filter_follows_the_snapshot() {
        let mut snap = Snapshot {
            processes: vec![
                ProcessInfo {
                    pid: 7,
                    ..Default::default()
                },
                ProcessInfo {
                    pid: 9,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let f = filter_for(&snap, None);
        assert_eq!((f.pids, f.ports), (vec![7, 9], vec![0]));
        for port in [8080, 8080, 443] {
            snap.listeners.push(Listener {
                port,
                ..Default::default()
            });
        }
        assert_eq!(filter_for(&snap, None).ports, vec![443, 8080]);
        assert_eq!(filter_for(&snap, Some(5)).ports, vec![5]);
    }
}

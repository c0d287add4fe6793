//! Which processes own a port's sockets: every process holding a listener
//! on the port, found by matching the listeners' inodes to /proc/PID/fd.

use super::diag::{self, DiagSocket};
use super::process::{self, ProcScan};
use super::{netns_of, LISTEN};
use crate::Error;
use std::collections::BTreeSet;

/// Every process holding a listener on `port`, read from /proc. Processes we
/// may not look into are skipped, and named in the error when nobody else
/// owns the listeners.
pub(super) fn owners_of_port(
    port: u16,
    dump: &[DiagSocket],
    netns: &str,
) -> Result<Vec<ProcScan>, Error> {
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
    let (found, denied) = scan_for_owners(&all_pids()?, &inodes)?;
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

/// The processes among `pids` whose fd tables hold one of `inodes`, in pid
/// order, and how many could not be read. Reading every descriptor of every
/// process is most of a `status --port` on a host holding a million
/// sockets, and each table is independent: the pids are shared out over
/// the CPUs.
fn scan_for_owners(pids: &[u32], inodes: &BTreeSet<u64>) -> Result<(Vec<ProcScan>, usize), Error> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    let per_thread = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut found = Vec::new();
                    let mut denied = 0;
                    loop {
                        let Some(&pid) = pids.get(next.fetch_add(1, Ordering::Relaxed)) else {
                            return Ok((found, denied));
                        };
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
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("an fd scan thread panicked"))
            .collect::<Vec<Result<(Vec<ProcScan>, usize), Error>>>()
    });
    let mut found = Vec::new();
    let mut denied = 0;
    for r in per_thread {
        let (f, d) = r?;
        found.extend(f);
        denied += d;
    }
    found.sort_by_key(|p| p.info.pid);
    Ok((found, denied))
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

#[cfg(test)]
mod tests {
    use super::super::fixtures::dump;
    use super::*;

    #[test]
    fn owners_of_an_empty_port_is_no_listener() {
        let e = owners_of_port(1, &dump(), "net:[1]").unwrap_err();
        assert_eq!(
            e.to_string(),
            "no TCP listener on port 1 in this network namespace (net:[1])"
        );
    }
}

//! The running workers of a master and the sockets they hold, read from
//! /proc; online CPUs for `worker_processes auto`.

use crate::host::Host;
use std::collections::BTreeSet;
use std::io::BufRead;

/// Socket inodes in `pid`'s descriptor table, with their fd numbers
/// (`None`: the table cannot be read).
pub(crate) fn socket_fds(host: &Host, pid: u32) -> Option<Vec<(u32, u64)>> {
    let rd = std::fs::read_dir(host.path(&format!("/proc/{pid}/fd"))).ok()?;
    let mut v = Vec::new();
    for e in rd.flatten() {
        let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(target) = std::fs::read_link(e.path()) else {
            continue;
        };
        let t = target.to_string_lossy();
        if let Some(inode) = t
            .strip_prefix("socket:[")
            .and_then(|r| r.strip_suffix(']'))
            .and_then(|n| n.parse().ok())
        {
            v.push((fd, inode));
        }
    }
    v.sort_unstable();
    Some(v)
}

/// Listening endpoints among `inodes`, from `pid`'s view of its network
/// namespace: TCP sockets in LISTEN, unbound-peer UDP sockets, listening
/// unix sockets; keyed by protocol and local address, so a `reuseport`
/// listener's per-worker clones count once.
pub(crate) fn listening_endpoints(
    host: &Host,
    pid: u32,
    inodes: &BTreeSet<u64>,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (file, listen_state) in [("tcp", "0A"), ("tcp6", "0A"), ("udp", "07"), ("udp6", "07")] {
        for_each_line(host, &format!("/proc/{pid}/net/{file}"), |l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() > 9 && f[3] == listen_state {
                if let Ok(inode) = f[9].parse::<u64>() {
                    if inodes.contains(&inode) {
                        out.insert(format!("{file} {}", f[1]));
                    }
                }
            }
        });
    }
    for_each_line(host, &format!("/proc/{pid}/net/unix"), |l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // Num RefCount Protocol Flags Type St Inode [Path]; flag 0x10000 =
        // __SO_ACCEPTCON, a listening socket.
        if f.len() > 6 && u64::from_str_radix(f[3], 16).is_ok_and(|fl| fl & 0x10000 != 0) {
            if let Ok(inode) = f[6].parse::<u64>() {
                if inodes.contains(&inode) {
                    out.insert(format!("unix {}", f.get(7).copied().unwrap_or(f[6])));
                }
            }
        }
    });
    out
}

/// Calls `f` on each line after the header of a /proc table, streaming (the
/// socket tables of a busy host run to many megabytes); at most 4 million
/// lines.
fn for_each_line(host: &Host, path: &str, mut f: impl FnMut(&str)) {
    let Ok(file) = std::fs::File::open(host.path(path)) else {
        return;
    };
    for line in std::io::BufReader::new(file)
        .lines()
        .skip(1)
        .take(4_000_000)
        .map_while(Result::ok)
    {
        f(&line);
    }
}

/// The running workers of a master: children titled `nginx: worker
/// process` (not old ones `is shutting down`, not the cache processes).
pub fn live_workers(host: &Host, master: u32) -> Vec<u32> {
    let mut v: Vec<u32> = host
        .children(master)
        .into_iter()
        .filter(|c| {
            host.cmdline(*c)
                .is_some_and(|a| a.join(" ").trim() == "nginx: worker process")
        })
        .collect();
    v.sort_unstable();
    v
}

/// Online CPUs (`worker_processes auto`), from /sys/devices/system/cpu/online.
pub(super) fn online_cpus(host: &Host) -> Option<u64> {
    let s = std::fs::read_to_string(host.path("/sys/devices/system/cpu/online")).ok()?;
    let mut n = 0;
    for part in s.trim().split(',') {
        match part.split_once('-') {
            Some((a, b)) => n += b.parse::<u64>().ok()?.checked_sub(a.parse::<u64>().ok()?)? + 1,
            None => {
                part.parse::<u64>().ok()?;
                n += 1;
            }
        }
    }
    (n > 0).then_some(n)
}

//! Kernel memory one TCP connection costs on this kernel, measured rather
//! than assumed.
//!
//! An accepted connection allocates one object from each of these slab
//! caches: the socket (`TCP` or `TCPv6`), its inode (`sock_inode_cache`),
//! the open file (`filp`) and its dentry (`dentry`); an epoll-driven server
//! adds an `eventpoll_epi`. Their sizes are read from /proc/slabinfo. On top
//! come socket buffers: /proc/net/sockstat `mem` pages over the TCP sockets
//! allocated, counted only when enough sockets exist for the average to mean
//! something (each CPU holds up to net.core.mem_pcpu_rsv pages of unflushed
//! accounting, which swamps the figure for a handful of sockets).

use crate::poll::netstat::SockStat;
use crate::Error;
use serde::Serialize;
use std::collections::BTreeMap;

/// One slab cache's line of /proc/slabinfo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slab {
    pub active_objs: u64,
    pub objsize: u64,
}

/// Parses /proc/slabinfo (version 2.1) into name -> (active objects, object size).
pub fn parse_slabinfo(text: &str) -> Result<BTreeMap<String, Slab>, Error> {
    let bad = |why: String| Error::Parse {
        what: "/proc/slabinfo".into(),
        why,
    };
    let mut lines = text.lines();
    let version = lines.next().unwrap_or("");
    if !version.starts_with("slabinfo - version: 2.") {
        return Err(bad(format!("unknown format {version:?}")));
    }
    let mut out = BTreeMap::new();
    for line in lines.filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 {
            continue;
        }
        let num = |i: usize| {
            f[i].parse::<u64>()
                .map_err(|_| bad(format!("line {line:?}")))
        };
        out.insert(
            f[0].to_string(),
            Slab {
                active_objs: num(1)?,
                objsize: num(3)?,
            },
        );
    }
    Ok(out)
}

/// Kernel memory per connection and what it is made of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KernelMemory {
    /// Slab bytes and socket-buffer bytes per connection.
    pub bytes_per_connection: u64,
    /// Sum of the slab objects one connection allocates.
    pub slab_bytes: u64,
    /// Each slab cache counted, with its object size on this kernel.
    pub slab_objects: BTreeMap<String, u64>,
    /// Average socket-buffer bytes per TCP socket; `None` when too few
    /// sockets exist to average over (see `buffer_note`).
    pub buffer_bytes: Option<u64>,
    /// Why the buffer part is or is not included.
    pub buffer_note: String,
    /// TCP sockets allocated host-wide, the buffer average's denominator.
    pub tcp_sockets: u64,
}

/// The largest per-socket error (bytes) tolerated in the buffer average.
const MAX_BUFFER_ERROR: u64 = 256;

/// Computes kernel bytes per connection. `ipv6`: the target's listeners are
/// IPv6 (dual-stack included), so its sockets come from `TCPv6`. `epoll`:
/// count the epoll item a readiness-based server adds per connection.
/// `None` when slabinfo lacks the socket cache (merged caches, odd kernels).
pub fn measure(
    slabs: &BTreeMap<String, Slab>,
    sockstat: &SockStat,
    page_size: u64,
    cpus: u64,
    pcpu_rsv_pages: u64,
    ipv6: bool,
    epoll: bool,
) -> Option<KernelMemory> {
    let sock = if ipv6 { "TCPv6" } else { "TCP" };
    let mut names = vec![sock, "sock_inode_cache", "filp", "dentry"];
    if epoll {
        names.push("eventpoll_epi");
    }
    let mut slab_objects = BTreeMap::new();
    for n in names {
        slab_objects.insert(n.to_string(), slabs.get(n)?.objsize);
    }
    let slab_bytes: u64 = slab_objects.values().sum();

    let slack_bytes = cpus * pcpu_rsv_pages * page_size;
    let (buffer_bytes, buffer_note) = if sockstat.alloc == 0 {
        (
            None,
            "no TCP sockets to average socket buffers over".to_string(),
        )
    } else if slack_bytes / sockstat.alloc > MAX_BUFFER_ERROR {
        (
            None,
            format!(
                "socket buffers not counted: {} TCP sockets are too few to average \
                 (per-CPU accounting slack up to {} KiB)",
                sockstat.alloc,
                slack_bytes / 1024
            ),
        )
    } else {
        let avg = sockstat.mem_pages * page_size / sockstat.alloc;
        (
            Some(avg),
            format!(
                "socket buffers: {} pages over {} TCP sockets",
                sockstat.mem_pages, sockstat.alloc
            ),
        )
    };
    Some(KernelMemory {
        bytes_per_connection: slab_bytes + buffer_bytes.unwrap_or(0),
        slab_bytes,
        slab_objects,
        buffer_bytes,
        buffer_note,
        tcp_sockets: sockstat.alloc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLABINFO: &str = "\
slabinfo - version: 2.1
# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>
TCPv6                 26     26   2496   13    8 : tunables    0    0    0 : slabdata      2      2      0
TCP                   78     78   2368   13    8 : tunables    0    0    0 : slabdata      6      6      0
eventpoll_epi        288    288    128   32    1 : tunables    0    0    0 : slabdata      9      9      0
sock_inode_cache     133    133    832   19    4 : tunables    0    0    0 : slabdata      7      7      0
filp                 546    546    192   21    1 : tunables    0    0    0 : slabdata     26     26      0
dentry            192927 194019    192   21    1 : tunables    0    0    0 : slabdata   9239   9239      0
";

    #[test]
    fn slabinfo_parses() {
        let s = parse_slabinfo(SLABINFO).unwrap();
        assert_eq!(
            s["TCP"],
            Slab {
                active_objs: 78,
                objsize: 2368
            }
        );
        assert_eq!(s["dentry"].active_objs, 192927);
        assert!(parse_slabinfo("slabinfo - version: 1.0\n").is_err());
    }

    #[test]
    fn few_sockets_count_slab_only() {
        let s = parse_slabinfo(SLABINFO).unwrap();
        let st = SockStat {
            alloc: 2,
            mem_pages: 214,
            ..Default::default()
        };
        let k = measure(&s, &st, 4096, 2, 256, false, true).unwrap();
        assert_eq!(k.slab_bytes, 2368 + 832 + 192 + 192 + 128);
        assert_eq!(k.buffer_bytes, None);
        assert_eq!(k.bytes_per_connection, k.slab_bytes);
        assert!(k.buffer_note.contains("too few"), "{}", k.buffer_note);
    }

    #[test]
    fn many_sockets_add_buffer_average() {
        let s = parse_slabinfo(SLABINFO).unwrap();
        // 2 CPUs x 256 pages x 4 KiB = 2 MiB slack: 100k sockets make it ~21 B each.
        let st = SockStat {
            alloc: 100_000,
            mem_pages: 5_000,
            ..Default::default()
        };
        let k = measure(&s, &st, 4096, 2, 256, true, false).unwrap();
        assert_eq!(k.slab_bytes, 2496 + 832 + 192 + 192);
        assert_eq!(k.buffer_bytes, Some(5_000 * 4096 / 100_000));
        assert_eq!(k.bytes_per_connection, k.slab_bytes + 204);
    }

    #[test]
    fn missing_socket_cache_is_not_measured() {
        let mut s = parse_slabinfo(SLABINFO).unwrap();
        s.remove("TCPv6");
        assert!(measure(&s, &SockStat::default(), 4096, 2, 256, true, false).is_none());
    }
}

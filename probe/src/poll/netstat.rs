//! Namespace-wide TCP counters: /proc/net/netstat (TcpExt ListenOverflows,
//! ListenDrops) and /proc/net/sockstat (TCP sockets and buffer pages).

use crate::Error;
use headroom_core::NetStat;

/// Parses /proc/net/netstat: pairs of lines, `TcpExt: Name Name ...` then
/// `TcpExt: value value ...`.
pub fn parse_netstat(text: &str) -> Result<NetStat, Error> {
    let mut lines = text.lines();
    while let Some(names) = lines.next() {
        let Some(values) = lines.next() else { break };
        let Some(names) = names.strip_prefix("TcpExt:") else {
            continue;
        };
        let values = values.strip_prefix("TcpExt:").ok_or_else(|| Error::Parse {
            what: "/proc/net/netstat".into(),
            why: "TcpExt header without its value line".into(),
        })?;
        let mut ns = NetStat::default();
        let (mut overflows, mut drops) = (false, false);
        for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
            let v = || {
                v.parse::<u64>().map_err(|_| Error::Parse {
                    what: "/proc/net/netstat".into(),
                    why: format!("TcpExt {n} = {v:?}"),
                })
            };
            match n {
                "ListenOverflows" => (ns.listen_overflows, overflows) = (v()?, true),
                "ListenDrops" => (ns.listen_drops, drops) = (v()?, true),
                _ => {}
            }
        }
        if !(overflows && drops) {
            return Err(Error::Parse {
                what: "/proc/net/netstat".into(),
                why: "TcpExt has no ListenOverflows/ListenDrops".into(),
            });
        }
        return Ok(ns);
    }
    Err(Error::Parse {
        what: "/proc/net/netstat".into(),
        why: "no TcpExt section".into(),
    })
}

/// The `TCP:` line of /proc/net/sockstat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SockStat {
    /// TCP sockets in use (not TIME_WAIT), IPv4 and IPv6.
    pub inuse: u64,
    pub orphan: u64,
    /// TIME_WAIT sockets.
    pub tw: u64,
    /// TCP sockets allocated (host-wide counter).
    pub alloc: u64,
    /// Pages of socket buffers charged to TCP (host-wide, `tcp_mem` units).
    pub mem_pages: u64,
}

/// Parses /proc/net/sockstat (`TCP: inuse 2 orphan 0 tw 0 alloc 2 mem 121`).
pub fn parse_sockstat(text: &str) -> Result<SockStat, Error> {
    let bad = |why: String| Error::Parse {
        what: "/proc/net/sockstat".into(),
        why,
    };
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("TCP:"))
        .ok_or_else(|| bad("no TCP line".into()))?;
    let mut s = SockStat::default();
    let mut it = line.split_whitespace();
    let mut seen = 0;
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        let v: u64 = v.parse().map_err(|_| bad(format!("TCP {k} = {v:?}")))?;
        match k {
            "inuse" => s.inuse = v,
            "orphan" => s.orphan = v,
            "tw" => s.tw = v,
            "alloc" => s.alloc = v,
            "mem" => s.mem_pages = v,
            _ => continue,
        }
        seen += 1;
    }
    if seen < 5 {
        return Err(bad(format!("TCP line lacks fields: {line:?}")));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Abridged from a 6.18 kernel: the real header and value lines with the
    /// TcpExt columns around the two we read.
    const NETSTAT: &str = "\
TcpExt: SyncookiesSent SyncookiesRecv SyncookiesFailed EmbryonicRsts PruneCalled ListenOverflows ListenDrops TCPHPHits
TcpExt: 0 0 0 3 0 17 19 4242
IpExt: InNoRoutes InTruncatedPkts InMcastPkts
IpExt: 0 0 12
";

    #[test]
    fn netstat_reads_listen_overflows_and_drops() {
        let ns = parse_netstat(NETSTAT).unwrap();
        assert_eq!(ns.listen_overflows, 17);
        assert_eq!(ns.listen_drops, 19);
    }

    #[test]
    fn netstat_without_tcpext_is_an_error() {
        let e = parse_netstat("IpExt: InNoRoutes\nIpExt: 0\n").unwrap_err();
        assert!(e.to_string().contains("no TcpExt"), "{e}");
        let e = parse_netstat("TcpExt: ListenOverflows ListenDrops\nTcpExt: 1 x\n").unwrap_err();
        assert!(e.to_string().contains("ListenDrops"), "{e}");
    }

    #[test]
    fn netstat_of_this_kernel_parses() {
        parse_netstat(&std::fs::read_to_string("/proc/net/netstat").unwrap()).unwrap();
    }

    #[test]
    fn sockstat_reads_tcp_line() {
        let text =
            "sockets: used 20\nTCP: inuse 2 orphan 1 tw 7 alloc 3 mem 121\nUDP: inuse 0 mem 0\n";
        assert_eq!(
            parse_sockstat(text).unwrap(),
            SockStat {
                inuse: 2,
                orphan: 1,
                tw: 7,
                alloc: 3,
                mem_pages: 121
            }
        );
        assert!(parse_sockstat("sockets: used 1\n").is_err());
        assert!(parse_sockstat("TCP: inuse 2 orphan 0\n").is_err());
        parse_sockstat(&std::fs::read_to_string("/proc/net/sockstat").unwrap()).unwrap();
    }
}

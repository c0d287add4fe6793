//! Host and namespace limits from /proc/sys and /proc/meminfo, read through
//! [`headroom_host::Host`].
//!
//! net.* sysctls belong to the network namespace of the thread that opens
//! them, so [`read_net`] is called from inside the target's namespace;
//! fs.*, memory and tcp_mem (registered in the initial namespace only) are
//! host-wide and read by [`read_host`].

use crate::Error;
use headroom_core::SystemLimits;
use headroom_host::{optional, Host};

/// The host's error as the probe reports it: a permission error says to
/// run as root.
fn probe_error(e: headroom_host::Error) -> Error {
    let what = e
        .path()
        .map_or_else(String::new, |p| p.display().to_string());
    if e.is_permission_denied() {
        return Error::Permission {
            what,
            hint: "run as root".into(),
        };
    }
    match e {
        headroom_host::Error::Parse { why, .. } => Error::Parse { what, why },
        headroom_host::Error::Io { source, .. } | headroom_host::Error::Syscall { source, .. } => {
            Error::Io { what, source }
        }
        other => Error::Parse {
            what,
            why: other.to_string(),
        },
    }
}

/// fs.*, memory, tcp_mem and the page size of the running system.
pub fn read_host(sys: &mut SystemLimits) -> Result<(), Error> {
    read_host_at(&Host::system(), sys)
}

/// fs.*, memory, tcp_mem and the page size as `host` shows them.
pub fn read_host_at(host: &Host, sys: &mut SystemLimits) -> Result<(), Error> {
    sys.nr_open = host.sysctl_u64("fs.nr_open").map_err(probe_error)?;
    // file-max is a long; "unlimited" shows as 9223372036854775807.
    sys.file_max = host.sysctl_u64("fs.file-max").map_err(probe_error)?;
    sys.file_nr_allocated = host.file_nr().map_err(probe_error)?.allocated;
    let mem = host.meminfo().map_err(probe_error)?;
    let missing = |field: &str| Error::Parse {
        what: host.proc_path("meminfo").display().to_string(),
        why: format!("no {field}"),
    };
    sys.mem_total_bytes = mem.total().ok_or_else(|| missing("MemTotal"))?;
    // MemAvailable appeared in 3.14; MemFree before it.
    sys.mem_available_bytes = mem
        .available()
        .or(mem.free())
        .ok_or_else(|| missing("MemAvailable or MemFree"))?;
    sys.tcp_mem_pages = optional(host.sysctl_triple("net.ipv4.tcp_mem")).map_err(probe_error)?;
    sys.page_size = headroom_host::process::page_size();
    Ok(())
}

/// net.* of the calling thread's network namespace, and conntrack.
pub fn read_net(sys: &mut SystemLimits) -> Result<(), Error> {
    read_net_at(&Host::system(), sys)
}

/// net.* and conntrack as `host` shows them.
pub fn read_net_at(host: &Host, sys: &mut SystemLimits) -> Result<(), Error> {
    let one = |key: &str| host.sysctl_u64(key).map_err(probe_error);
    // A sysctl that only exists with its module loaded (nf_conntrack).
    let opt = |key: &str| optional(host.sysctl_u64(key)).map_err(probe_error);
    sys.somaxconn = one("net.core.somaxconn")?;
    sys.tcp_max_syn_backlog = one("net.ipv4.tcp_max_syn_backlog")?;
    let (lo, hi) = host
        .sysctl_pair("net.ipv4.ip_local_port_range")
        .map_err(probe_error)?;
    sys.ip_local_port_range = (lo as u16, hi as u16);
    sys.tcp_tw_reuse = one("net.ipv4.tcp_tw_reuse")? as u8;
    sys.tcp_fin_timeout = one("net.ipv4.tcp_fin_timeout")?;
    sys.conntrack_max = opt("net.netfilter.nf_conntrack_max")?;
    sys.conntrack_count = opt("net.netfilter.nf_conntrack_count")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn fixture(files: &[(&str, &str)]) -> (tempfile::TempDir, Host) {
        let t = tempfile::tempdir().unwrap();
        for (rel, text) in files {
            let p = t.path().join("proc").join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        }
        let host = Host::at(t.path());
        (t, host)
    }

    const HOST: &[(&str, &str)] = &[
        ("sys/fs/nr_open", "1048576\n"),
        ("sys/fs/file-max", "9223372036854775807\n"),
        ("sys/fs/file-nr", "2016\t0\t9223372036854775807\n"),
        ("meminfo", "MemTotal:       24576000 kB\nMemFree:         1000000 kB\nMemAvailable:   20000000 kB\n"),
        ("sys/net/ipv4/tcp_mem", "190053\t253404\t380106\n"),
        ("sys/net/core/somaxconn", "4096\n"),
        ("sys/net/ipv4/tcp_max_syn_backlog", "512\n"),
        ("sys/net/ipv4/ip_local_port_range", "32768\t60999\n"),
        ("sys/net/ipv4/tcp_tw_reuse", "2\n"),
        ("sys/net/ipv4/tcp_fin_timeout", "60\n"),
        ("sys/net/netfilter/nf_conntrack_max", "262144\n"),
        ("sys/net/netfilter/nf_conntrack_count", "17\n"),
    ];

    #[test]
    fn fixture_host_reads_exact_values() {
        let (_t, host) = fixture(HOST);
        let mut sys = SystemLimits::default();
        read_host_at(&host, &mut sys).unwrap();
        read_net_at(&host, &mut sys).unwrap();
        assert_eq!(sys.nr_open, 1_048_576);
        assert_eq!(sys.file_max, i64::MAX as u64);
        assert_eq!(sys.file_nr_allocated, 2016);
        assert_eq!(sys.mem_total_bytes, 24_576_000 * 1024);
        assert_eq!(sys.mem_available_bytes, 20_000_000 * 1024);
        assert_eq!(sys.tcp_mem_pages, Some((190_053, 253_404, 380_106)));
        assert_eq!(sys.somaxconn, 4096);
        assert_eq!(sys.tcp_max_syn_backlog, 512);
        assert_eq!(sys.ip_local_port_range, (32768, 60999));
        assert_eq!(sys.tcp_tw_reuse, 2);
        assert_eq!(sys.tcp_fin_timeout, 60);
        assert_eq!(sys.conntrack_max, Some(262_144));
        assert_eq!(sys.conntrack_count, Some(17));
        assert!(sys.page_size.is_power_of_two());
    }

    #[test]
    fn meminfo_fixture_gives_bytes() {
        let text = "MemTotal:       24576000 kB\nMemFree:         1000000 kB\nMemAvailable:   20000000 kB\nBuffers:            1000 kB\nCached:          2000000 kB\nSwapCached:            0 kB\nActive:          1000000 kB\nInactive:        1000000 kB\nSwapTotal:             0 kB\nSwapFree:              0 kB\nDirty:                 0 kB\nWriteback:             0 kB\nMapped:            10000 kB\nShmem:              1000 kB\nSlab:             100000 kB\nSReclaimable:      50000 kB\nSUnreclaim:        50000 kB\nKernelStack:        1000 kB\nPageTables:         1000 kB\nNFS_Unstable:          0 kB\nBounce:                0 kB\nWritebackTmp:          0 kB\nCommitLimit:    12288000 kB\nCommitted_AS:    1000000 kB\nVmallocTotal:   34359738367 kB\nVmallocUsed:       10000 kB\nVmallocChunk:          0 kB\nHugePages_Total:       0\n";
        let mut files = HOST.to_vec();
        files.retain(|(k, _)| *k != "meminfo");
        files.push(("meminfo", text));
        let (_t, host) = fixture(&files);
        let mut sys = SystemLimits::default();
        read_host_at(&host, &mut sys).unwrap();
        assert_eq!(sys.mem_total_bytes, 24_576_000 * 1024);
        assert_eq!(sys.mem_available_bytes, 20_000_000 * 1024);
    }

    #[test]
    fn sysctl_numbers_parse_and_reject_garbage() {
        let keep = |k: &str| !k.contains("netfilter") && !k.contains("tcp_mem");
        let files: Vec<_> = HOST.iter().copied().filter(|(k, _)| keep(k)).collect();
        let (t, host) = fixture(&files);
        let mut sys = SystemLimits::default();
        read_host_at(&host, &mut sys).unwrap();
        read_net_at(&host, &mut sys).unwrap();
        assert_eq!(sys.tcp_mem_pages, None);
        assert_eq!((sys.conntrack_max, sys.conntrack_count), (None, None));

        let range = t.path().join("proc/sys/net/ipv4/ip_local_port_range");
        fs::write(&range, "12 x\n").unwrap();
        let e = read_net_at(&host, &mut sys).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("cannot parse {}: \"x\" is not a number", range.display())
        );
        // Old kernels: MemFree stands in for MemAvailable.
        fs::write(
            t.path().join("proc/meminfo"),
            "MemTotal: 4 kB\nMemFree: 2 kB\n",
        )
        .unwrap();
        read_host_at(&host, &mut sys).unwrap();
        assert_eq!(sys.mem_available_bytes, 2048);
    }
}

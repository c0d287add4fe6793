//! Host and namespace limits from /proc/sys and /proc/meminfo.
//!
//! net.* sysctls belong to the network namespace of the thread that opens
//! them, so [`read_net`] is called from inside the target's namespace;
//! fs.*, memory and tcp_mem (registered in the initial namespace only) are
//! host-wide and read by [`read_host`].

use crate::Error;
use headroom_core::SystemLimits;
use procfs::{Current, Meminfo};
use std::path::Path;

fn read(path: &str) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => Error::Permission {
            what: path.to_string(),
            hint: "run as root".into(),
        },
        _ => Error::Io {
            what: path.to_string(),
            source: e,
        },
    })
}

/// Whitespace-separated unsigned numbers of a sysctl file.
pub fn parse_numbers(path: &str, text: &str) -> Result<Vec<u64>, Error> {
    text.split_whitespace()
        .map(|w| {
            w.parse::<u64>().map_err(|_| Error::Parse {
                what: path.to_string(),
                why: format!("{w:?} is not a number"),
            })
        })
        .collect()
}

fn numbers(path: &str, want: usize) -> Result<Vec<u64>, Error> {
    let v = parse_numbers(path, &read(path)?)?;
    if v.len() < want {
        return Err(Error::Parse {
            what: path.to_string(),
            why: format!("expected {want} numbers, found {}", v.len()),
        });
    }
    Ok(v)
}

fn one(path: &str) -> Result<u64, Error> {
    Ok(numbers(path, 1)?[0])
}

/// A sysctl that only exists with its module loaded (nf_conntrack) or in
/// some namespaces (tcp_mem).
fn optional(path: &str, want: usize) -> Result<Option<Vec<u64>>, Error> {
    if !Path::new(path).exists() {
        return Ok(None);
    }
    numbers(path, want).map(Some)
}

/// fs.*, memory, tcp_mem and the page size.
pub fn read_host(sys: &mut SystemLimits) -> Result<(), Error> {
    sys.nr_open = one("/proc/sys/fs/nr_open")?;
    // file-max is a long; "unlimited" shows as 9223372036854775807.
    sys.file_max = one("/proc/sys/fs/file-max")?;
    sys.file_nr_allocated = numbers("/proc/sys/fs/file-nr", 3)?[0];
    let mem = Meminfo::current().map_err(|e| Error::Parse {
        what: "/proc/meminfo".into(),
        why: e.to_string(),
    })?;
    fill_meminfo(sys, &mem);
    sys.tcp_mem_pages = optional("/proc/sys/net/ipv4/tcp_mem", 3)?.map(|v| (v[0], v[1], v[2]));
    sys.page_size = procfs::page_size();
    Ok(())
}

/// MemTotal and MemAvailable (MemFree on kernels before 3.14).
pub fn fill_meminfo(sys: &mut SystemLimits, mem: &Meminfo) {
    sys.mem_total_bytes = mem.mem_total;
    sys.mem_available_bytes = mem.mem_available.unwrap_or(mem.mem_free);
}

/// net.* of the calling thread's network namespace, and conntrack.
pub fn read_net(sys: &mut SystemLimits) -> Result<(), Error> {
    sys.somaxconn = one("/proc/sys/net/core/somaxconn")?;
    sys.tcp_max_syn_backlog = one("/proc/sys/net/ipv4/tcp_max_syn_backlog")?;
    let r = numbers("/proc/sys/net/ipv4/ip_local_port_range", 2)?;
    sys.ip_local_port_range = (r[0] as u16, r[1] as u16);
    sys.tcp_tw_reuse = one("/proc/sys/net/ipv4/tcp_tw_reuse")? as u8;
    sys.tcp_fin_timeout = one("/proc/sys/net/ipv4/tcp_fin_timeout")?;
    sys.conntrack_max = optional("/proc/sys/net/netfilter/nf_conntrack_max", 1)?.map(|v| v[0]);
    sys.conntrack_count = optional("/proc/sys/net/netfilter/nf_conntrack_count", 1)?.map(|v| v[0]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use procfs::FromRead;

    #[test]
    fn meminfo_fixture_gives_bytes() {
        let text = "MemTotal:       24576000 kB\nMemFree:         1000000 kB\nMemAvailable:   20000000 kB\nBuffers:            1000 kB\nCached:          2000000 kB\nSwapCached:            0 kB\nActive:          1000000 kB\nInactive:        1000000 kB\nSwapTotal:             0 kB\nSwapFree:              0 kB\nDirty:                 0 kB\nWriteback:             0 kB\nMapped:            10000 kB\nShmem:              1000 kB\nSlab:             100000 kB\nSReclaimable:      50000 kB\nSUnreclaim:        50000 kB\nKernelStack:        1000 kB\nPageTables:         1000 kB\nNFS_Unstable:          0 kB\nBounce:                0 kB\nWritebackTmp:          0 kB\nCommitLimit:    12288000 kB\nCommitted_AS:    1000000 kB\nVmallocTotal:   34359738367 kB\nVmallocUsed:       10000 kB\nVmallocChunk:          0 kB\n";
        let mem = Meminfo::from_read(text.as_bytes()).unwrap();
        let mut sys = SystemLimits::default();
        fill_meminfo(&mut sys, &mem);
        assert_eq!(sys.mem_total_bytes, 24_576_000 * 1024);
        assert_eq!(sys.mem_available_bytes, 20_000_000 * 1024);
    }

    #[test]
    fn sysctl_numbers_parse_and_reject_garbage() {
        assert_eq!(
            parse_numbers("p", "32768\t60999\n").unwrap(),
            vec![32768, 60999]
        );
        assert!(parse_numbers("p", "12 x").is_err());
    }

    #[test]
    fn this_host_reads() {
        let mut sys = SystemLimits::default();
        read_host(&mut sys).unwrap();
        read_net(&mut sys).unwrap();
        assert!(sys.nr_open >= 1024);
        assert!(sys.somaxconn > 0);
        assert!(sys.ip_local_port_range.0 <= sys.ip_local_port_range.1);
        assert!(sys.mem_available_bytes <= sys.mem_total_bytes);
        assert!(sys.page_size.is_power_of_two());
    }
}

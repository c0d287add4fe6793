//! What the checks compare against: the sysctls a profile names, and a
//! [`Snapshot`] of the host and of one process, read through a [`Root`].

use crate::{Error, Root};
use headroom_core::{ProcessInfo, Snapshot, SystemLimits};
use std::collections::BTreeMap;

/// CAP_SYS_RESOURCE (include/uapi/linux/capability.h): needed to raise a
/// hard RLIMIT_NOFILE, or any soft one above it.
const CAP_SYS_RESOURCE: u32 = 24;

/// Current values, as read once.
#[derive(Debug, Clone, Default)]
pub struct Readings {
    /// Raw value of each sysctl asked for; `None` when absent here.
    pub sysctls: BTreeMap<String, Option<String>>,
    /// Host, namespace and target process (the pid given, else this process).
    pub snapshot: Snapshot,
    /// Whether this process may raise hard rlimits.
    pub cap_sys_resource: bool,
    /// True when the process is this one (no `--pid`): its limits are what a
    /// server started from this session inherits.
    pub self_process: bool,
}

impl Readings {
    /// A sysctl as numbers (a pair for the port range).
    pub fn numbers(&self, key: &str) -> Option<Vec<u64>> {
        self.sysctls.get(key)?.as_deref().and_then(parse_numbers)
    }
}

/// Whitespace-separated unsigned numbers, as the kernel prints vectors.
pub fn parse_numbers(s: &str) -> Option<Vec<u64>> {
    let v: Option<Vec<u64>> = s.split_whitespace().map(|t| t.parse().ok()).collect();
    v.filter(|v| !v.is_empty())
}

/// The sysctls the model needs besides the ones a profile names.
const MODEL_KEYS: &[&str] = &[
    "fs.nr_open",
    "fs.file-max",
    "fs.file-nr",
    "net.core.somaxconn",
    "net.ipv4.tcp_max_syn_backlog",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_tw_reuse",
    "net.ipv4.tcp_fin_timeout",
    "net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_count",
];

/// Reads `keys` plus what the capacity model needs, and the process `pid`
/// (this process when `None`).
pub fn read<'a>(
    root: &Root,
    pid: Option<u32>,
    keys: impl IntoIterator<Item = &'a str>,
) -> Result<Readings, Error> {
    let mut r = Readings {
        self_process: pid.is_none(),
        ..Default::default()
    };
    for k in keys.into_iter().chain(MODEL_KEYS.iter().copied()) {
        if r.sysctls.contains_key(k) {
            continue;
        }
        let v = root
            .read_sysctl(k)
            .map_err(|e| Error::io(&root.sysctl_path(k), e))?;
        r.sysctls.insert(k.to_string(), v);
    }
    let first = |k: &str| r.numbers(k).and_then(|v| v.first().copied());
    let range = r.numbers("net.ipv4.ip_local_port_range");
    let meminfo = std::fs::read_to_string(root.proc("meminfo")).unwrap_or_default();
    let mem = |field: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    let system = SystemLimits {
        nr_open: first("fs.nr_open").unwrap_or(1 << 20),
        file_max: first("fs.file-max").unwrap_or(0),
        file_nr_allocated: first("fs.file-nr").unwrap_or(0),
        somaxconn: first("net.core.somaxconn").unwrap_or(0),
        tcp_max_syn_backlog: first("net.ipv4.tcp_max_syn_backlog").unwrap_or(0),
        ip_local_port_range: match range.as_deref() {
            Some([lo, hi]) => (*lo as u16, *hi as u16),
            _ => (0, 0),
        },
        tcp_tw_reuse: first("net.ipv4.tcp_tw_reuse").unwrap_or(0) as u8,
        tcp_fin_timeout: first("net.ipv4.tcp_fin_timeout").unwrap_or(0),
        mem_available_bytes: mem("MemAvailable"),
        mem_total_bytes: mem("MemTotal"),
        conntrack_max: first("net.netfilter.nf_conntrack_max"),
        conntrack_count: first("net.netfilter.nf_conntrack_count"),
        page_size: 4096,
        ..Default::default()
    };
    let process = read_process(root, pid)?;
    r.cap_sys_resource = has_cap(root, CAP_SYS_RESOURCE);
    r.snapshot = Snapshot {
        netns: root.netns(),
        processes: vec![process],
        system,
        taken_at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        ..Default::default()
    };
    Ok(r)
}

fn read_process(root: &Root, pid: Option<u32>) -> Result<ProcessInfo, Error> {
    let dir = pid.map_or("self".to_string(), |p| p.to_string());
    let limits_path = root.proc(&format!("{dir}/limits"));
    let limits = std::fs::read_to_string(&limits_path).map_err(|e| match (pid, e.kind()) {
        (Some(p), std::io::ErrorKind::NotFound) => Error::Usage(format!("no process with pid {p}")),
        _ => Error::io(&limits_path, e),
    })?;
    let (soft, hard) = parse_nofile(&limits).ok_or_else(|| Error::Io {
        path: limits_path.display().to_string(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "no \"Max open files\" line",
        ),
    })?;
    let open_fds = std::fs::read_dir(root.proc(&format!("{dir}/fd")))
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    let real_pid = pid.unwrap_or_else(|| {
        std::fs::read_link(root.proc("self"))
            .ok()
            .and_then(|p| p.to_str()?.parse().ok())
            .unwrap_or_else(std::process::id)
    });
    Ok(ProcessInfo {
        pid: real_pid,
        comm: std::fs::read_to_string(root.proc(&format!("{dir}/comm")))
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        nofile_soft: soft,
        nofile_hard: hard,
        open_fds,
        open_fds_peak: open_fds,
        ..Default::default()
    })
}

/// Soft and hard RLIMIT_NOFILE from /proc/PID/limits (`None`: unlimited).
pub fn parse_nofile(limits: &str) -> Option<(Option<u64>, Option<u64>)> {
    let rest = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?;
    let mut it = rest.split_whitespace();
    let val = |s: Option<&str>| -> Option<Option<u64>> {
        match s? {
            "unlimited" => Some(None),
            n => n.parse().ok().map(Some),
        }
    };
    Some((val(it.next())?, val(it.next())?))
}

fn has_cap(root: &Root, cap: u32) -> bool {
    std::fs::read_to_string(root.proc("self/status"))
        .ok()
        .and_then(|s| {
            let hex = s
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))?
                .trim()
                .to_string();
            u64::from_str_radix(&hex, 16).ok()
        })
        .is_some_and(|bits| bits & (1 << cap) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_limits_and_vectors() {
        let l = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 20000                files\n";
        assert_eq!(parse_nofile(l), Some((Some(1024), Some(20000))));
        let l = "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_nofile(l), Some((None, None)));
        assert_eq!(parse_nofile("Max processes 1 1\n"), None);
        assert_eq!(parse_numbers("32768\t60999"), Some(vec![32768, 60999]));
        assert_eq!(parse_numbers("x"), None);
        assert_eq!(parse_numbers(""), None);
    }

    #[test]
    fn reads_this_process_on_the_real_system() {
        let r = read(&Root::system(), None, ["net.core.somaxconn"]).unwrap();
        assert!(
            r.snapshot.netns.starts_with("net:["),
            "{}",
            r.snapshot.netns
        );
        let p = &r.snapshot.processes[0];
        assert_eq!(p.pid, std::process::id());
        assert!(p.open_fds >= 3);
        assert!(r.snapshot.system.mem_total_bytes > 0);
        assert!(r.numbers("net.core.somaxconn").is_some());
        assert!(matches!(
            read(&Root::system(), Some(u32::MAX - 1), []),
            Err(Error::Usage(m)) if m.contains("no process with pid")
        ));
    }
}

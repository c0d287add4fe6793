//! What the checks compare against: the sysctls a profile names, and a
//! [`Snapshot`] of the host and of one process, read through a [`Root`]
//! (its [`headroom_host::Host`]).

use crate::{Error, Root};
use headroom_core::{ProcessInfo, Snapshot, SystemLimits};
use std::collections::BTreeMap;

/// Whitespace-separated unsigned numbers, as the kernel prints vectors.
pub use headroom_host::parse_numbers;

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
    let meminfo = root.host().meminfo().unwrap_or_default();
    let mem = |field: &str| meminfo.get(field).unwrap_or(0);
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
    let host = root.host();
    let dir = pid.map_or("self".to_string(), |p| p.to_string());
    let limits_path = root.proc(&format!("{dir}/limits"));
    let limits = host
        .read_proc(&format!("{dir}/limits"))
        .map_err(|e| match pid {
            Some(p) if e.is_not_found() => Error::Usage(format!("no process with pid {p}")),
            _ => Error::io(&limits_path, e.into()),
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
        comm: host
            .read_proc(&format!("{dir}/comm"))
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
    root.host()
        .read_proc("self/status")
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

    /// A fixture root: this process as pid 4242 with four descriptors, a
    /// few sysctls and meminfo.
    fn fixture() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let put = |rel: &str, text: &str| {
            let p = t.path().join("proc").join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        for (k, v) in [
            ("fs/nr_open", "1048576"),
            ("fs/file-max", "9223372036854775807"),
            ("fs/file-nr", "2016\t0\t9223372036854775807"),
            ("net/core/somaxconn", "4096"),
            ("net/ipv4/tcp_max_syn_backlog", "512"),
            ("net/ipv4/ip_local_port_range", "32768\t60999"),
            ("net/ipv4/tcp_tw_reuse", "2"),
            ("net/ipv4/tcp_fin_timeout", "60"),
        ] {
            put(&format!("sys/{k}"), &format!("{v}\n"));
        }
        put(
            "meminfo",
            "MemTotal:       24576000 kB\nMemFree:         1000000 kB\nMemAvailable:   20000000 kB\n",
        );
        put(
            "4242/limits",
            "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n",
        );
        put("4242/comm", "web\n");
        put("4242/status", "Name:\tweb\nCapEff:\t0000000001000000\n");
        for fd in 0..4 {
            put(&format!("4242/fd/{fd}"), "");
        }
        std::fs::create_dir_all(t.path().join("proc/4242/ns")).unwrap();
        std::os::unix::fs::symlink("net:[4026531840]", t.path().join("proc/4242/ns/net")).unwrap();
        std::os::unix::fs::symlink("4242", t.path().join("proc/self")).unwrap();
        t
    }

    #[test]
    fn reads_this_process_from_a_fixture_root() {
        let t = fixture();
        let root = Root::at(t.path());
        let r = read(&root, None, ["net.core.somaxconn", "net.core.nope"]).unwrap();
        assert_eq!(r.snapshot.netns, "net:[4026531840]");
        let p = &r.snapshot.processes[0];
        assert_eq!((p.pid, p.comm.as_str()), (4242, "web"));
        assert_eq!((p.nofile_soft, p.nofile_hard), (Some(1024), Some(524_288)));
        assert_eq!((p.open_fds, p.open_fds_peak), (4, 4));
        assert!(r.cap_sys_resource);
        assert!(r.self_process);
        let s = &r.snapshot.system;
        assert_eq!((s.nr_open, s.file_max), (1_048_576, i64::MAX as u64));
        assert_eq!(s.file_nr_allocated, 2016);
        assert_eq!((s.somaxconn, s.tcp_max_syn_backlog), (4096, 512));
        assert_eq!(s.ip_local_port_range, (32768, 60999));
        assert_eq!((s.tcp_tw_reuse, s.tcp_fin_timeout), (2, 60));
        assert_eq!(s.mem_total_bytes, 24_576_000 * 1024);
        assert_eq!(s.mem_available_bytes, 20_000_000 * 1024);
        assert_eq!((s.conntrack_max, s.conntrack_count), (None, None));
        assert_eq!(s.page_size, 4096);
        assert_eq!(r.numbers("net.core.somaxconn"), Some(vec![4096]));
        assert_eq!(r.sysctls["net.core.nope"], None);
        assert!(matches!(
            read(&root, Some(u32::MAX - 1), []),
            Err(Error::Usage(m)) if m.contains("no process with pid")
        ));
        // Unreadable values are errors naming the file, not zeros.
        std::fs::remove_file(t.path().join("proc/sys/net/core/somaxconn")).unwrap();
        std::fs::create_dir(t.path().join("proc/sys/net/core/somaxconn")).unwrap();
        let e = read(&root, None, []).unwrap_err().to_string();
        let want = t.path().join("proc/sys/net/core/somaxconn");
        assert!(e.starts_with(&format!("{}: ", want.display())), "{e}");
    }
}

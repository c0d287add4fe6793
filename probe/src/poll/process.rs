//! One process from /proc/PID: its nofile limits, open fds and the socket
//! inodes among them, RSS, and the memory limit of its cgroup (v2).

use crate::Error;
use headroom_core::ProcessInfo;
use procfs::process::{LimitValue, Process};
use procfs::ProcError;
use std::path::{Path, PathBuf};

/// A process as read from /proc, with the socket inodes it holds (to tie
/// sock_diag sockets to it).
#[derive(Debug, Clone, Default)]
pub struct ProcScan {
    pub info: ProcessInfo,
    /// Inodes of its sockets, sorted.
    pub socket_inodes: Vec<u64>,
    /// It holds an epoll instance (each connection then costs an epitem).
    pub uses_epoll: bool,
}

fn proc_err(pid: u32, what: &str, e: ProcError) -> Error {
    match e {
        ProcError::NotFound(_) => Error::NoSuchPid(pid),
        ProcError::PermissionDenied(_) => Error::Permission {
            what: format!("reading {what} of pid {pid}"),
            hint: "run as root or as the process's owner".into(),
        },
        e => Error::Parse {
            what: format!("/proc/{pid}/{what}"),
            why: e.to_string(),
        },
    }
}

/// CAP_SYS_ADMIN's bit in the capability sets of /proc/PID/status.
const CAP_SYS_ADMIN: u32 = 21;

fn limit(v: LimitValue) -> Option<u64> {
    match v {
        LimitValue::Unlimited => None,
        LimitValue::Value(v) => Some(v),
    }
}

/// Reads everything headroom needs about `pid`. Connections are left at 0:
/// they need the sock_diag dump (see `poll::mod`).
pub fn read_process(pid: u32) -> Result<ProcScan, Error> {
    read_process_with(pid, scan_fds(pid)?)
}

/// [`read_process`] with its fd table already scanned.
pub fn read_process_with(pid: u32, fds: FdScan) -> Result<ProcScan, Error> {
    let proc = Process::new(pid as i32).map_err(|e| proc_err(pid, "", e))?;
    let stat = proc.stat().map_err(|e| proc_err(pid, "stat", e))?;
    let limits = proc.limits().map_err(|e| proc_err(pid, "limits", e))?;
    let statm = proc.statm().map_err(|e| proc_err(pid, "statm", e))?;
    let (cg_limit, cg_used) = match proc.cgroups() {
        Ok(cgs) => cgs
            .0
            .iter()
            .find(|c| c.hierarchy == 0)
            .and_then(|c| cgroup_memory(Path::new(CGROUP_ROOT), &c.pathname))
            .map_or((None, None), |(l, u)| (Some(l), Some(u))),
        Err(_) => (None, None),
    };
    Ok(ProcScan {
        info: ProcessInfo {
            pid,
            comm: stat.comm,
            nofile_soft: limit(limits.max_open_files.soft_limit),
            nofile_hard: limit(limits.max_open_files.hard_limit),
            open_fds: fds.count,
            open_fds_peak: fds.count,
            connections: 0,
            rss_bytes: statm.resident * procfs::page_size(),
            cgroup_memory_limit_bytes: cg_limit,
            cgroup_memory_used_bytes: cg_used,
            cap_sys_admin: proc
                .status()
                .is_ok_and(|st| st.capeff & (1 << CAP_SYS_ADMIN) != 0),
        },
        socket_inodes: fds.socket_inodes,
        uses_epoll: fds.epoll,
    })
}

/// [`read_process`] without the fd table's contents: the fd count comes
/// from [`count_fds`], O(1) on Linux 6.2 and later. `socket_inodes` is left
/// empty and `uses_epoll` false.
pub fn read_process_counted(pid: u32) -> Result<ProcScan, Error> {
    let count = count_fds(pid)?;
    read_process_with(
        pid,
        FdScan {
            count,
            ..FdScan::default()
        },
    )
}

/// How many fds `pid` has open. Since Linux 6.2 `stat("/proc/PID/fd")`
/// reports it as the directory's size (the weight of the open-fd bitmap):
/// one syscall instead of a readdir and a readlink per fd. Older kernels
/// report 0 there, and the entries are counted (readdir only, no readlink;
/// for this process itself, less the readdir's own descriptor).
pub fn count_fds(pid: u32) -> Result<u64, Error> {
    let dir = PathBuf::from(format!("/proc/{pid}/fd"));
    let size = std::fs::metadata(&dir)
        .map_err(|e| fd_dir_err(pid, &dir, e))?
        .len();
    if size > 0 {
        return Ok(size);
    }
    let entries = std::fs::read_dir(&dir).map_err(|e| fd_dir_err(pid, &dir, e))?;
    let listed = entries.filter(|e| e.is_ok()).count() as u64;
    // Reading our own table lists the descriptor the readdir holds.
    let own = u64::from(pid == std::process::id());
    Ok(listed.saturating_sub(own))
}

fn fd_dir_err(pid: u32, dir: &Path, e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::NotFound => Error::NoSuchPid(pid),
        std::io::ErrorKind::PermissionDenied => Error::Permission {
            what: format!("reading the fds of pid {pid}"),
            hint: "run as root or as the process's owner".into(),
        },
        _ => Error::Io {
            what: dir.display().to_string(),
            source: e,
        },
    }
}

/// What the fd table of a process holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FdScan {
    pub count: u64,
    /// Socket inodes, sorted.
    pub socket_inodes: Vec<u64>,
    /// An `anon_inode:[eventpoll]` is among them.
    pub epoll: bool,
}

/// Counts the open fds of `pid` and collects its socket inodes.
///
/// Hand-rolled rather than procfs's `fd()`, which opens and stats each fd:
/// one readlink per fd matters for a process holding 100,000 sockets.
pub fn scan_fds(pid: u32) -> Result<FdScan, Error> {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let dir = PathBuf::from(format!("/proc/{pid}/fd"));
    // The directory stays open so each link is read relative to it: one
    // path component to resolve instead of four, no path built per fd. At a
    // million sockets the per-fd cost is most of `status --port`.
    let handle = std::fs::File::open(&dir).map_err(|e| fd_dir_err(pid, &dir, e))?;
    let entries = std::fs::read_dir(&dir).map_err(|e| fd_dir_err(pid, &dir, e))?;
    let mut scan = FdScan::default();
    let mut name = [0u8; 24];
    let mut target = [0u8; 256];
    for entry in entries {
        // An fd closed between readdir and readlink is simply gone.
        let Ok(entry) = entry else { continue };
        let file_name = entry.file_name();
        let bytes = file_name.as_bytes();
        if bytes.len() >= name.len() {
            continue;
        }
        name[..bytes.len()].copy_from_slice(bytes);
        name[bytes.len()] = 0;
        // SAFETY: `name` is NUL-terminated, `target` is writable for its
        // length, and the directory descriptor is open for the call.
        let n = unsafe {
            libc::readlinkat(
                handle.as_raw_fd(),
                name.as_ptr().cast(),
                target.as_mut_ptr().cast(),
                target.len(),
            )
        };
        if n < 0 {
            continue;
        }
        // The two descriptors this scan holds are not the process's own.
        if pid == std::process::id() && is_own_handle(bytes, &handle) {
            continue;
        }
        scan.count += 1;
        let link = std::str::from_utf8(&target[..n as usize]).unwrap_or("");
        if let Some(inode) = socket_inode(link) {
            scan.socket_inodes.push(inode);
        } else if link == "anon_inode:[eventpoll]" {
            scan.epoll = true;
        }
    }
    scan.socket_inodes.sort_unstable();
    Ok(scan)
}

/// Whether fd `name` is the directory handle this scan opened.
fn is_own_handle(name: &[u8], handle: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    std::str::from_utf8(name)
        .ok()
        .and_then(|n| n.parse::<i32>().ok())
        .is_some_and(|fd| fd == handle.as_raw_fd())
}

/// `socket:[12345]` -> 12345.
pub fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Where the cgroup v2 hierarchy is mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The tightest memory limit on a cgroup v2 path: walks from the process's
/// cgroup up to the root and returns `(memory.max, memory.current)` of the
/// ancestor with the least room. `None` when no ancestor sets a limit.
pub fn cgroup_memory(root: &Path, cgroup: &str) -> Option<(u64, u64)> {
    let mut best: Option<(u64, u64)> = None;
    let mut rel = PathBuf::from(cgroup.trim_start_matches('/'));
    loop {
        let dir = root.join(&rel);
        let max = std::fs::read_to_string(dir.join("memory.max")).ok();
        let cur = std::fs::read_to_string(dir.join("memory.current")).ok();
        if let (Some(max), Some(cur)) = (max, cur) {
            if let (Ok(max), Ok(cur)) = (max.trim().parse::<u64>(), cur.trim().parse::<u64>()) {
                if best.is_none_or(|(bm, bc)| max.saturating_sub(cur) < bm.saturating_sub(bc)) {
                    best = Some((max, cur));
                }
            }
        }
        if !rel.pop() {
            return best;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use procfs::process::Limits;
    use procfs::FromRead;

    const LIMITS: &str = "\
Limit                     Soft Limit           Hard Limit           Units     
Max cpu time              unlimited            unlimited            seconds   
Max file size             unlimited            unlimited            bytes     
Max data size             unlimited            unlimited            bytes     
Max stack size            8388608              unlimited            bytes     
Max core file size        0                    unlimited            bytes     
Max resident set          unlimited            unlimited            bytes     
Max processes             95432                95432                processes 
Max open files            20000                20000                files     
Max locked memory         8388608              8388608              bytes     
Max address space         unlimited            unlimited            bytes     
Max file locks            unlimited            unlimited            locks     
Max pending signals       95432                95432                signals   
Max msgqueue size         819200               819200               bytes     
Max nice priority         0                    0                    
Max realtime priority     0                    0                    
Max realtime timeout      unlimited            unlimited            us        
";

    #[test]
    fn limits_fixture_gives_nofile() {
        let l = Limits::from_read(LIMITS.as_bytes()).unwrap();
        assert_eq!(limit(l.max_open_files.soft_limit), Some(20000));
        assert_eq!(limit(l.max_open_files.hard_limit), Some(20000));
        let unl = LIMITS.replace(
            "Max open files            20000                20000",
            "Max open files            1024                 unlimited",
        );
        let l = Limits::from_read(unl.as_bytes()).unwrap();
        assert_eq!(limit(l.max_open_files.soft_limit), Some(1024));
        assert_eq!(limit(l.max_open_files.hard_limit), None);
    }

    #[test]
    fn socket_links() {
        assert_eq!(socket_inode("socket:[4026532177]"), Some(4026532177));
        assert_eq!(socket_inode("pipe:[12]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
        assert_eq!(socket_inode("socket:[x]"), None);
    }

    #[test]
    fn cgroup_tightest_ancestor_wins() {
        let root = std::env::temp_dir().join(format!("hr-cg-{}", std::process::id()));
        let leaf = root.join("a/b");
        std::fs::create_dir_all(&leaf).unwrap();
        // a: 1 GiB max, 900 MiB used (124 MiB left); b: no limit of its own.
        std::fs::write(root.join("a/memory.max"), "1073741824\n").unwrap();
        std::fs::write(root.join("a/memory.current"), "943718400\n").unwrap();
        std::fs::write(leaf.join("memory.max"), "max\n").unwrap();
        std::fs::write(leaf.join("memory.current"), "1000\n").unwrap();
        assert_eq!(cgroup_memory(&root, "/a/b"), Some((1 << 30, 943718400)));
        // b gets a tighter limit: it wins.
        std::fs::write(leaf.join("memory.max"), "2000000\n").unwrap();
        assert_eq!(cgroup_memory(&root, "/a/b"), Some((2000000, 1000)));
        assert_eq!(cgroup_memory(&root, "/nowhere"), None);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn reads_itself() {
        let me = std::process::id();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s = read_process(me).unwrap();
        assert_eq!(s.info.pid, me);
        assert!(s.info.open_fds >= 4, "{}", s.info.open_fds);
        assert!(!s.socket_inodes.is_empty());
        assert!(s.info.rss_bytes > 0);
        drop(l);
    }

    #[test]
    fn counted_fds_agree_with_the_scan() {
        // Another process: scanning our own /proc/self/fd would count the
        // directory fd the scan itself holds open.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        // Wait until exec is done (the fork briefly holds the parent's fds).
        while std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap() != "sleep\n" {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // 0, 1, 2 and whatever the test harness lets children inherit.
        let scanned = scan_fds(pid).unwrap().count;
        assert!(scanned >= 3);
        assert_eq!(count_fds(pid).unwrap(), scanned);
        let p = read_process_counted(pid).unwrap();
        assert_eq!(p.info.open_fds, scanned);
        assert!(p.socket_inodes.is_empty());
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn unknown_pid_is_no_such_pid() {
        // Above the kernel's pid_max ceiling (4194304): never a real pid.
        let e = read_process(4_194_305).unwrap_err();
        assert!(matches!(e, Error::NoSuchPid(4_194_305)), "{e}");
    }
}

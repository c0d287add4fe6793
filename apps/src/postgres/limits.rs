//! The process limits a new backend meets: RLIMIT_NPROC of the
//! postmaster's user, kernel.threads-max, kernel.pid_max, a cgroup's
//! pids.max.

use crate::host::Host;
use headroom_core::{AppInfo, ProcessLimit, Scope};

/// The real uid of a process (first field of `Uid:`).
fn real_uid(host: &Host, pid: u32) -> Option<u32> {
    host.status_field(pid, "Uid")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Tasks (threads included) whose real uid is `uid`: what RLIMIT_NPROC
/// counts.
pub fn tasks_of_uid(host: &Host, uid: u32) -> u64 {
    host.pids()
        .into_iter()
        .filter(|p| real_uid(host, *p) == Some(uid))
        .map(|p| {
            host.status_field(p, "Threads")
                .and_then(|t| t.parse::<u64>().ok())
                .unwrap_or(1)
        })
        .fold(0, u64::saturating_add)
}

/// Tasks on the host (the total of /proc/loadavg's `running/total`), else
/// the processes' thread counts.
fn tasks_on_host(host: &Host) -> u64 {
    std::fs::read_to_string(host.path("/proc/loadavg"))
        .ok()
        .and_then(|s| s.split_whitespace().nth(3)?.split_once('/')?.1.parse().ok())
        .unwrap_or_else(|| {
            host.pids()
                .into_iter()
                .map(|p| {
                    host.status_field(p, "Threads")
                        .and_then(|t| t.parse::<u64>().ok())
                        .unwrap_or(1)
                })
                .fold(0, u64::saturating_add)
        })
}

/// The tightest pids.max on the way from the process's cgroup (v2) to the
/// root: (cgroup, limit, current).
fn cgroup_pids(host: &Host, pid: u32) -> Option<(String, u64, u64)> {
    let text = std::fs::read_to_string(host.path(&format!("/proc/{pid}/cgroup"))).ok()?;
    let path = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))?
        .trim()
        .to_string();
    let mut best: Option<(String, u64, u64)> = None;
    let mut p = path.as_str();
    loop {
        let dir = format!("/sys/fs/cgroup{}", p.trim_end_matches('/'));
        let max = std::fs::read_to_string(host.path(&format!("{dir}/pids.max"))).ok();
        if let Some(limit) = max.and_then(|m| m.trim().parse::<u64>().ok()) {
            let cur = host.number(&format!("{dir}/pids.current")).unwrap_or(0);
            if best
                .as_ref()
                .is_none_or(|b| limit.saturating_sub(cur) < b.1.saturating_sub(b.2))
            {
                best = Some((
                    if p.is_empty() {
                        "/".into()
                    } else {
                        p.to_string()
                    },
                    limit,
                    cur,
                ));
            }
        }
        match p.rfind('/') {
            Some(i) if !p.is_empty() && p != "/" => p = &p[..i],
            _ => break,
        }
    }
    best
}

/// The process limits a new backend (a fork of the postmaster) meets.
pub fn process_limits(host: &Host, pm: u32, info: &mut AppInfo) -> Vec<ProcessLimit> {
    let mut v = Vec::new();
    let tasks = tasks_on_host(host);
    match (host.soft_limit(pm, "Max processes"), real_uid(host, pm)) {
        (Some(Some(limit)), Some(uid)) if uid != 0 => {
            let used = tasks_of_uid(host, uid);
            v.push(ProcessLimit {
                name: "nproc".into(),
                scope: Scope::Process,
                limit,
                used,
                explanation: format!(
                    "RLIMIT_NPROC {limit} of the postmaster (pid {pm}): {used} tasks of uid {uid} now, one more per backend"
                ),
                remedy: "raise LimitNPROC= in the postgresql unit (or nproc for its user in /etc/security/limits.conf), then restart".into(),
            });
        }
        (Some(None), _) | (_, Some(0)) => {}
        _ => info.problems.push(format!(
            "nproc: /proc/{pm}/limits or /proc/{pm}/status not readable"
        )),
    }
    if let Some(max) = host.sysctl_u64("kernel.threads-max") {
        v.push(ProcessLimit {
            name: "threads-max".into(),
            scope: Scope::System,
            limit: max,
            used: tasks,
            explanation: format!("kernel.threads-max {max}: {tasks} tasks on the host"),
            remedy: "sysctl -w kernel.threads-max=N".into(),
        });
    }
    if let Some(max) = host.sysctl_u64("kernel.pid_max") {
        v.push(ProcessLimit {
            name: "pid-max".into(),
            scope: Scope::System,
            limit: max,
            used: tasks,
            explanation: format!("kernel.pid_max {max}: {tasks} tasks hold pids"),
            remedy: "sysctl -w kernel.pid_max=N (up to 4194304)".into(),
        });
    }
    if let Some((cg, limit, cur)) = cgroup_pids(host, pm) {
        v.push(ProcessLimit {
            name: "cgroup-pids".into(),
            scope: Scope::System,
            limit,
            used: cur,
            explanation: format!("pids.max {limit} of cgroup {cg}: {cur} tasks in it"),
            remedy: format!("raise pids.max of {cg} (TasksMax= in the unit)"),
        });
    }
    v
}

#[cfg(test)]
mod tests {
    use crate::postgres::tests::{proc_tree, run};
    use crate::testkit::Root;

    #[test]
    fn low_nproc_binds_at_limit_less_tasks_of_the_user() {
        let r = Root::new("nproc");
        proc_tree(
            &r,
            "/usr/lib/postgresql/15/bin/postgres -D /data -c max_connections=100",
            "14",
        );
        let (info, max, binding) = run(&r);
        // 10 tasks of uid 101 (postmaster, 5 background, 3 clients, 1 starting):
        // 3 clients + (14 - 10) = 7.
        let np = info
            .process_limits
            .iter()
            .find(|p| p.name == "nproc")
            .unwrap();
        assert_eq!((np.limit, np.used), (14, 10));
        assert_eq!((max, binding.as_str()), (7, "nproc"));
    }
}

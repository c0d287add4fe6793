//! headroom serve itself: `--max-connections N` on its command line.
//!
//! The server fixes its ceiling at start as min(--max-connections,
//! fd_capacity(soft, open, reserve 32)) and refuses past it with a JSON-RPC
//! error line, then closes. The fd part is the model's own nofile constraint
//! (the model's default reserve is the server's), so only the flag is a cap
//! here. With `--workers`, the flag is service-wide and the workers (the
//! processes started with `--worker-index`) hold the connections.

use crate::host::{self, Host};
use crate::Seen;
use headroom_core::{AppCap, AppInfo, AtCap, CapSource, Scope};

pub fn inspect(seen: &Seen, host: &Host) -> AppInfo {
    let mut info = AppInfo {
        kind: "headroom".into(),
        comm: seen.main.comm.clone(),
        fds_per_connection: 1,
        // None: the model's reserve (32) is the one the server uses.
        fd_reserve: None,
        at_cap: Some(AtCap::RefusesWithError),
        ..Default::default()
    };
    info.connection_pids = seen
        .snap
        .processes
        .iter()
        .filter(|p| {
            host.cmdline(p.pid).is_some_and(|c| {
                c.iter()
                    .any(|a| a == "--worker-index" || a.starts_with("--worker-index="))
            })
        })
        .map(|p| p.pid)
        .collect();
    // Workers carry no flags of their own: the supervisor (their parent)
    // was started with the service-wide --max-connections.
    let flag = |pid: u32, cmdline: &[String]| {
        host::flag_value(cmdline, "--max-connections", Some("--max-connections")).map(|v| (pid, v))
    };
    let found = flag(seen.main.pid, &seen.cmdline).or_else(|| {
        let parent = host.ppid(seen.main.pid)?;
        flag(parent, &host.cmdline(parent)?)
    });
    match found {
        Some((pid, v)) => match v.parse::<u64>() {
            Ok(n) => info.caps.push(AppCap {
                name: "headroom-max-connections".into(),
                scope: Scope::System,
                setting: "--max-connections".into(),
                limit: n,
                used: None,
                reserve: 0,
                per_connection: 1,
                source: CapSource::CommandLine,
                read_from: format!("--max-connections {n} in pid {pid}'s command line"),
                explanation: format!(
                    "--max-connections {n}: headroom serve refuses (a JSON-RPC error line, then close) once it holds this many connections{}",
                    if info.connection_pids.is_empty() { "" } else { ", counted over all its workers" }
                ),
                remedy: "raise --max-connections N where headroom serve is started (its unit's ExecStart=)".into(),
            }),
            Err(_) => info.problems.push(format!(
                "--max-connections {v:?} in pid {pid}'s command line is not a number"
            )),
        },
        None => info.notes.push(
            "no --max-connections: headroom serve's ceiling is its fd capacity at start (RLIMIT_NOFILE soft - fds open - 32), the nofile constraint"
                .into(),
        ),
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{process, Look, Root};
    use headroom_core::Snapshot;

    fn run(cmdline: &str) -> (AppInfo, u64) {
        let snap = Snapshot {
            processes: vec![process(u32::MAX - 3, "headroom", 1024, 12, 0)],
            ..Default::default()
        };
        let (info, max, _) = Look::nowhere().cmdline(cmdline).run(inspect, snap);
        (info, max)
    }

    #[test]
    fn max_connections_flag_is_the_cap_in_both_spellings() {
        let (info, max) = run("headroom serve --max-connections 500");
        assert_eq!(info.caps[0].limit, 500);
        assert_eq!(info.caps[0].source, CapSource::CommandLine);
        assert_eq!(max, 500);
        let (info, _) = run("headroom serve --max-connections=77 --listen 127.0.0.1:1");
        assert_eq!(info.caps[0].limit, 77);
    }

    #[test]
    fn without_the_flag_the_fd_capacity_binds_with_the_servers_reserve() {
        let (info, max) = run("headroom serve --listen 127.0.0.1:1");
        assert!(info.caps.is_empty());
        assert_eq!(info.fd_reserve, None);
        // fd_capacity(1024, 12, reserve 32), as the server computes it.
        assert_eq!(max, 1024 - 12 - 32);
        // A flag above the fd capacity: the fd capacity still binds.
        assert_eq!(run("headroom serve --max-connections 5000").1, 980);
    }

    #[test]
    fn unreadable_flag_is_one_problem() {
        let (info, _) = run("headroom serve --max-connections lots");
        assert!(info.caps.is_empty());
        assert_eq!(info.problems.len(), 1);
    }

    #[test]
    fn workers_take_the_cap_from_their_supervisors_command_line() {
        let root = Root::new("headroom-workers");
        root.process(100, "headroom")
            .argv("headroom serve --workers 2 --max-connections 1000")
            .stat(1);
        for pid in [101, 102] {
            root.process(pid, "headroom")
                .argv("headroom serve --worker-index 0 --worker-fds 3,4")
                .stat(100);
        }
        let snap = Snapshot {
            processes: vec![
                process(101, "headroom", 20000, 16, 0),
                process(102, "headroom", 20000, 16, 0),
            ],
            ..Default::default()
        };
        let (info, max, binding) = Look::at(root.dir())
            .cmdline("headroom serve --worker-index 0 --worker-fds 3,4")
            .run(inspect, snap);
        assert_eq!(info.connection_pids, vec![101, 102]);
        assert_eq!(info.caps[0].limit, 1000);
        assert_eq!(
            info.caps[0].read_from,
            "--max-connections 1000 in pid 100's command line"
        );
        assert_eq!((max, binding.as_str()), (1000, "headroom-max-connections"));
    }
}

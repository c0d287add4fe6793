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
    match host::flag_value(&seen.cmdline, "--max-connections", Some("--max-connections")) {
        Some(v) => match v.parse::<u64>() {
            Ok(n) => info.caps.push(AppCap {
                name: "headroom-max-connections".into(),
                scope: Scope::System,
                setting: "--max-connections".into(),
                limit: n,
                used: None,
                reserve: 0,
                per_connection: 1,
                source: CapSource::CommandLine,
                read_from: format!("--max-connections {n} in pid {}'s command line", seen.main.pid),
                explanation: format!(
                    "--max-connections {n}: headroom serve refuses (a JSON-RPC error line, then close) once it holds this many connections{}",
                    if info.connection_pids.is_empty() { "" } else { ", counted over all its workers" }
                ),
                remedy: "raise --max-connections N where headroom serve is started (its unit's ExecStart=)".into(),
            }),
            Err(_) => info.problems.push(format!(
                "--max-connections {v:?} in pid {}'s command line is not a number",
                seen.main.pid
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
    use crate::Options;
    use headroom_core::{predict, ModelConfig, ProcessInfo, Snapshot};

    fn run(cmdline: &str) -> (AppInfo, u64) {
        let mut snap = Snapshot {
            processes: vec![ProcessInfo {
                pid: u32::MAX - 3,
                comm: "headroom".into(),
                nofile_soft: Some(1024),
                nofile_hard: Some(1024),
                open_fds: 12,
                open_fds_peak: 12,
                connections: 0,
                ..Default::default()
            }],
            ..Default::default()
        };
        let opts = Options {
            root: std::env::temp_dir().join("headroom-apps-headroom-no-root"),
            live: false,
            ..Options::default()
        };
        let seen = Seen {
            snap: &snap,
            main: &snap.processes[0],
            cmdline: cmdline.split(' ').map(String::from).collect(),
            address: None,
            opts: &opts,
        };
        let info = inspect(&seen, &Host::new(&opts.root));
        snap.app = Some(info.clone());
        let p = predict(&snap, &ModelConfig::default());
        (info, p.predicted_max_connections)
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
}

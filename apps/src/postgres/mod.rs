//! PostgreSQL: `max_connections`, less the slots reserved for superusers.
//!
//! Read from the postmaster's command line (`-D`, `-c name=value`,
//! `--name=value`, `-N`), else PGDATA from its environment, else its working
//! directory (the postmaster runs in its data directory); then
//! postgresql.conf (or `config_file`) with `include`, `include_if_exists`
//! and `include_dir`, then postgresql.auto.conf in the data directory; the
//! command line wins over both, auto.conf over postgresql.conf, a later line
//! over an earlier one (guc-file.l, `ProcessConfigFile`).
//!
//! What 15 does: one backend process per connection; a client backend takes
//! one of `max_connections` slots (walsenders, autovacuum and background
//! workers have pools of their own). A role without superuser gets
//! "FATAL 53300 remaining connection slots are reserved for non-replication
//! superuser connections" once no more than `superuser_reserved_connections`
//! slots are free (16 adds `reserved_connections` for roles with
//! pg_use_reserved_connections); anyone gets "FATAL 53300 sorry, too many
//! clients already" when none is free. Both come after the client's startup
//! message. When fork() fails (RLIMIT_NPROC of the postmaster's user,
//! kernel.threads-max, kernel.pid_max, a cgroup's pids.max), the postmaster
//! writes "could not fork new process for connection: Resource temporarily
//! unavailable" to the socket before reading anything and closes it.
//!
//! Measured on 15.18 (Debian 12, trust auth): `max_connections=10` admitted
//! 7 connections of an ordinary role (the 8th got the reserved-slots FATAL)
//! and 10 of the superuser (the 11th: "sorry, too many clients already");
//! with 5 ordinary ones held, 2 more ordinary and 5 superuser. Under
//! `prlimit --nproc=10:10` the postmaster, its 5 background processes (6
//! tasks of uid postgres) admitted 4 connections; the 5th got the fork
//! error. A client backend's private memory (RssAnon) was 3 MB.

// One file per job: cli reads the postmaster's command line and finds the
// data directory, conf reads postgresql.conf and its includes and resolves
// the settings, backends tells client backends from the other children,
// limits reads the process limits a new backend meets; inspect, here, puts
// them together.
mod backends;
mod cli;
mod conf;
mod limits;

pub use backends::{classify, Child};
pub use cli::{parse_args, parse_postmaster_opts, Args};
pub use conf::{
    parse_int, parse_line, read_conf, resolve, Conf, Resolved, Setting, MAX_CONF_DEPTH, MAX_FILES,
};
pub use limits::{process_limits, tasks_of_uid};

use cli::data_dir;

use crate::host::Host;
use crate::Seen;
use headroom_core::{AppCap, AppInfo, AtCap, CapSource, Scope};

pub const DEFAULT_MAX_CONNECTIONS: u64 = 100;
pub const DEFAULT_SUPERUSER_RESERVED: u64 = 3;

/// Reads PostgreSQL's cap from the postmaster's command line and files.
pub fn inspect(seen: &Seen, host: &Host) -> AppInfo {
    let mut info = AppInfo {
        comm: seen.main.comm.clone(),
        fds_per_connection: 1,
        process_per_connection: true,
        at_cap: Some(AtCap::RefusesWithError),
        ..AppInfo::default()
    };
    // A backend seen first: the postmaster is its parent.
    let mut pm = seen.main.pid;
    let mut argv = seen.cmdline.clone();
    if argv.first().is_some_and(|a| a.starts_with("postgres: ")) {
        if let Some(pp) = host.ppid(pm) {
            pm = pp;
            argv = host.cmdline(pp).unwrap_or_default();
        }
    }
    let mut args = parse_args(&argv);
    info.problems.append(&mut args.problems);
    let Some(dir) = data_dir(host, pm, &args, &mut info) else {
        info.problems.push(format!(
            "data directory unknown: no -D, PGDATA or readable working directory for pid {pm}; max_connections assumed {DEFAULT_MAX_CONNECTIONS}"
        ));
        return finish(info, host, pm, &argv, Resolved::default(), None);
    };
    if argv.is_empty() {
        // No command line: postmaster.opts records the one it started with.
        if let Ok(t) = host.read(&format!("{dir}/postmaster.opts")) {
            argv = parse_postmaster_opts(&t);
            args = parse_args(&argv);
            info.notes
                .push(format!("command line read from {dir}/postmaster.opts"));
        }
    }
    let r = resolve(host, &args, &dir);
    let version = host
        .read(&format!("{}/PG_VERSION", r.data_dir))
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty() && v.len() < 16);
    finish(info, host, pm, &argv, r, version)
}

fn int_setting(
    r: &Resolved,
    name: &str,
    default: u64,
    info: &mut AppInfo,
) -> (u64, Option<Setting>) {
    match r.settings.get(name) {
        Some(s) => match parse_int(&s.value) {
            Some(n) if n >= 0 => (n as u64, Some(s.clone())),
            _ => {
                info.problems.push(format!(
                    "{}: {name} = {:?} is not a number; {default} assumed",
                    s.at, s.value
                ));
                (default, None)
            }
        },
        None => (default, None),
    }
}

fn finish(
    mut info: AppInfo,
    host: &Host,
    pm: u32,
    argv: &[String],
    r: Resolved,
    version: Option<String>,
) -> AppInfo {
    info.problems.extend(r.problems.iter().cloned());
    info.notes.extend(r.notes.iter().cloned());
    let major: u32 = version
        .as_deref()
        .and_then(|v| v.split('.').next()?.parse().ok())
        .unwrap_or(0);
    info.version = version;
    let (max, max_set) = int_setting(&r, "max_connections", DEFAULT_MAX_CONNECTIONS, &mut info);
    let (su, _) = int_setting(
        &r,
        "superuser_reserved_connections",
        DEFAULT_SUPERUSER_RESERVED,
        &mut info,
    );
    let (reserved, _) = if major >= 16 {
        int_setting(&r, "reserved_connections", 0, &mut info)
    } else {
        (0, None)
    };
    let cluster = r.settings.get("cluster_name").map(|s| s.value.clone());

    // Children: client backends, connections not yet started, the rest.
    let title = argv.join(" ");
    let mut clients = Vec::new();
    let mut starting = 0;
    for c in host.children(pm) {
        let t = host.cmdline(c).unwrap_or_default().join(" ");
        match classify(&t, &title, cluster.as_deref()) {
            Child::Client => clients.push(c),
            Child::Starting => starting += 1,
            Child::Other => {}
        }
    }
    info.connections = Some(clients.len() as u64);
    let anon: Vec<u64> = clients
        .iter()
        .filter_map(|c| {
            host.status_field(*c, "RssAnon")?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .collect();
    if !anon.is_empty() {
        let total = anon.iter().fold(0u64, |a, b| a.saturating_add(*b));
        info.process_bytes_per_connection = Some(total.saturating_mul(1024) / anon.len() as u64);
    }

    let ordinary = max.saturating_sub(su + reserved);
    let (source, read_from) = match &max_set {
        Some(s) => (s.source, s.at.clone()),
        None if r.config_file.is_empty() => {
            (CapSource::Default, "configuration not read".to_string())
        }
        None => (
            CapSource::Default,
            format!("not set in {}", r.files.join(", ")),
        ),
    };
    let remedy = match &max_set {
        Some(s) if s.source == CapSource::CommandLine => {
            "raise max_connections on the postmaster's command line (-c max_connections=N; postmaster.opts records it), then restart".to_string()
        }
        Some(Setting { file: Some(f), .. }) if f.ends_with("postgresql.auto.conf") => {
            "ALTER SYSTEM SET max_connections = N (postgresql.auto.conf), then restart".to_string()
        }
        Some(Setting { file: Some(f), .. }) => format!("raise max_connections in {f}, then restart"),
        _ if !r.config_file.is_empty() => format!("set max_connections in {}, then restart", r.config_file),
        _ => "set max_connections in postgresql.conf, then restart".to_string(),
    };
    let reserve = su + reserved;
    info.caps.push(AppCap {
        name: "postgres-max-connections".into(),
        scope: Scope::System,
        setting: "max_connections".into(),
        limit: max,
        used: None,
        reserve,
        per_connection: 1,
        source,
        read_from,
        explanation: format!(
            "max_connections {max} client backends, superuser_reserved_connections {su}{} kept back: ordinary roles get {ordinary}, superusers {max}",
            if major >= 16 { format!(" and reserved_connections {reserved}") } else { String::new() }
        ),
        remedy,
    });
    info.notes.push(if major >= 16 {
        format!(
            "superusers: {max}; roles with pg_use_reserved_connections: {}; other roles: {ordinary}",
            max.saturating_sub(su)
        )
    } else {
        format!("superusers: {max}; other roles: {ordinary}")
    });
    info.notes.push(format!(
        "{} client backends now; walsenders, autovacuum and background workers have slots of their own; at the cap a client gets FATAL 53300 (\"sorry, too many clients already\", or the reserved-slots message) after its startup message; when fork() fails it gets \"could not fork new process for connection\"",
        clients.len()
    ));
    if starting > 0 {
        info.notes.push(format!(
            "{starting} connections have not sent their startup message: each holds a process (not a slot) until authentication_timeout"
        ));
    }
    if major == 0 {
        info.notes.push(
            "version unknown (PG_VERSION not read): reserved_connections (16+) not applied".into(),
        );
    }
    // Settings changed in a file after the postmaster started take effect
    // for max_connections only at a restart.
    if let Some(start) = host
        .read(&format!("{}/postmaster.pid", r.data_dir))
        .ok()
        .and_then(|t| t.lines().nth(2)?.trim().parse::<u64>().ok())
    {
        for f in &r.files {
            let changed = std::fs::metadata(host.path(f))
                .and_then(|m| m.modified())
                .ok()
                .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
                .is_some_and(|d| d.as_secs() > start);
            if changed {
                info.notes.push(format!(
                    "{f} changed after the postmaster started: the running max_connections is the one read at start"
                ));
            }
        }
    }
    info.process_limits = process_limits(host, pm, &mut info);
    info
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{fixtures, process, Look, Root};
    use headroom_core::Snapshot;

    /// /proc for a postmaster (300, uid 101) with 5 background processes, 3
    /// client backends, one connection still starting, and a process of
    /// another user; data directory /data of the fixtures copied in. Shared
    /// with the tests of cli and limits.
    pub(super) fn proc_tree(r: &Root, argv: &str, nproc: &str) {
        let uid = "101\t101\t101\t101";
        let p = r.process(300, "postgres");
        p.argv(argv)
            .stat(1)
            .status(&[("Uid", uid), ("Threads", "1")])
            .limits(&[("Max processes", nproc, nproc, "processes")])
            .file("cgroup", "0::/system.slice/pg.service\n");
        r.file("/sys/fs/cgroup/system.slice/pg.service/pids.max", b"500\n");
        r.file(
            "/sys/fs/cgroup/system.slice/pg.service/pids.current",
            b"10\n",
        );
        r.file("/sys/fs/cgroup/system.slice/pids.max", b"max\n");
        let kids: Vec<(u32, String)> = vec![
            (301, "postgres: checkpointer ".into()),
            (302, "postgres: background writer ".into()),
            (303, "postgres: walwriter ".into()),
            (304, "postgres: autovacuum launcher ".into()),
            (305, "postgres: logical replication launcher ".into()),
            (306, "postgres: app postgres 127.0.0.1(40466) idle".into()),
            (307, "postgres: app postgres 127.0.0.1(40468) idle".into()),
            (308, "postgres: postgres postgres [local] idle".into()),
            (309, argv.to_string()),
        ];
        p.children(&kids.iter().map(|k| k.0).collect::<Vec<_>>());
        for (pid, title) in &kids {
            let anon = if title.contains("idle") { 3000 } else { 2300 };
            r.process(*pid, "postgres").title(title).stat(300).status(&[
                ("Uid", uid),
                ("Threads", "1"),
                ("RssAnon", &format!("    {anon} kB")),
            ]);
        }
        r.process(400, "bash")
            .stat(1)
            .status(&[("Uid", "0\t0\t0\t0"), ("Threads", "4")]);
        r.file("/proc/loadavg", b"0.00 0.01 0.05 1/120 999\n");
        r.file("/proc/sys/kernel/pid_max", b"32768\n");
        r.file("/proc/sys/kernel/threads-max", b"192726\n");
        for f in ["postgresql.conf", "postgresql.auto.conf", "PG_VERSION"] {
            let text = std::fs::read(fixtures("postgres").join("data").join(f)).unwrap();
            r.file(&format!("/data/{f}"), &text);
        }
        for f in ["01-first.conf", "10-second.conf", "9-last.conf"] {
            r.file(
                &format!("/data/conf.d/{f}"),
                std::fs::read(fixtures("postgres").join("data/conf.d").join(f)).unwrap(),
            );
        }
        r.file(
            "/data/sub/extra.conf",
            std::fs::read(fixtures("postgres").join("data/sub/extra.conf")).unwrap(),
        );
    }

    /// Shared with the tests of cli and limits.
    pub(super) fn run(r: &Root) -> (AppInfo, u64, String) {
        let snap = Snapshot {
            processes: vec![process(300, "postgres", 1024, 12, 0)],
            ..Default::default()
        };
        Look::at(r.dir()).run(inspect, snap)
    }

    #[test]
    fn ordinary_roles_get_max_less_reserved_as_measured() {
        let r = Root::new("cap");
        proc_tree(
            &r,
            "/usr/lib/postgresql/15/bin/postgres -D /data -c max_connections=10 -c superuser_reserved_connections=3",
            "unlimited",
        );
        let (info, max, binding) = run(&r);
        assert!(info.problems.is_empty(), "{:?}", info.problems);
        assert_eq!(info.version.as_deref(), Some("15"));
        assert_eq!(info.connections, Some(3));
        // The measured 7 of max_connections=10 for an ordinary role.
        let cap = &info.caps[0];
        assert_eq!(
            (cap.limit, cap.reserve, cap.source),
            (10, 3, CapSource::CommandLine)
        );
        assert_eq!((max, binding.as_str()), (7, "postgres-max-connections"));
        assert!(
            info.notes
                .contains(&"superusers: 10; other roles: 7".to_string()),
            "{:?}",
            info.notes
        );
        assert_eq!(info.process_bytes_per_connection, Some(3000 * 1024));
        let names: Vec<&str> = info
            .process_limits
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(names, vec!["threads-max", "pid-max", "cgroup-pids"]);
        assert!(
            info.notes
                .iter()
                .any(|n| n.starts_with("1 connections have not sent")),
            "{:?}",
            info.notes
        );
    }

    #[test]
    fn default_values_when_nothing_sets_them_give_97() {
        let r = Root::new("default");
        proc_tree(
            &r,
            "/usr/lib/postgresql/15/bin/postgres -D /data",
            "unlimited",
        );
        r.file("/data/postgresql.conf", b"# nothing\n");
        r.file("/data/postgresql.auto.conf", b"");
        let (info, max, _) = run(&r);
        assert_eq!(info.caps[0].source, CapSource::Default);
        assert_eq!(max, 97);
        assert!(info
            .notes
            .contains(&"superusers: 100; other roles: 97".to_string()));
    }

    #[test]
    fn reserved_connections_apply_from_16() {
        let r = Root::new("pg16");
        proc_tree(
            &r,
            "/usr/lib/postgresql/16/bin/postgres -D /data",
            "unlimited",
        );
        r.file("/data/PG_VERSION", b"16\n");
        r.file(
            "/data/postgresql.conf",
            b"max_connections 100\nreserved_connections = 5\n",
        );
        r.file("/data/postgresql.auto.conf", b"");
        let (info, max, _) = run(&r);
        assert_eq!(max, 92);
        assert!(info.notes.contains(
            &"superusers: 100; roles with pg_use_reserved_connections: 97; other roles: 92"
                .to_string()
        ));
    }
}

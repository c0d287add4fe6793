//! headroom-apps: knows the server in front of you.
//!
//! Every server operators run applies a cap of its own before any kernel
//! limit: Redis `maxclients`, nginx `worker_connections`, HAProxy `maxconn`,
//! PostgreSQL `max_connections`, memcached `-c`, the Erlang VM's port table.
//! [`inspect`] recognises the server behind a snapshot's processes from its
//! executable and command line, reads its cap where the server keeps it
//! (asking it on its own port where it answers, else its command line and
//! configuration files, else its documented default) and says where each
//! number came from. The result is an [`AppInfo`] that rides in the
//! snapshot; `headroom_core::predict` turns it into constraints.
//!
//! One file per server kind, as node_exporter has one collector per file.
//! Every path is read under [`Options::root`], so tests run on fixture trees.
//! Nothing here panics on a hostile configuration file: files are read with
//! a size limit, and whatever cannot be read becomes one line in
//! [`AppInfo::problems`] while the rest of the prediction stands.

pub mod beam;
pub mod haproxy;
pub mod headroom;
pub mod host;
pub mod memcached;
pub mod nginx;
pub mod postgres;
pub mod redis;
#[cfg(test)]
pub(crate) mod testkit;
pub mod wire;

use headroom_core::{AppInfo, ProcessInfo, Snapshot};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How to look at a server.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where `/proc` and configuration files are read from (`/` on a live host).
    pub root: PathBuf,
    /// Password for servers that authenticate (Redis `requirepass`). Never
    /// printed; taken from an option or an environment variable by the caller.
    pub redis_password: Option<String>,
    /// Longest wait for one live query (connect, request, reply).
    pub timeout: Duration,
    /// Ask the server on its own port; off, only files and command lines are read.
    pub live: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            root: PathBuf::from("/"),
            redis_password: None,
            timeout: Duration::from_millis(300),
            live: true,
        }
    }
}

/// The kinds of server headroom knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Nginx,
    Haproxy,
    Redis,
    Valkey,
    Postgres,
    Memcached,
    Beam,
    Headroom,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx",
            Kind::Haproxy => "haproxy",
            Kind::Redis => "redis",
            Kind::Valkey => "valkey",
            Kind::Postgres => "postgres",
            Kind::Memcached => "memcached",
            Kind::Beam => "beam",
            Kind::Headroom => "headroom",
        }
    }
}

/// Recognises a server from its process name (comm), the base name of its
/// executable and its command line. Servers rewrite their titles (nginx's
/// `nginx: worker process`, Redis's `redis-server 127.0.0.1:6379`), so all
/// three are looked at.
pub fn recognise(comm: &str, exe: &str, cmdline: &[String]) -> Option<Kind> {
    let exe_base = exe.rsplit('/').next().unwrap_or(exe);
    let arg0 = cmdline.first().map(String::as_str).unwrap_or("");
    let arg0_base = arg0
        .split_whitespace()
        .next()
        .unwrap_or("")
        .rsplit('/')
        .next()
        .unwrap_or("");
    let names = [comm, exe_base, arg0_base];
    let is = |n: &str| {
        names
            .iter()
            .any(|x| *x == n || x.trim_end_matches(':') == n)
    };
    if is("nginx") {
        Some(Kind::Nginx)
    } else if is("haproxy") {
        Some(Kind::Haproxy)
    } else if is("valkey-server") {
        Some(Kind::Valkey)
    } else if is("redis-server") {
        Some(Kind::Redis)
    } else if is("postgres") || is("postmaster") {
        Some(Kind::Postgres)
    } else if is("memcached") {
        Some(Kind::Memcached)
    } else if is("beam.smp") || is("beam") {
        Some(Kind::Beam)
    } else if is("headroom") && cmdline.iter().skip(1).any(|a| a == "serve") {
        Some(Kind::Headroom)
    } else {
        None
    }
}

/// What the inspection of one server works from: the snapshot's processes,
/// the one recognised as the server's main process, and how to reach it.
pub struct Seen<'a> {
    pub snap: &'a Snapshot,
    /// The process the kind was recognised from (nginx's master, the postmaster).
    pub main: &'a ProcessInfo,
    /// Its command line, argument by argument.
    pub cmdline: Vec<String>,
    /// Where to reach it on its own port (a wildcard listener becomes loopback).
    pub address: Option<SocketAddr>,
    pub opts: &'a Options,
}

/// Looks at the server behind `snap`'s processes and reads its own caps.
/// Never fails: an unknown server gives [`AppInfo::unknown`], a cap that
/// could not be read is a line in `problems`.
pub fn inspect(snap: &Snapshot, opts: &Options) -> AppInfo {
    let host = host::Host::new(&opts.root);
    let Some(first) = snap.processes.first() else {
        return AppInfo::unknown("(no process)");
    };
    // The main process is the one the others descend from (nginx's master,
    // HAProxy's master); failing that, the first recognised.
    let mut found = None;
    for p in &snap.processes {
        let cmdline = host.cmdline(p.pid).unwrap_or_default();
        let exe = host.exe(p.pid).unwrap_or_default();
        if let Some(kind) = recognise(&p.comm, &exe, &cmdline) {
            let is_root = host
                .ppid(p.pid)
                .is_none_or(|pp| !snap.processes.iter().any(|q| q.pid == pp));
            if found.is_none() || is_root {
                found = Some((kind, p, cmdline));
                if is_root {
                    break;
                }
            }
        }
    }
    let Some((kind, main, cmdline)) = found else {
        return AppInfo::unknown(&first.comm);
    };
    let seen = Seen {
        snap,
        main,
        cmdline,
        address: host::query_address(snap),
        opts,
    };
    let mut info = match kind {
        Kind::Nginx => nginx::inspect(&seen, &host),
        Kind::Haproxy => haproxy::inspect(&seen, &host),
        Kind::Redis | Kind::Valkey => redis::inspect(&seen, &host),
        Kind::Postgres => postgres::inspect(&seen, &host),
        Kind::Memcached => memcached::inspect(&seen, &host),
        Kind::Beam => beam::inspect(&seen, &host),
        Kind::Headroom => headroom::inspect(&seen, &host),
    };
    info.kind = kind.as_str().to_string();
    info.comm = main.comm.clone();
    if info.fds_per_connection == 0 {
        info.fds_per_connection = 1;
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[test]
    fn recognises_by_comm_exe_or_title() {
        assert_eq!(
            recognise(
                "nginx",
                "/usr/sbin/nginx",
                &args("nginx: master process /usr/sbin/nginx -c /tmp/n.conf")
            ),
            Some(Kind::Nginx)
        );
        assert_eq!(
            recognise(
                "redis-server",
                "/usr/bin/redis-check-rdb",
                &args("/usr/bin/redis-server 127.0.0.1:6379")
            ),
            Some(Kind::Redis)
        );
        assert_eq!(
            recognise(
                "valkey-server",
                "/usr/bin/valkey-server",
                &args("valkey-server *:6379")
            ),
            Some(Kind::Valkey)
        );
        assert_eq!(
            recognise(
                "postgres",
                "/usr/lib/postgresql/15/bin/postgres",
                &args("/usr/lib/postgresql/15/bin/postgres -D /d")
            ),
            Some(Kind::Postgres)
        );
        assert_eq!(
            recognise(
                "beam.smp",
                "/usr/lib/erlang/erts-13.1.5/bin/beam.smp",
                &args("/usr/lib/erlang/erts-13.1.5/bin/beam.smp -Q 1024 --")
            ),
            Some(Kind::Beam)
        );
        assert_eq!(
            recognise(
                "headroom",
                "/usr/bin/headroom",
                &args("headroom serve --port 1")
            ),
            Some(Kind::Headroom)
        );
        assert_eq!(
            recognise("headroom", "/usr/bin/headroom", &args("headroom flood")),
            None
        );
        assert_eq!(
            recognise(
                "python3",
                "/usr/bin/python3.11",
                &args("python3 -m http.server")
            ),
            None
        );
    }
}

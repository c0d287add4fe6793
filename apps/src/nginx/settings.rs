//! What a loaded configuration sets that bears on connections: workers,
//! `worker_connections`, `worker_rlimit_nofile`, and the listening sockets
//! its `listen` directives declare.

use super::config::{Config, Directive};
use std::collections::BTreeSet;

/// `worker_processes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerProcesses {
    Auto,
    Count(u64),
}

/// A value and where it was set (`file:line`, or `-g`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set<T> {
    pub value: T,
    pub at: String,
    pub file: String,
}

/// What the configuration sets that bears on connections.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Settings {
    pub worker_processes: Option<Set<WorkerProcesses>>,
    pub worker_connections: Option<Set<u64>>,
    pub worker_rlimit_nofile: Option<Set<u64>>,
    pub master_process: Option<bool>,
    pub accept_mutex: bool,
    /// Where the events block is (for the remedy), when there is one.
    pub events_file: Option<String>,
    /// Listening sockets each worker holds, as the configuration declares
    /// them (distinct addresses; see [`listen_sockets`]).
    pub listens: BTreeSet<String>,
    pub reuseport: bool,
    pub has_http: bool,
    /// Some location proxies (proxy_pass, fastcgi_pass, ...).
    pub proxies: bool,
    pub problems: Vec<String>,
}

/// Extracts [`Settings`] from a loaded configuration.
pub fn settings(cfg: &Config) -> Settings {
    let mut s = Settings::default();
    let mut listens: Vec<ListenSpec> = Vec::new();
    for d in &cfg.directives {
        match d.name.as_str() {
            "worker_processes" => match d.args.first().map(String::as_str) {
                Some("auto") => set_once(
                    &mut s.worker_processes,
                    WorkerProcesses::Auto,
                    d,
                    &mut s.problems,
                ),
                Some(v) => match v.parse::<u64>() {
                    Ok(n) => set_once(
                        &mut s.worker_processes,
                        WorkerProcesses::Count(n),
                        d,
                        &mut s.problems,
                    ),
                    Err(_) => s.problems.push(format!(
                        "{}: worker_processes {v:?} is not a number",
                        d.at()
                    )),
                },
                None => s
                    .problems
                    .push(format!("{}: worker_processes without a value", d.at())),
            },
            "worker_rlimit_nofile" => match d.args.first().and_then(|v| v.parse::<u64>().ok()) {
                Some(n) => set_once(&mut s.worker_rlimit_nofile, n, d, &mut s.problems),
                None => s.problems.push(format!(
                    "{}: worker_rlimit_nofile {:?} is not a number",
                    d.at(),
                    d.args
                )),
            },
            "master_process" => s.master_process = d.args.first().map(|v| v == "on"),
            "events" => {
                s.events_file.get_or_insert_with(|| d.file.clone());
                for e in d.children() {
                    match e.name.as_str() {
                        "worker_connections" => {
                            match e.args.first().and_then(|v| v.parse::<u64>().ok()) {
                                Some(n) => {
                                    set_once(&mut s.worker_connections, n, e, &mut s.problems)
                                }
                                None => s.problems.push(format!(
                                    "{}: worker_connections {:?} is not a number",
                                    e.at(),
                                    e.args
                                )),
                            }
                        }
                        "accept_mutex" => {
                            s.accept_mutex = e.args.first().is_some_and(|v| v == "on")
                        }
                        _ => {}
                    }
                }
            }
            "http" | "stream" | "mail" => {
                if d.name == "http" {
                    s.has_http = true;
                }
                walk_servers(d, &d.name, &mut listens, &mut s.proxies);
            }
            _ => {}
        }
    }
    s.reuseport = listens.iter().any(|l| l.reuseport);
    s.listens = listen_sockets(&listens);
    s
}

fn set_once<T>(slot: &mut Option<Set<T>>, value: T, d: &Directive, problems: &mut Vec<String>) {
    if let Some(prev) = slot {
        problems.push(format!(
            "{}: {} is duplicate (first at {}); nginx refuses such a file, the first is used",
            d.at(),
            d.name,
            prev.at
        ));
        return;
    }
    *slot = Some(Set {
        value,
        at: d.at(),
        file: d.file.clone(),
    });
}

/// One `listen` directive: address key, and whether it gets a socket of its
/// own even beside a wildcard on the same port.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ListenSpec {
    proto: &'static str,
    host: String,
    port: String,
    bind: bool,
    reuseport: bool,
}

fn walk_servers(d: &Directive, module: &str, out: &mut Vec<ListenSpec>, proxies: &mut bool) {
    for c in d.children() {
        if c.name.ends_with("_pass") && c.name != "fastcgi_pass_header" {
            *proxies = true;
        }
        if c.name == "server" && c.block.is_some() {
            let before = out.len();
            for l in c.children().iter().filter(|x| x.name == "listen") {
                if let Some(spec) = parse_listen(&l.args) {
                    out.push(spec);
                }
            }
            if out.len() == before && module == "http" {
                // An http server without listen listens on *:80 (*:8000 for
                // a master not started as root).
                out.push(ListenSpec {
                    proto: "tcp",
                    host: "*".into(),
                    port: "80".into(),
                    bind: false,
                    reuseport: false,
                });
            }
        }
        if c.block.is_some() {
            walk_servers(c, module, out, proxies);
        }
    }
}

fn parse_listen(args: &[String]) -> Option<ListenSpec> {
    let addr = args.first()?;
    let params = &args[1..];
    let udp = params.iter().any(|p| p == "udp");
    let reuseport = params.iter().any(|p| p == "reuseport");
    let bind = reuseport
        || params.iter().any(|p| {
            p == "bind"
                || p == "deferred"
                || [
                    "backlog=",
                    "rcvbuf=",
                    "sndbuf=",
                    "ipv6only=",
                    "so_keepalive=",
                    "fastopen=",
                    "setfib=",
                    "accept_filter=",
                ]
                .iter()
                .any(|k| p.starts_with(k))
        });
    if let Some(path) = addr.strip_prefix("unix:") {
        return Some(ListenSpec {
            proto: "unix",
            host: path.to_string(),
            port: String::new(),
            bind: true,
            reuseport,
        });
    }
    let proto = if udp { "udp" } else { "tcp" };
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':').unwrap_or("80");
        (format!("[{h}]"), port.to_string())
    } else if let Some((h, p)) = addr.rsplit_once(':') {
        (h.to_string(), p.to_string())
    } else if addr.bytes().all(|b| b.is_ascii_digit()) {
        ("*".to_string(), addr.clone())
    } else {
        (addr.clone(), "80".to_string())
    };
    let host = if host == "0.0.0.0" {
        "*".to_string()
    } else {
        host
    };
    Some(ListenSpec {
        proto,
        host,
        port,
        bind,
        reuseport,
    })
}

/// The sockets nginx opens for these `listen` directives: one per distinct
/// address; an address on a port that also has a wildcard of its family is
/// served through the wildcard's socket unless it asks for its own (`bind`,
/// `reuseport`, socket options). A `reuseport` listener is cloned per
/// worker, each worker holding its own clone in its connection table.
fn listen_sockets(specs: &[ListenSpec]) -> BTreeSet<String> {
    let wildcard = |s: &ListenSpec| {
        let v6 = s.host.starts_with('[');
        specs.iter().any(|w| {
            w.proto == s.proto
                && w.port == s.port
                && if v6 { w.host == "[::]" } else { w.host == "*" }
        })
    };
    specs
        .iter()
        .filter(|s| {
            s.proto == "unix" || s.bind || s.host == "*" || s.host == "[::]" || !wildcard(s)
        })
        .map(|s| {
            if s.proto == "unix" {
                format!("unix:{}", s.host)
            } else {
                format!("{} {}:{}", s.proto, s.host, s.port)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::Host;
    use crate::nginx::load;
    use crate::testkit::{fixtures, strings as s};

    #[test]
    fn fixture_with_glob_and_relative_includes_gives_exact_settings() {
        let host = Host::new(&fixtures("nginx"));
        let cfg = load(&host, "/etc/nginx/nginx.conf", None);
        assert!(cfg.problems.is_empty(), "{:?}", cfg.problems);
        assert_eq!(
            cfg.files,
            s(&[
                "/etc/nginx/nginx.conf",
                "/etc/nginx/events.inc",
                "/etc/nginx/conf.d/a.conf",
                "/etc/nginx/conf.d/b.conf",
                "/etc/nginx/sites/one/site.conf",
            ])
        );
        let st = settings(&cfg);
        assert_eq!(
            st.worker_processes.as_ref().unwrap().value,
            WorkerProcesses::Auto
        );
        // events.inc (relative include) sets it; the commented one does not count.
        let wc = st.worker_connections.clone().unwrap();
        assert_eq!(
            (wc.value, wc.at.as_str()),
            (1536, "/etc/nginx/events.inc:3")
        );
        assert_eq!(st.worker_rlimit_nofile.as_ref().unwrap().value, 4096);
        // a.conf: 0.0.0.0:80 and 127.0.0.1:80 (served by the wildcard), [::]:80;
        // b.conf: 127.0.0.1:8443 bind and unix socket; site.conf: 8080 reuseport.
        assert_eq!(
            st.listens.iter().cloned().collect::<Vec<_>>(),
            s(&[
                "tcp *:80",
                "tcp *:8080",
                "tcp 127.0.0.1:8443",
                "tcp [::]:80",
                "unix:/run/n.sock"
            ])
        );
        assert!(st.reuseport && st.has_http && st.proxies);
    }

    #[test]
    fn g_directives_come_first_and_count_as_command_line() {
        let host = Host::new(&fixtures("nginx"));
        let cfg = load(
            &host,
            "/etc/nginx/minimal.conf",
            Some("worker_processes 3; events { worker_connections 99; }"),
        );
        let st = settings(&cfg);
        assert_eq!(
            st.worker_processes.unwrap().value,
            WorkerProcesses::Count(3)
        );
        assert_eq!(st.worker_connections.as_ref().unwrap().file, "-g");
    }
}

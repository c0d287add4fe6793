//! `headroom advise` on live limits, each in a throwaway network namespace:
//! a backlog-8 listener flooded past it, a child under `prlimit
//! --nofile=64` hitting EMFILE, a client exhausting a 10-port range, a Redis
//! at maxclients 5. Each gets the right remedy, number and place. Needs root
//! (CI runs as root) and the eBPF probe (fd errors are seen only by it).

#[path = "util/probe.rs"]
mod probe;
#[path = "util/real/mod.rs"]
mod real;
mod util;

use probe::{Guard, Script};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;
use util::{headroom_bin, require_root, Netns};

/// `headroom advise ... --json` running in `ns`, past its first sample.
struct Advise {
    child: Guard,
}

impl Advise {
    /// Starts advise and waits (bounded) until it says it is watching with
    /// eBPF: from then on fd errors and queue peaks count.
    fn start(ns: &Netns, args: &[&str]) -> Advise {
        let bin = headroom_bin();
        let mut argv = vec![bin.to_str().expect("utf-8 path"), "advise", "--json"];
        argv.extend_from_slice(args);
        let mut cmd = ns.command(&argv);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = Guard(cmd.spawn().expect("spawn headroom advise"));
        let (tx, rx) = mpsc::channel();
        let stderr = child.0.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("headroom advise said nothing in 60 s");
        assert!(
            line.contains("eBPF on"),
            "eBPF must load here (CI installs the toolchain): {line}"
        );
        Advise { child }
    }

    /// The one JSON document it prints, once it has exited 0.
    fn output(mut self) -> Value {
        let mut stdout = self.child.0.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            let _ = tx.send(s);
        });
        let out = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("headroom advise did not finish in 60 s");
        let status = self.child.0.wait().expect("wait advise");
        assert!(status.success(), "headroom advise exited {status}: {out}");
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("advise JSON: {e}: {out}"))
    }
}

/// (kind, key, current, value) of a remedy.
fn remedy(r: &Value) -> (String, String, String, String) {
    let s = |k: &str| r[k].as_str().unwrap_or("").to_string();
    (s("kind"), s("key"), s("current"), s("value"))
}

#[test]
#[ignore = "needs root"]
fn backlog_8_flooded_gets_backlog_and_somaxconn_with_the_capacity_gained() {
    require_root();
    let ns = Netns::new("adbl");
    ns.sysctl("net.core.somaxconn", "64");
    let mut srv = Script::start(Some(&ns), &[], "listener.py", &["8"]);
    let port = srv.line();
    let adv = Advise::start(&ns, &["--port", &port, "--interval", "3"]);
    srv.send("connect 40");
    assert_eq!(srv.line(), "done");
    let doc = adv.output();
    let a = &doc["advice"][0];
    assert_eq!(
        (&a["rank"], &a["rule"], &a["severity"]),
        (&1.into(), &"listen-backlog".into(), &"hit".into()),
        "{a:#}"
    );
    assert_eq!(a["signal"]["name"], "listen-overflows");
    let n = &a["signal"]["numbers"];
    // sk_acceptq_is_full() is `depth > limit`: the kernel queues limit + 1.
    assert_eq!(
        (&n["accept_queue_peak"], &n["accept_queue_limit"]),
        (&9.into(), &8.into()),
        "{n}"
    );
    assert_eq!(n["queue_full_events"], 1, "{n}");
    assert_eq!(n["somaxconn"], 64);
    assert!(n["listen_overflows_delta"].as_u64().unwrap() >= 31, "{n}");
    assert_eq!(
        (&a["capacity_now"], &a["capacity_after"]),
        (&9.into(), &4097.into())
    );
    let r = a["remedies"].as_array().unwrap();
    assert_eq!(
        remedy(&r[0]),
        (
            "app-directive".into(),
            "listen() backlog".into(),
            "8".into(),
            "4096".into()
        )
    );
    assert_eq!(r[0]["command"], "listen(fd, 4096)");
    assert_eq!(
        remedy(&r[1]),
        (
            "sysctl".into(),
            "net.core.somaxconn".into(),
            "64".into(),
            "4096".into()
        )
    );
    assert!(r[1]["command"]
        .as_str()
        .unwrap()
        .starts_with("sysctl -w net.core.somaxconn=4096 && "));
    // net.* is per namespace: the place says so.
    assert!(
        r[1]["why_there"]
            .as_str()
            .unwrap()
            .contains("not the initial one"),
        "{}",
        r[1]
    );
}

#[test]
#[ignore = "needs root"]
fn emfile_under_prlimit_64_gets_limit_nofile_for_its_unit_or_limits_d() {
    require_root();
    let ns = Netns::new("ademf");
    let mut child = Script::start(Some(&ns), &["prlimit", "--nofile=64"], "emfile.py", &["10"]);
    let pid = child.line();
    let adv = Advise::start(&ns, &["--pid", &pid, "--interval", "3"]);
    child.send("go");
    let line = child.line();
    let (failures, total) = line.split_once(' ').expect("failures total");
    let (failures, total): (u64, u64) = (failures.parse().unwrap(), total.parse().unwrap());
    assert_eq!(failures, 11, "EMFILE once, then 10 more");
    let doc = adv.output();
    let a = &doc["advice"][0];
    assert_eq!(
        (&a["rule"], &a["severity"]),
        (&"nofile".into(), &"hit".into()),
        "{doc:#}"
    );
    let n = &a["signal"]["numbers"];
    assert_eq!(
        (&n["emfile"], &n["nofile_soft"]),
        (&failures.into(), &64.into()),
        "{n}"
    );
    assert_eq!(n["open_fds"], total);
    // 64 - open - 32 kept: nothing left; after: 65535 - open - 32.
    assert_eq!(a["capacity_now"], 0);
    assert_eq!(a["capacity_after"], 65535 - total - 32);
    let r = &a["remedies"][0];
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let unit = cgroup.lines().find_map(|l| {
        let path = l.splitn(3, ':').nth(2)?;
        path.starts_with("/system.slice/")
            .then(|| path.split('/').find(|c| c.ends_with(".service")))?
    });
    match unit {
        Some(u) => {
            assert_eq!(remedy(r).1, "LimitNOFILE");
            assert_eq!(
                r["where"],
                format!("/etc/systemd/system/{u}.d/90-headroom.conf")
            );
        }
        None => {
            assert_eq!(
                remedy(r),
                (
                    "limit-nofile".into(),
                    "nofile".into(),
                    "64".into(),
                    "65535".into()
                )
            );
            assert_eq!(r["where"], "/etc/security/limits.d/90-headroom.conf");
            assert_eq!(
                r["command"],
                "printf 'root soft nofile 65535\\nroot hard nofile 65535\\n' >> /etc/security/limits.d/90-headroom.conf"
            );
        }
    }
}

/// Connects to 127.0.0.1:PORT until connect() fails with EADDRNOTAVAIL,
/// then EXTRA more times; prints its pid, waits for a line, prints
/// "CONNECTED FAILURES", holds the connections until stdin closes.
const PORT_CLIENT: &str = r#"
import errno, os, socket, sys
port, extra = int(sys.argv[1]), int(sys.argv[2])
print(os.getpid(), flush=True)
sys.stdin.readline()
held, failures = [], 0
while failures <= extra:
    c = socket.socket()
    try:
        c.connect(("127.0.0.1", port))
        held.append(c)
    except OSError as e:
        if e.errno != errno.EADDRNOTAVAIL:
            raise
        c.close()
        failures += 1
print(len(held), failures, flush=True)
sys.stdin.read()
"#;

#[test]
#[ignore = "needs root"]
fn a_client_exhausting_10_ports_gets_the_port_range_or_source_addresses() {
    require_root();
    let ns = Netns::new("adprt");
    // The listener takes its port first, from the default range.
    let srv = Script::start(Some(&ns), &[], "listener.py", &["64"]);
    let port = srv.line();
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 40009");
    let mut cli = python_script(&ns, PORT_CLIENT, &[&port, "4"]);
    let pid = cli.line();
    let adv = Advise::start(&ns, &["--pid", &pid, "--interval", "3"]);
    cli.send("go");
    assert_eq!(cli.line(), "10 5", "10 ports, then 5 EADDRNOTAVAIL");
    let doc = adv.output();
    let a = &doc["advice"][0];
    assert_eq!(
        (&a["rule"], &a["severity"]),
        (&"ephemeral-ports".into(), &"hit".into()),
        "{doc:#}"
    );
    let n = &a["signal"]["numbers"];
    assert_eq!(
        (
            &n["eaddrnotavail"],
            &n["connections"],
            &n["port_range_size"]
        ),
        (&5.into(), &10.into(), &10.into()),
        "{n}"
    );
    assert_eq!(
        remedy(&a["remedies"][0]),
        (
            "sysctl".into(),
            "net.ipv4.ip_local_port_range".into(),
            "40000 40009".into(),
            "1024 65535".into()
        )
    );
    assert_eq!(
        (&a["capacity_now"], &a["capacity_after"]),
        (&10.into(), &64512.into())
    );
    let s = &doc["advice"][1];
    assert_eq!(s["rule"], "source-addresses");
    assert_eq!(remedy(&s["remedies"][0]).0, "source-addresses");
    assert_eq!(
        (&s["capacity_now"], &s["capacity_after"]),
        (&10.into(), &20.into())
    );
}

/// An inline Python script run in `ns` (Script joins an absolute path as is).
fn python_script(ns: &Netns, code: &str, args: &[&str]) -> Script {
    let dir = std::env::temp_dir().join(format!("headroom-advise-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}.py", ns.name));
    std::fs::write(&path, code).unwrap();
    Script::start(Some(ns), &[], path.to_str().unwrap(), args)
}

/// Redis in `ns` on 127.0.0.1:PORT with `maxclients`, under nofile 1024.
struct Redis {
    child: Guard,
    conf: std::path::PathBuf,
    _dir: real::Scratch,
}

fn redis(ns: &Netns, port: u16, maxclients: u64) -> Redis {
    let dir = real::Scratch::new("advise-redis");
    let conf = dir.file(
        "redis.conf",
        &format!(
            "bind 127.0.0.1\nport {port}\nprotected-mode yes\ndaemonize no\nsupervised no\n\
             proc-title-template \"{{title}} {{listen-addr}} {{server-mode}} {{config-file}}\"\n\
             save \"\"\nappendonly no\ndir {d}\nlogfile {d}/redis.log\nmaxclients {maxclients}\n",
            d = dir.dir.display()
        ),
    );
    let mut cmd = ns.command(&[
        "prlimit",
        "--nofile=1024:1024",
        "--",
        real::redis::BIN,
        conf.to_str().unwrap(),
    ]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = Guard(cmd.spawn().expect("start redis-server"));
    let p = port.to_string();
    for _ in 0..200 {
        let out = ns.exec(&["redis-cli", "-p", &p, "ping"]);
        if String::from_utf8_lossy(&out.stdout).contains("PONG") {
            return Redis {
                child,
                conf,
                _dir: dir,
            };
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("redis on {port} in {} did not answer PING in 20 s", ns.name);
}

/// Opens N connections to 127.0.0.1:PORT, each answered (PING), prints
/// "N REPLY" where REPLY is what one connection more got, holds them.
const REDIS_CLIENTS: &str = r#"
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
held = []
for _ in range(n):
    c = socket.create_connection(("127.0.0.1", port))
    c.sendall(b"PING\r\n")
    assert c.recv(64).startswith(b"+PONG")
    held.append(c)
extra = socket.create_connection(("127.0.0.1", port))
extra.sendall(b"PING\r\n")
reply = extra.recv(128).decode().strip()
extra.close()
print(len(held), reply, flush=True)
sys.stdin.read()
"#;

fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u64
}

#[test]
#[ignore = "needs root"]
fn redis_at_maxclients_5_gets_maxclients_advice_with_the_next_wall() {
    require_root();
    if !real::installed(real::redis::BIN) {
        assert!(std::env::var_os("CI").is_none(), "CI installs redis-server");
        eprintln!("redis-server not installed: skipped");
        return;
    }
    let ns = Netns::new("adred");
    let port = 6390;
    let r = redis(&ns, port, 5);
    let clients = python_script(&ns, REDIS_CLIENTS, &[&port.to_string(), "5"]);
    assert_eq!(clients.line(), "5 -ERR max number of clients reached");
    let pid = r.child.0.id();
    let fds = open_fds(pid);
    let doc = Advise::start(&ns, &["--port", &port.to_string()]).output();
    assert_eq!(
        open_fds(pid),
        fds,
        "redis idle: its fd count is the snapshot's"
    );
    let a = &doc["advice"][0];
    assert_eq!(
        (&a["rule"], &a["severity"]),
        (&"app-cap".into(), &"hit".into()),
        "{doc:#}"
    );
    assert_eq!(a["signal"]["name"], "app-cap-reached");
    let n = &a["signal"]["numbers"];
    assert_eq!(
        (&n["limit"], &n["used"], &n["connections"]),
        (&5.into(), &5.into(), &5.into())
    );
    // The next wall: nofile, 1024 less the fds open now (Redis keeps no
    // reserve from accept()), plus the 5 clients held.
    let wall = 1024 - fds + 5;
    let conf = r.conf.to_str().unwrap();
    assert_eq!(
        remedy(&a["remedies"][0]),
        (
            "app-directive".into(),
            "maxclients".into(),
            "5".into(),
            wall.to_string()
        )
    );
    assert_eq!(a["remedies"][0]["where"], conf);
    assert_eq!(
        a["remedies"][0]["command"],
        format!("`maxclients {wall}` in {conf}; now, without a restart: redis-cli -p {port} CONFIG SET maxclients {wall}")
    );
    assert_eq!(
        (&a["capacity_now"], &a["capacity_after"]),
        (&5.into(), &wall.into())
    );
    assert_eq!(a["next_wall"], format!("nofile at {wall} connections"));
    // Its own query was refused at the cap: that input is named.
    assert!(
        doc["missing"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m.as_str().unwrap().contains("refused this query")),
        "{}",
        doc["missing"]
    );
}

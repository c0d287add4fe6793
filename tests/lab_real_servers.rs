//! The lab on real servers: Debian's own Redis, memcached, HAProxy, nginx,
//! PostgreSQL and the Erlang VM, each started by the test with a cap of its
//! own, flooded in its protocol mode with `--port` for the model's
//! prediction. The measured `held` must equal the prediction (within 1%,
//! exactly where the application's cap is exact), the breaking point must
//! name the server's own refusal, and `held` must agree with the server's
//! own counter. Then again with a kernel limit binding first. And the
//! flood's own robustness: a mode that does not match the server, a server
//! that speaks first, a garbled reply give a named cause within --timeout.
//! See docs/lab.md for the table these tests reproduce.

#[path = "util/lab.rs"]
mod lab;
#[path = "util/real/mod.rs"]
mod real;
mod util;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use util::{require_root, Netns};

/// The PostgreSQL server binary.
const PG: &str = "/usr/lib/postgresql/15/bin/postgres";

/// One flood at a time: these tests measure servers on a shared 2-core host,
/// and two floods side by side would measure each other.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn installed(bin: &str) -> bool {
    if real::installed(bin) {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{bin} is not installed: scripts/setup.sh installs it, CI must have it");
    }
    eprintln!("skipped: {bin} is not installed");
    false
}

/// `headroom flood` against `addr` in `mode` with `--port`, plus `extra`.
fn flood(addr: SocketAddr, mode: &str, n: u64, extra: &[&str]) -> Value {
    let target = addr.to_string();
    let port = addr.port().to_string();
    let n = n.to_string();
    let mut args = vec![
        "--target", &target, "--port", &port, "--mode", mode, "-n", &n,
    ];
    args.extend_from_slice(extra);
    lab::flood(None, &args)
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// The model's prediction and what the flood measured, as `(predicted, measured)`.
fn prediction(r: &Value) -> (u64, u64) {
    let p = &r["prediction"];
    assert!(p.is_object(), "no prediction: {r:#}");
    (u(&p["predicted_max_connections"]), u(&p["measured"]))
}

fn within_1pct(predicted: u64, measured: u64) -> bool {
    measured.abs_diff(predicted) * 100 <= predicted
}

/// The breaking point's server's-own cause and held count.
fn breaking_point(r: &Value) -> (&str, u64) {
    let bp = &r["breaking_point"];
    assert!(bp.is_object(), "no breaking point: {r:#}");
    (bp["cause"].as_str().unwrap(), u(&bp["held"]))
}

fn failures(r: &Value, kind: &str) -> u64 {
    r["failures"][kind].as_u64().unwrap_or(0)
}

/// Redis `maxclients 100`: PING answered by 100, `-ERR max number of
/// clients reached` for the rest; the prediction is maxclients itself.
#[test]
fn redis_maxclients() {
    if !installed(real::redis::BIN) {
        return;
    }
    let _one = serial();
    let redis = real::redis::redis(100, None);
    let before = real::redis::info(redis.addr, None, "stats");
    let r = flood(redis.addr, "redis", 130, &["--fail-streak", "20"]);
    let (predicted, measured) = prediction(&r);
    assert_eq!(r["prediction"]["binding"], "redis-maxclients", "{r:#}");
    assert_eq!((predicted, measured), (100, 100), "{r:#}");
    assert_eq!(breaking_point(&r), ("redis_max_clients", 100));
    assert_eq!(r["held"], 100);
    assert_eq!(r["ping"]["replies"], 100);
    assert_eq!(r["queued"], 0);
    // Redis' own counters: its cap, and one rejection per refusal the flood saw.
    assert_eq!(real::redis::maxclients(redis.addr, None), 100);
    let after = real::redis::info(redis.addr, None, "stats");
    let rejected = |info: &str| stat(info, "rejected_connections");
    assert_eq!(
        rejected(&after) - rejected(&before),
        failures(&r, "redis_max_clients"),
        "{r:#}"
    );
    eprintln!(
        "redis maxclients 100: predicted {predicted}, held {}, queued {}, rejected_connections +{}",
        r["held"],
        r["queued"],
        rejected(&after) - rejected(&before)
    );
}

fn stat(info: &str, name: &str) -> u64 {
    info.lines()
        .find_map(|l| l.trim_end().strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {info:?}"))
}

/// memcached `-c 200`: `version` answered until its cap less the
/// descriptors it keeps for itself, then `ERROR Too many open connections`.
#[test]
fn memcached_maxconns() {
    if !installed(real::memcached::BIN) {
        return;
    }
    let _one = serial();
    let mc = real::memcached::memcached(200, None);
    let rejected0 = real::memcached::rejected_connections(mc.addr);
    let r = flood(mc.addr, "memcached", 300, &["--fail-streak", "20"]);
    let (predicted, measured) = prediction(&r);
    assert_eq!(r["prediction"]["binding"], "memcached-maxconns", "{r:#}");
    assert_eq!(measured, predicted, "{r:#}");
    assert_eq!(breaking_point(&r), ("memcached_too_many", predicted));
    assert_eq!(r["held"], predicted);
    assert_eq!(r["ping"]["replies"], predicted);
    // memcached counts every refusal the flood saw, and once the flood is
    // gone holds only its listener and this query.
    let rejected = real::memcached::rejected_connections(mc.addr) - rejected0;
    assert_eq!(rejected, failures(&r, "memcached_too_many"), "{r:#}");
    eprintln!(
        "memcached -c 200: predicted {predicted}, held {}, queued {}, rejected_connections +{rejected}",
        r["held"], r["queued"]
    );
}

/// HAProxy `maxconn 1000`, answering HTTP itself: it stops accepting at
/// 1000 and the rest wait in its listen backlog. In `http` mode they never
/// get an answer (backlog filling); in `connect` mode they completed the
/// TCP handshake and are counted as queued, never as held.
#[test]
fn haproxy_maxconn() {
    if !installed(real::haproxy::BIN) {
        return;
    }
    let _one = serial();
    let hap = real::haproxy::haproxy(Some(1000), true, None);
    let sock = real::haproxy::stats_socket(&hap);
    let addr = hap.addr;
    let (r, curr) = while_flooding(
        move || {
            flood(
                addr,
                "http",
                1200,
                &["--fail-streak", "20", "--timeout", "2s", "--hold", "2s"],
            )
        },
        || real::haproxy::curr_conns(&sock),
    );
    let (predicted, measured) = prediction(&r);
    assert_eq!(r["prediction"]["binding"], "haproxy-maxconn", "{r:#}");
    assert_eq!((predicted, measured), (1000, 1000), "{r:#}");
    assert_eq!(breaking_point(&r), ("backlog_filling", 1000));
    assert!(u(&r["breaking_point"]["queued"]) > 0, "{r:#}");
    assert_eq!(r["held"], 1000);
    // HAProxy's own count while the flood held everything.
    assert_eq!(curr, 1000);
    eprintln!(
        "haproxy maxconn 1000 http: predicted {predicted}, held {}, queued {} at the breaking point, CurrConns {curr}",
        r["held"], r["breaking_point"]["queued"]
    );

    // The case: connect mode used to call 2,001 held.
    let hap = real::haproxy::haproxy(Some(1000), true, None);
    let r = flood(
        hap.addr,
        "connect",
        2200,
        &["--fail-streak", "20", "--timeout", "1s"],
    );
    let limit = u(&r["accept_queue_limit"]);
    let bp = &r["breaking_point"];
    assert_eq!(u(&bp["connections"]), 1000 + limit + 1, "{r:#}");
    assert_eq!(u(&bp["queued"]), limit + 1, "{r:#}");
    assert_eq!(u(&bp["held"]), 1000);
    assert_eq!(
        (r["held"].clone(), u(&r["queued"])),
        (1000.into(), limit + 1)
    );
    assert_eq!(prediction(&r), (1000, 1000));
    assert_eq!(
        real::haproxy::curr_conns(&real::haproxy::stats_socket(&hap)),
        0,
        "the flood is over"
    );
    eprintln!(
        "haproxy maxconn 1000 connect: opened {}, held {}, queued {}",
        r["opened"], r["held"], r["queued"]
    );
}

/// Runs `flood` on a thread and samples `counter` meanwhile; returns the
/// flood's report and the count sampled most often (the plateau of its
/// hold; 0s, and transients as the flood starts or lets go, lose).
fn while_flooding(
    flood: impl FnOnce() -> Value + Send + 'static,
    counter: impl Fn() -> u64,
) -> (Value, u64) {
    let t = std::thread::spawn(flood);
    let mut seen = std::collections::BTreeMap::<u64, u32>::new();
    while !t.is_finished() {
        let n = counter();
        if n > 0 {
            *seen.entry(n).or_default() += 1;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let plateau = seen
        .iter()
        .max_by_key(|(n, times)| (**times, **n))
        .map_or(0, |(n, _)| *n);
    (t.join().expect("flood thread"), plateau)
}

/// Kernel limit first: Redis under `nofile` 200 it cannot raise lowers
/// maxclients to 200 - 32 = 168 itself, and refuses past it.
#[test]
#[ignore = "needs root"]
fn redis_under_low_nofile() {
    require_root();
    if !installed(real::redis::BIN) {
        return;
    }
    let _one = serial();
    let redis = real::redis::redis(1000, Some(200));
    let r = flood(redis.addr, "redis", 220, &["--fail-streak", "20"]);
    assert_eq!(prediction(&r), (168, 168), "{r:#}");
    assert_eq!(breaking_point(&r), ("redis_max_clients", 168));
    assert_eq!(real::redis::maxclients(redis.addr, None), 168);
    eprintln!("redis under nofile 200: predicted 168, held {}", r["held"]);
}

/// Kernel limit first, seen in the server: Redis with maxclients 1000 whose
/// `nofile` is lowered to 200 while it runs (prlimit --pid). Its accept()
/// fails with EMFILE, connections wait in the backlog unanswered, and the
/// flood, reading the server's fd table, names EMFILE.
#[test]
#[ignore = "needs root"]
fn redis_nofile_lowered_live() {
    require_root();
    if !installed(real::redis::BIN) {
        return;
    }
    let _one = serial();
    let redis = real::redis::redis(1000, None);
    let out = util::run(std::process::Command::new("prlimit").args([
        "--pid",
        &redis.pid.to_string(),
        "--nofile=200:200",
    ]));
    assert!(out.status.success(), "prlimit --pid: {out:?}");
    let r = flood(
        redis.addr,
        "redis",
        300,
        &["--fail-streak", "20", "--timeout", "2s"],
    );
    let (predicted, measured) = prediction(&r);
    assert_eq!(r["prediction"]["binding"], "nofile", "{r:#}");
    assert!(within_1pct(predicted, measured), "{r:#}");
    assert_eq!(breaking_point(&r).0, "server_emfile", "{r:#}");
    assert!(u(&r["breaking_point"]["queued"]) > 0, "{r:#}");
    // The held connections still answer: Redis serves them, it only cannot
    // accept more.
    assert_eq!(r["held"], measured);
    eprintln!(
        "redis nofile lowered to 200 live: predicted {predicted}, held {measured}, queued {}",
        r["breaking_point"]["queued"]
    );
}

/// Kernel limit first, on the client's side: memcached (cap 4096) inside a
/// namespace whose ip_local_port_range is 1000 ports. The flood, in the same
/// namespace, runs out of ephemeral ports to it at exactly 1000: the model
/// names that wall before the server's own.
#[test]
#[ignore = "needs root"]
fn memcached_behind_a_small_port_range() {
    require_root();
    if !installed(real::memcached::BIN) {
        return;
    }
    let _one = serial();
    let ns = Netns::new("mcports");
    let port = 21500u16;
    let port_s = port.to_string();
    let _mc = lab::ServerIn::start(
        &ns,
        &[
            real::memcached::BIN,
            "-u",
            "nobody",
            "-l",
            "127.0.0.1",
            "-U",
            "0",
            "-p",
            &port_s,
            "-c",
            "4096",
        ],
        port,
    );
    ns.sysctl("net.ipv4.ip_local_port_range", "20000 20999");
    let target = format!("127.0.0.1:{port}");
    let r = lab::flood(
        Some(&ns),
        &[
            "--target",
            &target,
            "--port",
            &port_s,
            "--mode",
            "memcached",
            "-n",
            "1100",
            "--sources",
            "1",
            "--fail-streak",
            "20",
        ],
    );
    assert_eq!(r["prediction"]["binding"], "ephemeral-ports", "{r:#}");
    assert_eq!(prediction(&r), (1000, 1000), "{r:#}");
    assert_eq!(breaking_point(&r), ("eaddrnotavail", 1000));
    assert_eq!(r["held"], 1000);
    eprintln!(
        "memcached behind 1000 ports: predicted 1000, held {}",
        r["held"]
    );
}

/// A tiny misbehaving server on 127.0.0.1:0, one thread per connection.
fn misbehaving(serve: fn(std::net::TcpStream)) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for c in l.incoming().map_while(Result::ok) {
            std::thread::spawn(move || serve(c));
        }
    });
    addr
}

/// Bad input never hangs past --timeout nor panics: a server that speaks
/// first, one that garbles, one that never answers, and a real server in
/// the wrong mode each give a named failure.
#[test]
fn bad_input_gives_a_named_cause_within_the_timeout() {
    let _one = serial();
    let banner = misbehaving(|mut c| {
        let _ = c.write_all(b"220 mail.example ESMTP ready\r\n");
        std::thread::sleep(Duration::from_secs(5));
    });
    let garbled = misbehaving(|mut c| {
        let mut buf = [0u8; 256];
        let _ = c.read(&mut buf);
        let _ = c.write_all(b"\x00\x01\xfe garbage\r\n");
        std::thread::sleep(Duration::from_secs(5));
    });
    let silent = misbehaving(|mut c| {
        let mut buf = [0u8; 256];
        while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
    });
    let run = |addr: SocketAddr, mode: &str| {
        let t0 = Instant::now();
        let r = lab::flood(
            None,
            &[
                "--target",
                &addr.to_string(),
                "--mode",
                mode,
                "-n",
                "4",
                "--concurrency",
                "4",
                "--fail-streak",
                "2",
                "--timeout",
                "1s",
                // Line mode takes any line back without it.
                "--expect",
                "ping",
            ],
        );
        // Attempts run side by side: the whole flood is one timeout and
        // the process start, nowhere near a hang.
        assert!(
            t0.elapsed() < Duration::from_secs(6),
            "{mode} vs {addr}: {:?}",
            t0.elapsed()
        );
        assert_eq!(r["opened"], 0, "{mode} vs {addr}: {r:#}");
        let bp = r["breaking_point"].clone();
        (
            bp["cause"].as_str().unwrap_or("none").to_string(),
            bp["detail"].as_str().unwrap_or("").to_string(),
        )
    };
    for mode in ["redis", "memcached", "http", "postgres", "line"] {
        let (cause, detail) = run(banner, mode);
        assert_eq!(cause, "protocol", "{mode} vs a banner: {detail}");
        assert!(detail.contains("220 mail.example"), "{mode}: {detail}");
        let (cause, detail) = run(garbled, mode);
        assert_eq!(cause, "protocol", "{mode} vs garbage: {detail}");
        let (cause, _) = run(silent, mode);
        assert_eq!(cause, "no_reply", "{mode} vs a silent server");
    }
    if installed(real::redis::BIN) {
        let redis = real::redis::redis(100, None);
        // Redis takes an HTTP request for an attack and closes.
        assert_eq!(run(redis.addr, "http").0, "closed");
        // A PostgreSQL startup message is no Redis command: Redis waits.
        assert_eq!(run(redis.addr, "postgres").0, "no_reply");
        let (cause, detail) = run(redis.addr, "memcached");
        assert_eq!(cause, "protocol", "{detail}");
    }
}

/// The Erlang VM as a line echo server (`+Q ports`, gen_tcp, backlog
/// 128): the beam helper's server holds connections without a word, and
/// `line` mode needs an answer to count a connection as served.
fn beam_echo(ports: u64) -> real::Running {
    let scratch = real::Scratch::new("beam-echo");
    let port = real::free_port();
    let code = format!(
        "{{ok,L}}=gen_tcp:listen({port},[binary,{{packet,line}},{{active,false}},{{reuseaddr,true}},{{backlog,128}},{{ip,{{127,0,0,1}}}}]), \
         Serve = fun S(C) -> case gen_tcp:recv(C,0) of {{ok,D}} -> gen_tcp:send(C,D), S(C); _ -> gen_tcp:close(C) end end, \
         Acc = fun A() -> case gen_tcp:accept(L) of {{ok,C}} -> P = spawn(fun() -> receive go -> Serve(C) end end), \
         ok = gen_tcp:controlling_process(C,P), P ! go, A(); {{error,_}} -> receive after 100 -> ok end, A() end end, Acc()."
    );
    let mut cmd = std::process::Command::new(real::beam::ERL);
    cmd.args(["-noshell", "+Q", &ports.to_string(), "-eval", &code])
        .env("HOME", &scratch.dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    real::Running::start(cmd, addr, scratch)
}

/// nginx with keep-alive never refuses: past its connections it closes
/// idle keep-alive ones to make room for new ones. The flood reports it so:
/// served in all, held at once, closed by the server; the prediction is
/// compared with what it held at once.
///
/// nginx drains idle connections (32 at a time) once no more than 1/16 of a
/// worker's connections are free, so a worker holds at most
/// worker_connections - 2 - worker_connections / 16: 958 for one worker x
/// 1024, exactly; 2 x 478 for the 2 x 512, reached when both
/// workers peak together. A few attempts in flight (`--concurrency 8`)
/// keep the flood's count close behind the server's: a connection counts
/// from the moment its answer arrives, and with 128 in flight nginx drains
/// while up to that many of its connections are not counted yet.
#[test]
fn nginx_closes_idle_to_make_room() {
    if !installed(real::nginx::NGINX) {
        return;
    }
    let _one = serial();
    for (workers, connections) in [(1, 1024), (2, 512)] {
        let nginx = real::nginx::nginx(workers, connections, None);
        let r = flood(nginx.addr, "http", 3000, &["--concurrency", "8"]);
        // nginx's own count of what it holds, per worker, after the flood
        // gave its connections back: none left behind.
        let left: u64 = real::nginx::nginx_established(&nginx)
            .iter()
            .map(|w| w.1)
            .sum();
        assert_eq!(r["stop"], "target", "{r:#}");
        assert_eq!(r["served_total"], 3000, "{r:#}");
        let at_once = u(&r["held_at_once"]);
        assert!(u(&r["closed_by_server"]) > 0, "{r:#}");
        assert_eq!(breaking_point(&r), ("closes_idle", at_once));
        assert_eq!(r["prediction"]["measured_as"], "held_at_once");
        assert_eq!(r["prediction"]["binding"], "nginx-worker-connections");
        let (predicted, measured) = prediction(&r);
        eprintln!(
            "nginx {workers} x {connections}: predicted {predicted}, held at once {at_once}, held at the end {}, closed {}",
            r["held"], r["closed_by_server"]
        );
        assert_eq!(measured, at_once);
        assert_eq!(left, 0);
        if workers == 1 {
            assert_eq!(measured, predicted, "{r:#}");
        } else {
            assert!(within_1pct(predicted, measured), "{r:#}");
        }
    }
}

/// nginx with `worker_rlimit_nofile 200` below its 512 worker_connections:
/// the kernel limit binds first, accept4() fails with EMFILE (in its error
/// log), connections wait in the backlog, and the flood names EMFILE.
#[test]
fn nginx_under_worker_rlimit_nofile() {
    if !installed(real::nginx::NGINX) {
        return;
    }
    let _one = serial();
    let nginx = real::nginx::nginx(2, 512, Some(200));
    let addr = nginx.addr;
    let t0 = Instant::now();
    let (r, counted) = while_flooding(
        move || {
            flood(
                addr,
                "http",
                1000,
                &["--fail-streak", "20", "--timeout", "2s", "--hold", "2s"],
            )
        },
        // nginx's own count (its workers' established sockets), in the hold.
        || {
            if t0.elapsed() < Duration::from_millis(4500) {
                return 0;
            }
            real::nginx::nginx_established(&nginx)
                .iter()
                .map(|w| w.1)
                .sum()
        },
    );
    assert_eq!(breaking_point(&r).0, "server_emfile", "{r:#}");
    assert!(u(&r["breaking_point"]["queued"]) > 0, "{r:#}");
    let log = real::nginx::nginx_error_log(&nginx);
    assert!(log.contains("Too many open files"), "{log}");
    let (predicted, measured) = prediction(&r);
    eprintln!(
        "nginx 2 x 512, worker_rlimit_nofile 200: predicted {predicted} ({}), held {measured}, queued {}, its workers hold {counted}",
        r["prediction"]["binding"], r["breaking_point"]["queued"]
    );
    assert_eq!(counted, measured);
    assert!(within_1pct(predicted, measured), "{r:#}");
}

/// PostgreSQL `max_connections 100`: the startup message is answered by a
/// backend (AuthenticationOk .. ReadyForQuery) until the slots are taken,
/// then SQLSTATE 53300. A role without SUPERUSER (as applications connect)
/// gets `max_connections` less `superuser_reserved_connections` (3) and the
/// reserved-slots message; the `postgres` superuser gets all 100 and "too
/// many clients".
#[test]
#[ignore = "needs root"]
fn postgres_max_connections() {
    require_root();
    if !installed(PG) {
        return;
    }
    let _one = serial();
    let pg = real::postgres::postgres(100, None);
    real::postgres::create_role(&pg, "flood");
    let addr = pg.addr;
    let t0 = Instant::now();
    let (r, counted) = while_flooding(
        move || {
            flood(
                addr,
                "postgres",
                160,
                &[
                    "--pg-user",
                    "flood",
                    "--pg-database",
                    "postgres",
                    "--fail-streak",
                    "20",
                    "--concurrency",
                    "16",
                    "--hold",
                    "2s",
                ],
            )
        },
        // As the superuser, on a slot kept for it, once the flood took its
        // prediction (a backend of ours then would be in it).
        || {
            if t0.elapsed() < Duration::from_millis(1500) {
                return 0;
            }
            real::postgres::client_backends(&pg)
        },
    );
    assert_eq!(breaking_point(&r), ("postgres_reserved_slots", 97), "{r:#}");
    assert_eq!(r["held"], 97);
    assert_eq!(r["ping"]["replies"], 97, "every backend answers SELECT 1");
    // PostgreSQL's own count of the flood's backends.
    assert_eq!(counted, 97);
    let (predicted, measured) = prediction(&r);
    eprintln!(
        "postgres max_connections 100, role flood: predicted {predicted} ({}), held {measured}, pg_stat_activity {counted}",
        r["prediction"]["binding"]
    );

    let su = flood(
        pg.addr,
        "postgres",
        160,
        &["--fail-streak", "20", "--concurrency", "16"],
    );
    assert_eq!(
        breaking_point(&su),
        ("postgres_too_many_clients", 100),
        "{su:#}"
    );
    assert_eq!(su["held"], 100);
    assert_eq!(predicted, measured, "{r:#}");
}

/// PostgreSQL under RLIMIT_NPROC 40 (its user's process count): the
/// postmaster cannot fork more backends and says so itself.
#[test]
#[ignore = "needs root"]
fn postgres_under_nproc() {
    require_root();
    if !installed(PG) {
        return;
    }
    let _one = serial();
    // RLIMIT_NPROC counts every process of the user: wait for the backends
    // of an earlier server to be gone.
    let end = Instant::now() + Duration::from_secs(20);
    while real::postgres::postgres_tasks() > 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        real::postgres::postgres_tasks(),
        0,
        "tasks of the postgres user left"
    );
    let pg = real::postgres::postgres(100, Some(40));
    let r = flood(
        pg.addr,
        "postgres",
        80,
        &["--fail-streak", "20", "--concurrency", "8"],
    );
    assert_eq!(breaking_point(&r).0, "postgres_fork_failed", "{r:#}");
    let (predicted, measured) = prediction(&r);
    eprintln!(
        "postgres under nproc 40: predicted {predicted} ({}), held {measured}",
        r["prediction"]["binding"]
    );
    assert!(within_1pct(predicted, measured), "{r:#}");
}

/// The Erlang VM with `+Q 1024`: out of ports it stops accepting, and the
/// rest wait in its backlog (the issue's "2,766 held against 1,020
/// accepted"). In `connect` mode against the beam helper's server (which
/// holds connections without a word, backlog 4096) they are counted as
/// queued, never held; in `line` mode against an echo server they are never
/// answered.
#[test]
fn beam_ports() {
    if !installed(real::beam::ERL) {
        return;
    }
    let _one = serial();
    let beam = real::beam::beam(1024, None);
    let addr = beam.addr;
    let t0 = Instant::now();
    let (r, counted) = while_flooding(
        move || {
            flood(
                addr,
                "connect",
                6000,
                &["--fail-streak", "20", "--timeout", "1s", "--hold", "2s"],
            )
        },
        || {
            if t0.elapsed() < Duration::from_millis(1500) {
                return 0;
            }
            real::beam::beam_connections(&beam)
        },
    );
    let (predicted, measured) = prediction(&r);
    assert_eq!(r["prediction"]["binding"], "beam-ports", "{r:#}");
    let limit = u(&r["accept_queue_limit"]);
    let bp = &r["breaking_point"];
    assert_eq!(bp["cause"], "timeout", "{r:#}");
    // The backlog fills to its limit, give or take the handshakes in flight
    // when it did (128 at once: some find it full at their last ACK).
    let queued = u(&bp["queued"]);
    assert!(queued > limit / 2 && queued <= limit + 1, "{r:#}");
    // Open is held plus queued, plus any left half-open (their last ACK met
    // a full queue): held is the VM's accepted sockets, not a difference.
    // The queue is read a moment after the count of open connections, and
    // handshakes still in flight then (at most --concurrency, 128) may land
    // in it in between: seen once, 5,110 open against 1,020 + 4,092.
    assert!(u(&bp["connections"]) + 128 >= measured + queued, "{r:#}");
    assert_eq!(u(&r["held"]), measured);
    // The VM's own count of the connections it holds, sampled from /proc
    // while the flood runs: at its port cap the VM takes a connection off
    // the backlog and closes it at every accept, so a sample can fall
    // between the two (seen once: 1015 of 1020). The flood's `held` above
    // is exact; the hand count is held to it within 1%.
    assert!(
        within_1pct(measured, counted),
        "held {measured}, the VM's sockets {counted}"
    );
    eprintln!(
        "beam +Q 1024, connect: predicted {predicted}, held {measured}, queued {queued} (limit {limit}), open {}, beam holds {counted}",
        bp["connections"]
    );
    // `held` is counted on the VM's side in one reading (its established
    // sockets that accept() gave it), so the VM churning its backlog
    // (accept, fail to make a port, close) does not move it.
    assert_eq!(measured, predicted, "{r:#}");
    drop(beam);

    let beam = beam_echo(1024);
    let r = flood(
        beam.addr,
        "line",
        1300,
        &["--expect", "ping", "--fail-streak", "20", "--timeout", "2s"],
    );
    let (cause, held) = breaking_point(&r);
    assert_eq!(cause, "backlog_filling", "{r:#}");
    assert!(u(&r["breaking_point"]["queued"]) > 0, "{r:#}");
    assert_eq!(r["held"], held);
    assert_eq!(
        r["ping"]["replies"], held,
        "every held connection echoes again"
    );
    let (predicted, measured) = prediction(&r);
    eprintln!(
        "beam +Q 1024, line echo: predicted {predicted} ({}), held {measured}, queued {}",
        r["prediction"]["binding"], r["breaking_point"]["queued"]
    );
    assert_eq!(measured, predicted, "{r:#}");
}

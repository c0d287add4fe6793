//! `headroom status --port` in front of real servers (Debian's packages,
//! started by the tests on loopback with configurations they write): the
//! server is recognised, its own cap read where it keeps it, and the
//! prediction is the number where it refuses; under a low kernel limit the
//! kernel limit (or the server's own reduction of its cap) binds instead.
//! Each number was checked against a flood of the real server
//! (tests/lab_real_servers.rs floods them).

#[path = "util/real/mod.rs"]
mod real;
#[path = "util/status.rs"]
mod status;
mod util;

use real::Running;
use serde_json::Value;
use status::status_json;
use std::net::TcpStream;
use util::require_root;

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// `status --port` of a running server.
fn status_of(r: &Running) -> Value {
    status_json(&["--port", &r.port().to_string()])
}

fn cap<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["app"]["caps"]
        .as_array()
        .unwrap_or_else(|| panic!("no app caps: {}", doc["app"]))
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no cap {name}: {}", doc["app"]))
}

/// `n` connections held open to the server (dropped with the vector).
/// The descriptors a process holds, counted from /proc apart from headroom.
fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read the server's fd table")
        .count() as u64
}

fn hold(r: &Running, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| TcpStream::connect(r.addr).expect("connect"))
        .collect()
}

fn wait_connections(r: &Running, want: u64) -> Value {
    let mut doc = status_of(r);
    for _ in 0..50 {
        if u(&doc["connections"]) == want {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        doc = status_of(r);
    }
    doc
}

#[test]
#[ignore = "needs root"]
fn redis_maxclients_binds_read_live() {
    require_root();
    let r = real::redis::redis(500, None);
    let doc = status_of(&r);
    assert_eq!(doc["app"]["kind"], "redis", "{}", doc["app"]);
    assert_eq!(doc["binding"], "redis-maxclients", "{doc}");
    assert_eq!(u(&doc["predicted_max_connections"]), 500);
    let c = cap(&doc, "redis-maxclients");
    assert_eq!(c["source"], "live");
    assert_eq!(u(&c["limit"]), 500);
    assert_eq!(doc["app"]["at_cap"], "refuses-with-error");
    assert_eq!(doc["next_wall"]["constraint"], "nofile", "{doc}");
    assert_eq!(doc["next_wall"]["raise"], "maxclients");
    // Held connections do not move the prediction, they are counted.
    let _held = hold(&r, 40);
    let doc = wait_connections(&r, 40);
    assert_eq!(u(&doc["connections"]), 40);
    assert_eq!(u(&doc["predicted_max_connections"]), 500);
    assert_eq!(real::redis::connected_clients(r.addr, None), 41);
}

#[test]
#[ignore = "needs root"]
fn redis_under_a_low_nofile_lowers_its_own_cap() {
    require_root();
    let r = real::redis::redis(500, Some(300));
    let doc = status_of(&r);
    assert_eq!(doc["binding"], "redis-maxclients", "{doc}");
    // Redis could not raise nofile to 532 and set maxclients to 300 - 32.
    assert_eq!(u(&doc["predicted_max_connections"]), 268);
    let c = cap(&doc, "redis-maxclients");
    assert_eq!(c["source"], "derived");
    assert!(c["explanation"].as_str().unwrap().contains("300"), "{c}");
    assert_eq!(real::redis::maxclients(r.addr, None), 268);
}

#[test]
#[ignore = "needs root"]
fn redis_with_a_password_it_was_not_given_is_read_from_its_file() {
    require_root();
    let r = real::redis::redis_with(500, None, Some("s3cret-pw"));
    let out = status::status(&["--port", &r.port().to_string(), "--json"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("s3cret-pw"),
        "the password must never be printed"
    );
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["binding"], "redis-maxclients", "{doc}");
    assert_eq!(u(&doc["predicted_max_connections"]), 500);
    assert_eq!(cap(&doc, "redis-maxclients")["source"], "file");
    assert!(!doc["app"]["problems"].as_array().unwrap().is_empty());
}

#[test]
#[ignore = "needs root"]
fn memcached_maxconns_binds_at_its_descriptor_rule() {
    require_root();
    let r = real::memcached::memcached(1024, None);
    let doc = status_of(&r);
    assert_eq!(doc["app"]["kind"], "memcached");
    assert_eq!(doc["binding"], "memcached-maxconns", "{doc}");
    // memcached refuses a descriptor numbered maxconns - 1 or above: 1023
    // less the descriptors it holds idle (23 on Debian 12's 1.6.18).
    let idle = open_fds(r.pid);
    assert_eq!(u(&doc["predicted_max_connections"]), 1023 - idle, "{doc}");
    assert_eq!(cap(&doc, "memcached-maxconns")["source"], "live");
    let _held = hold(&r, 50);
    let doc = wait_connections(&r, 50);
    assert_eq!(u(&doc["predicted_max_connections"]), 1023 - idle);
}

#[test]
#[ignore = "needs root"]
fn memcached_without_maxconns_fast_runs_into_its_fd_limit() {
    require_root();
    let r = real::memcached::memcached_with(300, None, &["-o", "no_maxconns_fast"]);
    let doc = status_of(&r);
    // memcached set its own nofile to 300; it accepts until EMFILE.
    let idle = open_fds(r.pid);
    assert_eq!(u(&doc["predicted_max_connections"]), 300 - idle, "{doc}");
    assert_eq!(doc["app"]["at_cap"], "stops-accepting");
}

#[test]
#[ignore = "needs root"]
fn haproxy_maxconn_binds_read_from_its_stats_socket_or_its_file() {
    require_root();
    for (socket, source) in [(true, "live"), (false, "file")] {
        let r = real::haproxy::haproxy(Some(1000), socket, None);
        let doc = status_of(&r);
        assert_eq!(doc["app"]["kind"], "haproxy");
        assert_eq!(doc["binding"], "haproxy-maxconn", "{doc}");
        assert_eq!(u(&doc["predicted_max_connections"]), 1000);
        assert_eq!(cap(&doc, "haproxy-maxconn")["source"], source);
        assert_eq!(doc["app"]["at_cap"], "stops-accepting");
    }
}

#[test]
#[ignore = "needs root"]
fn haproxy_derives_maxconn_from_its_fd_limit() {
    require_root();
    let r = real::haproxy::haproxy(None, true, Some(1000));
    let doc = status_of(&r);
    assert_eq!(doc["binding"], "haproxy-maxconn", "{doc}");
    assert_eq!(u(&doc["predicted_max_connections"]), 486);
    assert_eq!(
        real::haproxy::maxconn(&real::haproxy::stats_socket(&r)),
        486
    );
}

#[test]
#[ignore = "needs root"]
fn haproxy_without_strict_limits_is_bound_by_nofile() {
    require_root();
    let r = real::haproxy::Haproxy {
        maxconn: Some(1000),
        stats_socket: true,
        nofile: Some(800),
        no_strict_limits: true,
        ..Default::default()
    }
    .start();
    let doc = status_of(&r);
    assert_eq!(doc["binding"], "nofile", "{doc}");
    let open = u(&doc["snapshot"]["processes"][0]["open_fds"]);
    assert_eq!(u(&doc["predicted_max_connections"]), 800 - open);
}

#[test]
fn an_unknown_server_says_kernel_limits_only() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    // This test process is the server: not one headroom knows.
    let doc = status_json(&["--port", &port.to_string()]);
    assert_eq!(doc["app"]["kind"], "unknown");
    let comm = doc["snapshot"]["processes"][0]["comm"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        doc["application"],
        format!("application limit unknown for {comm}: kernel limits only")
    );
    assert_eq!(doc["binding"], "nofile");
    let out = status::status(&["--port", &port.to_string()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("application limit unknown for"));
}

#[test]
#[ignore = "needs root"]
fn nginx_worker_connections_bind_counting_only_the_workers() {
    require_root();
    let r = real::nginx::nginx(2, 512, None);
    let doc = status_of(&r);
    assert_eq!(doc["app"]["kind"], "nginx", "{}", doc["app"]);
    assert_eq!(doc["binding"], "nginx-worker-connections", "{doc}");
    // Per worker: 512 slots less a listener, the channel and the 512/16 it
    // keeps free by closing idle keep-alive connections.
    assert_eq!(u(&doc["predicted_max_connections"]), 2 * (512 - 1 - 1 - 32));
    let workers = real::nginx::nginx_workers(&r);
    assert_eq!(workers.len(), 2);
    let mut holders: Vec<u64> = doc["app"]["connection_pids"]
        .as_array()
        .unwrap()
        .iter()
        .map(u)
        .collect();
    holders.sort_unstable();
    let mut want: Vec<u64> = workers.iter().map(|p| u64::from(*p)).collect();
    want.sort_unstable();
    assert_eq!(holders, want, "the master holds no client connection");
    assert_eq!(doc["app"]["at_cap"], "closes-idle");
}

#[test]
#[ignore = "needs root"]
fn nginx_with_a_low_worker_rlimit_nofile_is_bound_by_nofile() {
    require_root();
    let r = real::nginx::nginx(2, 512, Some(300));
    let doc = status_of(&r);
    assert_eq!(doc["binding"], "nofile", "{doc}");
    let n = doc["constraints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "nofile")
        .unwrap();
    // Two workers of 300 each; the master's table is not counted.
    assert_eq!(u(&n["limit"]), 600);
    assert_eq!(u(&doc["predicted_max_connections"]), 600 - u(&n["used"]));
}

#[test]
#[ignore = "needs root"]
fn postgres_max_connections_bind_with_the_superuser_reserve() {
    require_root();
    let r = real::postgres::postgres(100, None);
    let doc = status_of(&r);
    assert_eq!(doc["app"]["kind"], "postgres", "{}", doc["app"]);
    assert_eq!(doc["binding"], "postgres-max-connections", "{doc}");
    // Ordinary roles: 100 less superuser_reserved_connections 3.
    assert_eq!(u(&doc["predicted_max_connections"]), 97);
    let c = cap(&doc, "postgres-max-connections");
    assert_eq!((u(&c["limit"]), u(&c["reserve"])), (100, 3));
    assert!(doc["app"]["process_per_connection"].as_bool().unwrap());
    let no_nofile = doc["constraints"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["name"] != "nofile");
    assert!(no_nofile, "a backend per connection: no shared fd table");
}

#[test]
#[ignore = "needs root"]
fn postgres_under_a_low_nproc_is_bound_by_its_users_processes() {
    require_root();
    let r = real::postgres::postgres(100, Some(12));
    // Background workers come and go: take the reading whose task count
    // did not change while status ran.
    for _ in 0..10 {
        let before = real::postgres::postgres_tasks();
        let doc = status_of(&r);
        if real::postgres::postgres_tasks() != before {
            continue;
        }
        assert_eq!(doc["binding"], "nproc", "{doc}");
        assert_eq!(u(&doc["predicted_max_connections"]), 12 - before);
        return;
    }
    panic!("the postgres user's task count never held still");
}

#[test]
#[ignore = "needs root"]
fn the_erlang_vm_is_bound_by_its_port_table() {
    require_root();
    let r = real::beam::beam(1024, None);
    let doc = status_of(&r);
    assert_eq!(doc["app"]["kind"], "beam", "{}", doc["app"]);
    assert_eq!(doc["binding"], "beam-ports", "{doc}");
    // 1024 ports less stdio (2), the forker and the listener.
    assert_eq!(u(&doc["predicted_max_connections"]), 1020);
    assert_eq!(cap(&doc, "beam-ports")["source"], "command-line");
}

#[test]
#[ignore = "needs root"]
fn the_erlang_vm_under_a_low_nofile_is_bound_by_nofile() {
    require_root();
    let r = real::beam::beam(0, Some(300));
    let doc = status_of(&r);
    assert_eq!(doc["binding"], "nofile", "{doc}");
    let open = u(&doc["snapshot"]["processes"][0]["open_fds"]);
    assert_eq!(u(&doc["predicted_max_connections"]), 300 - open);
}

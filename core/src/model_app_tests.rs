//! The application's own caps in the model: each binds from a fixture with
//! the exact number, and the kernel limits are counted the way the server
//! spends them.

use crate::app::{AppCap, AppInfo, CapSource, ProcessLimit};
use crate::model::{predict, ModelConfig, Scope};
use crate::snapshot::{ProcessInfo, Snapshot};

fn process(pid: u32, comm: &str, nofile: u64, open: u64, conns: u64) -> ProcessInfo {
    ProcessInfo {
        pid,
        comm: comm.into(),
        nofile_soft: Some(nofile),
        nofile_hard: Some(nofile),
        open_fds: open,
        open_fds_peak: open,
        connections: conns,
        ..Default::default()
    }
}

/// The model's own fixture host (nofile 20000, 24 GiB) with these processes.
fn host(processes: Vec<ProcessInfo>) -> Snapshot {
    Snapshot {
        processes,
        ..super::tests::host()
    }
}

fn cap(name: &str, setting: &str, limit: u64, used: Option<u64>, reserve: u64) -> AppCap {
    AppCap {
        name: name.into(),
        scope: Scope::System,
        setting: setting.into(),
        limit,
        used,
        reserve,
        per_connection: 1,
        source: CapSource::Live,
        read_from: "fixture".into(),
        explanation: format!("{setting} {limit}"),
        remedy: format!("raise {setting}"),
    }
}

fn app(kind: &str, caps: Vec<AppCap>) -> AppInfo {
    AppInfo {
        kind: kind.into(),
        comm: kind.into(),
        caps,
        fds_per_connection: 1,
        fd_reserve: Some(0),
        ..Default::default()
    }
}

#[test]
fn redis_maxclients_binds_before_nofile_and_names_it_as_next_wall() {
    let mut s = host(vec![process(7, "redis-server", 20000, 10, 0)]);
    s.app = Some(app(
        "redis",
        vec![cap("redis-maxclients", "maxclients", 500, Some(0), 0)],
    ));
    let p = predict(&s, &ModelConfig::default());
    assert_eq!(p.binding, "redis-maxclients");
    assert_eq!(p.predicted_max_connections, 500);
    let next = p.next_wall.as_ref().unwrap();
    assert_eq!(next.constraint, "nofile");
    assert_eq!(next.max_connections, 19990);
    assert_eq!(next.raise.as_deref(), Some("maxclients"));
    assert_eq!(next.processes_needed, None);
    assert_eq!(
        next.describe(),
        "nofile at 19990 connections once maxclients is raised"
    );
    let c = p.binding_constraint().unwrap();
    assert_eq!(c.explanation, "maxclients 500 (read live: fixture)");
}

#[test]
fn the_servers_own_count_of_connections_is_taken_when_it_gives_one() {
    let mut s = host(vec![process(7, "redis-server", 20000, 110, 100)]);
    let mut a = app(
        "redis",
        vec![cap("redis-maxclients", "maxclients", 500, Some(120), 0)],
    );
    a.connections = Some(120);
    s.app = Some(a);
    let p = predict(&s, &ModelConfig::default());
    assert_eq!(p.connections, 120);
    assert_eq!(p.predicted_max_connections, 500);
}

#[test]
fn nginx_master_holds_no_connection_and_worker_connections_bind() {
    let mut s = host(vec![
        process(10, "nginx", 20000, 8, 0),
        process(11, "nginx", 20000, 12, 100),
        process(12, "nginx", 20000, 12, 50),
    ]);
    let mut a = app(
        "nginx",
        vec![AppCap {
            scope: Scope::Process,
            ..cap(
                "nginx-worker-connections",
                "worker_connections",
                1024,
                None,
                4,
            )
        }],
    );
    a.connection_pids = vec![11, 12];
    s.app = Some(a);
    let p = predict(&s, &ModelConfig::default());
    assert_eq!(p.connections, 150);
    assert_eq!(p.binding, "nginx-worker-connections");
    // 1024 slots - 150 used - 4 kept (a listener and the channel per worker).
    assert_eq!(p.predicted_max_connections, 1020);
    // nofile counts the two workers only: 40000 - 24 open.
    let n = p.constraint("nofile").unwrap();
    assert_eq!((n.limit, n.used, n.reserve), (40000, 24, 0));
    assert_eq!(n.max_connections, 150 + 40000 - 24);
    assert_eq!(p.processes, 2);
}

#[test]
fn a_low_worker_nofile_binds_before_worker_connections() {
    let mut s = host(vec![
        process(10, "nginx", 20000, 8, 0),
        process(11, "nginx", 300, 12, 0),
        process(12, "nginx", 300, 12, 0),
    ]);
    let mut a = app(
        "nginx",
        vec![AppCap {
            scope: Scope::Process,
            ..cap(
                "nginx-worker-connections",
                "worker_connections",
                1024,
                None,
                4,
            )
        }],
    );
    a.connection_pids = vec![11, 12];
    s.app = Some(a);
    let p = predict(&s, &ModelConfig::default());
    assert_eq!(p.binding, "nofile");
    assert_eq!(p.predicted_max_connections, 600 - 24);
    // The per-process wall: more workers, not a bigger setting.
    assert!(p.next_wall.as_ref().unwrap().processes_needed.is_some());
}

#[test]
fn a_proxy_spends_two_descriptors_per_connection() {
    let mut s = host(vec![process(20, "haproxy", 1000, 20, 0)]);
    let mut a = app(
        "haproxy",
        vec![cap("haproxy-maxconn", "maxconn", 4000, Some(0), 0)],
    );
    a.fds_per_connection = 2;
    s.app = Some(a);
    let p = predict(&s, &ModelConfig::default());
    assert_eq!(p.binding, "nofile");
    assert_eq!(p.predicted_max_connections, (1000 - 20) / 2);
    assert_eq!(p.constraint("nofile").unwrap().per_connection, 2);
    assert_eq!(p.constraint("file-max").unwrap().per_connection, 2);
}

#[test]
fn postgres_reserves_superuser_slots_and_ignores_the_postmasters_table() {
    let mut s = host(vec![process(30, "postgres", 1000, 12, 0)]);
    let mut a = app(
        "postgres",
        vec![cap(
            "postgres-max-connections",
            "max_connections",
            100,
            Some(10),
            3,
        )],
    );
    a.connections = Some(10);
    a.process_per_connection = true;
    a.process_bytes_per_connection = Some(3 << 20);
    s.app = Some(a);
    let p = predict(&s, &ModelConfig::default());
    assert!(p.constraint("nofile").is_none());
    assert_eq!(p.binding, "postgres-max-connections");
    assert_eq!(p.predicted_max_connections, 97);
    let mem = p.constraint("memory").unwrap();
    assert_eq!(mem.per_connection, (3 << 20) + 2048);
    assert!(mem.explanation.contains("measured"));
}

#[test]
fn a_process_limit_binds_a_server_with_a_process_per_connection() {
    let mut s = host(vec![process(30, "postgres", 1000, 12, 0)]);
    let mut a = app(
        "postgres",
        vec![cap(
            "postgres-max-connections",
            "max_connections",
            100,
            Some(0),
            3,
        )],
    );
    a.connections = Some(0);
    a.process_per_connection = true;
    a.process_limits = vec![ProcessLimit {
        name: "nproc".into(),
        scope: Scope::Process,
        limit: 40,
        used: 7,
        explanation: "RLIMIT_NPROC 40 of uid 104: 7 tasks".into(),
        remedy: "raise LimitNPROC=".into(),
    }];
    s.app = Some(a);
    let p = predict(&s, &ModelConfig::default());
    assert_eq!(p.binding, "nproc");
    assert_eq!(p.predicted_max_connections, 33);
    let c = p.binding_constraint().unwrap();
    assert_eq!((c.unit.as_str(), c.headroom), ("processes", 33));
}

#[test]
fn an_unknown_server_gets_kernel_limits_only_and_says_so() {
    let mut s = host(vec![process(40, "python3", 20000, 10, 0)]);
    s.app = Some(AppInfo::unknown("python3"));
    let p = predict(&s, &ModelConfig::default());
    assert_eq!(p.binding, "nofile");
    // The configured reserve (32) applies to a server nobody knows.
    assert_eq!(p.predicted_max_connections, 20000 - 10 - 32);
    assert_eq!(
        s.app.as_ref().unwrap().summary(),
        "application limit unknown for python3: kernel limits only"
    );
    assert!(p
        .binding_constraint()
        .unwrap()
        .remedy
        .contains("serve --workers"));
}

#[test]
fn a_known_server_whose_cap_could_not_be_read_still_gets_a_prediction() {
    let mut s = host(vec![process(50, "redis-server", 20000, 10, 0)]);
    let mut a = app("redis", Vec::new());
    a.problems = vec!["CONFIG GET maxclients: NOAUTH Authentication required".into()];
    s.app = Some(a);
    let p = predict(&s, &ModelConfig::default());
    assert_eq!(p.binding, "nofile");
    assert_eq!(p.predicted_max_connections, 19990);
    assert_eq!(
        s.app.as_ref().unwrap().summary(),
        "redis (redis): its connection cap could not be read: kernel limits only"
    );
    // Read without a problem and no cap set is not a failure to read.
    let none = app("headroom", Vec::new());
    assert_eq!(
        none.summary(),
        "headroom (headroom): no connection cap of its own: kernel limits only"
    );
    assert!(!p
        .binding_constraint()
        .unwrap()
        .remedy
        .contains("serve --workers"));
}

#[test]
fn a_tcp_proxys_upstream_connections_are_not_clients() {
    // 100 clients and their 100 upstream connections: 200 TCP connections,
    // 213 fds open of 1500.
    let mut s = host(vec![process(20, "haproxy", 1500, 213, 200)]);
    let mut a = app(
        "haproxy",
        vec![cap("haproxy-maxconn", "maxconn", 1000, None, 0)],
    );
    a.fds_per_connection = 2;
    s.app = Some(a.clone());
    let p = predict(&s, &ModelConfig::default());
    assert_eq!(p.connections, 100);
    assert_eq!(p.binding, "nofile");
    // 100 held + (1500 - 213) / 2 = 743, as the proxy really held.
    assert_eq!(p.predicted_max_connections, 743);
    // The server's own count, when it gives one, is taken as it is.
    a.connections = Some(100);
    s.app = Some(a);
    assert_eq!(
        predict(&s, &ModelConfig::default()).predicted_max_connections,
        743
    );
}

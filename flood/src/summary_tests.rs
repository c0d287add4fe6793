//! Tests of the merged report: sums, breaking points, what the server view changes.

use super::*;
use crate::outcome::Failure;
use crate::report::Recorded;

fn worker(index: u32, opened: u64, stop: StopReason, refused: u64) -> WorkerReport {
    let mut failures = Failures::default();
    for _ in 0..refused {
        failures.record(&Failure::new(FailureKind::Refused, "-32000: full"));
    }
    let mut h = histogram();
    for v in 1..=opened {
        h.record(v * 100).unwrap();
    }
    WorkerReport {
        index,
        final_: false,
        attempted: opened + refused,
        opened,
        held: opened,
        stop,
        open_ms: 500,
        first_failure_after: (refused > 0).then_some(opened),
        failures,
        latency: Recorded::from_histogram(&h),
        nofile: 20000,
        open_cpu_us: opened * 50,
        bomb: None,
        ping: None,
        served_total: 0,
        closed_idle: 0,
        timeline: Vec::new(),
    }
}

#[test]
fn merge_sums_workers_and_names_the_breaking_point() {
    let a = worker(0, 300, StopReason::Failure, 40);
    let b = worker(1, 170, StopReason::Target, 10);
    let r = FloodReport::merge(
        "127.0.0.1:1".parse().unwrap(),
        Mode::Mcp,
        1,
        600,
        &[a, b],
        &[],
    );
    assert_eq!((r.attempted, r.opened, r.held), (520, 470, 470));
    assert_eq!(r.stop, StopReason::Failure);
    assert_eq!(r.failures[&FailureKind::Refused], 50);
    let bp = r.breaking_point.as_ref().unwrap();
    assert_eq!(bp.connections, 470);
    assert_eq!(bp.cause, FailureKind::Refused);
    assert_eq!(bp.detail, "-32000: full");
    assert_eq!(
        r.server_refusal, None,
        "Failure::new carries no refusal object"
    );
    assert_eq!(r.latency.count, 470);
    assert_eq!(r.open_rate_per_second, 940.0);
    // 50 us per opened in each worker: (300 + 170) x 50 us.
    assert_eq!(r.client_cpu_seconds, 0.0235);
    assert_eq!(r.client_cpu_us_per_open, 50.0);
    assert_eq!(r.measured(), 470);
    // Two side-by-side workers: first failure after about 2 x 170.
    assert_eq!(r.first_failure_after, Some(340));
}

#[test]
fn prediction_check_takes_the_clients_port_wall_when_it_comes_first() {
    let server = headroom_core::Prediction {
        connections: 10,
        predicted_max_connections: 59_850,
        binding: "nofile".into(),
        constraints: Vec::new(),
        processes: 3,
        next_wall: None,
    };
    // 30,000 ports, one source, none in use: the flood's wall.
    let ports = headroom_core::ephemeral_ports_per_destination((30000, 59999), 1, 0, 0);
    let c = PredictionCheck::new(&server, Some(&ports), 30_000);
    assert_eq!(c.predicted_max_connections, 30_000);
    assert_eq!(c.binding, "ephemeral-ports");
    assert!(
        c.explanation.ends_with("(the client's side)"),
        "{}",
        c.explanation
    );
    assert_eq!(c.ratio, 1.0);
    // Two sources: the server's room (59,850 less the 10 it holds) comes first.
    let ports = headroom_core::ephemeral_ports_per_destination((30000, 59999), 2, 0, 0);
    let c = PredictionCheck::new(&server, Some(&ports), 59_840);
    assert_eq!(
        (c.predicted_max_connections, c.binding.as_str()),
        (59_840, "nofile")
    );
    let c = PredictionCheck::new(&server, None, 0);
    assert_eq!((c.predicted_max_connections, c.ratio), (59_840, 0.0));
}

#[test]
fn no_breaking_point_when_target_reached() {
    let r = FloodReport::merge(
        "127.0.0.1:1".parse().unwrap(),
        Mode::Connect,
        1,
        100,
        &[worker(0, 100, StopReason::Target, 0)],
        &[],
    );
    assert_eq!(r.breaking_point, None);
    assert_eq!(r.measured(), 100);
    assert!(r.render().contains("every requested connection attempted"));
}

#[test]
fn first_refusal_object_survives_merge() {
    let mut a = worker(0, 10, StopReason::Failure, 0);
    let refusal = RpcError {
        code: -32000,
        message: "full".into(),
        limit: Some("nofile".into()),
        max: Some(10),
    };
    a.failures.record(&Failure::refused(refusal.clone()));
    let b = worker(1, 10, StopReason::Failure, 3);
    let r = FloodReport::merge(
        "127.0.0.1:1".parse().unwrap(),
        Mode::Mcp,
        1,
        30,
        &[b, a],
        &[],
    );
    assert_eq!(r.server_refusal, Some(refusal));
    assert_eq!(r.failures[&FailureKind::Refused], 4);
}

#[test]
fn report_json_field_names() {
    let r = FloodReport::merge(
        "127.0.0.1:1".parse().unwrap(),
        Mode::Mcp,
        1,
        10,
        &[worker(0, 5, StopReason::Failure, 5)],
        &[],
    );
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["mode"], "mcp");
    assert_eq!(v["stop"], "failure");
    assert_eq!(v["failures"]["refused"], 5);
    assert_eq!(v["breaking_point"]["cause"], "refused");
    assert_eq!(v["breaking_point"]["connections"], 5);
}

fn target() -> SocketAddr {
    "127.0.0.1:1".parse().unwrap()
}

/// A protocol-mode worker: `events` as (µs, delta).
fn proto_worker(index: u32, events: &[(u64, i64)], closed_idle: u64) -> WorkerReport {
    let served = events.iter().filter(|e| e.1 > 0).count() as u64;
    let mut w = worker(index, served, StopReason::Target, 0);
    w.held = served - closed_idle;
    w.served_total = served;
    w.closed_idle = closed_idle;
    w.timeline = events.to_vec();
    for _ in 0..closed_idle {
        w.failures
            .record(&Failure::new(FailureKind::ClosedIdle, "idle"));
    }
    w
}

#[test]
fn held_at_once_sweeps_all_workers_timelines() {
    // Worker 0 holds 3 then loses 2; worker 1 opens 2 after that.
    let a = proto_worker(0, &[(1, 1), (2, 1), (3, 1), (5, -1), (5, -1)], 2);
    let b = proto_worker(1, &[(4, 1), (6, 1)], 0);
    assert_eq!(held_at_once(&[a.clone(), b.clone()]), Some(4));
    // A close and an open in the same microsecond: the close first.
    let c = proto_worker(2, &[(5, 1)], 0);
    assert_eq!(held_at_once(&[a.clone(), c]), Some(3));
    assert_eq!(held_at_once(&[worker(0, 3, StopReason::Target, 0)]), None);
}

#[test]
fn server_closing_idle_to_make_room_is_its_own_breaking_point() {
    // 6 served, at most 4 at once, 2 idle ones closed by the server.
    let a = proto_worker(0, &[(1, 1), (2, 1), (3, 1), (5, -1), (5, -1)], 2);
    let b = proto_worker(1, &[(4, 1), (6, 1), (7, 1)], 0);
    let r = FloodReport::merge(target(), Mode::Http, 1, 6, &[a, b], &[]);
    assert_eq!(r.stop, StopReason::Target);
    assert_eq!(
        (r.served_total, r.held_at_once, r.closed_by_server),
        (Some(6), Some(4), Some(2))
    );
    let bp = r.breaking_point.as_ref().unwrap();
    assert_eq!(
        (bp.cause, bp.connections, bp.held),
        (FailureKind::ClosesIdle, 4, 4)
    );
    assert_eq!(
        bp.detail,
        "served 6 connections in all, at most 4 at once; closed 2 idle ones to make room"
    );
    assert_eq!((r.measured(), r.measured_as()), (4, "held_at_once"));
    // Closes without new connections served after them: no breaking point.
    let a = proto_worker(0, &[(1, 1), (2, 1), (3, -1)], 1);
    let r = FloodReport::merge(target(), Mode::Http, 1, 2, &[a], &[]);
    assert_eq!(r.breaking_point, None);
    assert_eq!(r.measured_as(), "held");
    // Other modes carry none of the protocol fields.
    let r = FloodReport::merge(
        target(),
        Mode::Mcp,
        1,
        1,
        &[worker(0, 1, StopReason::Target, 0)],
        &[],
    );
    assert_eq!(
        (r.served_total, r.held_at_once, r.closed_by_server),
        (None, None, None)
    );
}

fn no_reply_worker(opened: u64, no_reply: u64) -> WorkerReport {
    let mut w = worker(0, opened, StopReason::Failure, 0);
    for _ in 0..no_reply {
        w.failures.record(&Failure::new(
            FailureKind::NoReply,
            "no reply within --timeout after the TCP handshake",
        ));
    }
    w
}

#[test]
fn no_reply_with_a_backlog_is_a_server_that_stopped_accepting() {
    let view = ServerView {
        queue_at_break: Some(QueueSample {
            depth: 129,
            limit: 1000,
        }),
        queue_peak: Some(129),
        queue_end: Some(QueueSample {
            depth: 129,
            limit: 1000,
        }),
        server_at_nofile: None,
        ..ServerView::default()
    };
    let mut r = FloodReport::merge(
        target(),
        Mode::Http,
        1,
        1200,
        &[no_reply_worker(1000, 129)],
        &[],
    );
    r.observe(&view);
    let bp = r.breaking_point.as_ref().unwrap();
    assert_eq!(bp.cause, FailureKind::BacklogFilling);
    assert_eq!(
        (bp.connections, bp.held, bp.queued),
        (1000, 1000, Some(129))
    );
    assert_eq!(
        bp.observed.as_deref(),
        Some("129 connections waiting in the listener's accept queue (limit 1000)")
    );
    assert_eq!(r.failures.get(&FailureKind::BacklogFilling), Some(&129));
    assert!(!r.failures.contains_key(&FailureKind::NoReply));
    // Protocol modes never subtract the queue: it holds unanswered ones.
    assert_eq!(
        (r.held, r.queued, r.accept_queue_limit),
        (1000, Some(129), Some(1000))
    );
    // An empty queue: a stalled server, not one that stopped accepting.
    let mut r = FloodReport::merge(
        target(),
        Mode::Http,
        1,
        1200,
        &[no_reply_worker(5, 50)],
        &[],
    );
    r.observe(&ServerView {
        queue_at_break: Some(QueueSample {
            depth: 0,
            limit: 511,
        }),
        ..ServerView::default()
    });
    assert_eq!(
        r.breaking_point.as_ref().unwrap().cause,
        FailureKind::NoReply
    );
    assert_eq!(r.breaking_point.as_ref().unwrap().observed, None);
}

#[test]
fn connect_mode_subtracts_the_backlog_from_held() {
    // HAProxy at maxconn 1000, backlog 1000: 2001 handshakes, 1001 queued.
    let mut w = worker(0, 2001, StopReason::Failure, 0);
    for _ in 0..50 {
        w.failures.record(&Failure::new(
            FailureKind::Timeout,
            "no TCP handshake within 3000 ms",
        ));
    }
    let mut fin = w.clone();
    fin.final_ = true;
    let mut r = FloodReport::merge(target(), Mode::Connect, 1, 3000, &[w], &[fin]);
    r.observe(&ServerView {
        queue_at_break: Some(QueueSample {
            depth: 1001,
            limit: 1000,
        }),
        queue_peak: Some(1001),
        queue_end: Some(QueueSample {
            depth: 1001,
            limit: 1000,
        }),
        server_at_nofile: None,
        ..ServerView::default()
    });
    let bp = r.breaking_point.as_ref().unwrap();
    assert_eq!(
        (bp.connections, bp.held, bp.queued),
        (2001, 1000, Some(1001))
    );
    // A dropped SYN stays a timeout: the kernel's wall, seen as such.
    assert_eq!(bp.cause, FailureKind::Timeout);
    assert_eq!((r.held, r.queued), (1000, Some(1001)));
    assert_eq!(
        (r.measured(), r.measured_as()),
        (1000, "breaking_point.held")
    );
    let text = r.render();
    assert!(
        text.contains(
            "BREAKING POINT 1000 connections held (2001 open, 1001 of them in the backlog)"
        ),
        "{text}"
    );
    assert!(text.contains("held     1000 still served at the end; 1001 waiting in the listener's backlog (limit 1000)"), "{text}");
}

#[test]
fn connect_mode_takes_held_from_the_servers_accepted_sockets_when_seen() {
    // The Erlang VM at +Q 1024 holds 1020; of 5117 connections the flood
    // has open, 4092 wait in the backlog and 5 are half-open (their last
    // ACK met a full queue): open less queued says 1025, the server 1020.
    // At the end it has taken 8 off its backlog and closed them between
    // the flood's two readings: open less queued would say 1017.
    let mut w = worker(0, 5117, StopReason::Failure, 0);
    for _ in 0..20 {
        w.failures.record(&Failure::new(
            FailureKind::Timeout,
            "no TCP handshake within 1000 ms",
        ));
    }
    let mut fin = w.clone();
    fin.final_ = true;
    fin.held = 5109;
    let q = |depth| Some(QueueSample { depth, limit: 4096 });
    let mut r = FloodReport::merge(target(), Mode::Connect, 1, 6000, &[w], &[fin]);
    r.observe(&ServerView {
        queue_at_break: q(4092),
        queue_end: q(4092),
        accepted_at_break: Some(1020),
        accepted_end: Some(1020),
        ..ServerView::default()
    });
    let bp = r.breaking_point.as_ref().unwrap();
    assert_eq!(
        (bp.connections, bp.held, bp.queued),
        (5117, 1020, Some(4092))
    );
    assert_eq!((r.held, r.queued), (1020, Some(4092)));
    // Without the server's sockets in view: open less queued.
    let mut blind = r.clone();
    blind.held = 5109;
    blind.observe(&ServerView {
        queue_at_break: q(4092),
        queue_end: q(4092),
        ..ServerView::default()
    });
    assert_eq!(blind.held, 1017);
    // The server's count never exceeds what the flood has open.
    let mut few = r.clone();
    few.held = 900;
    few.observe(&ServerView {
        queue_end: q(0),
        accepted_end: Some(1020),
        ..ServerView::default()
    });
    assert_eq!(few.held, 900);
}

#[test]
fn a_full_descriptor_table_in_the_server_names_emfile() {
    let mut r = FloodReport::merge(
        target(),
        Mode::Http,
        1,
        600,
        &[no_reply_worker(400, 60)],
        &[],
    );
    let line = "pid 42 (nginx) holds 200 of its 200 descriptors (RLIMIT_NOFILE)";
    r.observe(&ServerView {
        queue_at_break: Some(QueueSample {
            depth: 60,
            limit: 511,
        }),
        server_at_nofile: Some(line.into()),
        ..ServerView::default()
    });
    let bp = r.breaking_point.as_ref().unwrap();
    assert_eq!(bp.cause, FailureKind::ServerEmfile);
    assert_eq!(bp.cause_text, FailureKind::ServerEmfile.describe());
    assert!(bp.detail.starts_with(line), "{}", bp.detail);
    // The server's own refusal is never overridden.
    let mut r = FloodReport::merge(
        target(),
        Mode::Mcp,
        1,
        600,
        &[worker(0, 400, StopReason::Failure, 60)],
        &[],
    );
    r.observe(&ServerView {
        server_at_nofile: Some(line.into()),
        ..ServerView::default()
    });
    assert_eq!(
        r.breaking_point.as_ref().unwrap().cause,
        FailureKind::Refused
    );
}

#[test]
fn final_held_is_what_answered_the_end_check() {
    let w = worker(0, 100, StopReason::Target, 0);
    let mut fin = w.clone();
    fin.final_ = true;
    fin.held = 97;
    let r = FloodReport::merge(target(), Mode::Redis, 1, 100, &[w], &[fin]);
    assert_eq!((r.held, r.dropped_later), (97, 3));
    let mut r = r;
    let server = headroom_core::Prediction {
        connections: 0,
        predicted_max_connections: 100,
        binding: "redis-maxclients".into(),
        constraints: Vec::new(),
        processes: 1,
        next_wall: None,
    };
    r.check_prediction(&server, None);
    let p = r.prediction.as_ref().unwrap();
    assert_eq!(
        (p.measured, p.measured_as.as_str(), p.ratio),
        (97, "held", 0.97)
    );
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["prediction"]["measured_as"], "held");
    assert_eq!(v["served_total"], 0);
    assert!(v["queued"].is_null());
}

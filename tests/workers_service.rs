//! `headroom serve --workers`: several processes, one port, one limit.
//! Scaled-down version of issue 10's benchmark: 3 workers under
//! `prlimit --nofile=512` hold more initialized sessions than one process
//! could, refuse only past the service-wide maximum, and that maximum is the
//! one `headroom status --port` predicts.

#[path = "util/lab.rs"]
mod lab;
mod util;
#[path = "util/workers.rs"]
mod workers;

use std::time::Duration;
use workers::{alive, status, Service};

fn failures(report: &serde_json::Value) -> u64 {
    report["failures"]
        .as_object()
        .map_or(0, |m| m.values().map(|v| v.as_u64().unwrap()).sum())
}

#[test]
fn workers_hold_1200_sessions_under_nofile_512_and_refuse_exactly_past_the_prediction() {
    let svc = Service::start(Some(512), &["--workers", "3"]);
    assert_eq!(svc.worker_pids.len(), 3);

    // The model, from the outside: three processes, nofile binding, and a
    // maximum one process under the same limit could not reach.
    let st = status(svc.port);
    let pids: Vec<u64> = st["pids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect();
    let mut want: Vec<u64> = svc.worker_pids.iter().map(|p| *p as u64).collect();
    want.sort_unstable();
    assert_eq!(pids, want, "status --port finds exactly the workers");
    assert_eq!(st["binding"], "nofile");
    let predicted = st["predicted_max_connections"].as_u64().unwrap();
    assert_eq!(
        predicted, svc.max_connections,
        "the service's own ceiling is the model's prediction"
    );
    assert!(
        predicted >= 1200,
        "3 x 512 fds hold at least 1200 sessions (predicted {predicted})"
    );
    let one = st["snapshot"]["processes"][0]["nofile_soft"]
        .as_u64()
        .unwrap();
    assert!(one < 1200, "one process under nofile {one} could not");
    let next = &st["next_wall"];
    assert!(
        next["processes_needed"].as_u64().unwrap() > 3,
        "next wall: {next}"
    );

    // 1200 initialized sessions, all answer a ping, nothing refused.
    let r = lab::flood(
        None,
        &[
            "--target",
            &svc.target(),
            "--mode",
            "mcp",
            "--connections",
            "1200",
            "--hold",
            "1s",
        ],
    );
    assert_eq!(r["opened"], 1200, "{r}");
    assert_eq!(failures(&r), 0, "{r}");
    assert_eq!(r["ping"]["replies"], 1200, "{r}");
    assert_eq!(r["dropped_later"], 0, "{r}");

    // Exactly the predicted maximum: no refusal while any worker has room
    // (the kernel's hash fills workers unevenly; a full one passes on).
    let p = predicted.to_string();
    let r = lab::flood(
        None,
        &[
            "--target",
            &svc.target(),
            "--mode",
            "mcp",
            "--connections",
            &p,
            "--hold",
            "1s",
        ],
    );
    assert_eq!(r["opened"].as_u64(), Some(predicted), "{r}");
    assert_eq!(failures(&r), 0, "refused while siblings had room: {r}");
    assert_eq!(r["ping"]["replies"].as_u64(), Some(predicted), "{r}");

    // 40 past it: exactly 40 refusals, each the service's line; the held
    // sessions all still answer.
    let over = (predicted + 40).to_string();
    let r = lab::flood(
        None,
        &[
            "--target",
            &svc.target(),
            "--mode",
            "mcp",
            "--connections",
            &over,
            "--hold",
            "1s",
            "--fail-streak",
            "1000",
        ],
    );
    assert_eq!(r["opened"].as_u64(), Some(predicted), "{r}");
    assert_eq!(r["failures"]["refused"], 40, "{r}");
    assert_eq!(failures(&r), 40, "{r}");
    let detail = r["failure_details"]["refused"].as_str().unwrap();
    assert!(
        detail.contains(&format!(
            "nofile capacity {predicted} reached across 3 worker processes"
        )),
        "{detail}"
    );
    assert_eq!(r["ping"]["replies"].as_u64(), Some(predicted), "{r}");

    let page = svc.scrape();
    assert_eq!(
        workers::sum_metric(
            &page,
            "headroom_server_connections_refused_total",
            &["worker=\"supervisor\""]
        ),
        40
    );
    assert_eq!(
        workers::sum_metric(&page, "headroom_server_connections_accepted_total", &[]),
        1200 + 2 * predicted
    );
    assert_eq!(
        workers::sum_metric(&page, "headroom_server_workers", &[]),
        3
    );
}

#[test]
fn max_connections_holds_for_the_whole_service() {
    let svc = Service::start(None, &["--workers", "3", "--max-connections", "100"]);
    assert_eq!(svc.max_connections, 100);
    let r = lab::flood(
        None,
        &[
            "--target",
            &svc.target(),
            "--mode",
            "mcp",
            "--connections",
            "130",
            "--hold",
            "1s",
        ],
    );
    assert_eq!(r["opened"], 100, "{r}");
    assert_eq!(r["failures"]["refused"], 30, "{r}");
    let detail = r["failure_details"]["refused"].as_str().unwrap();
    assert!(
        detail.contains("max-connections 100 reached (service-wide)"),
        "{detail}"
    );
    assert_eq!(r["ping"]["replies"], 100, "{r}");
    assert_eq!(
        svc.metric(
            "headroom_server_connections_refused_total",
            &["reason=\"max-connections\""]
        ),
        30
    );
}

#[test]
fn a_dead_worker_loses_only_its_sessions_is_replaced_and_sigterm_drains() {
    let mut svc = Service::start(None, &["--workers", "3"]);
    let target = svc.target();
    let flood = std::thread::spawn(move || {
        lab::flood(
            None,
            &[
                "--target",
                &target,
                "--mode",
                "mcp",
                "--connections",
                "300",
                "--hold",
                "4s",
            ],
        )
    });
    // Wait until all 300 are held, then kill one worker outright.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while svc.metric("headroom_server_connections_active", &[]) < 300 {
        assert!(
            std::time::Instant::now() < deadline,
            "300 sessions never held"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let victim = svc.worker_pids[1];
    // SAFETY: a worker of the service we started.
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    let r = flood.join().unwrap();
    let lost = r["dropped_later"].as_u64().unwrap();
    assert!(lost > 0 && lost < 300, "{r}");
    assert_eq!(
        r["ping"]["replies"].as_u64(),
        Some(300 - lost),
        "the others never noticed: {r}"
    );
    assert_eq!(r["ping"]["failed"], 0, "{r}");

    let page = svc.scrape();
    assert_eq!(
        workers::sum_metric(&page, "headroom_server_sessions_lost_total", &[]),
        lost
    );
    assert_eq!(
        workers::sum_metric(&page, "headroom_server_worker_restarts_total", &[]),
        1
    );
    assert_eq!(
        workers::sum_metric(&page, "headroom_server_workers", &[]),
        3
    );
    let pids = status(svc.port)["pids"].as_array().unwrap().len();
    assert_eq!(pids, 3, "the replacement listens on the port");

    // SIGTERM: every worker drains and exits, the supervisor exits 0.
    let all: Vec<u32> = svc.worker_pids.clone();
    let code = svc
        .terminate(Duration::from_secs(15))
        .expect("drained within 15 s");
    assert!(code.success(), "supervisor exit {code}");
    for p in all {
        assert!(!alive(p), "worker {p} still running");
    }
}

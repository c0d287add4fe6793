//! `serve --workers N --metrics`: one Prometheus target for the whole
//! service, so its capacity gauges are one service-wide prediction in the
//! probe's layout (no `worker` label), never one set per worker that would
//! double every `sum` in the rules and the dashboard.

mod util;
#[path = "util/workers.rs"]
mod workers;

use std::net::TcpStream;
use std::time::{Duration, Instant};
use workers::{sum_metric, Service};

/// Sample lines of family `name` (exact name, any labels).
fn samples<'a>(page: &'a str, name: &str) -> Vec<&'a str> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l[..l.find(['{', ' ']).unwrap_or(l.len())] == *name)
        .collect()
}

#[test]
fn workers_export_one_service_wide_prediction() {
    let svc = Service::start(Some(512), &["--workers", "2"]);
    assert_eq!(svc.worker_pids.len(), 2);
    let held: Vec<TcpStream> = (0..10)
        .map(|_| TcpStream::connect(svc.target()).expect("connect"))
        .collect();

    // The supervisor counts what the workers hold at each scrape.
    let deadline = Instant::now() + Duration::from_secs(20);
    let page = loop {
        let page = svc.scrape();
        if sum_metric(&page, "headroom_connections", &[]) == 10 {
            break page;
        }
        assert!(
            Instant::now() < deadline,
            "headroom_connections never reached 10:\n{page}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };

    for family in [
        "headroom_connections",
        "headroom_predicted_max_connections",
        "headroom_constraint_limit",
        "headroom_constraint_used",
        "headroom_constraint_headroom",
        "headroom_constraint_binding",
    ] {
        let s = samples(&page, family);
        assert!(!s.is_empty(), "{family} missing:\n{page}");
        assert!(
            s.iter().all(|l| !l.contains("worker=")),
            "{family} carries per-worker series: {s:?}"
        );
        // One series per constraint: each label set once.
        let mut keys: Vec<&str> = s.iter().map(|l| l.rsplit_once(' ').unwrap().0).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), s.len(), "{family} duplicated: {s:?}");
    }
    assert_eq!(
        samples(&page, "headroom_connections"),
        ["headroom_connections 10"]
    );
    // nofile is per process: two workers at 512 each, summed.
    assert_eq!(
        sum_metric(
            &page,
            "headroom_constraint_limit",
            &["constraint=\"nofile\""]
        ),
        1024
    );
    assert_eq!(
        samples(&page, "headroom_constraint_binding")
            .into_iter()
            .filter(|l| l.ends_with(" 1"))
            .collect::<Vec<_>>(),
        ["headroom_constraint_binding{constraint=\"nofile\"} 1"]
    );
    let predicted = samples(&page, "headroom_predicted_max_connections");
    assert_eq!(predicted.len(), 1, "{predicted:?}");
    assert!(
        predicted[0].starts_with("headroom_predicted_max_connections{constraint=\"nofile\"} "),
        "{predicted:?}"
    );
    let max = sum_metric(&page, "headroom_predicted_max_connections", &[]);
    let headroom = sum_metric(
        &page,
        "headroom_constraint_headroom",
        &["constraint=\"nofile\""],
    );
    assert_eq!(max, 10 + headroom, "held plus what nofile still admits");
    // The model's service-wide maximum is what the service admits
    // (an idle worker's own transient fds may shave a few off the outside view).
    assert!(
        max <= svc.max_connections && max + 4 > svc.max_connections,
        "predicted {max}, service ceiling {}",
        svc.max_connections
    );

    // The workers' own series are still there, labelled per worker.
    assert_eq!(
        sum_metric(
            &page,
            "headroom_server_connections_active",
            &["transport=\"tcp\""]
        ),
        10
    );
    assert_eq!(
        samples(&page, "headroom_server_connections_active").len(),
        2,
        "one per worker:\n{page}"
    );
    drop(held);
}

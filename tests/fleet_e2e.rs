//! End to end with a real Prometheus: the shipped rules loaded, 1 s scrape and
//! evaluation, a `headroom serve` under `prlimit --nofile=256` driven to within
//! 10% of its predicted maximum next to a target with plenty of headroom. The
//! near-limit alert goes pending for that server and for nothing else,
//! `headroom fleet` lists it first, and every dashboard query evaluates.

#[path = "util/fleet.rs"]
mod fleet;

use fleet::{wait_for, ChildGuard, Prometheus};
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_headroom");

/// A `headroom serve` (optionally under prlimit) and its addresses.
struct Server {
    listen: String,
    metrics: String,
    _child: ChildGuard,
}

fn serve(nofile: Option<u32>) -> Server {
    let mut cmd = match nofile {
        Some(n) => {
            let mut c = Command::new("prlimit");
            c.arg(format!("--nofile={n}")).arg("--").arg(BIN);
            c
        }
        None => Command::new(BIN),
    };
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
        "--json",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    let mut child = ChildGuard(cmd.spawn().expect("spawn headroom serve"));
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("serve --json printed {line:?}: {e}"));
    Server {
        listen: v["listen"].as_str().unwrap().to_string(),
        metrics: v["metrics"].as_str().unwrap().to_string(),
        _child: child,
    }
}

/// The value of an unlabelled gauge in an exposition.
fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn headroom_alerts(prom: &Prometheus) -> Vec<(String, String, String)> {
    prom.alerts()
        .iter()
        .filter(|a| {
            a["labels"]["alertname"]
                .as_str()
                .unwrap_or("")
                .starts_with("Headroom")
        })
        .map(|a| {
            (
                a["labels"]["alertname"].as_str().unwrap().to_string(),
                a["labels"]["instance"].as_str().unwrap_or("").to_string(),
                a["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Drives `server` to within 10% of its predicted maximum (but under its
/// refusal ceiling) and returns the connections held and that maximum.
fn fill(server: &Server) -> (Vec<TcpStream>, f64) {
    let text = fleet::http_get(&format!("http://{}/metrics", server.metrics)).unwrap();
    let max = gauge(&text, "headroom_predicted_max_connections").expect("predicted max exported");
    let ceiling =
        gauge(&text, "headroom_server_connections_max").expect("connection ceiling exported");
    assert!(
        (150.0..256.0).contains(&max),
        "predicted max {max} under nofile 256"
    );
    // 95% of the maximum: inside the 10% warning band, outside the 3% critical one.
    let n = (max * 0.95).ceil() as usize;
    assert!(
        (n as f64) < ceiling,
        "{n} connections would be refused (ceiling {ceiling})"
    );
    let conns: Vec<TcpStream> = (0..n)
        .map(|_| TcpStream::connect(&server.listen).expect("connect"))
        .collect();
    wait_for(
        "server counts every connection",
        Duration::from_secs(10),
        || {
            let t = fleet::http_get(&format!("http://{}/metrics", server.metrics))?;
            (gauge(&t, "headroom_server_connections_active")? >= n as f64).then_some(())
        },
    );
    (conns, max)
}

fn run_e2e(limited: &Server, other_job: &str, other_addr: &str) {
    let prom = Prometheus::start(&[
        ("headroom-server", limited.metrics.clone()),
        (other_job, other_addr.to_string()),
    ]);
    wait_for("both targets up", Duration::from_secs(30), || {
        let up = prom.query("up == 1");
        (up.len() == 2).then_some(())
    });
    let (_conns, max) = fill(limited);

    // Pending (the rule holds for 5m before firing) within a bounded time.
    let alerts = wait_for(
        "HeadroomNearLimit pending for the limited server",
        Duration::from_secs(60),
        || {
            let a = headroom_alerts(&prom);
            a.iter()
                .any(|(n, i, s)| {
                    n == "HeadroomNearLimit"
                        && i == &limited.metrics
                        && (s == "pending" || s == "firing")
                })
                .then_some(a)
        },
    );
    assert!(
        !alerts
            .iter()
            .any(|(n, i, _)| n.starts_with("HeadroomNearLimit") && i == other_addr),
        "near-limit alert for the target with headroom: {alerts:?}"
    );
    assert!(
        !alerts
            .iter()
            .any(|(n, _, _)| n == "HeadroomNearLimitCritical"),
        "5% left is not critical: {alerts:?}"
    );

    // headroom fleet: that server first.
    let out = Command::new(BIN)
        .args(["fleet", "--prometheus", &prom.url, "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hosts = v["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 2, "{v}");
    let first = &hosts[0];
    assert_eq!(first["instance"], limited.metrics.as_str(), "{v}");
    assert_eq!(first["job"], "headroom-server");
    assert_eq!(
        first["predicted_max_connections"].as_f64(),
        Some(max),
        "{v}"
    );
    let ratio = first["headroom_ratio"].as_f64().unwrap();
    assert!((0.03..0.10).contains(&ratio), "headroom {ratio}");
    assert!(
        first["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "HeadroomNearLimit"),
        "{v}"
    );
    assert_eq!(hosts[1]["instance"], other_addr, "{v}");
    assert!(
        hosts[1]["headroom_ratio"].as_f64().unwrap_or(1.0) > 0.5,
        "{v}"
    );
    // The binding constraint: nofile, when the server names its constraints.
    let server_metrics = fleet::http_get(&format!("http://{}/metrics", limited.metrics)).unwrap();
    if server_metrics.contains("headroom_constraint_binding") {
        assert_eq!(first["binding"], "nofile", "{v}");
    } else {
        assert_eq!(first["binding"], serde_json::Value::Null, "{v}");
        eprintln!(
            "note: headroom serve exports no constraint label; fleet cannot name its binding limit"
        );
    }

    // The table says the same.
    let out = Command::new(BIN)
        .args(["fleet", "--prometheus", &prom.url])
        .output()
        .unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    let row = table.lines().nth(1).unwrap();
    assert!(
        row.starts_with(&limited.metrics) && row.contains("HeadroomNearLimit (pending)"),
        "{table}"
    );

    // Every dashboard query is valid PromQL against the shipped recordings.
    let dash: serde_json::Value =
        serde_json::from_str(&fleet::read(&fleet::deploy("grafana/headroom.json"))).unwrap();
    for e in fleet::dashboard_exprs(&dash) {
        let mut q = e
            .replace("$instance", ".+")
            .replace("$__rate_interval", "1m");
        // Grafana's label_values(METRIC, LABEL) queries METRIC.
        if let Some(inner) = q.strip_prefix("label_values(") {
            q = inner.rsplit_once(',').unwrap().0.to_string();
        }
        prom.query(&q);
    }
}

#[test]
fn near_limit_server_next_to_a_roomy_server() {
    let limited = serve(Some(256));
    let roomy = serve(None);
    run_e2e(&limited, "headroom-server", &roomy.metrics);
}

#[test]
fn fleet_fails_cleanly_without_prometheus() {
    let port = fleet::free_port();
    let out = Command::new(BIN)
        .args([
            "fleet",
            "--prometheus",
            &format!("http://127.0.0.1:{port}"),
            "--timeout",
            "2",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("headroom: cannot reach Prometheus at http://127.0.0.1:"),
        "{err}"
    );
    let out = Command::new(BIN)
        .args(["fleet", "--prometheus", "https://p:9090"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("https is not supported"));
}

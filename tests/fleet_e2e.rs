//! End to end with a real Prometheus: the shipped rules loaded, 1 s scrape and
//! evaluation, three targets: a `headroom serve` under `prlimit --nofile=256`
//! driven to within 10% of its predicted maximum, a roomy `headroom serve`
//! that refuses by --max-connections, and a `headroom probe --listen` (eBPF)
//! watching a process that hits EMFILE. The near-limit alert goes pending for
//! the limited server and for nothing else, the fd-error alert fires for the
//! probe's target only, every metric the rules and the dashboard read is
//! scraped from a target, `headroom fleet` lists the limited server first
//! with nofile binding, and every dashboard query evaluates.

#[path = "util/fleet.rs"]
mod fleet;
mod util;

use fleet::{wait_for, ChildGuard, Prometheus};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_headroom");

/// A `headroom serve` (optionally under prlimit) and its addresses.
struct Server {
    listen: String,
    metrics: String,
    _child: ChildGuard,
}

fn serve(nofile: Option<u32>, extra: &[&str]) -> Server {
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
    .args(extra)
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

/// Lines of a child's pipe, read in a thread so waits on them are bounded.
fn lines<R: Read + Send + 'static>(r: R) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// tests/python/fleet_target.py under `prlimit --nofile=64`: a listener
/// that makes TCP transitions on its port and EMFILE bursts on demand.
struct Target {
    pid: u32,
    stdin: ChildStdin,
    out: mpsc::Receiver<String>,
    _child: ChildGuard,
}

impl Target {
    fn start() -> Target {
        let py = std::env::var("HEADROOM_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = fleet::repo().join("tests/python/fleet_target.py");
        let mut child = ChildGuard(
            Command::new("prlimit")
                .args(["--nofile=64", "--", &py])
                .arg(script)
                .arg("5")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn python3 fleet_target.py"),
        );
        let stdin = child.0.stdin.take().unwrap();
        let out = lines(child.0.stdout.take().unwrap());
        let first = out
            .recv_timeout(Duration::from_secs(30))
            .expect("fleet_target.py prints its pid");
        Target {
            pid: first.split(' ').next().unwrap().parse().unwrap(),
            stdin,
            out,
            _child: child,
        }
    }

    /// One EMFILE burst (the first also churns 3 connections); its failures.
    fn burst(&mut self) -> u64 {
        writeln!(self.stdin, "go").unwrap();
        self.stdin.flush().unwrap();
        self.out
            .recv_timeout(Duration::from_secs(30))
            .expect("fleet_target.py reports its burst")
            .parse()
            .unwrap()
    }
}

/// `headroom probe --pid PID --listen 127.0.0.1:0` with eBPF on; its metrics address.
fn probe(pid: u32) -> (String, ChildGuard) {
    let mut child = ChildGuard(
        Command::new(BIN)
            .args([
                "probe",
                "--pid",
                &pid.to_string(),
                "--listen",
                "127.0.0.1:0",
                "--interval",
                "1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn headroom probe"),
    );
    let err = lines(child.0.stderr.take().unwrap());
    let mut seen = Vec::new();
    loop {
        let l = err
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|e| {
                panic!("headroom probe printed no metrics address ({e}): {seen:?}")
            });
        if let Some(rest) = l.strip_prefix("headroom probe: metrics at http://") {
            assert!(
                seen.iter().any(|s: &String| s.contains("eBPF on")),
                "the fleet test needs the probe's eBPF counters: {seen:?}"
            );
            return (rest.trim_end_matches("/metrics").to_string(), child);
        }
        seen.push(l);
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

/// Value of a single-sample instant query, once it exists.
fn scalar(prom: &Prometheus, q: &str) -> Option<f64> {
    let r = prom.query(q);
    match r.as_slice() {
        [one] => one["value"][1].as_str()?.parse().ok(),
        _ => None,
    }
}

/// The metric families Prometheus scraped, per job.
fn scraped_names(prom: &Prometheus) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in prom.query(r#"group by (__name__, job) ({__name__=~"headroom_.+"})"#) {
        out.entry(s["metric"]["job"].as_str().unwrap().to_string())
            .or_default()
            .insert(s["metric"]["__name__"].as_str().unwrap().to_string());
    }
    out
}

/// `headroom fleet --json` against `prom`.
fn fleet_json(prom: &Prometheus) -> serde_json::Value {
    let out = Command::new(BIN)
        .args(["fleet", "--prometheus", &prom.url, "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The constraint a target's own page flags as binding.
fn exported_binding(metrics_addr: &str) -> String {
    let text = fleet::http_get(&format!("http://{metrics_addr}/metrics")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("headroom_constraint_binding{") && l.ends_with(" 1"))
        .unwrap_or_else(|| panic!("no binding constraint in\n{text}"));
    line.split('"').nth(1).unwrap().to_string()
}

#[test]
#[ignore = "needs root"]
fn near_limit_server_next_to_a_roomy_server_and_a_probe() {
    util::require_root();
    let limited = serve(Some(256), &[]);
    let roomy = serve(None, &["--max-connections", "3"]);
    let mut target = Target::start();
    let (probe_addr, _probe) = probe(target.pid);
    let first_burst = target.burst();
    assert_eq!(first_burst, 6, "EMFILE once, then 5 more");

    // The roomy server refuses its 4th connection by policy.
    let roomy_held: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(&roomy.listen).unwrap())
        .collect();
    wait_for("roomy holds 3", Duration::from_secs(10), || {
        let t = fleet::http_get(&format!("http://{}/metrics", roomy.metrics))?;
        (gauge(&t, "headroom_server_connections_active")? == 3.0).then_some(())
    });
    let mut fourth = TcpStream::connect(&roomy.listen).unwrap();
    fourth
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut refusal = String::new();
    BufReader::new(&mut fourth).read_line(&mut refusal).unwrap();
    assert!(refusal.contains("max-connections"), "{refusal}");

    let prom = Prometheus::start(&[
        ("headroom-server", limited.metrics.clone()),
        ("headroom-server", roomy.metrics.clone()),
        ("headroom-probe", probe_addr.clone()),
    ]);
    wait_for("three targets up", Duration::from_secs(30), || {
        (prom.query("up == 1").len() == 3).then_some(())
    });
    let (_conns, max) = fill(&limited);
    let n = _conns.len() as f64;

    // fd errors: the first burst is on record; a second one is an increase
    // the alert sees (a counter's first sample is no increase to Prometheus).
    let emfile = format!(
        r#"sum(headroom_fd_errors_total{{instance="{probe_addr}",errno="EMFILE",syscall="socket"}})"#
    );
    wait_for("first burst scraped", Duration::from_secs(30), || {
        (scalar(&prom, &emfile)? == 6.0).then_some(())
    });
    let second_burst = target.burst();
    assert_eq!(second_burst, 6);
    wait_for("both bursts scraped", Duration::from_secs(30), || {
        (scalar(&prom, &emfile)? == 12.0).then_some(())
    });
    let refused = format!(
        r#"headroom_server_connections_refused_total{{instance="{}",transport="tcp",reason="max-connections"}}"#,
        roomy.metrics
    );
    wait_for("the refusal scraped", Duration::from_secs(30), || {
        (scalar(&prom, &refused)? == 1.0).then_some(())
    });

    // Pending (the rule holds for 5m before firing) within a bounded time,
    // and the fd-error alert (no hold time) firing for the probe's target.
    let alerts = wait_for(
        "HeadroomNearLimit pending for the limited server, HeadroomFdErrors firing for the probe",
        Duration::from_secs(60),
        || {
            let a = headroom_alerts(&prom);
            let near = a.iter().any(|(n, i, s)| {
                n == "HeadroomNearLimit"
                    && i == &limited.metrics
                    && (s == "pending" || s == "firing")
            });
            let fd = a
                .iter()
                .any(|(n, i, s)| n == "HeadroomFdErrors" && i == &probe_addr && s == "firing");
            (near && fd).then_some(a)
        },
    );
    for (name, instance, _) in &alerts {
        if name.starts_with("HeadroomNearLimit") {
            assert_eq!(
                (name.as_str(), instance),
                ("HeadroomNearLimit", &limited.metrics),
                "near-limit alerts: {alerts:?}"
            );
        }
        if name == "HeadroomFdErrors" {
            assert_eq!(instance, &probe_addr, "fd-error alerts: {alerts:?}");
        }
    }

    // Every metric the rules and the dashboard read is scraped from a
    // target; the capacity layout from both kinds.
    let scraped = scraped_names(&prom);
    let rules = fleet::yaml(&fleet::deploy("prometheus/headroom-rules.yml"));
    let dash: serde_json::Value =
        serde_json::from_str(&fleet::read(&fleet::deploy("grafana/headroom.json"))).unwrap();
    let used: BTreeSet<String> = fleet::rule_exprs(&rules)
        .iter()
        .chain(fleet::dashboard_exprs(&dash).iter())
        .flat_map(|e| fleet::metric_names(e))
        .collect();
    let all: BTreeSet<&String> = scraped.values().flatten().collect();
    let missing: Vec<&String> = used
        .iter()
        .filter(|n| !all.contains(n) && !all.contains(&format!("{n}_bucket")))
        .collect();
    assert!(
        missing.is_empty(),
        "rules or dashboard read metrics no target exports: {missing:?}; scraped: {scraped:?}"
    );
    assert_eq!(
        scraped.keys().collect::<Vec<_>>(),
        ["headroom-probe", "headroom-server"]
    );
    for job in ["headroom-probe", "headroom-server"] {
        for name in [
            "headroom_connections",
            "headroom_predicted_max_connections",
            "headroom_constraint_limit",
            "headroom_constraint_used",
            "headroom_constraint_headroom",
            "headroom_constraint_binding",
        ] {
            assert!(scraped[job].contains(name), "{job} exports no {name}");
        }
    }

    // headroom fleet: the limited server first, nofile binding, once the
    // model's sample counts every connection held.
    let v = wait_for(
        "fleet sees every connection of the limited server",
        Duration::from_secs(30),
        || {
            let v = fleet_json(&prom);
            (v["hosts"][0]["connections"].as_f64() == Some(n)).then_some(v)
        },
    );
    let hosts = v["hosts"].as_array().unwrap();
    let order: Vec<&str> = hosts
        .iter()
        .map(|h| h["instance"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        [
            limited.metrics.as_str(),
            roomy.metrics.as_str(),
            probe_addr.as_str()
        ],
        "{v}"
    );
    let first = &hosts[0];
    assert_eq!(first["job"], "headroom-server");
    assert_eq!(first["binding"], "nofile", "{v}");
    assert_eq!(
        first["predicted_max_connections"].as_f64(),
        Some(max),
        "{v}"
    );
    let ratio = first["headroom_ratio"].as_f64().unwrap();
    assert!(
        (ratio - (max - n) / max).abs() < 1e-9,
        "headroom {ratio}, want ({max} - {n}) / {max}"
    );
    let names: Vec<&str> = first["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    // HeadroomLimitSoon may join: filling it in a second is a steep trend.
    assert!(names.contains(&"HeadroomNearLimit"), "{v}");
    assert!(!names.contains(&"HeadroomNearLimitCritical"), "{v}");

    let second = &hosts[1];
    assert_eq!(second["binding"], exported_binding(&roomy.metrics), "{v}");
    assert_eq!(second["connections"].as_f64(), Some(3.0), "{v}");

    // The probe's target holds no connection: all its headroom is left.
    let third = &hosts[2];
    assert_eq!(third["job"], "headroom-probe");
    assert_eq!(third["binding"], "nofile", "{v}");
    assert_eq!(third["connections"].as_f64(), Some(0.0), "{v}");
    assert_eq!(third["headroom_ratio"].as_f64(), Some(1.0), "{v}");
    assert!(
        third["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "HeadroomFdErrors" && a["state"] == "firing"),
        "{v}"
    );

    // The table says the same.
    let out = Command::new(BIN)
        .args(["fleet", "--prometheus", &prom.url])
        .output()
        .unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    let row = table.lines().nth(1).unwrap();
    assert!(
        row.starts_with(&limited.metrics)
            && row.contains("nofile")
            && row.contains("HeadroomNearLimit (pending)"),
        "{table}"
    );

    // Every dashboard query is valid PromQL against the shipped recordings.
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
    drop(roomy_held);
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

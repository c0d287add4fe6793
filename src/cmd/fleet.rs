//! `headroom fleet`: every host Prometheus knows, least headroom first. It
//! reads only Prometheus's HTTP API (the recording rules of
//! deploy/prometheus/headroom-rules.yml and the active alerts) and never talks
//! to the hosts themselves.

use super::CmdResult;
use anyhow::{bail, Context};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// Prometheus base URL (plain http), e.g. http://prometheus:9090.
    #[arg(long, env = "HEADROOM_PROMETHEUS", value_name = "URL")]
    pub prometheus: String,
    /// Print one JSON document instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Redraw every --interval seconds until interrupted.
    #[arg(long)]
    pub watch: bool,
    /// Seconds between redraws with --watch.
    #[arg(long, value_name = "S", default_value_t = 5.0)]
    pub interval: f64,
    /// Seconds to wait for Prometheus before giving up.
    #[arg(long, value_name = "S", default_value_t = 10.0)]
    pub timeout: f64,
}

/// One scrape target (a probe or a server), as the fleet sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Host {
    pub instance: String,
    pub job: String,
    /// Whether Prometheus's last scrape of it succeeded (`None`: not a scrape target it knows).
    pub up: Option<bool>,
    /// The binding constraint's name, when the target exports one.
    pub binding: Option<String>,
    /// Fraction of the predicted maximum still free (0..=1).
    pub headroom_ratio: Option<f64>,
    pub predicted_max_connections: Option<f64>,
    pub connections: Option<f64>,
    /// Seconds until the soonest constraint runs out at the current trend.
    pub time_to_limit_seconds: Option<f64>,
    /// Constraint the time to limit refers to.
    pub time_to_limit_constraint: Option<String>,
    /// headroom alerts firing or pending for it.
    pub alerts: Vec<Alert>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Alert {
    pub name: String,
    /// `firing` or `pending`.
    pub state: String,
    pub severity: String,
}

#[derive(Serialize)]
struct Report<'a> {
    schema_version: u32,
    prometheus: &'a str,
    hosts: &'a [Host],
}

pub fn run(args: Args) -> CmdResult {
    if !(args.interval > 0.0 && args.interval.is_finite()) {
        bail!("--interval must be a positive number of seconds");
    }
    if !(args.timeout > 0.0 && args.timeout.is_finite()) {
        bail!("--timeout must be a positive number of seconds");
    }
    let prom = Prometheus::new(&args.prometheus, Duration::from_secs_f64(args.timeout))?;
    loop {
        let hosts = prom.hosts();
        let mut out = std::io::stdout().lock();
        match (&hosts, args.watch) {
            (Err(e), false) => return Err(anyhow::anyhow!("{e:#}")),
            (Err(e), true) => {
                write!(out, "\x1b[2J\x1b[H")?;
                writeln!(out, "headroom fleet: {e:#} (retrying)")?;
            }
            (Ok(hosts), watch) => {
                if watch && !args.json {
                    write!(out, "\x1b[2J\x1b[H")?;
                }
                if args.json {
                    let report = Report {
                        schema_version: headroom_core::SCHEMA_VERSION,
                        prometheus: &prom.base,
                        hosts,
                    };
                    serde_json::to_writer(&mut out, &report)?;
                    writeln!(out)?;
                } else {
                    out.write_all(render(hosts).as_bytes())?;
                }
            }
        }
        out.flush()?;
        if !args.watch {
            return Ok(ExitCode::SUCCESS);
        }
        drop(out);
        std::thread::sleep(Duration::from_secs_f64(args.interval));
    }
}

/// A read-only client for the few endpoints fleet needs.
struct Prometheus {
    base: String,
    agent: ureq::Agent,
}

impl Prometheus {
    fn new(url: &str, timeout: Duration) -> anyhow::Result<Prometheus> {
        let base = url.trim_end_matches('/').to_string();
        if base.starts_with("https://") {
            bail!("{url}: https is not supported (no TLS stack is compiled in); use http:// or a local proxy");
        }
        if !base.starts_with("http://") || base.len() <= "http://".len() {
            bail!("{url}: not an http:// URL of a Prometheus server");
        }
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build();
        Ok(Prometheus {
            base,
            agent: config.into(),
        })
    }

    /// GET an API path, returning `data` of a `"status": "success"` answer.
    fn get(&self, path: &str, query: Option<&str>) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = self.agent.get(&url);
        if let Some(q) = query {
            req = req.query("query", q);
        }
        let mut resp = req
            .call()
            .with_context(|| format!("cannot reach Prometheus at {}", self.base))?;
        let status = resp.status();
        let body: Value = resp
            .body_mut()
            .read_json()
            .with_context(|| format!("{url}: HTTP {status}, not a Prometheus API answer"))?;
        if body["status"] != "success" {
            bail!(
                "{url}: {} {}",
                body["errorType"].as_str().unwrap_or("error"),
                body["error"].as_str().unwrap_or("(no message)")
            );
        }
        Ok(body["data"].clone())
    }

    /// An instant query's vector.
    fn query(&self, q: &str) -> anyhow::Result<Vec<Value>> {
        let data = self.get("/api/v1/query", Some(q))?;
        match data["result"].as_array() {
            Some(v) if data["resultType"] == "vector" => Ok(v.clone()),
            _ => bail!(
                "{q}: Prometheus answered a {} instead of a vector",
                data["resultType"]
            ),
        }
    }

    fn hosts(&self) -> anyhow::Result<Vec<Host>> {
        let r = Results {
            up: self.query(r#"up{job=~"headroom.*"}"#)?,
            headroom: self.query("headroom:binding_headroom:ratio")?,
            max: self.query("headroom:binding_max_connections")?,
            connections: self.query("headroom:connections")?,
            time_to_limit: self.query("headroom:time_to_limit:seconds")?,
            alerts: self.get("/api/v1/alerts", None)?["alerts"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        };
        Ok(assemble(&r))
    }
}

/// What Prometheus answered, before it is joined per target.
struct Results {
    up: Vec<Value>,
    headroom: Vec<Value>,
    max: Vec<Value>,
    connections: Vec<Value>,
    time_to_limit: Vec<Value>,
    alerts: Vec<Value>,
}

fn label(v: &Value, name: &str) -> Option<String> {
    v["metric"]
        .get(name)
        .or_else(|| v["labels"].get(name))
        .and_then(|l| l.as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// A sample's value: Prometheus sends `[time, "value"]`.
fn value(v: &Value) -> Option<f64> {
    v["value"][1]
        .as_str()?
        .parse()
        .ok()
        .filter(|x: &f64| x.is_finite())
}

type Key = (String, String);

fn key(v: &Value) -> Option<Key> {
    Some((label(v, "instance")?, label(v, "job").unwrap_or_default()))
}

/// Joins the answers per (instance, job) and sorts least headroom first;
/// targets without a headroom figure come last, down ones first among them.
fn entry(hosts: &mut BTreeMap<Key, Host>, k: Key) -> &mut Host {
    hosts.entry(k.clone()).or_insert_with(|| Host {
        instance: k.0,
        job: k.1,
        up: None,
        binding: None,
        headroom_ratio: None,
        predicted_max_connections: None,
        connections: None,
        time_to_limit_seconds: None,
        time_to_limit_constraint: None,
        alerts: Vec::new(),
    })
}

fn assemble(r: &Results) -> Vec<Host> {
    let mut hosts: BTreeMap<Key, Host> = BTreeMap::new();
    for s in &r.up {
        if let Some(k) = key(s) {
            entry(&mut hosts, k).up = value(s).map(|v| v == 1.0);
        }
    }
    for s in &r.headroom {
        if let Some(k) = key(s) {
            let h = entry(&mut hosts, k);
            h.headroom_ratio = value(s);
            h.binding = label(s, "constraint");
        }
    }
    for s in &r.max {
        if let Some(k) = key(s) {
            entry(&mut hosts, k).predicted_max_connections = value(s);
        }
    }
    for s in &r.connections {
        if let Some(k) = key(s) {
            entry(&mut hosts, k).connections = value(s);
        }
    }
    for s in &r.time_to_limit {
        if let Some(k) = key(s) {
            let h = entry(&mut hosts, k);
            h.time_to_limit_seconds = value(s);
            h.time_to_limit_constraint = label(s, "constraint");
        }
    }
    for a in &r.alerts {
        let Some(name) = label(a, "alertname").filter(|n| n.starts_with("Headroom")) else {
            continue;
        };
        // An alert without an instance (no probe target at all) belongs to no host.
        let Some(k) = key(a) else { continue };
        let alert = Alert {
            name,
            state: a["state"].as_str().unwrap_or("").to_string(),
            severity: label(a, "severity").unwrap_or_default(),
        };
        let h = entry(&mut hosts, k);
        if !h.alerts.contains(&alert) {
            h.alerts.push(alert);
        }
    }
    let mut out: Vec<Host> = hosts.into_values().collect();
    for h in &mut out {
        h.alerts.sort();
    }
    out.sort_by(|a, b| {
        let rank = |h: &Host| match (h.headroom_ratio, h.up) {
            (Some(r), _) => (0, r),
            (None, Some(false)) => (1, 0.0),
            (None, _) => (2, 0.0),
        };
        let (ra, rb) = (rank(a), rank(b));
        ra.0.cmp(&rb.0)
            .then(ra.1.total_cmp(&rb.1))
            .then_with(|| (&a.instance, &a.job).cmp(&(&b.instance, &b.job)))
    });
    out
}

fn fmt_duration(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

fn render(hosts: &[Host]) -> String {
    let header = [
        "INSTANCE",
        "JOB",
        "BINDING",
        "HEADROOM",
        "MAX",
        "CONNS",
        "TIME TO LIMIT",
        "ALERTS",
    ];
    let mut rows: Vec<[String; 8]> = Vec::new();
    for h in hosts {
        let dash = || "-".to_string();
        let num = |v: Option<f64>| v.map_or_else(dash, |v| format!("{v:.0}"));
        let alerts = if h.alerts.is_empty() {
            if h.up == Some(false) {
                "down".into()
            } else {
                dash()
            }
        } else {
            h.alerts
                .iter()
                .map(|a| {
                    if a.state == "firing" {
                        a.name.clone()
                    } else {
                        format!("{} ({})", a.name, a.state)
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        rows.push([
            h.instance.clone(),
            h.job.clone(),
            h.binding.clone().unwrap_or_else(dash),
            h.headroom_ratio
                .map_or_else(dash, |r| format!("{:.1}%", r * 100.0)),
            num(h.predicted_max_connections),
            num(h.connections),
            h.time_to_limit_seconds.map_or_else(dash, fmt_duration),
            alerts,
        ]);
    }
    let mut width = header.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: &[&str], out: &mut String| {
        let last = cells.len() - 1;
        for (i, c) in cells.iter().enumerate() {
            if i == last {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        out.push('\n');
    };
    line(&header, &mut out);
    for r in &rows {
        line(&r.each_ref().map(|s| s.as_str()), &mut out);
    }
    if hosts.is_empty() {
        out.push_str("(no headroom targets: is a headroom-probe/headroom-server job scraped and are the rules loaded?)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample(labels: Value, v: &str) -> Value {
        json!({"metric": labels, "value": [1700000000.0, v]})
    }

    fn results() -> Results {
        Results {
            up: vec![
                sample(json!({"instance": "a:9465", "job": "headroom-server"}), "1"),
                sample(json!({"instance": "b:9464", "job": "headroom-probe"}), "1"),
                sample(json!({"instance": "c:9464", "job": "headroom-probe"}), "0"),
            ],
            headroom: vec![
                sample(
                    json!({"instance": "b:9464", "job": "headroom-probe", "constraint": "memory"}),
                    "0.5",
                ),
                sample(
                    json!({"instance": "a:9465", "job": "headroom-server", "constraint": "nofile"}),
                    "0.04",
                ),
            ],
            max: vec![sample(
                json!({"instance": "a:9465", "job": "headroom-server", "constraint": "nofile"}),
                "214",
            )],
            connections: vec![sample(
                json!({"instance": "a:9465", "job": "headroom-server"}),
                "205",
            )],
            time_to_limit: vec![sample(
                json!({"instance": "a:9465", "job": "headroom-server", "constraint": "nofile"}),
                "754.2",
            )],
            alerts: vec![
                json!({"labels": {"alertname": "HeadroomNearLimit", "instance": "a:9465", "job": "headroom-server", "severity": "warning"}, "state": "pending"}),
                json!({"labels": {"alertname": "HeadroomProbeDown", "instance": "c:9464", "job": "headroom-probe", "severity": "warning"}, "state": "firing"}),
                json!({"labels": {"alertname": "HeadroomProbeDown", "severity": "warning"}, "state": "firing"}),
                json!({"labels": {"alertname": "Watchdog", "instance": "a:9465", "job": "headroom-server"}, "state": "firing"}),
            ],
        }
    }

    #[test]
    fn least_headroom_first_then_down_targets() {
        let hosts = assemble(&results());
        let order: Vec<&str> = hosts.iter().map(|h| h.instance.as_str()).collect();
        assert_eq!(order, ["a:9465", "b:9464", "c:9464"]);
        let a = &hosts[0];
        assert_eq!(a.binding.as_deref(), Some("nofile"));
        assert_eq!(a.headroom_ratio, Some(0.04));
        assert_eq!(a.predicted_max_connections, Some(214.0));
        assert_eq!(a.connections, Some(205.0));
        assert_eq!(a.time_to_limit_seconds, Some(754.2));
        assert_eq!(
            a.alerts,
            [Alert {
                name: "HeadroomNearLimit".into(),
                state: "pending".into(),
                severity: "warning".into()
            }]
        );
        assert_eq!(hosts[2].up, Some(false));
        assert_eq!(hosts[2].alerts.len(), 1);
    }

    #[test]
    fn table_shows_each_column() {
        let text = render(&assemble(&results()));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("INSTANCE"));
        let a: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            a,
            [
                "a:9465",
                "headroom-server",
                "nofile",
                "4.0%",
                "214",
                "205",
                "12m34s",
                "HeadroomNearLimit",
                "(pending)"
            ]
        );
        assert!(lines[3].ends_with("HeadroomProbeDown"), "{}", lines[3]);
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(fmt_duration(42.4), "42s");
        assert_eq!(fmt_duration(754.2), "12m34s");
        assert_eq!(fmt_duration(7260.0), "2h01m");
        assert_eq!(fmt_duration(90000.0), "1d01h");
    }

    #[test]
    fn rejects_urls_it_cannot_use() {
        let t = Duration::from_secs(1);
        assert!(Prometheus::new("https://p:9090", t).is_err());
        assert!(Prometheus::new("prometheus:9090", t).is_err());
        assert_eq!(
            Prometheus::new("http://p:9090/", t).unwrap().base,
            "http://p:9090"
        );
    }
}

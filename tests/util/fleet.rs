//! Helpers for the fleet and packaging tests: the shipped files under deploy/,
//! metric names in the rules and dashboard, and the metric names headroom
//! exports (core/src/metrics.rs).
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn deploy(rel: &str) -> PathBuf {
    repo().join("deploy").join(rel)
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

pub fn yaml(path: &Path) -> serde_yaml::Value {
    serde_yaml::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `headroom_*` metric name in a PromQL expression (recorded series,
/// `headroom:...`, are not metrics and do not match). Histogram series
/// suffixes are folded into their family name.
pub fn metric_names(promql: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = promql.as_bytes();
    let mut i = 0;
    while let Some(pos) = promql[i..].find("headroom_") {
        let start = i + pos;
        let boundary = start == 0
            || !(b[start - 1].is_ascii_alphanumeric()
                || b[start - 1] == b'_'
                || b[start - 1] == b':');
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
            end += 1;
        }
        let followed_by_colon = end < b.len() && b[end] == b':';
        if boundary && !followed_by_colon {
            let mut name = &promql[start..end];
            for suffix in ["_bucket", "_sum", "_count"] {
                if let Some(base) = name.strip_suffix(suffix) {
                    if base.ends_with("_seconds") || base.ends_with("_bytes") {
                        name = base;
                    }
                }
            }
            out.insert(name.to_string());
        }
        i = end.max(start + 1);
    }
    out
}

/// The metric names declared in core/src/metrics.rs: the contract the probe
/// and the server export.
pub fn core_metric_names() -> BTreeSet<String> {
    let src = read(&repo().join("core/src/metrics.rs"));
    src.lines()
        .filter(|l| l.trim_start().starts_with("pub const"))
        .filter_map(|l| l.split('"').nth(1).map(str::to_string))
        .collect()
}

/// PromQL expressions of every rule in a Prometheus rules file.
pub fn rule_exprs(rules: &serde_yaml::Value) -> Vec<String> {
    let mut out = Vec::new();
    for g in rules["groups"].as_sequence().expect("groups") {
        for r in g["rules"].as_sequence().expect("rules") {
            out.push(r["expr"].as_str().expect("expr").to_string());
        }
    }
    out
}

/// Every PromQL expression in a Grafana dashboard (panel targets, templating queries).
pub fn dashboard_exprs(dash: &serde_json::Value) -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    if k == "expr" || k == "query" {
                        if let Some(s) = v.as_str() {
                            out.push(s.to_string());
                        } else if let Some(s) = v.get("query").and_then(|q| q.as_str()) {
                            out.push(s.to_string());
                        }
                    }
                    walk(v, out);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dash, &mut out);
    out
}

/// A child process killed (and reaped) on drop, even when the test panics.
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free loopback port (bound, read, released: the tiny race is acceptable
/// for processes that cannot report the port they bound).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every 200 ms until it returns Some, or panics after `timeout`.
pub fn wait_for<T>(
    what: &str,
    timeout: std::time::Duration,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// GET a URL's body as text (None on any error or non-200).
pub fn http_get(url: &str) -> Option<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_secs(5)))
        .build()
        .into();
    agent.get(url).call().ok()?.body_mut().read_to_string().ok()
}

/// A real Prometheus on loopback with the shipped rules: 1 s scrape and
/// evaluation, storage in a temporary directory, killed and removed on drop.
pub struct Prometheus {
    pub url: String,
    dir: PathBuf,
    _child: ChildGuard,
}

impl Prometheus {
    /// `targets`: (job, "host:port") pairs.
    pub fn start(targets: &[(&str, String)]) -> Prometheus {
        let dir = std::env::temp_dir().join(format!(
            "headroom-prom-{}-{}",
            std::process::id(),
            free_port()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let mut jobs: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
        for (job, addr) in targets {
            jobs.entry(job).or_default().push(format!("\"{addr}\""));
        }
        let mut config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n",
            deploy("prometheus/headroom-rules.yml").display()
        );
        for (job, addrs) in jobs {
            config.push_str(&format!(
                "  - job_name: {job}\n    scrape_timeout: 900ms\n    static_configs:\n      - targets: [{}]\n",
                addrs.join(", ")
            ));
        }
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = std::process::Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--storage.tsdb.retention.time=1h")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect(
                "prometheus not found: ./scripts/setup.sh installs the Debian package prometheus",
            );
        let p = Prometheus {
            url: format!("http://127.0.0.1:{port}"),
            dir,
            _child: ChildGuard(child),
        };
        wait_for(
            "Prometheus ready",
            std::time::Duration::from_secs(30),
            || http_get(&format!("{}/-/ready", p.url)),
        );
        p
    }

    /// `data` of an API call.
    pub fn api(&self, path_and_query: &str) -> serde_json::Value {
        let body = http_get(&format!("{}{path_and_query}", self.url))
            .unwrap_or_else(|| panic!("GET {path_and_query} failed; log:\n{}", self.log()));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "{path_and_query}: {v}");
        v["data"].clone()
    }

    /// An instant query's result vector.
    pub fn query(&self, q: &str) -> Vec<serde_json::Value> {
        let enc: String = q
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        self.api(&format!("/api/v1/query?query={enc}"))["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Active alerts (pending and firing).
    pub fn alerts(&self) -> Vec<serde_json::Value> {
        self.api("/api/v1/alerts")["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // The child is killed by its guard (declared last, dropped after this
        // body), so stop it here first, then remove its storage.
        let _ = self._child.0.kill();
        let _ = self._child.0.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Metric family names in a Prometheus text exposition.
pub fn exposition_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn metric_names_skips_recordings() {
        let n = super::metric_names(
            "headroom:binding_headroom:ratio and headroom_constraint_binding == 1 or rate(headroom_server_request_duration_seconds_bucket[5m])",
        );
        assert_eq!(
            n.into_iter().collect::<Vec<_>>(),
            [
                "headroom_constraint_binding",
                "headroom_server_request_duration_seconds"
            ]
        );
    }
}

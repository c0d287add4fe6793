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

//! The shipped Grafana dashboard: valid JSON Grafana can import, every metric
//! it plots exported by headroom, every recorded series it plots defined by
//! the shipped rules, and the panels the issue asks for present.

#[path = "util/fleet.rs"]
mod fleet;

use std::collections::BTreeSet;

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&fleet::read(&fleet::deploy("grafana/headroom.json")))
        .expect("dashboard JSON")
}

#[test]
fn dashboard_reads_only_exported_metrics_and_shipped_recordings() {
    let d = dashboard();
    let exprs = fleet::dashboard_exprs(&d);
    assert!(exprs.len() >= 25, "{} expressions", exprs.len());
    let used: BTreeSet<String> = exprs.iter().flat_map(|e| fleet::metric_names(e)).collect();
    let exported = fleet::core_metric_names();
    let unknown: Vec<_> = used.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "dashboard plots metrics not in core/src/metrics.rs: {unknown:?}"
    );

    let rules = fleet::yaml(&fleet::deploy("prometheus/headroom-rules.yml"));
    let recorded: BTreeSet<String> = rules["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap().clone())
        .filter_map(|r| r["record"].as_str().map(str::to_string))
        .collect();
    for e in &exprs {
        for word in e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
            if word.starts_with("headroom:") {
                assert!(
                    recorded.contains(word),
                    "dashboard uses {word}, which no rule records"
                );
            }
        }
    }
}

#[test]
fn dashboard_has_the_panels_operators_need() {
    let d = dashboard();
    assert_eq!(d["uid"], "headroom-hosts");
    let panels = d["panels"].as_array().unwrap();
    let ids: BTreeSet<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids must be unique");
    let titles: Vec<&str> = panels
        .iter()
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    for want in [
        "Headroom (binding constraint)",
        "Headroom per constraint",
        "Binding limit",
        "Time to limit",
        "Accept queue depth (peak) and limit",
        "Accept queue overflows",
        "TCP sockets by state",
        "fd and port errors",
    ] {
        assert!(titles.contains(&want), "no panel {want:?} in {titles:?}");
    }
    // Every data panel queries the selected instances through the data source variable.
    for p in panels.iter().filter(|p| p["type"] != "row") {
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        for t in p["targets"].as_array().unwrap() {
            let e = t["expr"].as_str().unwrap();
            assert!(e.contains("instance=~\"$instance\""), "{}: {e}", p["title"]);
        }
    }
}

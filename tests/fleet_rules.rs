//! The shipped Prometheus rules: promtool accepts them, every alert is unit
//! tested both firing and silent, every alert carries what an operator needs,
//! and every metric they read is one headroom exports.

#[path = "util/fleet.rs"]
mod fleet;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

fn promtool(args: &[&str]) -> std::process::Output {
    Command::new("promtool")
        .args(args)
        .current_dir(fleet::deploy("prometheus"))
        .output()
        .expect("promtool not found: ./scripts/setup.sh installs the Debian package prometheus")
}

fn alerts() -> Vec<serde_yaml::Value> {
    let rules = fleet::yaml(&fleet::deploy("prometheus/headroom-rules.yml"));
    rules["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap().clone())
        .filter(|r| r.get("alert").is_some())
        .collect()
}

#[test]
fn promtool_checks_the_rules() {
    let out = promtool(&["check", "rules", "headroom-rules.yml"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 9 recording rules and 9 alerts.
    assert!(stdout.contains("SUCCESS: 18 rules found"), "{stdout}");
}

#[test]
fn promtool_unit_tests_pass() {
    let out = promtool(&["test", "rules", "headroom-rules.test.yml"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_alert_is_tested_firing_and_silent() {
    let tests = fleet::yaml(&fleet::deploy("prometheus/headroom-rules.test.yml"));
    // alertname -> (cases where it fires, cases where it must stay silent)
    let mut seen: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    for t in tests["tests"].as_sequence().unwrap() {
        for case in t["alert_rule_test"].as_sequence().into_iter().flatten() {
            let name = case["alertname"].as_str().unwrap().to_string();
            let fires = case["exp_alerts"]
                .as_sequence()
                .is_some_and(|a| !a.is_empty());
            let e = seen.entry(name).or_default();
            if fires {
                e.0 += 1
            } else {
                e.1 += 1
            }
        }
    }
    let names: BTreeSet<String> = alerts()
        .iter()
        .map(|a| a["alert"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 9, "{names:?}");
    for n in &names {
        let (fire, silent) = seen.get(n).copied().unwrap_or_default();
        assert!(fire > 0, "{n}: no promtool case where it fires");
        assert!(silent > 0, "{n}: no promtool case where it stays silent");
    }
    let unknown: Vec<_> = seen.keys().filter(|k| !names.contains(*k)).collect();
    assert!(
        unknown.is_empty(),
        "tests for alerts that do not exist: {unknown:?}"
    );
}

#[test]
fn every_alert_has_severity_summary_remedy_and_runbook() {
    let runbook = fleet::read(&fleet::repo().join("docs/runbook.md"));
    let anchors: BTreeSet<String> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|h| h.trim().to_lowercase())
        .collect();
    for a in alerts() {
        let name = a["alert"].as_str().unwrap();
        let sev = a["labels"]["severity"].as_str().unwrap_or("");
        assert!(
            ["warning", "critical"].contains(&sev),
            "{name}: severity {sev:?}"
        );
        let ann = &a["annotations"];
        assert!(
            !ann["summary"].as_str().unwrap_or("").is_empty(),
            "{name}: summary"
        );
        let desc = ann["description"].as_str().unwrap_or("");
        assert!(
            desc.contains("binding limit"),
            "{name}: description names no binding limit"
        );
        assert!(
            desc.contains("`headroom "),
            "{name}: description has no headroom command"
        );
        let url = ann["runbook_url"].as_str().unwrap_or("");
        let anchor = url
            .strip_prefix("https://github.com/headroom-rs/headroom/blob/main/docs/runbook.md#")
            .unwrap_or_else(|| panic!("{name}: runbook_url {url:?} is not docs/runbook.md"));
        assert_eq!(anchor, name.to_lowercase(), "{name}: runbook anchor");
        assert!(
            anchors.contains(anchor),
            "{name}: docs/runbook.md has no section ## {name}"
        );
    }
    // Near-limit alerts (the e2e test watches the warning go pending) name the profile remedy.
    for a in alerts() {
        let desc = a["annotations"]["description"].as_str().unwrap();
        if a["alert"]
            .as_str()
            .unwrap()
            .starts_with("HeadroomNearLimit")
        {
            assert!(
                desc.contains("headroom preflight apply --profile c100k"),
                "{desc}"
            );
        }
    }
}

#[test]
fn rules_read_only_metrics_headroom_exports() {
    let rules = fleet::yaml(&fleet::deploy("prometheus/headroom-rules.yml"));
    let exported = fleet::core_metric_names();
    let used: BTreeSet<String> = fleet::rule_exprs(&rules)
        .iter()
        .flat_map(|e| fleet::metric_names(e))
        .collect();
    assert_eq!(used.len(), 13, "{used:?}");
    let unknown: Vec<_> = used.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "rules read metrics not in core/src/metrics.rs: {unknown:?}"
    );
}

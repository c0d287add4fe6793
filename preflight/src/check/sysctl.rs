//! One row per sysctl of the profile: the value now, the requirement, the
//! `sysctl -w` remedy and the capacity fixing it buys.

use super::model::set_sysctl;
use super::rule::{join, required_text, target};
use super::{Check, Status};
use crate::profile::SysctlRule;
use crate::readings::Readings;
use headroom_core::{ephemeral_ports_per_destination, predict, ModelConfig, Prediction, Snapshot};

/// The row of `key`, checked against `rule`. `base` is the snapshot the
/// model reads and `now` its prediction.
pub(super) fn row(
    key: &str,
    rule: &SysctlRule,
    r: &Readings,
    base: &Snapshot,
    now: &Prediction,
    cfg: &ModelConfig,
) -> Check {
    let cur = r.numbers(key);
    let raw = r.sysctls.get(key).cloned().flatten();
    let mut row = Check {
        name: key.to_string(),
        kind: "sysctl",
        scope: scope_of(key),
        current: raw
            .as_deref()
            .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" ")),
        required: required_text(rule),
        status: Status::Ok,
        ignored: false,
        reason: None,
        remedy: None,
        constraint: constraint_of(key).map(str::to_string),
        capacity_now: None,
        capacity_fixed: None,
        boot: None,
    };
    let fix = match &cur {
        None => {
            row.status = rule.level.into();
            row.reason = Some(if raw.is_some() {
                "value is not a number".into()
            } else if key.starts_with("net.") {
                format!(
                    "absent in net namespace {}: a host-wide sysctl (set it from the initial namespace) or a module not loaded",
                    base.netns
                )
            } else {
                "absent on this kernel".into()
            });
            None
        }
        Some(c) => target(rule, c),
    };
    if let Some(t) = &fix {
        row.status = rule.level.into();
        row.remedy = Some(format!("sysctl -w {key}='{}'", join(t)));
    }
    if let Some(c) = &cur {
        match constraint_of(key) {
            Some("ephemeral-ports") => {
                let size = |v: &[u64]| match v {
                    [lo, hi] => {
                        ephemeral_ports_per_destination((*lo as u16, *hi as u16), 1, 0, 0)
                            .max_connections
                    }
                    _ => 0,
                };
                row.capacity_now = Some(size(c));
                row.capacity_fixed = Some(size(fix.as_deref().unwrap_or(c)));
            }
            Some(_) => {
                let mut s = base.clone();
                if let Some(t) = &fix {
                    set_sysctl(&mut s, key, t);
                }
                row.capacity_now = Some(now.predicted_max_connections);
                row.capacity_fixed = Some(predict(&s, cfg).predicted_max_connections);
            }
            None => {}
        }
    }
    row
}

fn scope_of(key: &str) -> &'static str {
    if key.starts_with("net.") {
        "net-namespace"
    } else {
        "host"
    }
}

/// The model constraint a sysctl feeds, if the model has one.
fn constraint_of(key: &str) -> Option<&'static str> {
    match key {
        "fs.nr_open" => Some("nofile"),
        "fs.file-max" => Some("file-max"),
        "net.netfilter.nf_conntrack_max" => Some("conntrack"),
        "net.ipv4.ip_local_port_range" => Some("ephemeral-ports"),
        _ => None,
    }
}

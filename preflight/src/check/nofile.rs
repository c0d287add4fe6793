//! The nofile row: the target's RLIMIT_NOFILE against the profile, and who
//! can raise it (the process itself, prlimit with CAP_SYS_RESOURCE, or only
//! a privileged parent at the next start).

use super::model::set_nofile;
use super::{Check, Status};
use crate::profile::NofileRule;
use crate::readings::Readings;
use headroom_core::{predict, ModelConfig, Prediction, Snapshot};

fn nofile_ok(n: &NofileRule, soft: Option<u64>, hard: Option<u64>) -> bool {
    soft.is_none_or(|s| s >= n.soft) && hard.is_none_or(|h| h >= n.hard)
}

fn fmt_limit(v: Option<u64>) -> String {
    v.map_or("unlimited".into(), |v| v.to_string())
}

pub(super) fn row(
    profile: &str,
    n: &NofileRule,
    r: &Readings,
    base: &Snapshot,
    now: &Prediction,
    cfg: &ModelConfig,
) -> Check {
    let p = &base.processes[0];
    let (soft, hard) = (p.nofile_soft, p.nofile_hard);
    let ok = nofile_ok(n, soft, hard);
    let who = if r.self_process {
        "this session".to_string()
    } else {
        format!("pid {}", p.pid)
    };
    let mut reason = None;
    let mut remedy = None;
    if !ok {
        let hard_short = hard.is_some_and(|h| h < n.hard);
        reason = Some(if hard_short && !r.cap_sys_resource {
            format!(
                "hard limit {} < {} and headroom lacks CAP_SYS_RESOURCE: {who} cannot raise it at runtime; only a privileged parent can (systemd LimitNOFILE=, pam_limits at login)",
                fmt_limit(hard),
                n.hard
            )
        } else if hard_short {
            format!(
                "hard limit {} < {}: raise it at runtime with prlimit --pid {} --nofile={}:{} (headroom has CAP_SYS_RESOURCE)",
                fmt_limit(hard),
                n.hard,
                p.pid,
                n.soft,
                n.hard
            )
        } else {
            format!(
                "soft limit {} < {}: the process can raise it itself up to its hard limit (setrlimit), or prlimit --pid {} --nofile={}:",
                fmt_limit(soft),
                n.soft,
                p.pid,
                n.soft
            )
        });
        remedy = Some(format!(
            "headroom preflight apply --profile {profile} [--unit NAME]: LimitNOFILE= drop-in and limits.d, then restart the service or log in again"
        ));
        if n.hard > base.system.nr_open {
            remedy = remedy.map(|m| {
                format!(
                    "{m}; fs.nr_open {} must first be raised to >= {}",
                    base.system.nr_open, n.hard
                )
            });
        }
    }
    let mut fixed = base.clone();
    set_nofile(&mut fixed, n);
    Check {
        name: "nofile".into(),
        kind: "rlimit",
        scope: "process",
        current: Some(format!(
            "soft {}, hard {} ({who})",
            fmt_limit(soft),
            fmt_limit(hard)
        )),
        required: format!("soft >= {}, hard >= {}", n.soft, n.hard),
        status: if ok { Status::Ok } else { n.level.into() },
        ignored: false,
        reason,
        remedy,
        constraint: Some("nofile".into()),
        capacity_now: Some(now.predicted_max_connections),
        capacity_fixed: Some(predict(&fixed, cfg).predicted_max_connections),
        boot: None,
    }
}

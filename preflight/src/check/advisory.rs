//! The advisory rows: memory for the target's connections, the conntrack
//! table, and whether the profile as a whole reaches its own target.

use super::{Check, Status};
use crate::profile::{ConntrackAdvice, MemoryAdvice, Profile};
use headroom_core::{Prediction, Snapshot};

/// Memory available against `target_connections` times the profile's
/// per-connection cost.
pub(super) fn memory(
    profile: &Profile,
    m: &MemoryAdvice,
    base: &Snapshot,
    now: &Prediction,
) -> Check {
    let need = profile
        .target_connections
        .saturating_mul(m.bytes_per_connection);
    let have = base.system.mem_available_bytes;
    let ok = have >= need;
    Check {
        name: "memory".into(),
        kind: "advisory",
        scope: "host",
        current: Some(format!("{} MiB available", have >> 20)),
        required: format!(
            ">= {} MiB ({} connections x {} B)",
            need.div_ceil(1 << 20),
            profile.target_connections,
            m.bytes_per_connection
        ),
        status: if ok { Status::Ok } else { Status::Warn },
        ignored: false,
        reason: None,
        remedy: (!ok).then(|| {
            "add memory, or lower the per-connection cost (buffers, session state)".into()
        }),
        constraint: Some("memory".into()),
        capacity_now: now.constraint("memory").map(|c| c.max_connections),
        capacity_fixed: None,
        boot: None,
    }
}

/// nf_conntrack_max against the profile's minimum, when the module is loaded.
pub(super) fn conntrack(ct: &ConntrackAdvice, base: &Snapshot) -> Check {
    let max = base.system.conntrack_max;
    let ok = max.is_none_or(|m| m >= ct.min);
    Check {
        name: "conntrack".into(),
        kind: "advisory",
        scope: "net-namespace",
        current: Some(max.map_or("module not loaded".into(), |m| m.to_string())),
        required: format!(">= {} when nf_conntrack is loaded", ct.min),
        status: if ok { Status::Ok } else { Status::Warn },
        ignored: false,
        reason: (!ok).then(|| {
            "every tracked connection takes an entry; past nf_conntrack_max new ones are dropped (\"nf_conntrack: table full\")".into()
        }),
        remedy: (!ok).then(|| {
            format!("sysctl -w net.netfilter.nf_conntrack_max={}, or exempt the port from tracking (NOTRACK)", ct.min)
        }),
        constraint: Some("conntrack".into()),
        capacity_now: None,
        capacity_fixed: None,
        boot: None,
    }
}

/// The sum of it all: does the profile reach its own target?
pub(super) fn capacity(profile: &Profile, now: &Prediction, applied: &Prediction) -> Check {
    let enough = applied.predicted_max_connections >= profile.target_connections;
    Check {
        name: "capacity".into(),
        kind: "advisory",
        scope: "process",
        current: Some(format!(
            "{} now (binding {}), {} with the profile (binding {})",
            now.predicted_max_connections,
            now.binding,
            applied.predicted_max_connections,
            applied.binding
        )),
        required: format!(">= {} connections", profile.target_connections),
        status: if enough { Status::Ok } else { Status::Warn },
        ignored: false,
        reason: (!enough).then(|| {
            applied
                .binding_constraint()
                .map_or(String::new(), |c| c.explanation.clone())
        }),
        remedy: (!enough).then(|| {
            applied
                .binding_constraint()
                .map_or(String::new(), |c| c.remedy.clone())
        }),
        constraint: Some(applied.binding.clone()),
        capacity_now: Some(now.predicted_max_connections),
        capacity_fixed: Some(applied.predicted_max_connections),
        boot: None,
    }
}

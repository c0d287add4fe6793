//! How the application shapes the model: which processes' descriptor
//! tables its connections take, and its own caps and process limits as
//! constraints beside the kernel's (`predict` calls these).

use crate::app::AppInfo;
use crate::model::{constraint, Constraint};
use crate::snapshot::{ProcessInfo, Snapshot};

/// The processes whose descriptors client connections take: the ones the
/// application names (nginx's workers), else every process of the target.
pub(crate) fn connection_holders(snap: &Snapshot) -> Vec<&ProcessInfo> {
    let named = snap
        .app
        .as_ref()
        .map(|a| a.connection_pids.as_slice())
        .unwrap_or_default();
    let holders: Vec<&ProcessInfo> = snap
        .processes
        .iter()
        .filter(|p| named.is_empty() || named.contains(&p.pid))
        .collect();
    if holders.is_empty() {
        snap.processes.iter().collect()
    } else {
        holders
    }
}

pub(crate) fn holder_connections(holders: &[&ProcessInfo]) -> u64 {
    holders.iter().map(|p| p.connections).sum()
}

/// The application's caps and, for a process per connection, the process
/// limits, as constraints. A cap's `used` is the server's own count where it
/// tells it, else the connections the target holds.
pub(crate) fn app_constraints(app: &AppInfo, conns: u64) -> Vec<Constraint> {
    let mut cs = Vec::new();
    for cap in &app.caps {
        let per = cap.per_connection.max(1);
        let used = cap.used.unwrap_or(conns * per);
        cs.push(constraint(
            &cap.name,
            cap.scope,
            "connections",
            cap.limit,
            used,
            cap.reserve,
            per,
            conns,
            format!(
                "{} (read {}: {})",
                cap.explanation,
                cap.source.as_str(),
                cap.read_from
            ),
            &cap.remedy,
        ));
    }
    for pl in &app.process_limits {
        cs.push(constraint(
            &pl.name,
            pl.scope,
            "processes",
            pl.limit,
            pl.used,
            0,
            1,
            conns,
            pl.explanation.clone(),
            &pl.remedy,
        ));
    }
    cs
}

pub(crate) fn is_app_cap(app: Option<&AppInfo>, name: &str) -> bool {
    app.is_some_and(|a| a.caps.iter().any(|c| c.name == name))
}

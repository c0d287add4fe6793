//! Memory: the host's MemAvailable, or the target's cgroup memory.max, at
//! the model's cost per connection. A cgroup's limit is its unit's
//! MemoryMax=; the host's is more memory or a cheaper connection.

use crate::{numbers, Advice, Ctx, NofileOwner, Remedy, RemedyKind, Severity, Signal};

pub fn advise(ctx: &Ctx) -> Vec<Advice> {
    ["memory", "cgroup-memory"]
        .iter()
        .filter_map(|name| one(ctx, name))
        .collect()
}

fn one(ctx: &Ctx, name: &str) -> Option<Advice> {
    let p = &ctx.prediction;
    let c = p.constraint(name)?;
    let u = c.utilisation();
    let severity = if u >= ctx.cfg.near {
        Severity::Near
    } else if p.binding == name {
        Severity::Binding
    } else {
        return None;
    };
    let summary = match severity {
        Severity::Binding => format!(
            "{name} binds first, at {} connections: {}",
            c.max_connections, c.explanation
        ),
        _ => format!("{}: {:.0}% in use", c.explanation, u * 100.0),
    };
    let (remedy, after) = if name == "cgroup-memory" {
        let want = c.limit.saturating_mul(2);
        let after = ctx.predict_with(|s| {
            for q in s.processes.iter_mut() {
                if q.cgroup_memory_limit_bytes.is_some() {
                    q.cgroup_memory_limit_bytes = q.cgroup_memory_limit_bytes.map(|l| l * 2);
                }
            }
        });
        let pid = ctx.now.processes.first().map_or(0, |q| q.pid);
        let (place, command) = match ctx.owners.nofile_owner(pid) {
            NofileOwner::Unit { unit, .. } => (
                format!("/etc/systemd/system.control/{unit}.d/50-MemoryMax.conf"),
                format!("systemctl set-property {unit} MemoryMax={want}"),
            ),
            _ => (
                "the memory limit of the process's container or cgroup".into(),
                format!("raise memory.max of pid {pid}'s cgroup to {want} (resources.limits.memory in Kubernetes)"),
            ),
        };
        (
            Remedy {
                kind: RemedyKind::MemoryMax,
                key: "MemoryMax".into(),
                current: Some(c.limit.to_string()),
                value: want.to_string(),
                place,
                why_there: "systemd keeps set-property changes across restarts and reboots".into(),
                command,
                owner_conflicts: Vec::new(),
            },
            Some(after.predicted_max_connections),
        )
    } else {
        (
            Remedy {
                kind: RemedyKind::Memory,
                key: "memory".into(),
                current: Some(ctx.now.system.mem_available_bytes.to_string()),
                value: "more memory, or fewer bytes per connection".into(),
                place: "the host".into(),
                why_there: "no setting raises it".into(),
                command: format!(
                    "each connection costs {} B: smaller buffers or per-session state, or more RAM",
                    c.per_connection
                ),
                owner_conflicts: Vec::new(),
            },
            None,
        )
    };
    Some(Advice {
        rank: 0,
        id: name.to_string(),
        rule: name.to_string(),
        severity,
        signal: Signal {
            name: format!("{name}-{}", severity.as_str()),
            summary,
            numbers: numbers(&[
                ("limit_bytes", c.limit),
                ("used_bytes", c.used),
                ("bytes_per_connection", c.per_connection),
            ]),
        },
        remedies: vec![remedy],
        capacity_of: "connections".into(),
        capacity_now: p.predicted_max_connections,
        capacity_after: after,
        next_wall: None,
        notes: Vec::new(),
        utilisation: u,
    })
}

#[cfg(test)]
mod tests {
    use crate::fixture::{self, Owned};
    use crate::{advise, Config, NofileOwner, RemedyKind, Severity};

    #[test]
    fn a_cgroup_nearly_full_gets_memory_max_doubled_for_its_unit() {
        let mut s = fixture::host();
        s.processes[0].cgroup_memory_limit_bytes = Some(64 << 20);
        s.processes[0].cgroup_memory_used_bytes = Some(60 << 20);
        let mut owners = Owned::default();
        owners.nofile.insert(
            42,
            NofileOwner::Unit {
                unit: "api.service".into(),
                limit_nofile: None,
            },
        );
        let a = advise(&s, None, &owners, &Config::default());
        let a = a.iter().find(|a| a.rule == "cgroup-memory").unwrap();
        assert_eq!(a.severity, Severity::Near);
        let r = &a.remedies[0];
        assert_eq!(
            (r.kind, r.value.as_str()),
            (RemedyKind::MemoryMax, "134217728")
        );
        assert_eq!(
            r.command,
            "systemctl set-property api.service MemoryMax=134217728"
        );
        // 4 MiB left at 6144 B: 682; doubled: 68 MiB left: 11605.
        assert_eq!((a.capacity_now, a.capacity_after), (682, Some(11605)));
    }

    #[test]
    fn host_memory_near_has_no_number_after() {
        let mut s = fixture::host();
        s.system.mem_available_bytes = 1 << 30;
        let a = advise(&s, None, &Owned::default(), &Config::default());
        let a = a.iter().find(|a| a.rule == "memory").unwrap();
        assert_eq!(a.severity, Severity::Near);
        assert_eq!(a.capacity_after, None);
        assert_eq!(a.remedies[0].kind, RemedyKind::Memory);
    }
}

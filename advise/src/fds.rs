//! File descriptors per process: EMFILE seen (eBPF), a table nearly full,
//! or nofile binding first. The remedy is RLIMIT_NOFILE where the process
//! gets it: its systemd unit's LimitNOFILE= (a drop-in) or, for a process
//! of a login session, pam_limits' limits.d.

use crate::{
    dropin_path, numbers, ratio, Advice, Ctx, NofileOwner, Remedy, RemedyKind, Severity, Signal,
    LIMITS_FILE,
};
use headroom_core::{ProcessInfo, Snapshot};

/// EMFILE failures of `pid` counted in `s`.
pub fn emfile(s: &Snapshot, pid: u32) -> u64 {
    s.fd_errors
        .iter()
        .filter(|e| e.pid == pid && e.errno == "EMFILE")
        .map(|e| e.count)
        .sum()
}

/// The nofile to advise: the target, or twice the peak when that is more,
/// and always above the limit that was hit.
pub fn wanted(soft: u64, peak: u64, target: u64) -> u64 {
    let n = target.max((peak * 2).next_power_of_two());
    if n <= soft {
        soft * 2
    } else {
        n
    }
}

struct Group<'a> {
    owner: NofileOwner,
    severity: Severity,
    procs: Vec<&'a ProcessInfo>,
}

pub fn advise(ctx: &Ctx) -> Vec<Advice> {
    let s = ctx.now;
    let nr_open = s.system.nr_open;
    let soft = |p: &ProcessInfo| p.nofile_soft.unwrap_or(nr_open);
    let mut picked: Vec<(Severity, &ProcessInfo)> = s
        .processes
        .iter()
        .filter_map(|p| {
            if emfile(s, p.pid) > 0 {
                Some((Severity::Hit, p))
            } else if ratio(p.open_fds_peak.max(p.open_fds), soft(p)) >= ctx.cfg.near {
                Some((Severity::Near, p))
            } else {
                None
            }
        })
        .collect();
    if picked.is_empty() && ctx.prediction.binding == "nofile" {
        picked = s.processes.iter().map(|p| (Severity::Binding, p)).collect();
    }
    let mut groups: Vec<Group> = Vec::new();
    for (severity, p) in picked {
        let owner = ctx.owners.nofile_owner(p.pid);
        match groups
            .iter_mut()
            .find(|g| g.owner == owner && g.severity == severity)
        {
            Some(g) => g.procs.push(p),
            None => groups.push(Group {
                owner,
                severity,
                procs: vec![p],
            }),
        }
    }
    groups.iter().map(|g| one(ctx, g)).collect()
}

fn one(ctx: &Ctx, g: &Group) -> Advice {
    let s = ctx.now;
    let nr_open = s.system.nr_open;
    let soft = g
        .procs
        .iter()
        .map(|p| p.nofile_soft.unwrap_or(nr_open))
        .min()
        .unwrap_or(0);
    let hard = g
        .procs
        .iter()
        .map(|p| p.nofile_hard.unwrap_or(nr_open))
        .min()
        .unwrap_or(0);
    let peak = g
        .procs
        .iter()
        .map(|p| p.open_fds_peak.max(p.open_fds))
        .max()
        .unwrap_or(0);
    let open: u64 = g.procs.iter().map(|p| p.open_fds).sum();
    let errors: u64 = g.procs.iter().map(|p| emfile(s, p.pid)).sum();
    let delta = ctx.before.map(|b| {
        g.procs
            .iter()
            .map(|p| emfile(s, p.pid).saturating_sub(emfile(b, p.pid)))
            .sum::<u64>()
    });
    let n = wanted(soft, peak, ctx.cfg.targets.nofile);
    let pids: Vec<u32> = g.procs.iter().map(|p| p.pid).collect();
    let who = match g.procs.as_slice() {
        [p] => format!("pid {} ({})", p.pid, p.comm),
        ps => format!("{} processes ({})", ps.len(), ps[0].comm),
    };

    let table = format!("fds peak {peak} of soft limit {soft} (hard {hard})");
    let (name, summary) = match g.severity {
        Severity::Hit => {
            let calls: Vec<String> = s
                .fd_errors
                .iter()
                .filter(|e| pids.contains(&e.pid) && e.errno == "EMFILE")
                .map(|e| format!("{} x{}", e.syscall, e.count))
                .collect();
            let d = delta.map_or(String::new(), |d| format!(", +{d} {}", ctx.over()));
            (
                "emfile",
                format!(
                    "EMFILE {errors} time(s) in {who} ({}{d}); {table}",
                    calls.join(", ")
                ),
            )
        }
        Severity::Near => ("fd-table-near", format!("{who}: {table}")),
        Severity::Binding => (
            "nofile-binding",
            format!(
                "nofile binds first, at {} connections; {who}: {table}",
                ctx.prediction.predicted_max_connections
            ),
        ),
    };
    let mut nums = vec![
        ("emfile", errors),
        ("open_fds", open),
        ("open_fds_peak", peak),
        ("nofile_soft", soft),
        ("nofile_hard", hard),
    ];
    if let Some(d) = delta {
        nums.push(("emfile_delta", d));
    }

    let mut remedies = vec![limit_remedy(&g.owner, soft, hard, n)];
    let mut notes = vec![format!(
        "now, until it restarts: prlimit --nofile={n}:{n} --pid {} (raising the hard limit needs CAP_SYS_RESOURCE)",
        pids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
    )];
    if let Some(a) = s.app.as_ref().filter(|a| a.is_known()) {
        match a.kind.as_str() {
            "nginx" => remedies.push(Remedy {
                kind: RemedyKind::AppDirective,
                key: "worker_rlimit_nofile".into(),
                current: None,
                value: n.to_string(),
                place: "/etc/nginx/nginx.conf".into(),
                why_there: "nginx sets its workers' limit itself from this directive".into(),
                command: format!("`worker_rlimit_nofile {n};` in the main context of /etc/nginx/nginx.conf, then `nginx -s reload`"),
                owner_conflicts: Vec::new(),
            }),
            "redis" | "valkey" => notes.push(
                "Redis sizes maxclients from its nofile at start (nofile - 32): restart it after raising"
                    .into(),
            ),
            _ => {}
        }
    }
    if n > nr_open {
        remedies.push(ctx.sysctl("fs.nr_open", Some(nr_open.to_string()), n.to_string()));
    }
    let after = ctx.predict_with(|c| {
        c.system.nr_open = c.system.nr_open.max(n);
        for p in c.processes.iter_mut().filter(|p| pids.contains(&p.pid)) {
            p.nofile_soft = Some(n);
            p.nofile_hard = Some(p.nofile_hard.map_or(n, |h| h.max(n)));
        }
    });
    Advice {
        rank: 0,
        id: format!("nofile {who}"),
        rule: "nofile".into(),
        severity: g.severity,
        signal: Signal {
            name: name.into(),
            summary,
            numbers: numbers(&nums),
        },
        remedies,
        capacity_of: "connections".into(),
        capacity_now: ctx.prediction.predicted_max_connections,
        capacity_after: Some(after.predicted_max_connections),
        next_wall: crate::wall_after(&after, "nofile"),
        notes,
        utilisation: if g.severity == Severity::Hit {
            1.0
        } else {
            ratio(peak, soft)
        },
    }
}

fn limit_remedy(owner: &NofileOwner, soft: u64, hard: u64, n: u64) -> Remedy {
    let current = Some(if soft == hard {
        soft.to_string()
    } else {
        format!("{soft}:{hard}")
    });
    match owner {
        NofileOwner::Unit { unit, limit_nofile } => {
            let ours = dropin_path(unit);
            let name = unit.strip_suffix(".service").unwrap_or(unit);
            // A drop-in sorting after ours would still win: edit that one.
            let later = limit_nofile.as_ref().filter(|b| {
                b.file.contains(".service.d/")
                    && b.file.rsplit('/').next().unwrap_or("") > "90-headroom.conf"
            });
            let place = later.map_or(ours.clone(), |b| b.file.clone());
            let why = match limit_nofile {
                Some(b) if later.is_some() => format!(
                    "{} sets LimitNOFILE={} and sorts after 90-headroom.conf: change it there",
                    b.file, b.value
                ),
                Some(b) => format!(
                    "{} sets LimitNOFILE={} now; a drop-in overrides it at the unit's next start",
                    b.file, b.value
                ),
                None => format!(
                    "{unit} sets no LimitNOFILE=: it gets systemd's DefaultLimitNOFILE (1024:524288)"
                ),
            };
            let command = if later.is_some() {
                format!(
                    "sed -i 's/^LimitNOFILE=.*/LimitNOFILE={n}/' {place} && systemctl daemon-reload && systemctl restart {name}.service"
                )
            } else {
                format!(
                    "mkdir -p /etc/systemd/system/{name}.service.d && printf '[Service]\\nLimitNOFILE={n}\\n' > {place} && systemctl daemon-reload && systemctl restart {name}.service"
                )
            };
            Remedy {
                kind: RemedyKind::LimitNofile,
                key: "LimitNOFILE".into(),
                current: limit_nofile.as_ref().map(|b| b.value.clone()).or(current),
                value: n.to_string(),
                place,
                why_there: why,
                command,
                owner_conflicts: Vec::new(),
            }
        }
        NofileOwner::Session { user } => Remedy {
            kind: RemedyKind::LimitNofile,
            key: "nofile".into(),
            current,
            value: n.to_string(),
            place: LIMITS_FILE.into(),
            why_there: format!(
                "not started by a systemd unit: pam_limits sets it at {user}'s next login, and what that session starts inherits it"
            ),
            command: format!(
                "printf '{user} soft nofile {n}\\n{user} hard nofile {n}\\n' >> {LIMITS_FILE}"
            ),
            owner_conflicts: Vec::new(),
        },
        NofileOwner::Unknown { why } => Remedy {
            kind: RemedyKind::LimitNofile,
            key: "nofile".into(),
            current,
            value: n.to_string(),
            place: format!("whatever starts the process (its unit or session: {why})"),
            why_there: "who starts the process could not be read".into(),
            command: format!("LimitNOFILE={n} in its unit, or `ulimit -n {n}` before it starts"),
            owner_conflicts: Vec::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::{self, Owned};
    use crate::{advise, BootValue, Config};
    use headroom_core::FdError;

    fn emfile_child() -> (headroom_core::Snapshot, headroom_core::Snapshot) {
        let mut before = fixture::host();
        let p = &mut before.processes[0];
        (p.pid, p.comm) = (4242, "python3".into());
        (p.nofile_soft, p.nofile_hard) = (Some(64), Some(64));
        (p.open_fds, p.open_fds_peak) = (5, 5);
        let mut now = before.clone();
        (now.processes[0].open_fds, now.processes[0].open_fds_peak) = (64, 64);
        now.fd_errors = vec![FdError {
            pid: 4242,
            syscall: "socket".into(),
            errno: "EMFILE".into(),
            count: 11,
        }];
        (before, now)
    }

    #[test]
    fn wanted_nofile() {
        assert_eq!(wanted(64, 64, 65535), 65535);
        assert_eq!(wanted(65535, 65535, 65535), 131072);
        assert_eq!(wanted(1024, 100, 65535), 65535);
    }

    #[test]
    fn emfile_in_a_session_gets_limits_d_and_the_capacity_it_buys() {
        let (before, now) = emfile_child();
        let a = advise(&now, Some(&before), &Owned::default(), &Config::default());
        assert_eq!(a.len(), 1, "{a:#?}");
        let a = &a[0];
        assert_eq!(
            (a.severity, a.rule.as_str(), a.signal.name.as_str()),
            (Severity::Hit, "nofile", "emfile")
        );
        assert_eq!(
            a.signal.summary,
            "EMFILE 11 time(s) in pid 4242 (python3) (socket x11, +11 in 1.0 s); fds peak 64 of soft limit 64 (hard 64)"
        );
        // 64 - 64 open - 32 reserve: nothing; 65535 - 64 - 32 after.
        assert_eq!((a.capacity_now, a.capacity_after), (0, Some(65439)));
        let r = &a.remedies[0];
        assert_eq!(
            (
                r.kind,
                r.key.as_str(),
                r.current.as_deref(),
                r.value.as_str()
            ),
            (RemedyKind::LimitNofile, "nofile", Some("64"), "65535")
        );
        assert_eq!(r.place, "/etc/security/limits.d/90-headroom.conf");
        assert_eq!(
            r.command,
            "printf 'root soft nofile 65535\\nroot hard nofile 65535\\n' >> /etc/security/limits.d/90-headroom.conf"
        );
        assert_eq!(a.notes[0], "now, until it restarts: prlimit --nofile=65535:65535 --pid 4242 (raising the hard limit needs CAP_SYS_RESOURCE)");
    }

    #[test]
    fn emfile_in_a_unit_gets_its_drop_in() {
        let (before, now) = emfile_child();
        let mut owners = Owned::default();
        owners.nofile.insert(
            4242,
            NofileOwner::Unit {
                unit: "api.service".into(),
                limit_nofile: Some(BootValue {
                    value: "64".into(),
                    file: "/lib/systemd/system/api.service".into(),
                }),
            },
        );
        let a = &advise(&now, Some(&before), &owners, &Config::default())[0];
        let r = &a.remedies[0];
        assert_eq!(
            (r.key.as_str(), r.current.as_deref()),
            ("LimitNOFILE", Some("64"))
        );
        assert_eq!(
            r.place,
            "/etc/systemd/system/api.service.d/90-headroom.conf"
        );
        assert_eq!(
            r.command,
            "mkdir -p /etc/systemd/system/api.service.d && printf '[Service]\\nLimitNOFILE=65535\\n' > /etc/systemd/system/api.service.d/90-headroom.conf && systemctl daemon-reload && systemctl restart api.service"
        );
        assert_eq!(
            r.why_there,
            "/lib/systemd/system/api.service sets LimitNOFILE=64 now; a drop-in overrides it at the unit's next start"
        );
        // A later drop-in wins over ours: edit that one.
        owners.nofile.insert(
            4242,
            NofileOwner::Unit {
                unit: "api.service".into(),
                limit_nofile: Some(BootValue {
                    value: "64".into(),
                    file: "/etc/systemd/system/api.service.d/99-limits.conf".into(),
                }),
            },
        );
        let a = &advise(&now, Some(&before), &owners, &Config::default())[0];
        assert_eq!(
            a.remedies[0].place,
            "/etc/systemd/system/api.service.d/99-limits.conf"
        );
    }

    #[test]
    fn a_nearly_full_table_is_near_and_nofile_binding_is_last() {
        let mut s = fixture::host();
        (s.processes[0].open_fds, s.processes[0].open_fds_peak) = (100, 17000);
        let a = advise(&s, Some(&s.clone()), &Owned::default(), &Config::default());
        assert_eq!(
            (a[0].severity, a[0].signal.name.as_str()),
            (Severity::Near, "fd-table-near")
        );
        // Twice the peak, rounded up to a power of two.
        assert_eq!(a[0].remedies[0].value, "65536");
        let s = fixture::host();
        let a = advise(&s, Some(&s.clone()), &Owned::default(), &Config::default());
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].severity, Severity::Binding);
        assert_eq!(
            a[0].signal.summary,
            "nofile binds first, at 19958 connections; pid 42 (server): fds peak 10 of soft limit 20000 (hard 20000)"
        );
        assert_eq!(
            (a[0].capacity_now, a[0].capacity_after),
            (19958, Some(65493))
        );
    }
}

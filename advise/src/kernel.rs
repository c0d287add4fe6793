//! Host-wide kernel tables the model counts: file handles (fs.file-max,
//! ENFILE), conntrack entries and TCP memory pages. Each one is a sysctl;
//! advice comes when it was hit, is near, or binds first.

use crate::{numbers, Advice, Ctx, Severity, Signal};
use headroom_core::Snapshot;

/// ENFILE failures of the target's processes.
pub fn enfile(s: &Snapshot) -> u64 {
    s.fd_errors
        .iter()
        .filter(|e| e.errno == "ENFILE")
        .map(|e| e.count)
        .sum()
}

pub fn advise(ctx: &Ctx) -> Vec<Advice> {
    let s = ctx.now;
    let mut out = Vec::new();
    let n = enfile(s);
    let fm = s.system.file_max;
    let want = ctx.cfg.targets.file_max.max(fm.saturating_mul(2));
    out.extend(rule(
        ctx,
        "file-max",
        "fs.file-max",
        (n > 0).then(|| {
            (
                "enfile",
                format!(
                    "ENFILE {n} time(s): the host ran out of file handles ({} allocated of fs.file-max {fm})",
                    s.system.file_nr_allocated
                ),
                n,
            )
        }),
        fm.to_string(),
        want.to_string(),
        |c| c.system.file_max = want,
    ));
    if let Some(max) = s.system.conntrack_max {
        let want = max.saturating_mul(2);
        let mut a = rule(
            ctx,
            "conntrack",
            "net.netfilter.nf_conntrack_max",
            None,
            max.to_string(),
            want.to_string(),
            |c| c.system.conntrack_max = Some(want),
        );
        if let Some(a) = a.as_mut() {
            a.notes.push(
                "or exempt the port from tracking (a NOTRACK rule in the raw table): no entry per connection at all"
                    .into(),
            );
        }
        out.extend(a);
    }
    if let Some((lo, pressure, max)) = s.system.tcp_mem_pages {
        let want = (lo, pressure, max.saturating_mul(2));
        out.extend(rule(
            ctx,
            "tcp-mem",
            "net.ipv4.tcp_mem",
            None,
            format!("{lo} {pressure} {max}"),
            format!("{} {} {}", want.0, want.1, want.2),
            |c| c.system.tcp_mem_pages = Some(want),
        ));
    }
    out
}

/// Advice for the constraint `name` (sysctl `key`): hit when `hit` says
/// so, near at the configured utilisation, or binding.
fn rule(
    ctx: &Ctx,
    name: &str,
    key: &str,
    hit: Option<(&str, String, u64)>,
    current: String,
    value: String,
    change: impl FnOnce(&mut Snapshot),
) -> Option<Advice> {
    let c = ctx.prediction.constraint(name)?;
    let u = c.utilisation();
    let errors = hit.as_ref().map(|h| h.2);
    let (severity, signal, summary) = match hit {
        Some((sig, summary, _)) => (Severity::Hit, sig.to_string(), summary),
        None if u >= ctx.cfg.near => (
            Severity::Near,
            format!("{name}-near"),
            format!("{}: {:.0}% in use", c.explanation, u * 100.0),
        ),
        None if ctx.prediction.binding == name => (
            Severity::Binding,
            format!("{name}-binding"),
            format!(
                "{name} binds first, at {} connections: {}",
                c.max_connections, c.explanation
            ),
        ),
        None => return None,
    };
    let after = ctx.predict_with(change);
    let mut nums = vec![
        ("limit", c.limit),
        ("used", c.used),
        ("headroom", c.headroom),
    ];
    if let Some(n) = errors {
        nums.push(("errors", n));
    }
    Some(Advice {
        rank: 0,
        id: format!("{name} {key}"),
        rule: name.into(),
        severity,
        signal: Signal {
            name: signal,
            summary,
            numbers: numbers(&nums),
        },
        remedies: vec![ctx.sysctl(key, Some(current), value)],
        capacity_of: "connections".into(),
        capacity_now: ctx.prediction.predicted_max_connections,
        capacity_after: Some(after.predicted_max_connections),
        next_wall: crate::wall_after(&after, name),
        notes: Vec::new(),
        utilisation: if severity == Severity::Hit { 1.0 } else { u },
    })
}

#[cfg(test)]
mod tests {
    use crate::fixture::{self, Owned};
    use crate::{advise, Config, RemedyKind, Severity};
    use headroom_core::FdError;

    #[test]
    fn enfile_asks_for_file_max_with_the_capacity() {
        let mut s = fixture::host();
        s.system.file_max = 5000;
        s.system.file_nr_allocated = 5000;
        s.fd_errors = vec![FdError {
            pid: 42,
            syscall: "accept4".into(),
            errno: "ENFILE".into(),
            count: 3,
        }];
        let a = advise(&s, None, &Owned::default(), &Config::default());
        let a = a.iter().find(|a| a.rule == "file-max").unwrap();
        assert_eq!(
            (a.severity, a.signal.name.as_str()),
            (Severity::Hit, "enfile")
        );
        assert_eq!(
            a.signal.summary,
            "ENFILE 3 time(s): the host ran out of file handles (5000 allocated of fs.file-max 5000)"
        );
        let r = &a.remedies[0];
        assert_eq!(
            (r.kind, r.key.as_str(), r.value.as_str()),
            (RemedyKind::Sysctl, "fs.file-max", "262144")
        );
        // file-max bound at 0 more; after: 262144 - 5000, nofile (19958) binds.
        assert_eq!((a.capacity_now, a.capacity_after), (0, Some(19958)));
        assert_eq!(a.next_wall.as_deref(), Some("nofile at 19958 connections"));
    }

    #[test]
    fn conntrack_near_doubles_its_max() {
        let mut s = fixture::host();
        s.system.conntrack_max = Some(1000);
        s.system.conntrack_count = Some(900);
        let a = advise(&s, None, &Owned::default(), &Config::default());
        let a = a.iter().find(|a| a.rule == "conntrack").unwrap();
        assert_eq!(a.severity, Severity::Near);
        assert_eq!(
            a.signal.summary,
            "net.netfilter.nf_conntrack_max 1000: 900 connections tracked: 90% in use"
        );
        assert_eq!(a.remedies[0].value, "2000");
        assert_eq!((a.capacity_now, a.capacity_after), (100, Some(1100)));
    }

    #[test]
    fn tcp_mem_binding_doubles_max_pages() {
        let mut s = fixture::host();
        s.system.tcp_mem_pages = Some((100, 200, 3000));
        s.system.tcp_mem_used_pages = Some(290);
        // Connections that each keep a page of socket buffers (measured).
        s.memory_per_connection = Some(headroom_core::MemoryPerConnection {
            process_bytes: 4096,
            kernel_bytes: 2048 + 4096,
            measured: true,
            buffer_bytes: Some(4096),
        });
        let a = advise(&s, None, &Owned::default(), &Config::default());
        let a = a.iter().find(|a| a.rule == "tcp-mem").unwrap();
        assert_eq!(a.severity, Severity::Binding);
        assert_eq!(a.remedies[0].value, "100 200 6000");
        assert_eq!((a.capacity_now, a.capacity_after), (2710, Some(5710)));
    }
}

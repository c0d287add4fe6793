//! The accept queue: ListenOverflows, a listener's peak against its limit.
//! The limit is min(backlog passed to listen(), net.core.somaxconn), so the
//! remedy is the server's own backlog setting and, where it caps it,
//! somaxconn; the capacity is what the queue holds: limit + 1.

use crate::{numbers, ratio, Advice, Ctx, Remedy, RemedyKind, Severity, Signal};
use headroom_core::{accept_queue_capacity, effective_backlog, Listener};

/// Largest backlog advised (c100k's somaxconn).
pub const MAX_BACKLOG: u64 = 65535;

/// The backlog to advise for a queue with `limit`: the target, or twice
/// the limit when that is already reached.
pub fn wanted(limit: u64, target: u64) -> u64 {
    target
        .max((limit * 2).next_power_of_two())
        .min(MAX_BACKLOG)
        .max(limit)
}

pub fn advise(ctx: &Ctx) -> Vec<Advice> {
    let s = ctx.now;
    let b = ctx.before;
    let overflows = s.netstat.listen_overflows;
    let d_over = b.map(|b| overflows.saturating_sub(b.netstat.listen_overflows));
    let d_drops = b.map(|b| {
        s.netstat
            .listen_drops
            .saturating_sub(b.netstat.listen_drops)
    });
    let mut out = Vec::new();
    for l in &s.listeners {
        let limit = l.accept_queue_limit;
        let peak = l.accept_queue_peak.max(l.accept_queue_depth);
        let prev = b.and_then(|b| b.listeners.iter().find(|x| x.address == l.address));
        let full_events = l
            .queue_full_events
            .map(|n| n.saturating_sub(prev.and_then(|p| p.queue_full_events).unwrap_or(0)));
        let full = peak > limit;
        let overflowing = d_over.unwrap_or(0) > 0;
        // Without eBPF a queue that filled and drained between two samples
        // is invisible: the namespace's overflows are all there is.
        let hit = full
            || full_events.unwrap_or(0) > 0
            || (overflowing && (peak >= limit || !ctx.cfg.ebpf));
        let near = limit > 0 && ratio(peak, limit) >= ctx.cfg.near;
        if !hit && !near {
            continue;
        }
        out.push(one(ctx, l, peak, full, full_events, d_over, d_drops, hit));
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn one(
    ctx: &Ctx,
    l: &Listener,
    peak: u64,
    full: bool,
    full_events: Option<u64>,
    d_over: Option<u64>,
    d_drops: Option<u64>,
    hit: bool,
) -> Advice {
    let s = ctx.now;
    let limit = l.accept_queue_limit;
    let somaxconn = s.system.somaxconn;
    let want = wanted(limit, ctx.cfg.targets.somaxconn);
    let backlog_caps = limit < somaxconn;

    let mut seen = Vec::new();
    match d_over {
        Some(d) => seen.push(format!(
            "ListenOverflows +{d} {} ({} in all)",
            ctx.over(),
            s.netstat.listen_overflows
        )),
        None => seen.push(format!(
            "ListenOverflows {} since the namespace started",
            s.netstat.listen_overflows
        )),
    }
    let mut q = format!("{} accept queue peak {peak} of limit {limit}", l.address);
    if full {
        q.push_str(&format!(
            " (full: past {} waiting connections the kernel drops new ones)",
            accept_queue_capacity(limit)
        ));
    }
    if let Some(n) = full_events.filter(|n| *n > 0) {
        q.push_str(&format!(", found full {n} time(s)"));
    }
    seen.push(q);
    let mut nums = vec![
        ("listen_overflows", s.netstat.listen_overflows),
        ("listen_drops", s.netstat.listen_drops),
        ("accept_queue_depth", l.accept_queue_depth),
        ("accept_queue_peak", peak),
        ("accept_queue_limit", limit),
        ("somaxconn", somaxconn),
    ];
    if let Some(d) = d_over {
        nums.push(("listen_overflows_delta", d));
    }
    if let Some(d) = d_drops {
        nums.push(("listen_drops_delta", d));
    }
    if let Some(n) = full_events {
        nums.push(("queue_full_events", n));
    }
    let name = if d_over.unwrap_or(0) > 0 {
        "listen-overflows"
    } else if hit {
        "accept-queue-full"
    } else {
        "accept-queue-near"
    };

    let mut remedies = Vec::new();
    let mut notes = Vec::new();
    if want > limit {
        let current = backlog_caps.then_some(limit);
        if let Some(r) = app_backlog(ctx, l, current, want, &mut notes) {
            remedies.push(r);
        }
        if somaxconn < want {
            remedies.push(ctx.sysctl(
                "net.core.somaxconn",
                Some(somaxconn.to_string()),
                want.to_string(),
            ));
        }
    } else {
        notes.push(format!(
            "the queue is already at {limit}: accept faster (more workers, SO_REUSEPORT listeners) rather than queue longer"
        ));
    }
    if !backlog_caps {
        notes.push(format!(
            "net.core.somaxconn {somaxconn} caps this queue: the server asked for at least {limit}"
        ));
    }
    notes.push(
        "a longer queue absorbs bursts; a queue that stays full means the server accepts too slowly"
            .into(),
    );
    let after = effective_backlog(want, somaxconn.max(want));
    Advice {
        rank: 0,
        id: format!("listen-backlog {}", l.address),
        rule: "listen-backlog".into(),
        severity: if hit { Severity::Hit } else { Severity::Near },
        signal: Signal {
            name: name.into(),
            summary: seen.join("; "),
            numbers: numbers(&nums),
        },
        remedies,
        capacity_of: format!("connections waiting in the accept queue of {}", l.address),
        capacity_now: accept_queue_capacity(limit),
        capacity_after: Some(accept_queue_capacity(after)),
        next_wall: None,
        notes,
        utilisation: ratio(peak, limit.max(1)),
    }
}

/// The server's own backlog setting, in its own terms.
fn app_backlog(
    ctx: &Ctx,
    l: &Listener,
    current: Option<u64>,
    want: u64,
    notes: &mut Vec<String>,
) -> Option<Remedy> {
    let app = ctx.now.app.as_ref().filter(|a| a.is_known());
    let kind = app.map_or("unknown", |a| a.kind.as_str());
    let file = app.and_then(|a| {
        a.caps
            .iter()
            .find(|c| c.read_from.starts_with('/'))
            .map(|c| c.read_from.split(':').next().unwrap_or("").to_string())
    });
    let conf = |default: &str| file.clone().unwrap_or_else(|| default.to_string());
    let port = l.port;
    let (key, place, command) = match kind {
        "nginx" => {
            let f = conf("/etc/nginx/nginx.conf");
            (
                "listen ... backlog=".to_string(),
                f.clone(),
                format!("in {f}, the server block's `listen {port} backlog={want};`, then `nginx -t && nginx -s reload`"),
            )
        }
        "redis" | "valkey" => {
            let f = conf("/etc/redis/redis.conf");
            (
                "tcp-backlog".to_string(),
                f.clone(),
                format!("`tcp-backlog {want}` in {f}, then restart the server (tcp-backlog is read at start only)"),
            )
        }
        "haproxy" => {
            let f = conf("/etc/haproxy/haproxy.cfg");
            (
                "backlog".to_string(),
                f.clone(),
                format!("`backlog {want}` in the frontend (or defaults) section of {f}, then `systemctl reload haproxy`"),
            )
        }
        "memcached" => {
            let f = conf("/etc/memcached.conf");
            (
                "-b".to_string(),
                f.clone(),
                format!("`-b {want}` in {f} (memcached's listen backlog, default 1024), then restart memcached"),
            )
        }
        "postgres" => {
            notes.push("PostgreSQL listens with a backlog of 2 x max_connections (at most 10000): somaxconn is the setting to raise".into());
            return None;
        }
        "headroom" => {
            if want <= 4096 {
                return None;
            }
            notes.push(
                "headroom serve listens with a backlog of 4096, fixed: somaxconn above it buys nothing"
                    .into(),
            );
            return None;
        }
        "beam" => (
            "backlog".to_string(),
            "the listener's options (ranch, cowboy, gen_tcp)".to_string(),
            format!("`{{backlog, {want}}}` in the listener's socket options (ranch: `socket_opts`), then restart the listener"),
        ),
        _ => (
            "listen() backlog".to_string(),
            "the server's code or configuration: the backlog it passes to listen()".to_string(),
            format!("listen(fd, {want})"),
        ),
    };
    Some(Remedy {
        kind: RemedyKind::AppDirective,
        key,
        current: Some(match current {
            Some(c) => c.to_string(),
            None => format!(">= {}", l.accept_queue_limit),
        }),
        value: want.to_string(),
        place,
        why_there: "the server reads it at its start: headroom advises it, never edits it".into(),
        command,
        owner_conflicts: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::{self, listener, Owned};
    use crate::{advise, Config};

    #[test]
    fn wanted_is_the_target_or_twice_a_full_large_queue() {
        assert_eq!(wanted(8, 4096), 4096);
        assert_eq!(wanted(4096, 4096), 8192);
        assert_eq!(wanted(511, 4096), 4096);
        assert_eq!(wanted(65535, 4096), 65535);
    }

    #[test]
    fn backlog_8_flooded_gets_backlog_and_somaxconn_with_the_capacity_gained() {
        let mut before = fixture::host();
        before.system.somaxconn = 64;
        before.netstat.listen_overflows = 3;
        let mut now = before.clone();
        now.listeners = vec![listener(7878, 9, 9, 8)];
        now.listeners[0].queue_full_events = Some(1);
        now.netstat.listen_overflows = 34;
        let a = advise(&now, Some(&before), &Owned::default(), &Config::default());
        assert_eq!(a.len(), 2, "{a:#?}");
        assert_eq!(a[1].rule, "nofile", "binding, ranked after");
        let a = &a[0];
        assert_eq!(
            (a.rank, a.severity, a.rule.as_str()),
            (1, Severity::Hit, "listen-backlog")
        );
        assert_eq!(a.signal.name, "listen-overflows");
        assert_eq!(
            a.signal.summary,
            "ListenOverflows +31 in 1.0 s (34 in all); 127.0.0.1:7878 accept queue peak 9 of limit 8 (full: past 9 waiting connections the kernel drops new ones), found full 1 time(s)"
        );
        assert_eq!(a.signal.numbers["listen_overflows_delta"], 31);
        assert_eq!((a.capacity_now, a.capacity_after), (9, Some(4097)));
        let r = &a.remedies;
        assert_eq!(r.len(), 2);
        assert_eq!(
            (
                r[0].kind,
                r[0].key.as_str(),
                r[0].current.as_deref(),
                r[0].value.as_str()
            ),
            (
                RemedyKind::AppDirective,
                "listen() backlog",
                Some("8"),
                "4096"
            )
        );
        assert_eq!(r[0].command, "listen(fd, 4096)");
        assert_eq!(
            (
                r[1].kind,
                r[1].key.as_str(),
                r[1].current.as_deref(),
                r[1].value.as_str()
            ),
            (RemedyKind::Sysctl, "net.core.somaxconn", Some("64"), "4096")
        );
        assert_eq!(r[1].place, "/etc/sysctl.d/90-headroom.conf");
    }

    #[test]
    fn somaxconn_alone_when_it_caps_and_the_app_is_redis() {
        let mut s = fixture::host();
        s.system.somaxconn = 128;
        s.listeners = vec![listener(6379, 129, 129, 128)];
        s.app = Some(fixture::app(
            "redis",
            vec![fixture::cap(
                "redis-maxclients",
                "maxclients",
                10000,
                Some(0),
                "/etc/redis/redis.conf:12",
            )],
        ));
        let a = &advise(&s, None, &Owned::default(), &Config::default())[0];
        assert_eq!(a.signal.name, "accept-queue-full");
        assert_eq!(
            a.signal.summary,
            "ListenOverflows 0 since the namespace started; 127.0.0.1:6379 accept queue peak 129 of limit 128 (full: past 129 waiting connections the kernel drops new ones)"
        );
        let r = &a.remedies;
        assert_eq!(
            (r[0].key.as_str(), r[0].current.as_deref()),
            ("tcp-backlog", Some(">= 128"))
        );
        assert_eq!(r[0].place, "/etc/redis/redis.conf");
        assert_eq!(
            r[0].command,
            "`tcp-backlog 4096` in /etc/redis/redis.conf, then restart the server (tcp-backlog is read at start only)"
        );
        assert_eq!(
            (r[1].key.as_str(), r[1].value.as_str()),
            ("net.core.somaxconn", "4096")
        );
        assert_eq!((a.capacity_now, a.capacity_after), (129, Some(4097)));
        assert!(a.notes[0].contains("net.core.somaxconn 128 caps this queue"));
    }

    #[test]
    fn a_queue_at_80_percent_is_near_and_a_quiet_one_gives_nothing() {
        let mut s = fixture::host();
        s.listeners = vec![listener(80, 410, 410, 511), listener(81, 10, 10, 511)];
        s.app = Some(fixture::app("nginx", vec![]));
        let a = advise(&s, Some(&s.clone()), &Owned::default(), &Config::default());
        let a: Vec<_> = a
            .into_iter()
            .filter(|a| a.rule == "listen-backlog")
            .collect();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].severity, Severity::Near);
        assert_eq!(a[0].signal.name, "accept-queue-near");
        assert_eq!(a[0].remedies.len(), 1, "somaxconn 4096 does not cap 4096");
        assert_eq!(
            a[0].remedies[0].command,
            "in /etc/nginx/nginx.conf, the server block's `listen 80 backlog=4096;`, then `nginx -t && nginx -s reload`"
        );
        assert_eq!((a[0].capacity_now, a[0].capacity_after), (512, Some(4097)));
    }

    #[test]
    fn overflows_without_ebpf_are_pinned_on_the_targets_listener() {
        let before = fixture::host();
        let mut now = before.clone();
        now.listeners = vec![listener(80, 0, 0, 511)];
        now.netstat.listen_overflows = 5;
        let cfg = Config {
            ebpf: false,
            ..Config::default()
        };
        let a = advise(&now, Some(&before), &Owned::default(), &cfg);
        assert_eq!(
            (a[0].severity, a[0].signal.name.as_str()),
            (Severity::Hit, "listen-overflows")
        );
        // With eBPF the peak is exact: a queue that never filled is not it.
        assert!(
            advise(&now, Some(&before), &Owned::default(), &Config::default())
                .iter()
                .all(|a| a.rule != "listen-backlog")
        );
    }
}

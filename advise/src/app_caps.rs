//! The server's own caps (Redis maxclients, nginx worker_connections,
//! HAProxy maxconn, PostgreSQL max_connections, ...): reached, near, or
//! binding first. The remedy is the server's own directive, raised to where
//! the next wall stands (the model's next limit that is not the server's),
//! and the advice names that wall. Configuration files are advised, never
//! edited.

use crate::{numbers, Advice, Ctx, Remedy, RemedyKind, Severity, Signal};
use headroom_core::{AppCap, AppInfo, CapSource, Scope};

pub fn advise(ctx: &Ctx) -> Vec<Advice> {
    let Some(app) = ctx.now.app.as_ref().filter(|a| a.is_known()) else {
        return Vec::new();
    };
    app.caps
        .iter()
        .filter_map(|cap| one(ctx, app, cap))
        .collect()
}

fn one(ctx: &Ctx, app: &AppInfo, cap: &AppCap) -> Option<Advice> {
    let p = &ctx.prediction;
    let c = p.constraint(&cap.name)?;
    let u = c.utilisation();
    let severity = if c.headroom_connections == 0 {
        Severity::Hit
    } else if u >= ctx.cfg.near {
        Severity::Near
    } else if p.binding == cap.name {
        Severity::Binding
    } else {
        return None;
    };
    // The next wall: the smallest limit that is not one of the server's own.
    let wall = p
        .constraints
        .iter()
        .filter(|k| !app.caps.iter().any(|x| x.name == k.name))
        .map(|k| k.max_connections)
        .min();
    let per = cap.per_connection.max(1);
    let mut n = match wall {
        Some(w) if w > c.max_connections => {
            c.used + cap.reserve + w.saturating_sub(p.connections) * per
        }
        Some(_) => return None, // another limit binds first: its own advice
        None => cap.limit * 2,
    };
    let mut notes = Vec::new();
    if app.process_per_connection && n > cap.limit * 2 {
        n = cap.limit * 2;
        notes.push(format!(
            "a process per connection: {} is doubled, not raised to the next wall; beyond that a pooler (PgBouncer) serves more clients with fewer backends",
            cap.setting
        ));
    }
    let after = ctx.predict_with(|s| {
        if let Some(k) = s
            .app
            .as_mut()
            .and_then(|a| a.caps.iter_mut().find(|k| k.name == cap.name))
        {
            k.limit = n;
        }
    });
    // A per-process cap (nginx's worker_connections) is set per process.
    let holders = if app.connection_pids.is_empty() {
        ctx.now.processes.len()
    } else {
        app.connection_pids.len()
    }
    .max(1) as u64;
    let (value, current) = if cap.scope == Scope::Process {
        (n.div_ceil(holders), cap.limit / holders)
    } else {
        (n, cap.limit)
    };
    let mut nums = vec![
        ("limit", cap.limit),
        ("used", c.used),
        ("reserve", cap.reserve),
        ("connections", p.connections),
        ("headroom_connections", c.headroom_connections),
    ];
    if let Some(b) = app.process_bytes_per_connection {
        let cost = (n - cap.limit) / per * b;
        nums.push(("memory_cost_bytes", cost));
        notes.push(format!(
            "memory: each connection is a backend of {} ({b} B measured): {} more cost {}",
            fmt_bytes(b),
            (n - cap.limit) / per,
            fmt_bytes(cost)
        ));
    }
    if cap.source == CapSource::Derived {
        notes.push(format!(
            "{} was derived by the server from its nofile limit at start: raise its LimitNOFILE too",
            cap.setting
        ));
    }
    if severity == Severity::Hit && matches!(app.kind.as_str(), "redis" | "valkey") {
        notes.push(format!(
            "at its cap {} refuses redis-cli too: edit the file and restart, or CONFIG SET once a client has left",
            app.kind
        ));
    }
    if let Some(at) = app.at_cap {
        notes.push(format!("at the cap the server {}", at.describe()));
    }
    let read = format!("read {}: {}", cap.source.as_str(), cap.read_from);
    let (name, summary) = match severity {
        Severity::Hit => (
            "app-cap-reached",
            format!(
                "{} {} {} reached: {} of {} in use ({read})",
                app.kind, cap.setting, cap.limit, c.used, cap.limit
            ),
        ),
        Severity::Near => (
            "app-cap-near",
            format!(
                "{} {} {}: {} in use, {:.0}% ({read})",
                app.kind,
                cap.setting,
                cap.limit,
                c.used,
                u * 100.0
            ),
        ),
        Severity::Binding => (
            "app-cap-binding",
            format!(
                "{} {} {} binds first, at {} connections ({read})",
                app.kind, cap.setting, cap.limit, c.max_connections
            ),
        ),
    };
    Some(Advice {
        rank: 0,
        id: format!("app-cap {}", cap.name),
        rule: "app-cap".into(),
        severity,
        signal: Signal {
            name: name.into(),
            summary,
            numbers: numbers(&nums),
        },
        remedies: vec![directive(ctx, cap, current, value)],
        capacity_of: "connections".into(),
        capacity_now: p.predicted_max_connections,
        capacity_after: Some(after.predicted_max_connections),
        next_wall: crate::wall_after(&after, &cap.name),
        notes,
        utilisation: if severity == Severity::Hit { 1.0 } else { u },
    })
}

/// The directive in the server's own terms, where it is kept.
fn directive(ctx: &Ctx, cap: &AppCap, current: u64, n: u64) -> Remedy {
    // The file it was read from, else the one the reader's remedy names.
    let file = if cap.read_from.starts_with('/') {
        cap.read_from.split(':').next().map(str::to_string)
    } else {
        conf_in(&cap.remedy)
    };
    let conf = |default: &str| file.clone().unwrap_or_else(|| default.to_string());
    let port = ctx.now.listeners.first().map_or(0, |l| l.port);
    let set = &cap.setting;
    let (place, why, command) = match cap.name.as_str() {
        "redis-maxclients" => {
            let live = format!(
                "redis-cli -p {port} CONFIG SET {set} {n} && redis-cli -p {port} CONFIG REWRITE"
            );
            match &file {
                Some(f) => (
                    f.clone(),
                    format!("{f} sets it at the server's start"),
                    format!("`{set} {n}` in {f}; now, without a restart: redis-cli -p {port} CONFIG SET {set} {n}"),
                ),
                None => (
                    "the redis.conf it was started with (`redis-cli INFO server` names it as config_file; the packaged service's is /etc/redis/redis.conf)".into(),
                    "set live, it is lost at restart unless CONFIG REWRITE writes it to the configuration file".into(),
                    live,
                ),
            }
        }
        "nginx-worker-connections" => {
            let f = conf("/etc/nginx/nginx.conf");
            (
                f.clone(),
                "nginx reads it at start and reload".into(),
                format!("`{set} {n};` in the events block of {f}, then `nginx -t && nginx -s reload`"),
            )
        }
        "haproxy-maxconn" => {
            let f = conf("/etc/haproxy/haproxy.cfg");
            (
                f.clone(),
                "HAProxy reads it at start and reload".into(),
                format!("`{set} {n}` in the global section of {f}, then `systemctl reload haproxy`"),
            )
        }
        "postgres-max-connections" => (
            "postgresql.auto.conf (ALTER SYSTEM), which overrides postgresql.conf".into(),
            "read at the server's start only".into(),
            format!("psql -c 'ALTER SYSTEM SET {set} = {n}', then restart PostgreSQL ({set} needs a restart)"),
        ),
        "memcached-maxconns" => {
            let f = conf("/etc/memcached.conf");
            (
                f.clone(),
                "read at start".into(),
                format!("`-c {n}` in {f}, then restart memcached"),
            )
        }
        "beam-ports" => (
            "the VM's vm.args (or ERL_FLAGS)".into(),
            "read at the VM's start".into(),
            format!("`+Q {n}` in vm.args, then restart the node"),
        ),
        "headroom-max-connections" => (
            "headroom serve's command line (its unit's ExecStart)".into(),
            "read at start".into(),
            format!("headroom serve --max-connections {n}"),
        ),
        _ => (
            file.clone().unwrap_or_else(|| cap.read_from.clone()),
            "the server's own configuration".into(),
            format!("{set} = {n} ({})", cap.remedy),
        ),
    };
    Remedy {
        kind: RemedyKind::AppDirective,
        key: set.clone(),
        current: Some(current.to_string()),
        value: n.to_string(),
        place,
        why_there: format!("{why}; headroom advises it, never edits it"),
        command,
        owner_conflicts: Vec::new(),
    }
}

/// `raise maxclients in /etc/redis/redis.conf (...)` -> the path.
fn conf_in(text: &str) -> Option<String> {
    let i = text.find(" in /")?;
    let p = text[i + 4..].split_whitespace().next()?;
    Some(p.trim_end_matches([',', ';', ')', ':']).to_string())
}

fn fmt_bytes(b: u64) -> String {
    if b >= 1 << 30 {
        format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
    }
}

#[cfg(test)]
mod tests {
    use crate::fixture::{self, app, cap, listener, Owned};
    use crate::{advise, Config, RemedyKind, Severity};
    use headroom_core::{CapSource, Scope};

    #[test]
    fn redis_at_maxclients_gets_maxclients_raised_to_the_next_wall() {
        let mut s = fixture::host();
        let p = &mut s.processes[0];
        (
            p.comm,
            p.nofile_soft,
            p.nofile_hard,
            p.open_fds,
            p.connections,
        ) = ("redis-server".into(), Some(1024), Some(1024), 13, 5);
        s.listeners = vec![listener(6379, 0, 0, 511)];
        let mut a = app(
            "redis",
            vec![cap(
                "redis-maxclients",
                "maxclients",
                5,
                Some(5),
                "CONFIG GET maxclients on 127.0.0.1:6379",
            )],
        );
        a.connections = Some(5);
        s.app = Some(a);
        let adv = advise(&s, None, &Owned::default(), &Config::default());
        let a = &adv[0];
        assert_eq!(
            (a.rank, a.severity, a.rule.as_str()),
            (1, Severity::Hit, "app-cap")
        );
        assert_eq!(
            a.signal.summary,
            "redis maxclients 5 reached: 5 of 5 in use (read live: CONFIG GET maxclients on 127.0.0.1:6379)"
        );
        // nofile: 1024 - 13 open - 32 reserve = 979 more, plus 5 held.
        let r = &a.remedies[0];
        assert_eq!(
            (
                r.kind,
                r.key.as_str(),
                r.current.as_deref(),
                r.value.as_str()
            ),
            (RemedyKind::AppDirective, "maxclients", Some("5"), "984")
        );
        assert_eq!(
            r.command,
            "redis-cli -p 6379 CONFIG SET maxclients 984 && redis-cli -p 6379 CONFIG REWRITE"
        );
        assert_eq!(
            r.place,
            "the redis.conf it was started with (`redis-cli INFO server` names it as config_file; the packaged service's is /etc/redis/redis.conf)"
        );
        assert_eq!((a.capacity_now, a.capacity_after), (5, Some(984)));
        assert_eq!(a.next_wall.as_deref(), Some("nofile at 984 connections"));
    }

    #[test]
    fn nginx_worker_connections_are_advised_per_worker() {
        let mut s = fixture::host();
        let w = s.processes[0].clone();
        s.processes = vec![
            headroom_core::ProcessInfo {
                pid: 10,
                ..w.clone()
            },
            headroom_core::ProcessInfo {
                pid: 11,
                connections: 400,
                ..w.clone()
            },
            headroom_core::ProcessInfo {
                pid: 12,
                connections: 420,
                ..w
            },
        ];
        let mut k = cap(
            "nginx-worker-connections",
            "worker_connections",
            1024,
            None,
            "/etc/nginx/nginx.conf:7",
        );
        k.scope = Scope::Process;
        k.reserve = 4;
        let mut a = app("nginx", vec![k]);
        a.connection_pids = vec![11, 12];
        s.app = Some(a);
        let adv = advise(&s, None, &Owned::default(), &Config::default());
        let a = &adv[0];
        assert_eq!(a.severity, Severity::Near);
        let r = &a.remedies[0];
        // nofile of the two workers: 2 x (20000 - 10 - 32) more, plus 820 held.
        assert_eq!(
            (r.current.as_deref(), r.value.as_str()),
            (Some("512"), "20370")
        );
        assert_eq!(r.place, "/etc/nginx/nginx.conf");
        assert_eq!(
            r.command,
            "`worker_connections 20370;` in the events block of /etc/nginx/nginx.conf, then `nginx -t && nginx -s reload`"
        );
        assert_eq!((a.capacity_now, a.capacity_after), (1020, Some(40736)));
    }

    #[test]
    fn postgres_max_connections_is_doubled_with_its_memory_cost() {
        let mut s = fixture::host();
        s.processes[0].comm = "postgres".into();
        let mut k = cap(
            "postgres-max-connections",
            "max_connections",
            100,
            Some(90),
            "SHOW max_connections",
        );
        k.reserve = 3;
        k.source = CapSource::Live;
        let mut a = app("postgres", vec![k]);
        a.connections = Some(90);
        a.process_per_connection = true;
        a.process_bytes_per_connection = Some(3 << 20);
        s.app = Some(a);
        let adv = advise(&s, None, &Owned::default(), &Config::default());
        let a = &adv[0];
        assert_eq!(a.severity, Severity::Near);
        assert_eq!(a.remedies[0].value, "200");
        assert_eq!(a.signal.numbers["memory_cost_bytes"], 100 * (3 << 20));
        assert_eq!(
            a.notes[1],
            "memory: each connection is a backend of 3.0 MiB (3145728 B measured): 100 more cost 300.0 MiB"
        );
        assert_eq!((a.capacity_now, a.capacity_after), (97, Some(197)));
        assert_eq!(
            a.remedies[0].command,
            "psql -c 'ALTER SYSTEM SET max_connections = 200', then restart PostgreSQL (max_connections needs a restart)"
        );
    }

    #[test]
    fn the_config_file_comes_from_the_readers_remedy_when_read_live() {
        assert_eq!(
            super::conf_in("raise maxclients in /tmp/r/redis.conf (CONFIG SET maxclients N lasts until restart)").as_deref(),
            Some("/tmp/r/redis.conf")
        );
        assert_eq!(super::conf_in("start it with maxclients N"), None);
        // A file the reader only guessed is not a place to edit.
        assert_eq!(
            super::conf_in("raise maxclients in the configuration file Redis was started with (its command line, which Redis rewrites, does not name it; the packaged service's is /etc/redis/redis.conf), or CONFIG SET maxclients N then CONFIG REWRITE"),
            None
        );
    }

    #[test]
    fn a_cap_far_from_binding_gives_nothing() {
        let mut s = fixture::host();
        s.app = Some(app(
            "redis",
            vec![cap(
                "redis-maxclients",
                "maxclients",
                50000,
                Some(0),
                "fixture",
            )],
        ));
        let adv = advise(&s, None, &Owned::default(), &Config::default());
        assert!(adv.iter().all(|a| a.rule != "app-cap"), "{adv:#?}");
    }
}

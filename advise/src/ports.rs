//! Ephemeral ports: a client's connect() failing with EADDRNOTAVAIL, or its
//! connections and TIME_WAIT sockets filling the port range. Each source
//! address has its own range per destination: widen the range, or add
//! source addresses. Capacity from `ephemeral_ports_per_destination`.

use crate::{numbers, ratio, Advice, Ctx, Remedy, RemedyKind, Severity, Signal};
use headroom_core::{ephemeral_ports_per_destination, Snapshot};

/// EADDRNOTAVAIL failures of the target's processes.
pub fn eaddrnotavail(s: &Snapshot) -> u64 {
    s.fd_errors
        .iter()
        .filter(|e| e.errno == "EADDRNOTAVAIL")
        .map(|e| e.count)
        .sum()
}

pub fn advise(ctx: &Ctx) -> Vec<Advice> {
    let s = ctx.now;
    let range = s.system.ip_local_port_range;
    let conns = s.connections();
    let tw = s.time_wait;
    let errors = eaddrnotavail(s);
    let delta = ctx.before.map(|b| errors.saturating_sub(eaddrnotavail(b)));
    let now = ephemeral_ports_per_destination(range, 1, conns, conns);
    // Connections to a listener of its own take no ephemeral port: only a
    // target without listeners is taken for a client.
    let client = s.listeners.is_empty();
    let u = ratio(conns + tw, now.limit);
    let severity = if errors > 0 {
        Severity::Hit
    } else if client && conns > 0 && u >= ctx.cfg.near {
        Severity::Near
    } else {
        return Vec::new();
    };
    let who = match s.processes.as_slice() {
        [p] => format!("pid {} ({})", p.pid, p.comm),
        ps => format!("{} processes", ps.len()),
    };
    let held = format!(
        "{conns} connection(s) held and {tw} in TIME_WAIT (namespace) against ip_local_port_range {}-{} ({} ports, tcp_tw_reuse {})",
        range.0,
        range.1,
        s.port_range_size(),
        s.system.tcp_tw_reuse
    );
    let (name, summary) = if errors > 0 {
        let calls: Vec<String> = s
            .fd_errors
            .iter()
            .filter(|e| e.errno == "EADDRNOTAVAIL")
            .map(|e| format!("{} x{}", e.syscall, e.count))
            .collect();
        let d = delta.map_or(String::new(), |d| format!(", +{d} {}", ctx.over()));
        (
            "eaddrnotavail",
            format!(
                "EADDRNOTAVAIL {errors} time(s) in {who} ({}{d}); {held}",
                calls.join(", ")
            ),
        )
    } else {
        ("ports-near", format!("{who}: {held}"))
    };
    let mut nums = vec![
        ("eaddrnotavail", errors),
        ("connections", conns),
        ("time_wait", tw),
        ("port_range_low", range.0 as u64),
        ("port_range_high", range.1 as u64),
        ("port_range_size", s.port_range_size()),
    ];
    if let Some(d) = delta {
        nums.push(("eaddrnotavail_delta", d));
    }
    let signal = Signal {
        name: name.into(),
        summary,
        numbers: numbers(&nums),
    };
    let utilisation = if errors > 0 { 1.0 } else { u };
    let mut out = Vec::new();

    let target = ctx.cfg.targets.port_range;
    let wider = (target.0.min(range.0), target.1.max(range.1));
    if wider != range {
        let after = ephemeral_ports_per_destination(wider, 1, conns, conns);
        let mut notes = Vec::new();
        if wider.0 < 32768 {
            notes.push(format!(
                "ports from {} up may collide with listeners started later: list theirs in net.ipv4.ip_local_reserved_ports",
                wider.0
            ));
        }
        if tw > 0 && s.system.tcp_tw_reuse == 0 {
            notes.push("tcp_tw_reuse is 0: connect() cannot reuse a port in TIME_WAIT to the same destination; 1 lets it (safe with TCP timestamps)".into());
        }
        out.push(Advice {
            rank: 0,
            id: "ephemeral-ports net.ipv4.ip_local_port_range".into(),
            rule: "ephemeral-ports".into(),
            severity,
            signal: signal.clone(),
            remedies: vec![ctx.sysctl(
                "net.ipv4.ip_local_port_range",
                Some(format!("{} {}", range.0, range.1)),
                format!("{} {}", wider.0, wider.1),
            )],
            capacity_of: "connections to one destination (address, port)".into(),
            capacity_now: now.max_connections,
            capacity_after: Some(after.max_connections),
            next_wall: None,
            notes,
            utilisation,
        });
    }

    let two = ephemeral_ports_per_destination(range, 2, conns, conns);
    out.push(Advice {
        rank: 0,
        id: "source-addresses".into(),
        rule: "source-addresses".into(),
        severity,
        signal,
        remedies: vec![Remedy {
            kind: RemedyKind::SourceAddresses,
            key: "source addresses".into(),
            current: Some("1".into()),
            value: "2".into(),
            place: "the client: bind() each socket to one of the addresses before connect()".into(),
            why_there: "each source address has its own port range per destination".into(),
            command: "ip addr add ADDR/PREFIX dev IFACE (any 127.0.0.0/8 address is already local), then bind the client's sockets to it with IP_BIND_ADDRESS_NO_PORT before connect()".into(),
            owner_conflicts: Vec::new(),
        }],
        capacity_of: "connections to one destination (address, port)".into(),
        capacity_now: now.max_connections,
        capacity_after: Some(two.max_connections),
        next_wall: None,
        notes: vec!["or more destination addresses or ports: each (destination, source) pair has the whole range".into()],
        utilisation,
    });
    out
}

#[cfg(test)]
mod tests {
    use crate::fixture::{self, Owned};
    use crate::{advise, Config, RemedyKind, Severity};
    use headroom_core::FdError;

    fn client() -> headroom_core::Snapshot {
        let mut s = fixture::host();
        s.system.ip_local_port_range = (40000, 40009);
        s.processes[0].connections = 10;
        (s.processes[0].pid, s.processes[0].comm) = (77, "python3".into());
        s
    }

    #[test]
    fn eaddrnotavail_gets_the_port_range_then_source_addresses() {
        let before = client();
        let mut now = before.clone();
        now.fd_errors = vec![FdError {
            pid: 77,
            syscall: "connect".into(),
            errno: "EADDRNOTAVAIL".into(),
            count: 5,
        }];
        let a = advise(&now, Some(&before), &Owned::default(), &Config::default());
        let rules: Vec<&str> = a.iter().map(|a| a.rule.as_str()).collect();
        assert_eq!(rules, ["ephemeral-ports", "source-addresses", "nofile"]);
        let p = &a[0];
        assert_eq!(p.severity, Severity::Hit);
        assert_eq!(
            p.signal.summary,
            "EADDRNOTAVAIL 5 time(s) in pid 77 (python3) (connect x5, +5 in 1.0 s); 10 connection(s) held and 0 in TIME_WAIT (namespace) against ip_local_port_range 40000-40009 (10 ports, tcp_tw_reuse 2)"
        );
        let r = &p.remedies[0];
        assert_eq!(
            (
                r.kind,
                r.key.as_str(),
                r.current.as_deref(),
                r.value.as_str()
            ),
            (
                RemedyKind::Sysctl,
                "net.ipv4.ip_local_port_range",
                Some("40000 40009"),
                "1024 65535"
            )
        );
        assert_eq!((p.capacity_now, p.capacity_after), (10, Some(64512)));
        let s = &a[1];
        assert_eq!(
            (s.remedies[0].kind, s.remedies[0].value.as_str()),
            (RemedyKind::SourceAddresses, "2")
        );
        assert_eq!((s.capacity_now, s.capacity_after), (10, Some(20)));
    }

    #[test]
    fn a_full_range_gets_source_addresses_only_and_a_server_no_near_advice() {
        let mut s = client();
        s.system.ip_local_port_range = (1024, 65535);
        s.processes[0].connections = 60000;
        let a = advise(&s, None, &Owned::default(), &Config::default());
        assert_eq!(a[0].rule, "source-addresses");
        assert_eq!(a[0].severity, Severity::Near);
        assert_eq!(
            (a[0].capacity_now, a[0].capacity_after),
            (64512, Some(129024))
        );
        s.listeners = vec![fixture::listener(80, 0, 0, 4096)];
        let a = advise(&s, None, &Owned::default(), &Config::default());
        assert!(a.iter().all(|a| a.rule != "source-addresses"));
    }
}

//! Numbers and durations the way an operator reads them at a glance.

/// A count: exact below 100,000 (so small numbers can be checked against
/// `ss`), then k, M, G, T, P, E with one decimal.
pub fn count(n: u64) -> String {
    if n < 100_000 {
        return n.to_string();
    }
    const UNITS: [(&str, f64); 6] = [
        ("E", 1e18),
        ("P", 1e15),
        ("T", 1e12),
        ("G", 1e9),
        ("M", 1e6),
        ("k", 1e3),
    ];
    let f = n as f64;
    for (suffix, scale) in UNITS {
        if f >= scale {
            return format!("{:.1}{suffix}", f / scale);
        }
    }
    n.to_string()
}

/// Bytes in binary units.
pub fn bytes(b: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (suffix, scale) in UNITS {
        if b >= scale {
            return format!("{:.1} {suffix}", b as f64 / scale as f64);
        }
    }
    format!("{b} B")
}

/// A quantity in a constraint's unit.
pub fn amount(v: u64, unit: &str) -> String {
    match unit {
        "bytes" => bytes(v),
        _ => count(v),
    }
}

/// A duration in whole seconds, minutes or hours: `42 s`, `7 min`, `3.5 h`, `12 d`.
pub fn duration(secs: f64) -> String {
    if secs < 1.0 {
        "<1 s".to_string()
    } else if secs < 100.0 {
        format!("{:.0} s", secs.max(0.0))
    } else if secs < 6000.0 {
        format!("{:.0} min", secs / 60.0)
    } else if secs < 172_800.0 {
        format!("{:.1} h", secs / 3600.0)
    } else {
        format!("{:.0} d", secs / 86_400.0)
    }
}

/// A connection rate with its sign: `+310 conn/s`, `-2.5 conn/s`.
pub fn rate(r: f64) -> String {
    if r.abs() >= 10.0 {
        format!("{r:+.0} conn/s")
    } else {
        format!("{r:+.1} conn/s")
    }
}

/// Elapsed time since the dashboard started, as `mm:ss` (or `h:mm:ss`).
pub fn clock(ms: u64) -> String {
    let s = ms / 1000;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{:02}:{:02}", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        assert_eq!(count(99_999), "99999");
        assert_eq!(count(123_456), "123.5k");
        assert_eq!(count(9_223_372_036_854_775_807), "9.2E");
        assert_eq!(bytes(24 << 30), "24.0 GiB");
        assert_eq!(bytes(512), "512 B");
    }

    #[test]
    fn durations_and_rates() {
        assert_eq!(duration(42.0), "42 s");
        assert_eq!(duration(0.4), "<1 s");
        assert_eq!(duration(420.0), "7 min");
        assert_eq!(duration(4.0 * 3600.0), "4.0 h");
        assert_eq!(duration(3.0 * 86_400.0), "3 d");
        assert_eq!(rate(310.0), "+310 conn/s");
        assert_eq!(rate(-2.5), "-2.5 conn/s");
        assert_eq!(clock(65_000), "01:05");
        assert_eq!(clock(3_725_000), "1:02:05");
    }
}

//! What a benchmark reads besides its own load: CPU time of this process
//! and of a server child, a server's resident memory, and the medians and
//! relative drops its rounds are compared by.

/// CPU seconds this process has used (user + system).
pub fn cpu_seconds() -> f64 {
    headroom_host::process::cpu_time().map_or(0.0, |d| d.as_secs_f64())
}

/// CPU seconds (user + system) used so far by this process (load client,
/// churn threads, an in-process probe) and by the server child: on a host
/// where both run flat out, throughput lost to what is measured shows up
/// as CPU per call gained, and that ratio is far less disturbed by other
/// work on the host than calls per second are.
pub fn cpu_seconds_with(server: u32) -> f64 {
    cpu_seconds() + process_cpu_seconds(server)
}

/// CPU seconds (user + system) `pid` has used so far (0 when unreadable).
pub fn process_cpu_seconds(pid: u32) -> f64 {
    // /proc/PID/stat fields 14 and 15, in clock ticks, after the ")" of comm.
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|t| {
            let rest = t.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
        })
        .unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks / hz
}

/// Resident set size of `pid` in bytes (0 when it cannot be read).
pub fn rss_of(pid: u32) -> u64 {
    headroom_host::Host::system().rss_bytes(pid).unwrap_or(0)
}

/// The median of `v` (0 when empty).
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// How far `on` fell below `off`, in percent of `off` (0 when `off` is 0).
pub fn drop_percent(off: f64, on: f64) -> f64 {
    if off > 0.0 {
        (off - on) / off * 100.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_drops() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
        assert_eq!(drop_percent(200.0, 194.0), 3.0);
        assert_eq!(drop_percent(0.0, 5.0), 0.0);
    }
}

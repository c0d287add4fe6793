//! HAProxy's derived maxconn: compute_ideal_maxconn() and the global.maxsock
//! it counts from.

use super::config::{Config, ProxyKind};

/// DEFAULT_MAXCONN (defaults.h): the floor of a derived maxconn.
pub const DEFAULT_MAXCONN: u64 = 100;
/// `stats maxconn` when unset (cli_alloc_fe).
pub const DEFAULT_CLI_MAXCONN: u64 = 10;
/// global.maxsock before any listener is counted ("stdin/stdout/stderr and
/// anything else").
pub const BASE_MAXSOCK: u64 = 10;

/// The inputs of HAProxy 2.6's compute_ideal_maxconn().
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdealInput {
    /// RLIMIT_NOFILE soft at boot.
    pub rlim_cur: u64,
    /// RLIMIT_NOFILE hard at boot.
    pub rlim_max: u64,
    /// global `fd-hard-limit`.
    pub fd_hard_limit: Option<u64>,
    /// global.maxsock so far: [`BASE_MAXSOCK`], one per listener, the CLI's
    /// maxconn, one per health check (see [`Config::maxsock`]).
    pub maxsock: u64,
    pub nbthread: u64,
    /// compute_ideal_maxpipes(): 0 without splicing, -1 for "unlimited".
    pub pipes: i64,
    /// Async SSL engines x SSL sides (0 without `ssl-engine ... async`).
    pub engine_fds: u64,
}

/// HAProxy 2.6's compute_ideal_maxconn(): the fds left once listeners,
/// checks, one poller and one wake-up pipe per thread are counted, two per
/// connection (plus pipes and async engines), never under
/// [`DEFAULT_MAXCONN`]. Computed in C `int`s, as HAProxy does.
pub fn ideal_maxconn(i: &IdealInput) -> u64 {
    let clamp = |v: u64| v.min(i32::MAX as u64) as i64;
    let mut remain = clamp(i.rlim_cur).max(clamp(i.rlim_max));
    if let Some(h) = i.fd_hard_limit {
        if h > 0 && remain > clamp(h) {
            remain = clamp(h);
        }
    }
    remain -= clamp(i.maxsock);
    remain -= clamp(i.nbthread);
    remain -= 2 * clamp(i.nbthread);
    if i.pipes >= 0 && i.pipes * 2 < remain {
        remain -= i.pipes * 2;
    }
    let engine = clamp(i.engine_fds);
    let maxconn = if i.pipes < 0 {
        2 * remain / (5 + 2 * engine)
    } else {
        remain / (2 + engine)
    };
    maxconn.max(DEFAULT_MAXCONN as i64) as u64
}

impl Config {
    /// global.maxsock as HAProxy has counted it when it derives maxconn:
    /// [`BASE_MAXSOCK`], a listener per bound address, the stats sockets and
    /// the CLI's maxconn, health-check sockets, and in master-worker mode the
    /// worker's socketpair to the master (which creates the CLI frontend) and
    /// each `-S` master socket with its own 10.
    pub fn maxsock(&self, master_worker: bool, master_sockets: u64) -> u64 {
        let g = &self.global;
        let mut m = BASE_MAXSOCK;
        m += self
            .proxies
            .iter()
            .map(|p| p.listeners + p.check_socks)
            .sum::<u64>();
        m += g.stats_listeners;
        if master_worker {
            m += 1;
        }
        if g.cli || master_worker {
            m += g.stats_maxconn.unwrap_or(DEFAULT_CLI_MAXCONN);
        }
        m += master_sockets * (1 + DEFAULT_CLI_MAXCONN);
        m
    }

    /// compute_ideal_maxpipes() as it is called for a derived maxconn
    /// (global maxconn still 0): -1 when a splicing frontend (or backend)
    /// has no maxconn of its own.
    pub(super) fn pipes(&self) -> i64 {
        let mut nbfe = 0i64;
        for p in self.proxies.iter().filter(|p| p.splice) {
            if p.kind != ProxyKind::Backend {
                match &p.maxconn {
                    Some(m) => nbfe = nbfe.saturating_add(m.value.min(i32::MAX as u64) as i64),
                    None => return -1,
                }
            }
            if p.kind != ProxyKind::Frontend {
                // A backend counts its fullconn, else global maxconn, which
                // is still 0 here: unlimited.
                return -1;
            }
        }
        if nbfe >= 4 {
            nbfe / 4
        } else {
            nbfe
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::haproxy::tests::input;

    #[test]
    fn ideal_maxconn_matches_show_info_of_real_2_6_12() {
        // One frontend, a stats socket: maxsock 10 + 1 + 1 + 10 = 22.
        assert_eq!(ideal_maxconn(&input(1000, 22)), 486);
        assert_eq!(ideal_maxconn(&input(4000, 22)), 1986);
        // Soft 1000, hard 4000: the hard limit counts.
        assert_eq!(
            ideal_maxconn(&IdealInput {
                rlim_cur: 1000,
                ..input(4000, 22)
            }),
            1986
        );
        // -W adds the worker's socketpair: 23; -S adds 1 + 10 more: 34.
        assert_eq!(ideal_maxconn(&input(1000, 23)), 485);
        assert_eq!(ideal_maxconn(&input(1000, 34)), 480);
        // Two frontends and a stats socket (the live fixture): 485.
        assert_eq!(ideal_maxconn(&input(1000, 23)), 485);
    }

    #[test]
    fn ideal_maxconn_floor_hard_limit_pipes_and_engines() {
        assert_eq!(ideal_maxconn(&input(100, 22)), DEFAULT_MAXCONN);
        assert_eq!(ideal_maxconn(&input(0, 22)), DEFAULT_MAXCONN);
        assert_eq!(
            ideal_maxconn(&IdealInput {
                fd_hard_limit: Some(1000),
                ..input(1 << 20, 22)
            }),
            486
        );
        // Unlimited pipes: 2 * remain / 5.
        assert_eq!(
            ideal_maxconn(&IdealInput {
                pipes: -1,
                ..input(1000, 22)
            }),
            388
        );
        // Fixed pipes are subtracted only when they fit.
        assert_eq!(
            ideal_maxconn(&IdealInput {
                pipes: 100,
                ..input(1000, 22)
            }),
            386
        );
        assert_eq!(
            ideal_maxconn(&IdealInput {
                pipes: 10_000,
                ..input(1000, 22)
            }),
            486
        );
        assert_eq!(
            ideal_maxconn(&IdealInput {
                engine_fds: 1,
                ..input(1000, 22)
            }),
            324
        );
        // Huge limits are C ints, not overflows.
        assert_eq!(
            ideal_maxconn(&input(u64::MAX, 22)),
            (i32::MAX as u64 - 28) / 2
        );
    }
}

//! The eBPF source: loads the object built from probe-ebpf/, attaches its
//! tracepoint programs and reads their maps into [`Snapshot`] fields that
//! polling cannot see: accept-queue peaks and full events between samples,
//! EMFILE/ENFILE/EADDRNOTAVAIL failures per process and syscall, fd peaks,
//! and TCP state counts per port kept as they change.
//!
//! [`EbpfProbe::overlay`] takes a snapshot filled by polling (exact limits
//! and current values) and adds what eBPF saw since the last read.

mod btf;
mod overlay;
mod stats;
mod syscalls;
mod tracefs;

use std::collections::{BTreeMap, HashMap as StdHashMap};
use std::path::Path;

use aya::maps::{Array, HashMap, MapData};
use aya::programs::{Program, ProgramError, RawTracePoint, TracePoint};
use aya::{Ebpf, EbpfLoader};
use headroom_core::{FdError, Listener, Snapshot, Source, TcpState};
use headroom_probe_common::*;

pub use btf::member_offset;
pub use overlay::{filter_for, EbpfOverlay};
pub use stats::{ProgramStats, RunStats};

/// The object built by probe/build.rs; empty when the toolchain was missing.
static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/headroom-probe.bpf.o"));
/// "ok", or "not built: <why>" (set by probe/build.rs).
const BUILD: &str = env!("HEADROOM_EBPF_BUILD");

/// Why eBPF is off. Each message is one line an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "this headroom was built without its eBPF object ({0}); run scripts/setup.sh and rebuild"
    )]
    NotBuilt(String),
    #[error("disabled by --no-ebpf")]
    Disabled,
    #[error("{0}")]
    Btf(String),
    #[error("{0}")]
    Tracefs(String),
    #[error("cannot load the eBPF programs: {0}{hint}", hint = privilege_hint())]
    Load(String),
    #[error("cannot attach {what}: {why}")]
    Attach { what: String, why: String },
    #[error("eBPF map {0}: {1}")]
    Map(&'static str, String),
    #[error("TIME_WAIT count: {0}")]
    Poll(#[from] crate::Error),
}

fn privilege_hint() -> &'static str {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        " (needs root or CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN for tracepoints)"
    } else {
        ""
    }
}

/// What the probe is looking at: used to filter the system-wide maps.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Processes of the target (their fd errors and fd usage); empty: all.
    pub pids: Vec<u32>,
    /// Local ports of the target (listeners, socket states); empty: all.
    pub ports: Vec<u16>,
}

/// Counters that have no field in [`Snapshot`] but that the exporter shows.
#[derive(Debug, Clone, Default)]
pub struct EbpfExtras {
    /// Events lost because a bounded map was full, per map name.
    pub dropped: Vec<(&'static str, u64)>,
    /// Transitions into each TCP state, over the target's ports, since attach.
    pub transitions: BTreeMap<TcpState, u64>,
    /// Tracepoints attached, e.g. `sock:inet_sock_set_state`.
    pub attached: Vec<String>,
    /// Where the TIME_WAIT counts came from: the timer programs
    /// (`ebpf`, [`Options::time_wait_events`]) or a sock_diag count at the
    /// read (`sock_diag`, the default).
    pub time_wait_source: &'static str,
}

/// What to attach beyond the default set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Follow TIME_WAIT sockets through their timers (`timer:timer_start`,
    /// `timer:timer_cancel`), which makes TIME_WAIT counts and transitions
    /// exact between reads. Off by default: those events fire for every
    /// kernel timer on the host (two per echo call under load) and cost
    /// a loaded echo server 4-6% of its throughput (docs/probe.md), while a TIME_WAIT
    /// socket lives 60 s, so a count taken by sock_diag at each read (the
    /// default) never misses one; only its transitions go uncounted.
    pub time_wait_events: bool,
}

pub struct EbpfProbe {
    bpf: Ebpf,
    netns: u32,
    attached: Vec<String>,
    /// The timer programs are attached (see [`Options::time_wait_events`]).
    time_wait_events: bool,
    /// Open fds of each watched pid at the last read: the base for its peak.
    fd_base: StdHashMap<u32, u64>,
}

/// A program of the object, as its kind (`TracePoint`, `RawTracePoint`).
fn program_in<'a, P>(bpf: &'a mut Ebpf, name: &str) -> Result<&'a mut P, Error>
where
    &'a mut P: TryFrom<&'a mut Program, Error = ProgramError>,
{
    bpf.program_mut(name)
        .ok_or_else(|| Error::Load(format!("program {name} missing from the object")))?
        .try_into()
        .map_err(|e| Error::Load(format!("{name}: {e}")))
}

fn load_error(program: &str, e: ProgramError) -> Error {
    Error::Load(short(&format!("{program}: {e:#}")))
}

/// The snapshot listener a kernel-side queue entry belongs to. The
/// programs see a connection join a queue as it is cloned from its listener,
/// under the connection's local address; a listener bound to a wildcard
/// address is reached at concrete ones. So: the listener with exactly that
/// address first, else the wildcard listener on the same port.
pub fn listener_for(listeners: &[Listener], port: u16, address: &str) -> Option<usize> {
    let wildcard = |a: &str| a.starts_with("0.0.0.0:") || a.starts_with("[::]:");
    listeners
        .iter()
        .position(|l| l.port == port && l.address == address)
        .or_else(|| {
            listeners
                .iter()
                .position(|l| l.port == port && wildcard(&l.address))
        })
}

/// TIME_WAIT sockets on `ports` now, counted by sock_diag (the kernel walks
/// only its established hash and sends back only TIME_WAIT sockets).
fn time_wait_now(ports: &[u16]) -> Result<u64, Error> {
    if ports.is_empty() {
        return Ok(0);
    }
    let query = crate::poll::diag::Query {
        states: 1 << TCP_TIME_WAIT,
        local_port: match ports {
            [one] => Some(*one),
            _ => None,
        },
    };
    Ok(crate::poll::diag::dump(query)?
        .iter()
        .filter(|s| ports.contains(&s.local.port()))
        .count() as u64)
}

/// The network namespace inode of this process (what the programs key on).
pub fn own_netns() -> u32 {
    std::fs::read_link("/proc/self/ns/net")
        .ok()
        .and_then(|p| {
            let s = p.to_string_lossy().into_owned();
            s.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
        })
        .unwrap_or(0)
}

fn kallsyms(symbol: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/kallsyms").ok()?;
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        let addr = u64::from_str_radix(it.next()?, 16).ok()?;
        let _kind = it.next()?;
        (it.next()? == symbol && addr != 0).then_some(addr)
    })
}

impl EbpfProbe {
    /// Loads and attaches the default set of programs, or says why not.
    pub fn load(disabled: bool) -> Result<EbpfProbe, Error> {
        EbpfProbe::load_with(disabled, Options::default())
    }

    /// Loads and attaches the default set and what `options` add.
    pub fn load_with(disabled: bool, options: Options) -> Result<EbpfProbe, Error> {
        if disabled {
            return Err(Error::Disabled);
        }
        if let Some(why) = BUILD.strip_prefix("not built: ") {
            return Err(Error::NotBuilt(why.to_string()));
        }
        if OBJECT.is_empty() {
            return Err(Error::NotBuilt("empty object".into()));
        }
        let mut config = btf::resolve_config()?;
        // TIME_WAIT tracking needs the timer function's address; without it
        // (kptr_restrict) the rest still works.
        config.tw_timer_fn = kallsyms("tw_timer_handler").unwrap_or(0);
        tracefs::ensure_mounted()?;
        let bpf = EbpfLoader::new()
            .override_global("CONFIG", &config, true)
            .load(OBJECT)
            .map_err(|e| Error::Load(short(&format!("{e:#}"))))?;
        let netns = own_netns();
        let mut probe = EbpfProbe {
            bpf,
            netns,
            attached: Vec::new(),
            time_wait_events: options.time_wait_events && config.tw_timer_fn != 0,
            fd_base: StdHashMap::new(),
        };
        probe.seed_ports()?;
        probe.attach_all()?;
        Ok(probe)
    }

    fn attach(&mut self, program: &str, category: &str, names: &[&str]) -> Result<(), Error> {
        let prog: &mut TracePoint = program_in(&mut self.bpf, program)?;
        prog.load().map_err(|e| load_error(program, e))?;
        for name in names {
            if !tracefs::has_event(category, name) {
                continue; // e.g. sys_exit_open on arm64: the syscall does not exist
            }
            prog.attach(category, name).map_err(|e| Error::Attach {
                what: format!("{category}:{name}"),
                why: format!("{e:#}"),
            })?;
            self.attached.push(format!("{category}:{name}"));
        }
        Ok(())
    }

    /// A raw tracepoint: same event, the kernel's arguments as they are, no
    /// trace record built (the timer events fire for every kernel timer).
    fn attach_raw(&mut self, program: &str, category: &str, name: &str) -> Result<(), Error> {
        let prog: &mut RawTracePoint = program_in(&mut self.bpf, program)?;
        prog.load().map_err(|e| load_error(program, e))?;
        prog.attach(name).map_err(|e| Error::Attach {
            what: format!("{category}:{name} (raw)"),
            why: format!("{e:#}"),
        })?;
        self.attached.push(format!("{category}:{name}"));
        Ok(())
    }

    fn attach_all(&mut self) -> Result<(), Error> {
        let sys = |names: &[&str]| -> Vec<String> {
            names.iter().map(|n| format!("sys_exit_{n}")).collect()
        };
        let groups: [(&str, Vec<String>); 4] = [
            ("sys_exit_open1", sys(syscalls::OPEN_ONE)),
            ("sys_exit_open2", sys(syscalls::OPEN_TWO)),
            ("sys_exit_close", sys(syscalls::CLOSE)),
            ("sys_exit_other", sys(syscalls::ERRORS_ONLY)),
        ];
        self.attach_raw("inet_sock_set_state", "sock", "inet_sock_set_state")?;
        if self.time_wait_events {
            self.attach_raw("tw_timer_start", "timer", "timer_start")?;
            // Expiries too: the kernel detaches an expiring timer through timer_cancel.
            self.attach_raw("tw_timer_cancel", "timer", "timer_cancel")?;
        }
        for (prog, names) in &groups {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            self.attach(prog, "syscalls", &names)?;
        }
        Ok(())
    }

    /// Tracepoints attached, for the "eBPF on" line.
    pub fn attached(&self) -> &[String] {
        &self.attached
    }

    /// Watches every listening port of this namespace and seeds the per-port
    /// counts with the sockets that exist now (from /proc/net/tcp{,6}), so
    /// that counts are absolute, not "since attach". TIME_WAIT sockets from
    /// before attach are not seeded: their expiry cannot be matched.
    fn seed_ports(&mut self) -> Result<(), Error> {
        let mut per_port: StdHashMap<u16, PortStates> = StdHashMap::new();
        let mut listen_ports = Vec::new();
        for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
            for (port, state) in proc_net_tcp(Path::new(file)) {
                if state == TCP_LISTEN as u8 {
                    listen_ports.push(port);
                }
                if state as u32 != TCP_TIME_WAIT && (state as usize) < STATE_SLOTS {
                    per_port.entry(port).or_default().current[state as usize] += 1;
                }
            }
        }
        let netns = self.netns;
        let mut watch = hash_map::<PortKey, u8>(&mut self.bpf, "WATCH_PORTS")?;
        for &port in &listen_ports {
            let key = PortKey {
                netns,
                port,
                _pad: 0,
            };
            let _ = watch.insert(key, 1, 0);
        }
        let mut states = hash_map::<PortKey, PortStates>(&mut self.bpf, "PORT_STATES")?;
        for port in listen_ports {
            if let Some(v) = per_port.get(&port) {
                let key = PortKey {
                    netns,
                    port,
                    _pad: 0,
                };
                let _ = states.insert(key, *v, 0);
            }
        }
        Ok(())
    }

    /// Adds a local port to the watched set (a `--port` that does not listen yet).
    pub fn watch_port(&mut self, port: u16) -> Result<(), Error> {
        let key = PortKey {
            netns: self.netns,
            port,
            _pad: 0,
        };
        let mut watch = hash_map::<PortKey, u8>(&mut self.bpf, "WATCH_PORTS")?;
        watch
            .insert(key, 1, 0)
            .map_err(|e| Error::Map("WATCH_PORTS", e.to_string()))
    }

    /// Counts fds opened and closed by `pid` from now on; `open_fds` is its
    /// count now, the base of its peak.
    pub fn watch_pid(&mut self, pid: u32, open_fds: u64) -> Result<(), Error> {
        if self.fd_base.contains_key(&pid) {
            return Ok(());
        }
        let mut pids = hash_map::<u32, FdUsage>(&mut self.bpf, "WATCH_PIDS")?;
        pids.insert(pid, FdUsage::default(), 0)
            .map_err(|e| Error::Map("WATCH_PIDS", e.to_string()))?;
        self.fd_base.insert(pid, open_fds);
        Ok(())
    }

    /// Reads the maps into `snap` (filled by polling just before) for
    /// `target`, resets the per-interval peaks, and returns the counters the
    /// snapshot has no field for.
    pub fn overlay(&mut self, snap: &mut Snapshot, filter: &Filter) -> Result<EbpfExtras, Error> {
        snap.source = Source::Ebpf;
        snap.source_note = None;
        let netns = self.netns;
        let want_port = |p: u16| filter.ports.is_empty() || filter.ports.contains(&p);
        let want_pid = |p: u32| filter.pids.is_empty() || filter.pids.contains(&p);

        // Accept queues: peak and full events since the last read.
        let mut listeners = hash_map::<ListenerKey, ListenerStats>(&mut self.bpf, "LISTENERS")?;
        let entries: Vec<(ListenerKey, ListenerStats)> =
            listeners.iter().filter_map(Result::ok).collect();
        for (key, stats) in entries {
            if key.netns != netns || !want_port(key.port) {
                continue;
            }
            let address = format_addr(&key);
            let l = match listener_for(&snap.listeners, key.port, &address) {
                Some(i) => &mut snap.listeners[i],
                None => {
                    snap.listeners.push(Listener {
                        address,
                        port: key.port,
                        accept_queue_depth: stats.depth as u64,
                        accept_queue_limit: stats.limit as u64,
                        ..Listener::default()
                    });
                    snap.listeners.last_mut().expect("just pushed")
                }
            };
            if l.accept_queue_limit == 0 {
                l.accept_queue_limit = stats.limit as u64;
            }
            // Several kernel entries can fold into one wildcard listener.
            l.accept_queue_peak = l
                .accept_queue_peak
                .max(l.accept_queue_depth)
                .max(stats.peak as u64);
            l.queue_full_events = Some(l.queue_full_events.unwrap_or(0) + stats.full_events);
            // Peak is "since the last read": start the next interval at 0.
            let mut reset = stats;
            reset.peak = 0;
            let _ = listeners.insert(key, reset, 0);
        }

        // Socket states of the target's ports, kept in the kernel as they change.
        let ports: Vec<(PortKey, PortStates)> =
            hash_map::<PortKey, PortStates>(&mut self.bpf, "PORT_STATES")?
                .iter()
                .filter_map(Result::ok)
                .filter(|(k, _)| k.netns == netns && want_port(k.port))
                .collect();
        let mut extras = EbpfExtras {
            attached: self.attached.clone(),
            time_wait_source: if self.time_wait_events {
                "ebpf"
            } else {
                "sock_diag"
            },
            ..EbpfExtras::default()
        };
        if !ports.is_empty() {
            snap.sockets.clear();
        }
        if !self.time_wait_events {
            let watched: Vec<u16> = ports.iter().map(|(k, _)| k.port).collect();
            let n = time_wait_now(&watched)?;
            if n > 0 {
                *snap.sockets.entry(TcpState::TimeWait).or_default() += n;
            }
        }
        for (_, st) in &ports {
            for s in TcpState::ALL {
                let i = s as usize;
                let now = st.current[i].max(0) as u64;
                if now > 0 {
                    *snap.sockets.entry(s).or_default() += now;
                }
                if st.entered[i] > 0 {
                    *extras.transitions.entry(s).or_default() += st.entered[i];
                }
            }
        }

        // Failed syscalls that mean a limit was hit.
        let errors: Vec<(FdErrorKey, u64)> =
            hash_map::<FdErrorKey, u64>(&mut self.bpf, "FD_ERRORS")?
                .iter()
                .filter_map(Result::ok)
                .filter(|(k, _)| want_pid(k.pid))
                .collect();
        for (k, count) in errors {
            let syscall = syscalls::name(k.nr);
            let errno = syscalls::errno_name(k.errno);
            match snap
                .fd_errors
                .iter_mut()
                .find(|e| e.pid == k.pid && e.syscall == syscall && e.errno == errno)
            {
                Some(e) => e.count = e.count.max(count),
                None => snap.fd_errors.push(FdError {
                    pid: k.pid,
                    syscall,
                    errno,
                    count,
                }),
            }
        }
        snap.fd_errors
            .sort_by(|a, b| (a.pid, &a.syscall, &a.errno).cmp(&(b.pid, &b.syscall, &b.errno)));

        // fd peaks between samples: base (count at the last read) + highest delta.
        let mut pids = hash_map::<u32, FdUsage>(&mut self.bpf, "WATCH_PIDS")?;
        let mut new_base = Vec::new();
        for p in snap.processes.iter_mut() {
            let Ok(u) = pids.get(&p.pid, 0) else { continue };
            let base = self.fd_base.get(&p.pid).copied().unwrap_or(p.open_fds);
            let peak = (base as i64 + u.peak_delta).max(0) as u64;
            p.open_fds_peak = p.open_fds.max(peak);
            let reset = FdUsage {
                delta: 0,
                peak_delta: 0,
                ..u
            };
            let _ = pids.insert(p.pid, reset, 0);
            new_base.push((p.pid, p.open_fds));
        }
        self.fd_base.extend(new_base);

        let drops = Array::<&MapData, u64>::try_from(
            self.bpf
                .map("DROPS")
                .ok_or_else(|| Error::Map("DROPS", "missing from the object".into()))?,
        )
        .map_err(|e| Error::Map("DROPS", e.to_string()))?;
        for (i, name) in DROP_NAMES.iter().enumerate() {
            extras
                .dropped
                .push((name, drops.get(&(i as u32), 0).unwrap_or(0)));
        }
        Ok(extras)
    }
}

/// A verifier log is thousands of lines: keep the error and the verdict.
fn short(msg: &str) -> String {
    let Some((head, log)) = msg.split_once("Verifier output:") else {
        return msg.to_string();
    };
    let tail: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    let verdict = tail[tail.len().saturating_sub(4)..].join(" | ");
    format!("{} verifier: {verdict}", head.trim_end())
}

fn hash_map<'a, K: aya::Pod, V: aya::Pod>(
    bpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<HashMap<&'a mut MapData, K, V>, Error> {
    let m = bpf
        .map_mut(name)
        .ok_or_else(|| Error::Map(name, "missing from the object".into()))?;
    HashMap::try_from(m).map_err(|e| Error::Map(name, e.to_string()))
}

fn format_addr(key: &ListenerKey) -> String {
    if key.family == libc::AF_INET as u16 {
        let a = std::net::Ipv4Addr::new(key.addr[0], key.addr[1], key.addr[2], key.addr[3]);
        format!("{a}:{}", key.port)
    } else {
        format!("[{}]:{}", std::net::Ipv6Addr::from(key.addr), key.port)
    }
}

/// (local port, state) of each socket in /proc/net/tcp or tcp6.
fn proc_net_tcp(path: &Path) -> Vec<(u16, u8)> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let local = f.nth(1)?;
            let state = f.nth(1)?;
            let port = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
            Some((port, u8::from_str_radix(state, 16).ok()?))
        })
        .collect()
}

// The integration tests' guard of root-only tests, the same file, so that
// they fail alike when run without root.
#[cfg(test)]
#[path = "../../../tests/util/root.rs"]
mod root;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_listener_addresses() {
        let mut k = ListenerKey {
            netns: 1,
            family: libc::AF_INET as u16,
            port: 8080,
            addr: [0; 16],
        };
        k.addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(format_addr(&k), "127.0.0.1:8080");
        k.family = libc::AF_INET6 as u16;
        k.addr = std::net::Ipv6Addr::LOCALHOST.octets();
        assert_eq!(format_addr(&k), "[::1]:8080");
    }

    #[test]
    fn a_queue_entry_finds_its_listener_exactly_then_by_wildcard() {
        let l = |address: &str, port| Listener {
            address: address.into(),
            port,
            ..Listener::default()
        };
        let ls = [
            l("0.0.0.0:80", 80),
            l("127.0.0.2:80", 80),
            l("[::]:443", 443),
            l("10.0.0.1:22", 22),
        ];
        assert_eq!(listener_for(&ls, 80, "127.0.0.2:80"), Some(1));
        assert_eq!(listener_for(&ls, 80, "127.0.0.1:80"), Some(0));
        assert_eq!(listener_for(&ls, 443, "[::1]:443"), Some(2));
        assert_eq!(listener_for(&ls, 22, "10.0.0.2:22"), None);
        assert_eq!(listener_for(&ls, 8080, "127.0.0.1:8080"), None);
    }

    #[test]
    fn resolves_sock_offsets_from_this_kernels_btf() {
        if !Path::new(btf::VMLINUX).exists() {
            eprintln!("no {}: skipped", btf::VMLINUX);
            return;
        }
        let c = btf::resolve_config().expect("offsets");
        // sock_common starts struct sock; these live inside it.
        assert!(c.off_state < c.off_ack_backlog);
        assert_ne!(c.off_ack_backlog, c.off_max_ack_backlog);
        assert!(c.off_num > 0 && c.off_num < 64, "skc_num at {}", c.off_num);
    }

    /// Loads the real object into this kernel and checks one accept queue
    /// end to end (the CLI tests cover the rest).
    #[test]
    #[ignore = "needs root"]
    fn counts_an_accept_queue_in_this_kernel() {
        root::require_root();
        if BUILD != "ok" {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must build the eBPF object: {BUILD}"
            );
            eprintln!("eBPF object not built: skipped");
            return;
        }
        let mut probe = EbpfProbe::load(false).expect("load eBPF");
        assert!(probe
            .attached()
            .iter()
            .any(|a| a == "sock:inet_sock_set_state"));
        // SAFETY: plain socket syscalls on fds we own.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        assert!(fd >= 0);
        let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        addr.sin_family = libc::AF_INET as u16;
        addr.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
        unsafe {
            assert_eq!(
                libc::bind(fd, &addr as *const _ as *const libc::sockaddr, len),
                0
            );
            assert_eq!(libc::listen(fd, 5), 0);
            let mut l = len;
            libc::getsockname(fd, &mut addr as *mut _ as *mut libc::sockaddr, &mut l);
        }
        let port = u16::from_be(addr.sin_port);
        let clients: Vec<_> = (0..3)
            .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect"))
            .collect();
        let mut snap = Snapshot::default();
        let filter = Filter {
            pids: vec![],
            ports: vec![port],
        };
        probe.overlay(&mut snap, &filter).expect("overlay");
        let l = snap
            .listeners
            .iter()
            .find(|l| l.port == port)
            .expect("listener seen");
        assert_eq!((l.accept_queue_peak, l.accept_queue_limit), (3, 5), "{l:?}");
        assert_eq!(l.queue_full_events, Some(0));
        assert_eq!(l.address, format!("127.0.0.1:{port}"));
        drop(clients);
        unsafe { libc::close(fd) };
    }

    #[test]
    fn names_the_counted_errnos() {
        assert_eq!(syscalls::errno_name(24), "EMFILE");
        assert_eq!(syscalls::errno_name(23), "ENFILE");
        assert_eq!(syscalls::errno_name(99), "EADDRNOTAVAIL");
    }
}

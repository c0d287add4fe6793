//! The capacity model: from a [`Snapshot`], the maximum number of concurrent
//! connections the target can hold, as the minimum over named constraints.
//!
//! Per-process constraints (nofile) add up over the processes of a service;
//! system-wide ones (file-max, memory, conntrack, tcp_mem) do not. Each
//! constraint says how many connections it still admits, so the binding one
//! is simply the smallest.

use crate::app::AppInfo;
use crate::app_model::{app_constraints, connection_holders, holder_connections, is_app_cap};
use crate::snapshot::{MemoryPerConnection, Snapshot};
use serde::{Deserialize, Serialize};

/// Knobs of the model. The defaults are what `headroom serve` itself uses, so
/// the server refuses exactly where the model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// File descriptors each process keeps back (log files, the accept that
    /// carries a refusal, a config reload) and never gives to connections.
    pub fd_reserve: u64,
    /// Descriptors one connection costs (1 for a server; 2 for a proxy).
    pub fds_per_connection: u64,
    /// Cost of a connection when the snapshot carries no measured figure.
    pub default_memory_per_connection: MemoryPerConnection,
    /// The client's end of every connection is on this host too (a flood
    /// over loopback): host-wide tables charge both ends, a file handle and
    /// kernel socket memory each.
    #[serde(default)]
    pub client_on_host: bool,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            fd_reserve: 32,
            fds_per_connection: 1,
            // An idle TCP socket costs the kernel about 2 KiB of slab (sock,
            // inode, dentry, file) and an idle headroom session about 4 KiB of
            // RSS; both are replaced by measured figures when the probe has them.
            default_memory_per_connection: MemoryPerConnection {
                process_bytes: 4096,
                kernel_bytes: 2048,
                measured: false,
                buffer_bytes: None,
            },
            client_on_host: false,
        }
    }
}

/// Whether a limit belongs to each process or to the whole host/namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Process,
    System,
}

/// One limit, how much of it is used, and what that leaves for connections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Constraint {
    /// Stable name: `nofile`, `file-max`, `memory`, `cgroup-memory`,
    /// `conntrack`, `tcp-mem`, `ephemeral-ports`.
    pub name: String,
    pub scope: Scope,
    /// Unit of `limit`, `used`, `reserve` and `headroom`: `fds`, `files`,
    /// `bytes`, `entries`, `pages`, `ports`.
    pub unit: String,
    pub limit: u64,
    pub used: u64,
    /// Part of the limit deliberately kept back.
    pub reserve: u64,
    /// limit - used - reserve, never negative.
    pub headroom: u64,
    /// Units one more connection costs.
    pub per_connection: u64,
    /// Connections this constraint still admits: headroom / per_connection.
    pub headroom_connections: u64,
    /// Connections held now plus `headroom_connections`.
    pub max_connections: u64,
    /// One line: what the limit is and where it comes from.
    pub explanation: String,
    /// One line: how an operator raises it.
    pub remedy: String,
}

impl Constraint {
    /// Fraction of the limit in use, 0.0..=1.0 (reserve counts as in use).
    pub fn utilisation(&self) -> f64 {
        if self.limit == 0 {
            return 1.0;
        }
        ((self.limit - self.headroom) as f64 / self.limit as f64).clamp(0.0, 1.0)
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn constraint(
    name: &str,
    scope: Scope,
    unit: &str,
    limit: u64,
    used: u64,
    reserve: u64,
    per_connection: u64,
    connections: u64,
    explanation: String,
    remedy: &str,
) -> Constraint {
    let headroom = limit.saturating_sub(used).saturating_sub(reserve);
    let headroom_connections = headroom / per_connection.max(1);
    Constraint {
        name: name.to_string(),
        scope,
        unit: unit.to_string(),
        limit,
        used,
        reserve,
        headroom,
        per_connection: per_connection.max(1),
        headroom_connections,
        max_connections: connections + headroom_connections,
        explanation,
        remedy: remedy.to_string(),
    }
}

/// The model's answer for one snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// Connections held now, over all processes of the target.
    pub connections: u64,
    /// The smallest `max_connections` over all constraints.
    pub predicted_max_connections: u64,
    /// Name of the constraint that gives that number.
    pub binding: String,
    /// Every constraint, binding first, then by `max_connections`.
    pub constraints: Vec<Constraint>,
    /// Processes the per-process limits were summed over.
    pub processes: u64,
    /// When the binding constraint is per-process: the next constraint's name
    /// and how many processes of this kind it takes to reach it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_wall: Option<NextWall>,
}

/// Where the wall moves once the binding one is pushed back: with more
/// processes (a per-process kernel limit) or by raising the server's own
/// setting (an application cap).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextWall {
    pub constraint: String,
    pub max_connections: u64,
    /// Processes like these it takes to reach it, when more processes are
    /// the way past the binding limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes_needed: Option<u64>,
    /// The setting to raise to reach it, when the binding limit is the
    /// application's own (`maxclients`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raise: Option<String>,
}

impl NextWall {
    /// One line: `nofile at 19958 connections once maxclients is raised`,
    /// `file-max at 98000 connections with 5 processes like these`.
    pub fn describe(&self) -> String {
        match (&self.raise, self.processes_needed) {
            (Some(setting), _) => format!(
                "{} at {} connections once {setting} is raised",
                self.constraint, self.max_connections
            ),
            (None, Some(n)) => format!(
                "{} at {} connections, reached with {n} processes like these",
                self.constraint, self.max_connections
            ),
            (None, None) => format!(
                "{} at {} connections",
                self.constraint, self.max_connections
            ),
        }
    }
}

impl Prediction {
    pub fn binding_constraint(&self) -> Option<&Constraint> {
        self.constraints.iter().find(|c| c.name == self.binding)
    }

    pub fn constraint(&self, name: &str) -> Option<&Constraint> {
        self.constraints.iter().find(|c| c.name == name)
    }
}

/// Connections one process can still accept under its nofile soft limit:
/// soft - open - reserve, in units of `fds_per_connection`. The server calls
/// this very function to set its own ceiling.
pub fn fd_capacity(nofile_soft: u64, open_fds: u64, cfg: &ModelConfig) -> u64 {
    nofile_soft
        .saturating_sub(open_fds)
        .saturating_sub(cfg.fd_reserve)
        / cfg.fds_per_connection.max(1)
}

/// Predicts the target's maximum concurrent connections from a snapshot.
///
/// When the snapshot names the application ([`Snapshot::app`]), its own caps
/// are constraints too, and the kernel ones are counted the way it spends
/// them: only the processes that hold client connections (not nginx's
/// master), its descriptors per connection, its own fd reserve, and for a
/// server with a process per connection the process limits instead of one
/// process's descriptor table.
pub fn predict(snap: &Snapshot, cfg: &ModelConfig) -> Prediction {
    let app = snap.app.as_ref();
    let fds_per_connection = app
        .filter(|a| a.is_known())
        .map_or(cfg.fds_per_connection, |a| a.fds_per_connection.max(1));
    // A proxy's own upstream connections are TCP connections of its
    // processes too: without the server's own count, clients are the TCP
    // connections over the descriptors each client costs.
    let app_connections = app.and_then(|a| a.connections);
    let conns = app_connections.unwrap_or_else(|| snap.connections() / fds_per_connection);
    let fd_reserve = app.and_then(|a| a.fd_reserve).unwrap_or(cfg.fd_reserve);
    let holders = connection_holders(snap);
    let nproc = holders.len() as u64;
    let mut cs = Vec::new();

    // nofile: per process, summed. An unlimited soft limit is capped by nr_open,
    // which is what the kernel enforces for any fd table. A server that forks
    // a process per connection gives each connection a fresh table.
    let per_connection_process = app.is_some_and(|a| a.process_per_connection);
    if nproc > 0 && !per_connection_process {
        let limit: u64 = holders
            .iter()
            .map(|p| p.nofile_soft.unwrap_or(snap.system.nr_open))
            .sum();
        let used: u64 = holders.iter().map(|p| p.open_fds).sum();
        let reserve = fd_reserve * nproc;
        let hard = holders[0].nofile_hard;
        let soft = holders[0].nofile_soft;
        let who = if nproc == 1 {
            format!("pid {}", holders[0].pid)
        } else {
            format!("{nproc} processes")
        };
        let explanation = format!(
            "RLIMIT_NOFILE soft {} (hard {}) of {who}: {used} fds open, {reserve} kept in reserve",
            fmt_limit(soft),
            fmt_limit(hard),
        );
        // Only headroom serve (or a server nobody recognised) is told about
        // `serve --workers`; a known server's own workers are its business.
        let workers = if app.is_some_and(|a| a.is_known() && a.kind != "headroom") {
            "add worker processes"
        } else {
            "add worker processes (serve --workers)"
        };
        let remedy = if soft.is_some() && soft == hard {
            format!("soft = hard: raise the hard limit (LimitNOFILE=, limits.d; needs CAP_SYS_RESOURCE) or {workers}")
        } else {
            format!(
                "raise the soft limit up to the hard limit (prlimit, LimitNOFILE=) or {workers}"
            )
        };
        cs.push(constraint(
            "nofile",
            Scope::Process,
            "fds",
            limit,
            used,
            reserve,
            fds_per_connection,
            app_connections.unwrap_or(holder_connections(&holders) / fds_per_connection),
            explanation,
            &remedy,
        ));
    }

    // Both ends of a loopback flood draw from the host's tables.
    let ends_on_host = u64::from(cfg.client_on_host);
    let both = if cfg.client_on_host {
        "; both ends on this host: the client's sockets count too"
    } else {
        ""
    };

    // System-wide file handles. The kernel lets a process with
    // CAP_SYS_ADMIN past fs.file-max (alloc_empty_file), so the wall is
    // there only when some process that holds connections lacks it.
    let file_max_exempt = nproc > 0 && holders.iter().all(|p| p.cap_sys_admin);
    if snap.system.file_max > 0 && !file_max_exempt {
        cs.push(constraint(
            "file-max",
            Scope::System,
            "files",
            snap.system.file_max,
            snap.system.file_nr_allocated,
            0,
            fds_per_connection + ends_on_host,
            conns,
            format!(
                "fs.file-max {}: {} file handles allocated host-wide{both}",
                snap.system.file_max, snap.system.file_nr_allocated
            ),
            "sysctl -w fs.file-max=N (headroom preflight apply --profile c100k)",
        ));
    }

    let mut mem = snap
        .memory_per_connection
        .unwrap_or(cfg.default_memory_per_connection);
    if let Some(b) = app.and_then(|a| a.process_bytes_per_connection) {
        mem.process_bytes = b;
        mem.measured = true;
    }
    let how = if mem.measured { "measured" } else { "assumed" };
    if snap.system.mem_total_bytes > 0 {
        cs.push(constraint(
            "memory",
            Scope::System,
            "bytes",
            snap.system.mem_total_bytes,
            snap.system
                .mem_total_bytes
                .saturating_sub(snap.system.mem_available_bytes),
            0,
            mem.total() + ends_on_host * mem.kernel_bytes,
            conns,
            format!(
                "MemAvailable {} at {} B per connection ({} process + {} kernel, {how}){both}",
                fmt_bytes(snap.system.mem_available_bytes),
                mem.total() + ends_on_host * mem.kernel_bytes,
                mem.process_bytes,
                mem.kernel_bytes * (1 + ends_on_host)
            ),
            "add memory, or lower the per-connection cost (buffers, per-session state)",
        ));
    }

    // cgroup v2 memory.max: socket memory is charged to the cgroup too, so the
    // per-connection cost is process plus kernel. Workers of a service share
    // one cgroup: count each distinct (limit, used) once.
    let mut seen = Vec::new();
    for p in &snap.processes {
        if let (Some(limit), Some(used)) = (p.cgroup_memory_limit_bytes, p.cgroup_memory_used_bytes)
        {
            if !seen.contains(&(limit, used)) {
                seen.push((limit, used));
            }
        }
    }
    if !seen.is_empty() {
        let limit: u64 = seen.iter().map(|s| s.0).sum();
        let used: u64 = seen.iter().map(|s| s.1).sum();
        cs.push(constraint(
            "cgroup-memory",
            Scope::Process,
            "bytes",
            limit,
            used,
            0,
            mem.total(),
            conns,
            format!(
                "cgroup memory.max {} ({} in use) at {} B per connection ({how})",
                fmt_bytes(limit),
                fmt_bytes(used),
                mem.total()
            ),
            "raise memory.max (MemoryMax= in the unit, resources.limits.memory in Kubernetes)",
        ));
    }

    // conntrack only binds when the namespace actually tracks connections:
    // loaded but unused (no rule needs it) leaves nf_conntrack_count at 0.
    if let (Some(max), Some(count)) = (snap.system.conntrack_max, snap.system.conntrack_count) {
        if count > 0 {
            cs.push(constraint(
                "conntrack",
                Scope::System,
                "entries",
                max,
                count,
                0,
                1,
                conns,
                format!("net.netfilter.nf_conntrack_max {max}: {count} connections tracked"),
                "sysctl -w net.netfilter.nf_conntrack_max=N, or exempt the port (NOTRACK)",
            ));
        }
    }

    // tcp_mem: past `max` pages the kernel drops and refuses socket memory.
    // It counts socket buffers, not slab: the measured buffer share of a
    // connection where known. An idle connection keeps next to none (1M
    // idle sessions, both ends on one host: 202 pages for 2M sockets), so
    // unmeasured it is assumed to keep none and this wall binds only for
    // data in flight, which a snapshot of idle connections cannot price.
    if let (Some((_, _, max)), Some(used)) =
        (snap.system.tcp_mem_pages, snap.system.tcp_mem_used_pages)
    {
        let page = snap.system.page_size.max(1);
        let (per, how_buf) = match mem.buffer_bytes {
            Some(b) => (b.max(1), "measured"),
            None => (1, "assumed: idle connections keep no buffers"),
        };
        if mem.kernel_bytes > 0 {
            cs.push(constraint(
                "tcp-mem",
                Scope::System,
                "bytes",
                max * page,
                used * page,
                0,
                per * (1 + ends_on_host),
                conns,
                format!(
                    "net.ipv4.tcp_mem max {max} pages: {used} pages of socket buffers in use, {} B per connection ({how_buf}){both}",
                    per * (1 + ends_on_host)
                ),
                "sysctl -w net.ipv4.tcp_mem='MIN PRESSURE MAX' with a larger MAX",
            ));
        }
    }

    if let Some(app) = app {
        cs.extend(app_constraints(app, conns));
    }

    finish(cs, conns, nproc, app)
}

fn finish(mut cs: Vec<Constraint>, conns: u64, nproc: u64, app: Option<&AppInfo>) -> Prediction {
    cs.sort_by(|a, b| {
        a.max_connections
            .cmp(&b.max_connections)
            .then_with(|| a.name.cmp(&b.name))
    });
    let (predicted, binding) = cs
        .first()
        .map(|c| (c.max_connections, c.name.clone()))
        .unwrap_or((0, String::new()));

    let next_wall = cs.first().and_then(|b| {
        if is_app_cap(app, &b.name) {
            // Raising the server's own setting leaves the next limit that is
            // not one of its caps.
            let next = cs.iter().find(|c| !is_app_cap(app, &c.name))?;
            let setting = app?.caps.iter().find(|c| c.name == b.name)?.setting.clone();
            return Some(NextWall {
                constraint: next.name.clone(),
                max_connections: next.max_connections,
                processes_needed: None,
                raise: Some(setting),
            });
        }
        if b.scope != Scope::Process {
            return None;
        }
        let next = cs.iter().find(|c| c.scope == Scope::System)?;
        // Capacity one process brings: its share of the binding limit.
        let per_process = (b.limit.saturating_sub(b.reserve) / b.per_connection) / nproc.max(1);
        let processes_needed = next.max_connections.div_ceil(per_process.max(1)).max(1);
        Some(NextWall {
            constraint: next.name.clone(),
            max_connections: next.max_connections,
            processes_needed: Some(processes_needed),
            raise: None,
        })
    });

    Prediction {
        connections: conns,
        predicted_max_connections: predicted,
        binding,
        constraints: cs,
        processes: nproc,
        next_wall,
    }
}

/// Client side: how many connections one client can open to one destination
/// (address, port) before connect() fails with EADDRNOTAVAIL. Each source
/// address has its own port range; ports held by other connections to the
/// same destination (or in TIME_WAIT to it, unless tcp_tw_reuse lets connect
/// reuse them) are already gone.
pub fn ephemeral_ports_per_destination(
    port_range: (u16, u16),
    source_addresses: u64,
    ports_in_use_to_destination: u64,
    connections: u64,
) -> Constraint {
    let size = (port_range.1 as u64 + 1).saturating_sub(port_range.0 as u64);
    // connect() (__inet_hash_connect) scans `remaining &= ~1` ports: an even
    // count, both parities. Of an odd-sized range the last port is reached
    // only for some hash offsets, so only the even part is certain. Measured
    // on 6.18: 10000-10999 gives 1000, 10000-10998 gives 998 or 999.
    let usable = if size > 1 { size & !1 } else { size };
    constraint(
        "ephemeral-ports",
        Scope::System,
        "ports",
        usable * source_addresses.max(1),
        ports_in_use_to_destination,
        0,
        1,
        connections,
        format!(
            "ip_local_port_range {}-{} ({size} ports) x {} source address(es) per destination",
            port_range.0,
            port_range.1,
            source_addresses.max(1)
        ),
        "widen net.ipv4.ip_local_port_range, or add source addresses / destination ports",
    )
}

/// The accept queue limit a `listen(fd, backlog)` gets: the kernel caps the
/// requested backlog at net.core.somaxconn (of the listener's namespace).
pub fn effective_backlog(backlog: u64, somaxconn: u64) -> u64 {
    backlog.min(somaxconn)
}

/// Connections a listener that never accepts holds before the kernel drops
/// new SYNs (and counts ListenOverflows): one more than the limit, because
/// sk_acceptq_is_full() tests depth > limit.
pub fn accept_queue_capacity(limit: u64) -> u64 {
    limit + 1
}

/// Seconds until `headroom_connections` are used up at `rate` new connections
/// per second; `None` when the rate is not positive (stable or shrinking).
pub fn time_to_limit(headroom_connections: u64, rate_per_second: f64) -> Option<f64> {
    (rate_per_second > 0.0).then(|| headroom_connections as f64 / rate_per_second)
}

fn fmt_limit(v: Option<u64>) -> String {
    v.map_or("unlimited".to_string(), |v| v.to_string())
}

fn fmt_bytes(b: u64) -> String {
    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;
    if b >= GIB {
        format!("{:.1} GiB", b as f64 / GIB as f64)
    } else {
        format!("{:.1} MiB", b as f64 / MIB as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{ProcessInfo, SystemLimits};

    /// This machine, roughly: nofile 20000, 24 GiB, generous file-max.
    pub(super) fn host() -> Snapshot {
        Snapshot {
            processes: vec![ProcessInfo {
                pid: 42,
                comm: "headroom".into(),
                nofile_soft: Some(20000),
                nofile_hard: Some(20000),
                open_fds: 1010,
                open_fds_peak: 1010,
                connections: 1000,
                ..Default::default()
            }],
            system: SystemLimits {
                nr_open: 1 << 20,
                file_max: 9_223_372_036_854_775_807,
                file_nr_allocated: 2000,
                somaxconn: 4096,
                ip_local_port_range: (32768, 60999),
                mem_total_bytes: 24 << 30,
                mem_available_bytes: 23 << 30,
                page_size: 4096,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn nofile_binds_on_this_host() {
        let p = predict(&host(), &ModelConfig::default());
        assert_eq!(p.binding, "nofile");
        // 20000 - 1010 open - 32 reserve = 18958 more, plus 1000 held.
        assert_eq!(p.predicted_max_connections, 19958);
        let c = p.binding_constraint().unwrap();
        assert_eq!(
            (c.limit, c.used, c.reserve, c.headroom),
            (20000, 1010, 32, 18958)
        );
        assert!(c.explanation.contains("soft 20000 (hard 20000)"));
        assert!(c.remedy.contains("hard limit"));
    }

    #[test]
    fn nofile_sums_over_processes_and_names_next_wall() {
        let mut s = host();
        s.system.file_max = 100_000;
        s.system.file_nr_allocated = 4000;
        let one = s.processes[0].clone();
        s.processes = vec![one.clone(), ProcessInfo { pid: 43, ..one }];
        let p = predict(&s, &ModelConfig::default());
        assert_eq!(p.binding, "nofile");
        assert_eq!(p.processes, 2);
        // Each: 20000 - 1010 - 32 = 18958; two hold 2000 now.
        assert_eq!(p.predicted_max_connections, 2000 + 2 * 18958);
        let next = p.next_wall.unwrap();
        assert_eq!(next.constraint, "file-max");
        // file-max admits 2000 + 96000 = 98000; one process brings 19968.
        assert_eq!(next.max_connections, 98000);
        assert_eq!(next.processes_needed, Some(5));
    }

    #[test]
    fn file_max_binds_when_low() {
        let mut s = host();
        s.system.file_max = 5000;
        s.system.file_nr_allocated = 4500;
        let p = predict(&s, &ModelConfig::default());
        assert_eq!(p.binding, "file-max");
        assert_eq!(p.predicted_max_connections, 1500);
        assert_eq!(p.next_wall, None);
    }

    #[test]
    fn file_max_does_not_bind_processes_with_cap_sys_admin() {
        let mut s = host();
        s.system.file_max = 5000;
        s.system.file_nr_allocated = 4500;
        s.processes[0].cap_sys_admin = true;
        let p = predict(&s, &ModelConfig::default());
        assert!(p.constraint("file-max").is_none());
        assert_eq!(p.binding, "nofile");
        // One holder without it meets the wall: the kernel refuses it there.
        let plain = ProcessInfo {
            pid: 43,
            cap_sys_admin: false,
            ..s.processes[0].clone()
        };
        s.processes.push(plain);
        let p = predict(&s, &ModelConfig::default());
        assert_eq!(p.binding, "file-max");
        // 2000 held by the two, plus the 500 handles left.
        assert_eq!(p.predicted_max_connections, 2500);
    }

    #[test]
    fn memory_binds_at_measured_cost() {
        let mut s = host();
        s.system.mem_available_bytes = 10 << 20; // 10 MiB
        s.memory_per_connection = Some(MemoryPerConnection {
            process_bytes: 8192,
            kernel_bytes: 2048,
            measured: true,
            buffer_bytes: None,
        });
        let p = predict(&s, &ModelConfig::default());
        assert_eq!(p.binding, "memory");
        assert_eq!(p.predicted_max_connections, 1000 + (10 << 20) / 10240);
        assert!(p
            .binding_constraint()
            .unwrap()
            .explanation
            .contains("measured"));
    }

    #[test]
    fn cgroup_memory_binds_and_is_counted_once_for_shared_cgroup() {
        let mut s = host();
        s.processes[0].cgroup_memory_limit_bytes = Some(64 << 20);
        s.processes[0].cgroup_memory_used_bytes = Some(32 << 20);
        let twin = ProcessInfo {
            pid: 43,
            ..s.processes[0].clone()
        };
        s.processes.push(twin);
        let p = predict(&s, &ModelConfig::default());
        assert_eq!(p.binding, "cgroup-memory");
        let c = p.binding_constraint().unwrap();
        assert_eq!(c.limit, 64 << 20);
        assert_eq!(c.headroom_connections, (32 << 20) / 6144);
        assert_eq!(p.predicted_max_connections, 2000 + (32 << 20) / 6144);
    }

    #[test]
    fn conntrack_binds_only_when_tracking() {
        let mut s = host();
        s.system.conntrack_max = Some(1024);
        s.system.conntrack_count = Some(0);
        assert_eq!(predict(&s, &ModelConfig::default()).binding, "nofile");
        s.system.conntrack_count = Some(1000);
        let p = predict(&s, &ModelConfig::default());
        assert_eq!(p.binding, "conntrack");
        assert_eq!(p.predicted_max_connections, 1024);
    }

    #[test]
    fn tcp_mem_binds_when_nearly_exhausted() {
        let mut s = host();
        s.system.tcp_mem_pages = Some((100, 200, 300));
        s.system.tcp_mem_used_pages = Some(290);
        s.memory_per_connection = Some(MemoryPerConnection {
            process_bytes: 4096,
            kernel_bytes: 2048 + 4096,
            measured: false,
            buffer_bytes: Some(4096),
        });
        let p = predict(&s, &ModelConfig::default());
        assert_eq!(p.binding, "tcp-mem");
        // 10 pages left, a page of buffers per connection.
        assert_eq!(p.predicted_max_connections, 1010);
        let c = p.binding_constraint().unwrap();
        assert_eq!(
            (c.unit.as_str(), c.limit, c.used),
            ("bytes", 300 * 4096, 290 * 4096)
        );
    }

    #[test]
    fn tcp_mem_unmeasured_assumes_idle_connections_keep_no_buffers() {
        let mut s = host();
        s.system.tcp_mem_pages = Some((100, 200, 300));
        s.system.tcp_mem_used_pages = Some(290);
        let p = predict(&s, &ModelConfig::default());
        assert_eq!(p.binding, "nofile");
        let c = p.constraint("tcp-mem").unwrap();
        assert_eq!((c.per_connection, c.headroom), (1, 10 * 4096));
    }

    #[test]
    fn tcp_mem_counts_measured_buffers_not_slab() {
        let mut s = host();
        s.system.tcp_mem_pages = Some((100, 200, 300));
        s.system.tcp_mem_used_pages = Some(290);
        s.memory_per_connection = Some(MemoryPerConnection {
            process_bytes: 4096,
            kernel_bytes: 2400 + 512,
            measured: false,
            buffer_bytes: Some(512),
        });
        let p = predict(&s, &ModelConfig::default());
        let c = p.constraint("tcp-mem").unwrap();
        // 10 pages left at 512 B a connection: 80 more.
        assert_eq!((c.per_connection, c.headroom_connections), (512, 80));
        assert_eq!(p.predicted_max_connections, 1080);
    }

    #[test]
    fn both_ends_on_this_host_charge_the_host_tables_twice() {
        let mut s = host();
        s.system.file_max = 100_000;
        s.system.file_nr_allocated = 4000;
        s.system.tcp_mem_pages = Some((100, 200, 100_000));
        s.system.tcp_mem_used_pages = Some(0);
        s.memory_per_connection = Some(MemoryPerConnection {
            process_bytes: 1600,
            kernel_bytes: 2400,
            measured: true,
            buffer_bytes: Some(1024),
        });
        let alone = predict(&s, &ModelConfig::default());
        let cfg = ModelConfig {
            client_on_host: true,
            ..ModelConfig::default()
        };
        let both = predict(&s, &cfg);
        let f = both.constraint("file-max").unwrap();
        assert_eq!(f.per_connection, 2);
        assert_eq!(f.max_connections, 1000 + 96_000 / 2);
        assert_eq!(
            alone.constraint("file-max").unwrap().max_connections,
            97_000
        );
        assert!(
            f.explanation.contains("both ends on this host"),
            "{}",
            f.explanation
        );
        let m = both.constraint("memory").unwrap();
        assert_eq!(m.per_connection, 1600 + 2 * 2400);
        let t = both.constraint("tcp-mem").unwrap();
        assert_eq!(t.per_connection, 2048);
        assert_eq!(t.headroom_connections, 100_000 * 4096 / 2048);
        // Per-process limits of the server are not the client's.
        assert_eq!(
            both.constraint("nofile").unwrap().max_connections,
            alone.constraint("nofile").unwrap().max_connections
        );
    }

    #[test]
    fn fd_capacity_matches_nofile_constraint() {
        let cfg = ModelConfig::default();
        assert_eq!(fd_capacity(512, 10, &cfg), 470);
        assert_eq!(fd_capacity(20, 10, &cfg), 0);
        let s = host();
        let p = predict(&s, &cfg);
        assert_eq!(
            p.constraint("nofile").unwrap().headroom_connections,
            fd_capacity(20000, 1010, &cfg)
        );
    }

    #[test]
    fn ephemeral_ports_per_destination_counts_sources() {
        let c = ephemeral_ports_per_destination((10000, 10999), 1, 0, 0);
        assert_eq!(c.max_connections, 1000);
        let c = ephemeral_ports_per_destination((10000, 10999), 3, 500, 500);
        assert_eq!((c.limit, c.headroom, c.max_connections), (3000, 2500, 3000));
    }

    #[test]
    fn ephemeral_ports_odd_range_counts_only_the_even_part() {
        // The kernel's connect() port scan covers an even number of ports.
        assert_eq!(
            ephemeral_ports_per_destination((10000, 10998), 1, 0, 0).max_connections,
            998
        );
        assert_eq!(
            ephemeral_ports_per_destination((10001, 10999), 2, 0, 0).limit,
            1996
        );
        assert_eq!(
            ephemeral_ports_per_destination((10000, 10000), 1, 0, 0).limit,
            1
        );
    }

    #[test]
    fn backlog_is_capped_by_somaxconn_and_holds_one_more() {
        assert_eq!(effective_backlog(1024, 64), 64);
        assert_eq!(effective_backlog(16, 4096), 16);
        assert_eq!(accept_queue_capacity(effective_backlog(1024, 64)), 65);
    }

    #[test]
    fn time_to_limit_only_when_growing() {
        assert_eq!(time_to_limit(310 * 42, 310.0), Some(42.0));
        assert_eq!(time_to_limit(100, 0.0), None);
        assert_eq!(time_to_limit(100, -5.0), None);
    }

    #[test]
    fn prediction_json_has_contract_fields() {
        let p = predict(&host(), &ModelConfig::default());
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["predicted_max_connections"], 19958);
        assert_eq!(v["binding"], "nofile");
        let c = &v["constraints"][0];
        for k in ["name", "limit", "used", "headroom", "explanation"] {
            assert!(c.get(k).is_some(), "missing {k}");
        }
    }
}

#[cfg(test)]
#[path = "model_app_tests.rs"]
mod app_tests;

//! What the server behind a port applies before any kernel limit: its own
//! connection cap, read from the server (or its configuration), and what one
//! of its connections costs.
//!
//! An [`AppInfo`] rides in the [`Snapshot`](crate::Snapshot); the model turns
//! each [`AppCap`] into a [`Constraint`](crate::Constraint) beside the kernel's
//! own, and uses the rest (which processes hold client connections,
//! descriptors and processes per connection, the server's fd reserve) to
//! shape the kernel constraints the way the server spends them. The reading
//! itself (asking Redis, parsing nginx.conf) lives in `headroom-apps`.

use crate::model::Scope;
use serde::{Deserialize, Serialize};

/// Where a number about the application came from. Every output says so: a
/// file on disk may differ from what a running server loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CapSource {
    /// Asked the running server (Redis `CONFIG GET`, memcached `stats`,
    /// HAProxy `show info`).
    Live,
    /// The server's command line (`/proc/PID/cmdline`).
    CommandLine,
    /// A configuration file the server names (or its default path).
    File,
    /// The server's documented default: nothing set it.
    Default,
    /// Derived by the server from another limit at its start (HAProxy's
    /// maxconn from its fd limit, Redis lowering maxclients to nofile - 32).
    Derived,
}

impl CapSource {
    pub fn as_str(self) -> &'static str {
        match self {
            CapSource::Live => "live",
            CapSource::CommandLine => "command-line",
            CapSource::File => "file",
            CapSource::Default => "default",
            CapSource::Derived => "derived",
        }
    }
}

/// What the server does when its cap is reached, as a client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AtCap {
    /// Accepts, writes an error of its own, closes (Redis, memcached,
    /// PostgreSQL after the startup message).
    RefusesWithError,
    /// Accepts and closes without a word.
    AcceptsAndCloses,
    /// Stops calling accept(): new connections wait in the listen backlog and
    /// time out (HAProxy, the Erlang VM).
    StopsAccepting,
    /// Closes idle keep-alive connections to make room for new ones (nginx).
    ClosesIdle,
}

impl AtCap {
    pub fn describe(self) -> &'static str {
        match self {
            AtCap::RefusesWithError => "accepts, answers with its own error, closes",
            AtCap::AcceptsAndCloses => "accepts and closes",
            AtCap::StopsAccepting => {
                "stops accepting: new connections wait in the listen backlog, then time out"
            }
            AtCap::ClosesIdle => "closes idle keep-alive connections to make room for new ones",
        }
    }
}

/// One cap of the server's own, in connections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppCap {
    /// Stable constraint name: `redis-maxclients`, `nginx-worker-connections`,
    /// `haproxy-maxconn`, `postgres-max-connections`, `memcached-maxconns`,
    /// `beam-ports`, `headroom-max-connections`.
    pub name: String,
    /// Per process (summed over the processes that hold connections, as
    /// nginx's worker_connections) or for the whole service.
    pub scope: Scope,
    /// The setting as the server spells it (`maxclients`, `worker_connections`).
    pub setting: String,
    /// The cap, over the whole service, in the server's own units.
    pub limit: u64,
    /// Units in use now, as the server counts them (its listeners too, where
    /// it counts those); `None`: not knowable from outside, the model then
    /// takes the connections the target holds.
    pub used: Option<u64>,
    /// Part of the limit the server keeps for itself (nginx: a connection per
    /// listener and one for its channel, per worker; PostgreSQL: the slots
    /// reserved for superusers).
    pub reserve: u64,
    /// Units one client connection takes (1, unless the server says otherwise).
    pub per_connection: u64,
    pub source: CapSource,
    /// Where it was read: `CONFIG GET maxclients on 127.0.0.1:6379`,
    /// `/etc/nginx/nginx.conf:7`, `-Q 1024 in beam.smp's command line`.
    pub read_from: String,
    /// One line: what the cap is and how the server counts it.
    pub explanation: String,
    /// One line: the directive to change and where.
    pub remedy: String,
}

/// A process limit for servers that fork one process per connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessLimit {
    /// `nproc` (RLIMIT_NPROC of the server's user), `pid-max`, `threads-max`,
    /// `cgroup-pids` (pids.max).
    pub name: String,
    pub scope: Scope,
    pub limit: u64,
    /// Processes (or tasks) counted against it now.
    pub used: u64,
    pub explanation: String,
    pub remedy: String,
}

/// What headroom knows of the application behind the target.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AppInfo {
    /// `redis`, `valkey`, `memcached`, `nginx`, `haproxy`, `postgres`, `beam`,
    /// `headroom`, or `unknown`.
    pub kind: String,
    /// The process name the recognition went by (the main process's comm).
    pub comm: String,
    /// Version, where the server tells it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The server's own caps; empty for an unknown server.
    pub caps: Vec<AppCap>,
    /// Client connections as the server counts them (Redis
    /// `connected_clients` less our own query, PostgreSQL's client backends),
    /// where that differs from the TCP connections the target's processes
    /// hold; `None`: those.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<u64>,
    /// Pids that hold client connections (nginx workers, not the master);
    /// empty: every process of the target does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connection_pids: Vec<u32>,
    /// Descriptors one client connection costs in the server (2 for a proxy
    /// that opens one upstream connection per client connection).
    pub fds_per_connection: u64,
    /// Descriptors the server keeps from connections before it fails with
    /// EMFILE; `None`: the model's configured reserve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd_reserve: Option<u64>,
    /// True for servers that fork a process per connection (PostgreSQL):
    /// their descriptor tables are per connection, process limits bind instead.
    pub process_per_connection: bool,
    /// Process limits, for servers with a process per connection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub process_limits: Vec<ProcessLimit>,
    /// Process memory one connection costs, measured from the server (a
    /// PostgreSQL backend's private memory), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_bytes_per_connection: Option<u64>,
    /// What the server does at its cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_cap: Option<AtCap>,
    /// Notes an operator should see: which reservation applies to which
    /// role, that a value came from a file and not the running server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Caps that could not be read, one line each: what and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

impl AppInfo {
    /// The application is not one headroom knows.
    pub fn unknown(comm: &str) -> AppInfo {
        AppInfo {
            kind: "unknown".into(),
            comm: comm.into(),
            fds_per_connection: 1,
            ..Default::default()
        }
    }

    pub fn is_known(&self) -> bool {
        self.kind != "unknown"
    }

    /// The line every output gives for a server headroom does not know, or
    /// whose caps could not be read.
    pub fn summary(&self) -> String {
        if !self.is_known() {
            return format!(
                "application limit unknown for {}: kernel limits only",
                self.comm
            );
        }
        let caps: Vec<String> = self
            .caps
            .iter()
            .map(|c| format!("{} {} ({})", c.setting, c.limit, c.source.as_str()))
            .collect();
        if caps.is_empty() && self.problems.is_empty() {
            // Read, and none set (headroom serve without --max-connections).
            format!(
                "{} ({}): no connection cap of its own: kernel limits only",
                self.kind, self.comm
            )
        } else if caps.is_empty() {
            format!(
                "{} ({}): its connection cap could not be read: kernel limits only",
                self.kind, self.comm
            )
        } else {
            format!("{} ({}): {}", self.kind, self.comm, caps.join(", "))
        }
    }
}

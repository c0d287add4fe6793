//! headroom-probe: fills [`Snapshot`]s of a target (one process, or every
//! process listening on a port) from the live system.
//!
//! The base source is polling ([`poll`]): /proc, /proc/sys, cgroup v2 files
//! and sock_diag netlink, the way `ss` and node_exporter read them. It always
//! works (root is needed only for other users' processes and /proc/slabinfo).
//! Sources that see more, such as eBPF programs counting accept-queue peaks
//! and EMFILE failures between two polls, plug in as an [`Overlay`]: the poll
//! source builds the snapshot, each overlay then adds what only it can see.
//!
//! ```no_run
//! use headroom_probe::{Probe, Target};
//! let mut probe = Probe::new(Target::Port(8080));
//! let snap = probe.snapshot()?;
//! let prediction = headroom_core::predict(&snap, &Default::default());
//! # Ok::<(), headroom_probe::Error>(())
//! ```

pub mod ebpf;
pub mod export;
pub mod poll;

use headroom_core::{Snapshot, Source};
pub use poll::kmem::KernelMemory;
pub use poll::PollSource;

/// The resync period of a long-lived incremental poll source
/// ([`PollSource::incremental`]) when nobody chose one: `top --resync`'s default.
pub const DEFAULT_RESYNC: std::time::Duration = std::time::Duration::from_secs(30);

/// What a snapshot describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One process.
    Pid(u32),
    /// Several processes seen as one service (workers of one server).
    Pids(Vec<u32>),
    /// Every process holding a TCP listener on this port, in the probe's
    /// network namespace (SO_REUSEPORT workers, pre-forked servers).
    Port(u16),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Pid(p) => write!(f, "pid {p}"),
            Target::Pids(ps) => {
                let ps: Vec<String> = ps.iter().map(u32::to_string).collect();
                write!(f, "pids {}", ps.join(","))
            }
            Target::Port(p) => write!(f, "port {p}"),
        }
    }
}

/// Why a snapshot could not be taken. Every message is one line an operator
/// can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no process with pid {0}")]
    NoSuchPid(u32),
    #[error("no TCP listener on port {port} in this network namespace ({netns})")]
    NoListener { port: u16, netns: String },
    #[error(
        "port {port} has {listeners} listener(s) but their owning process is not visible: {hint}"
    )]
    NoOwner {
        port: u16,
        listeners: usize,
        hint: String,
    },
    #[error("{what}: permission denied ({hint})")]
    Permission { what: String, hint: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot parse {what}: {why}")]
    Parse { what: String, why: String },
    #[error("sock_diag netlink: {0}")]
    Netlink(String),
    #[error("an empty target: give at least one pid")]
    EmptyTarget,
    #[error("eBPF: {0}")]
    Ebpf(String),
}

/// A second source that refines a snapshot the poll source has built: it may
/// raise peaks, fill `queue_full_events` and `fd_errors`, and so on. The
/// snapshot it gets already names the target's pids, listeners (with socket
/// inodes) and netns.
pub trait Overlay: Send {
    /// What `Snapshot.source` becomes once this overlay has contributed.
    fn source(&self) -> Source;
    /// Adds what this source sees to `snap`. An error leaves the polled
    /// snapshot as it was and is reported in `Snapshot.source_note`.
    fn overlay(&mut self, snap: &mut Snapshot) -> Result<(), Error>;
}

/// Takes snapshots of one target, again and again (the target is resolved
/// afresh each time: workers restart, listeners come and go).
pub struct Probe {
    target: Target,
    poll: PollSource,
    overlays: Vec<Box<dyn Overlay>>,
    apps: Option<headroom_apps::Options>,
}

impl Probe {
    /// A probe polling /proc and sock_diag for `target`.
    pub fn new(target: Target) -> Probe {
        Probe {
            target,
            poll: PollSource::new(),
            overlays: Vec::new(),
            apps: None,
        }
    }

    /// Also recognises the server behind the target and reads its own
    /// connection cap into `Snapshot::app` (headroom-apps), at every snapshot.
    pub fn with_apps(mut self, opts: headroom_apps::Options) -> Probe {
        self.apps = Some(opts);
        self
    }

    /// Replaces the poll source (to set its options).
    pub fn with_poll(mut self, poll: PollSource) -> Probe {
        self.poll = poll;
        self
    }

    /// Adds a source applied after polling, in the order added.
    pub fn with_overlay(mut self, overlay: Box<dyn Overlay>) -> Probe {
        self.overlays.push(overlay);
        self
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// One snapshot: polled, then refined by each overlay.
    pub fn snapshot(&mut self) -> Result<Snapshot, Error> {
        let mut snap = self.poll.snapshot(&self.target)?;
        for o in &mut self.overlays {
            match o.overlay(&mut snap) {
                Ok(()) => snap.source = o.source(),
                Err(e) => {
                    snap.source_note = Some(format!("{} off: {e}", o.source().as_str()));
                }
            }
        }
        if let Some(opts) = &self.apps {
            snap.app = Some(headroom_apps::inspect(&snap, opts));
        }
        Ok(snap)
    }

    /// The kernel-memory measurement behind the last snapshot's
    /// `memory_per_connection`, with its parts.
    pub fn kernel_memory(&self) -> Option<&KernelMemory> {
        self.poll.kernel_memory()
    }
}

/// One polled snapshot of `target`: the shortcut for callers that do not
/// keep a [`Probe`] (tui, flood, the server's host_capacity tool).
pub fn snapshot(target: &Target) -> Result<Snapshot, Error> {
    PollSource::new().snapshot(target)
}

/// [`snapshot`] with the application behind the target recognised and its
/// own cap read (`Snapshot::app`): what `flood --port` and the server's
/// `service_capacity` tool predict from.
pub fn app_snapshot(target: &Target, opts: &headroom_apps::Options) -> Result<Snapshot, Error> {
    let mut snap = snapshot(target)?;
    snap.app = Some(headroom_apps::inspect(&snap, opts));
    Ok(snap)
}

/// The pids of every process holding a TCP listener on `port` in this
/// network namespace, sorted.
pub fn pids_on_port(port: u16) -> Result<Vec<u32>, Error> {
    poll::pids_on_port(port)
}

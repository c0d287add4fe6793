//! What the inspections' tests share: a fixture root standing for `/` (with
//! fake processes under its /proc) and the one way to inspect a server on
//! it and predict from what was found.

use crate::host::Host;
use crate::{Options, Seen};
use headroom_core::{predict, AppInfo, ModelConfig, Prediction, ProcessInfo, Snapshot};
use std::net::SocketAddr;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The recorded fixtures of one server kind: tests/fixtures/`kind` of this crate.
pub(crate) fn fixtures(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(kind)
}

/// Owned strings, as command lines and file lists are held.
pub(crate) fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// A scratch directory standing for `/`, removed on drop. Paths given to
/// its methods are absolute, as the server would name them.
pub(crate) struct Root {
    dir: PathBuf,
}

impl Root {
    /// An empty root; `tag` names it for whoever finds it left over.
    pub(crate) fn new(tag: &str) -> Root {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "headroom-apps-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Root { dir }
    }

    /// A root holding these text files.
    pub(crate) fn with(tag: &str, files: &[(&str, &str)]) -> Root {
        let r = Root::new(tag);
        for (path, text) in files {
            r.file(path, text);
        }
        r
    }

    /// The directory itself.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// `path` under the root.
    pub(crate) fn path(&self, path: &str) -> PathBuf {
        self.dir.join(path.trim_start_matches('/'))
    }

    /// The host the inspections see on this root.
    pub(crate) fn host(&self) -> Host {
        Host::new(&self.dir)
    }

    /// A file at `path`, its directories made as needed.
    pub(crate) fn file(&self, path: &str, data: impl AsRef<[u8]>) {
        let p = self.path(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }

    /// A symbolic link at `path` to `target` (taken as it is, not under the root).
    pub(crate) fn link(&self, path: &str, target: impl AsRef<Path>) {
        let p = self.path(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, p).unwrap();
    }

    /// A Unix socket listening at `path`.
    pub(crate) fn listen_unix(&self, path: &str) -> UnixListener {
        let p = self.path(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        UnixListener::bind(p).unwrap()
    }

    /// Process `pid` under /proc; nothing is written until its methods say.
    pub(crate) fn process(&self, pid: u32, comm: &str) -> Proc<'_> {
        Proc {
            root: self,
            pid,
            comm: comm.to_string(),
        }
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fake process: its files under /proc/PID of a [`Root`].
pub(crate) struct Proc<'a> {
    root: &'a Root,
    pid: u32,
    comm: String,
}

impl Proc<'_> {
    /// /proc/PID/`name`.
    pub(crate) fn file(&self, name: &str, data: impl AsRef<[u8]>) -> &Self {
        self.root.file(&format!("/proc/{}/{name}", self.pid), data);
        self
    }

    fn cmdline<'s>(&self, args: impl IntoIterator<Item = &'s str>) -> &Self {
        let mut raw = Vec::new();
        for a in args {
            raw.extend_from_slice(a.as_bytes());
            raw.push(0);
        }
        self.file("cmdline", raw)
    }

    /// The command line, its arguments separated by single spaces.
    pub(crate) fn argv(&self, line: &str) -> &Self {
        self.cmdline(line.split(' '))
    }

    /// A title the process wrote over its command line: one argument,
    /// spaces and all (`nginx: worker process`).
    pub(crate) fn title(&self, title: &str) -> &Self {
        self.cmdline([title])
    }

    /// /proc/PID/environ, as raw as the kernel gives it.
    pub(crate) fn environ(&self, raw: &[u8]) -> &Self {
        self.file("environ", raw)
    }

    /// /proc/PID/stat of a sleeping child of `ppid`, in its parent's
    /// process group (its own under init).
    pub(crate) fn stat(&self, ppid: u32) -> &Self {
        let (pid, comm) = (self.pid, &self.comm);
        let group = if ppid == 1 { pid } else { ppid };
        self.file("stat", format!("{pid} ({comm}) S {ppid} {group} {group} 0"))
    }

    /// /proc/PID/status: its name, then these fields in order.
    pub(crate) fn status(&self, fields: &[(&str, &str)]) -> &Self {
        let mut text = format!("Name:\t{}\n", self.comm);
        for (name, value) in fields {
            text.push_str(&format!("{name}:\t{value}\n"));
        }
        self.file("status", text)
    }

    /// /proc/PID/limits with these rows: (name, soft, hard, units).
    pub(crate) fn limits(&self, rows: &[(&str, &str, &str, &str)]) -> &Self {
        let row = |n: &str, s: &str, h: &str, u: &str| format!("{n:<26}{s:<21}{h:<21}{u:<10}\n");
        let mut text = row("Limit", "Soft Limit", "Hard Limit", "Units");
        for (name, soft, hard, units) in rows {
            text.push_str(&row(name, soft, hard, units));
        }
        self.file("limits", text)
    }

    /// /proc/PID/exe, a link to `target`.
    pub(crate) fn exe(&self, target: &str) -> &Self {
        self.root.link(&format!("/proc/{}/exe", self.pid), target);
        self
    }

    /// Descriptor `fd`, a link to `target` (`socket:[INODE]`, `pipe:[N]`, a path).
    pub(crate) fn fd(&self, fd: u32, target: &str) -> &Self {
        self.root
            .link(&format!("/proc/{}/fd/{fd}", self.pid), target);
        self
    }

    /// /proc/PID/task/PID/children.
    pub(crate) fn children(&self, pids: &[u32]) -> &Self {
        let ids: Vec<String> = pids.iter().map(u32::to_string).collect();
        self.file(&format!("task/{}/children", self.pid), ids.join(" "))
    }
}

/// A process as the snapshot sees it: `nofile` as both its soft and hard
/// limit, `open` descriptors open (and at their peak), `conns` connections.
pub(crate) fn process(pid: u32, comm: &str, nofile: u64, open: u64, conns: u64) -> ProcessInfo {
    ProcessInfo {
        pid,
        comm: comm.into(),
        nofile_soft: Some(nofile),
        nofile_hard: Some(nofile),
        open_fds: open,
        open_fds_peak: open,
        connections: conns,
        ..Default::default()
    }
}

/// A server kind's inspection: `nginx::inspect`, `redis::inspect`, ...
pub(crate) type Inspect = fn(&Seen, &Host) -> AppInfo;

/// How a test has a server inspected: where its files are, whether it is
/// asked on its own port, and its main process's command line.
pub(crate) struct Look {
    opts: Options,
    /// `None`: read from /proc/PID/cmdline under the root.
    cmdline: Option<Vec<String>>,
    address: Option<SocketAddr>,
}

impl Look {
    /// Files and command lines under `root` only; where a live query is
    /// turned on, it may take 2 s.
    pub(crate) fn at(root: &Path) -> Look {
        Look {
            opts: Options {
                root: root.to_path_buf(),
                live: false,
                timeout: Duration::from_secs(2),
                ..Options::default()
            },
            cmdline: None,
            address: None,
        }
    }

    /// No files at all: a root that does not exist.
    pub(crate) fn nowhere() -> Look {
        Look::at(&std::env::temp_dir().join("headroom-apps-no-root"))
    }

    /// The main process's command line, arguments separated by single spaces.
    pub(crate) fn cmdline(mut self, line: &str) -> Look {
        self.cmdline = Some(line.split(' ').map(String::from).collect());
        self
    }

    /// Where the server would be asked on its own port.
    pub(crate) fn address(mut self, address: Option<SocketAddr>) -> Look {
        self.address = address;
        self
    }

    /// Whether the server is asked at all.
    pub(crate) fn live(mut self, live: bool) -> Look {
        self.opts.live = live;
        self
    }

    pub(crate) fn password(mut self, password: Option<&str>) -> Look {
        self.opts.redis_password = password.map(String::from);
        self
    }

    /// `inspect` with the snapshot's first process as the main one.
    pub(crate) fn inspect(&self, inspect: Inspect, snap: &Snapshot) -> AppInfo {
        let host = Host::new(&self.opts.root);
        let main = &snap.processes[0];
        let cmdline = match &self.cmdline {
            Some(c) => c.clone(),
            None => host.cmdline(main.pid).unwrap(),
        };
        let seen = Seen {
            snap,
            main,
            cmdline,
            address: self.address,
            opts: &self.opts,
        };
        inspect(&seen, &host)
    }

    /// Inspects, then predicts with what was found riding in the snapshot:
    /// the info, the predicted maximum, the binding constraint.
    pub(crate) fn run(&self, inspect: Inspect, snap: Snapshot) -> (AppInfo, u64, String) {
        let info = self.inspect(inspect, &snap);
        let (max, binding) = predicted(snap, info.clone());
        (info, max, binding)
    }
}

/// `predict` with `info` riding in `snap`.
pub(crate) fn prediction(mut snap: Snapshot, info: AppInfo) -> Prediction {
    snap.app = Some(info);
    predict(&snap, &ModelConfig::default())
}

/// The predicted maximum and the binding constraint, with `info` riding in `snap`.
pub(crate) fn predicted(snap: Snapshot, info: AppInfo) -> (u64, String) {
    let p = prediction(snap, info);
    (p.predicted_max_connections, p.binding)
}

//! What the dashboard shows, as data: the listener rows of the accept-queue
//! panel and the whole screen as one serialisable [`View`] (`headroom top
//! --once` prints it). Rendering draws these; tests read them.

use crate::app::App;
use crate::render::{source_label, target_label};
use crate::Level;
use headroom_core::{FdError, Listener};
use serde::Serialize;
use std::collections::BTreeMap;

/// One row of the accept-queue panel: every listening socket bound to one
/// (address, port), summed. SO_REUSEPORT servers (a socket per worker or
/// thread) would otherwise show the same address once per socket.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ListenerRow {
    pub address: String,
    pub port: u16,
    /// Listening sockets bound there.
    pub sockets: u64,
    /// Connections waiting in the accept queues, summed.
    pub depth: u64,
    /// Each socket's peak since the last refresh (its depth when the source
    /// keeps no peak), summed.
    pub peak: u64,
    /// Accept-queue limits, summed.
    pub limit: u64,
    /// Queue-full events, summed over the sockets that count them (eBPF).
    pub full: Option<u64>,
    /// The fullest single socket, peak / limit: the kernel spreads
    /// connections by hash, so one queue can overflow while the sum looks fine.
    #[serde(skip)]
    pub fullest: f64,
}

impl ListenerRow {
    /// Colour level of the row: its fullest socket's.
    pub fn level(&self) -> Level {
        Level::of(self.fullest)
    }
}

/// Groups listeners by (address, port), in the order they first appear.
pub fn listener_rows(listeners: &[Listener]) -> Vec<ListenerRow> {
    let mut rows: Vec<ListenerRow> = Vec::new();
    for l in listeners {
        let peak = l.accept_queue_peak.max(l.accept_queue_depth);
        let ratio = if l.accept_queue_limit == 0 {
            0.0
        } else {
            peak as f64 / l.accept_queue_limit as f64
        };
        match rows
            .iter_mut()
            .find(|r| r.port == l.port && r.address == l.address)
        {
            Some(r) => {
                r.sockets += 1;
                r.depth += l.accept_queue_depth;
                r.peak += peak;
                r.limit += l.accept_queue_limit;
                r.full = match (r.full, l.queue_full_events) {
                    (Some(a), Some(b)) => Some(a + b),
                    (a, b) => a.or(b),
                };
                r.fullest = r.fullest.max(ratio);
            }
            None => rows.push(ListenerRow {
                address: l.address.clone(),
                port: l.port,
                sockets: 1,
                depth: l.accept_queue_depth,
                peak,
                limit: l.accept_queue_limit,
                full: l.queue_full_events,
                fullest: ratio,
            }),
        }
    }
    rows
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessRow {
    pub pid: u32,
    pub comm: String,
    pub open_fds: u64,
    pub open_fds_peak: u64,
    pub nofile_soft: Option<u64>,
    pub connections: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConstraintRow {
    pub name: String,
    pub unit: String,
    pub used: u64,
    pub limit: u64,
    pub headroom: u64,
    pub max_connections: u64,
    /// `ok`, `warn` (>= 70%) or `critical` (>= 90%): the gauge's colour.
    pub level: &'static str,
    pub binding: bool,
}

/// The dashboard's content after the latest sample.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct View {
    /// `eBPF probe`, `/proc polling` or `remote URL`, as in the title bar.
    pub source: String,
    pub source_note: Option<String>,
    /// `pid 42 headroom` or `3 processes`, as in the title bar.
    pub target: String,
    pub samples: u64,
    pub connections: u64,
    pub predicted_max_connections: u64,
    pub binding: String,
    /// The server behind the target and its own cap in one line
    /// (`redis (redis-server): maxclients 500 (live)`), when looked at.
    pub application: Option<String>,
    /// `nofile in 42 s at +310 conn/s`, `stable`, ...
    pub time_to_limit: String,
    pub processes: Vec<ProcessRow>,
    pub constraints: Vec<ConstraintRow>,
    pub listeners: Vec<ListenerRow>,
    /// Sockets by state (labels as in the panel).
    pub sockets: BTreeMap<String, u64>,
    pub time_wait: u64,
    pub fd_errors: Vec<FdError>,
    /// The event log, newest first.
    pub events: Vec<String>,
    /// The source's last error, while it lasts.
    pub error: Option<String>,
}

impl View {
    pub fn of(app: &App) -> View {
        let snap = app.snapshot();
        let pred = app.prediction();
        let level = |u: f64| match Level::of(u) {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Critical => "critical",
        };
        View {
            source: source_label(app),
            source_note: snap.and_then(|s| s.source_note.clone()),
            target: target_label(app).unwrap_or_default(),
            samples: app.samples,
            connections: pred.map_or(0, |p| p.connections),
            predicted_max_connections: pred.map_or(0, |p| p.predicted_max_connections),
            binding: pred.map_or(String::new(), |p| p.binding.clone()),
            application: snap.and_then(|s| s.app.as_ref()).map(|a| a.summary()),
            time_to_limit: app.outlook().text(),
            processes: snap.map_or(Vec::new(), |s| {
                s.processes
                    .iter()
                    .map(|p| ProcessRow {
                        pid: p.pid,
                        comm: p.comm.clone(),
                        open_fds: p.open_fds,
                        open_fds_peak: p.open_fds_peak,
                        nofile_soft: p.nofile_soft,
                        connections: p.connections,
                    })
                    .collect()
            }),
            constraints: pred.map_or(Vec::new(), |p| {
                p.constraints
                    .iter()
                    .map(|c| ConstraintRow {
                        name: c.name.clone(),
                        unit: c.unit.clone(),
                        used: c.used,
                        limit: c.limit,
                        headroom: c.headroom,
                        max_connections: c.max_connections,
                        level: level(c.utilisation()),
                        binding: c.name == p.binding,
                    })
                    .collect()
            }),
            listeners: snap.map_or(Vec::new(), |s| listener_rows(&s.listeners)),
            sockets: snap.map_or(BTreeMap::new(), |s| {
                s.sockets
                    .iter()
                    .map(|(k, v)| (k.label().to_string(), *v))
                    .collect()
            }),
            time_wait: snap.map_or(0, |s| s.time_wait),
            fd_errors: snap.map_or(Vec::new(), |s| s.fd_errors.clone()),
            events: app.events.iter().map(|e| e.text.clone()).collect(),
            error: app.error.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::Config;
    use crate::fixture::{sample_of, snapshot};

    fn listener(address: &str, depth: u64, peak: u64, limit: u64, full: Option<u64>) -> Listener {
        Listener {
            address: address.into(),
            port: address.rsplit(':').next().unwrap().parse().unwrap(),
            accept_queue_depth: depth,
            accept_queue_limit: limit,
            accept_queue_peak: peak,
            queue_full_events: full,
            inode: 0,
        }
    }

    #[test]
    fn reuseport_sockets_make_one_row() {
        let rows = listener_rows(&[
            listener("0.0.0.0:8080", 3, 7, 128, Some(2)),
            listener("0.0.0.0:8080", 120, 120, 128, None),
            listener("[::]:8080", 1, 1, 64, None),
            listener("0.0.0.0:8080", 0, 0, 128, Some(5)),
            listener("127.0.0.1:9090", 0, 0, 4096, None),
        ]);
        let summary: Vec<_> = rows
            .iter()
            .map(|r| {
                (
                    r.address.as_str(),
                    r.sockets,
                    r.depth,
                    r.peak,
                    r.limit,
                    r.full,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("0.0.0.0:8080", 3, 123, 127, 384, Some(7)),
                ("[::]:8080", 1, 1, 1, 64, None),
                ("127.0.0.1:9090", 1, 0, 0, 4096, None),
            ]
        );
        // 123 of 384 is green, but one socket is at 120/128: the row is red.
        assert_eq!(rows[0].level(), Level::Critical);
        assert_eq!(rows[1].level(), Level::Ok);
    }

    #[test]
    fn view_of_a_sample() {
        let mut app = App::new("test", Config::default());
        let mut s = snapshot(0, 300);
        s.listeners.push(s.listeners[0].clone());
        app.update(sample_of(s));
        let v = View::of(&app);
        assert_eq!(v.source, "/proc polling");
        assert_eq!(v.target, "pid 4242 headroom");
        assert_eq!(v.connections, 300);
        assert_eq!(v.processes[0].open_fds, 310);
        assert_eq!(v.listeners.len(), 1);
        assert_eq!((v.listeners[0].sockets, v.listeners[0].limit), (2, 8192));
        assert_eq!(v.binding, "nofile");
        let nofile = v.constraints.iter().find(|c| c.binding).unwrap();
        assert_eq!((nofile.name.as_str(), nofile.level), ("nofile", "ok"));
        assert_eq!(v.sockets["established"], 300);
        assert_eq!(v.time_to_limit, "measuring rate…");
    }
}

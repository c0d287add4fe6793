//! headroom-tui: `headroom top`, the live dashboard of a server's headroom
//! against each predicted breaking point.
//!
//! Built like bpftop: the state ([`App`], fed [`Sample`]s and keys, tested
//! without a terminal), the rendering ([`render::draw`], a pure function of
//! the state, tested against fixed buffers) and the terminal loop
//! ([`run`]) are kept apart. Samples come from a [`Source`]: the probe on
//! this host (wired in by the binary) or a remote probe's Prometheus
//! endpoint ([`remote::RemoteSource`]).

pub mod app;
pub mod fixture;
pub mod format;
pub mod history;
pub mod remote;
pub mod render;
pub mod source;
mod term;
pub mod view;

pub use app::{Action, App, Config, Event, EventKind, Outlook, Panel};
pub use source::{Sample, Source, SourceError};
pub use term::{run, RunOptions};
pub use view::{listener_rows, ListenerRow, View};

/// How close a constraint is to its limit; the gauges change colour at 70% and 90%.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    Warn,
    Critical,
}

impl Level {
    pub const WARN_AT: f64 = 0.70;
    pub const CRITICAL_AT: f64 = 0.90;

    pub fn of(utilisation: f64) -> Level {
        if utilisation >= Level::CRITICAL_AT {
            Level::Critical
        } else if utilisation >= Level::WARN_AT {
            Level::Warn
        } else {
            Level::Ok
        }
    }
}

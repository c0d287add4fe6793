//! Where samples come from: the probe on this host, or a remote probe's
//! Prometheus endpoint. The dashboard only sees this trait.

use headroom_core::{Prediction, Snapshot};

/// One refresh: what the target looks like and what the model says about it.
#[derive(Debug, Clone)]
pub struct Sample {
    pub snapshot: Snapshot,
    pub prediction: Prediction,
}

/// Why a sample could not be taken. The dashboard shows it and keeps going.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The watched process is gone (exited, or the port has no listener any more).
    #[error("target gone: {0}")]
    TargetGone(String),
    #[error("{0}")]
    Other(String),
}

/// A producer of samples, polled once per refresh.
pub trait Source {
    /// Shown in the title bar: `eBPF probe`, `/proc polling`, `remote http://...`.
    fn describe(&self) -> String;
    /// Takes one sample now.
    fn sample(&mut self) -> Result<Sample, SourceError>;
}

//! What `headroom top` and `headroom up` share: the dashboard's options
//! from their flags, and the sample source on this host (the incremental
//! poll source, refined by the eBPF probe when it loads, the model run on
//! each sample).

use headroom_core::{predict, ModelConfig};
use headroom_probe::ebpf::{EbpfOverlay, EbpfProbe};
use headroom_probe::{Error as ProbeError, PollSource, Probe, Target};
use headroom_tui::{Config, RunOptions, Sample, Source, SourceError};
use std::time::Duration;

/// Checks the numeric options and turns them into the dashboard's options.
pub fn run_options(interval: f64, rate_window: f64) -> anyhow::Result<RunOptions> {
    if !(interval.is_finite() && (0.05..=3600.0).contains(&interval)) {
        anyhow::bail!("--interval must be between 0.05 and 3600 seconds, got {interval}");
    }
    if !(rate_window.is_finite() && (1.0..=86_400.0).contains(&rate_window)) {
        anyhow::bail!("--rate-window must be between 1 and 86400 seconds, got {rate_window}");
    }
    let interval = Duration::from_secs_f64(interval);
    // Five minutes of sparkline, whatever the interval.
    let history = (300.0 / interval.as_secs_f64()).ceil().clamp(60.0, 3000.0) as usize;
    Ok(RunOptions {
        interval,
        config: Config {
            history,
            rate_window_ms: (rate_window * 1000.0) as u64,
            ..Config::default()
        },
    })
}

/// Samples from the probe on this host, with the model run on each: the
/// incremental poll source, refined by the eBPF probe when it loads.
pub struct LocalSource {
    probe: Probe,
    model: ModelConfig,
    /// Why eBPF is off (shown beside the source in the title bar).
    ebpf_off: Option<String>,
}

impl LocalSource {
    /// Checks that `target` is there (a usage error otherwise, not a
    /// dashboard), then loads the eBPF probe unless `no_ebpf`; when it
    /// cannot load, the source polls and says why.
    pub fn open(
        target: Target,
        resync: Duration,
        no_ebpf: bool,
        apps: headroom_apps::Options,
    ) -> anyhow::Result<LocalSource> {
        let mut probe = Probe::new(target.clone())
            .with_poll(PollSource::new().incremental(resync))
            .with_apps(apps);
        probe.snapshot()?;
        let (probe, ebpf_off) =
            match EbpfProbe::load(no_ebpf).and_then(|p| EbpfOverlay::new(p, &target)) {
                Ok(overlay) => (probe.with_overlay(Box::new(overlay)), None),
                Err(e) => (probe, Some(e.to_string())),
            };
        Ok(LocalSource {
            probe,
            model: ModelConfig::default(),
            ebpf_off,
        })
    }
}

impl Source for LocalSource {
    fn describe(&self) -> String {
        if self.ebpf_off.is_some() {
            "/proc polling".to_string()
        } else {
            "eBPF probe".to_string()
        }
    }

    fn sample(&mut self) -> Result<Sample, SourceError> {
        let mut snapshot = self.probe.snapshot().map_err(|e| match e {
            ProbeError::NoSuchPid(_) | ProbeError::NoListener { .. } => {
                SourceError::TargetGone(e.to_string())
            }
            e => SourceError::Other(e.to_string()),
        })?;
        if let (Some(why), None) = (&self.ebpf_off, &snapshot.source_note) {
            snapshot.source_note = Some(format!("eBPF off: {why}"));
        }
        let prediction = predict(&snapshot, &self.model);
        Ok(Sample {
            snapshot,
            prediction,
        })
    }
}

//! `headroom top`: the live dashboard. The dashboard itself lives in the
//! headroom-tui crate; this file picks the source of samples.

use super::CmdResult;
use headroom_core::{predict, ModelConfig};
use headroom_probe::{Error as ProbeError, Probe, Target};
use headroom_tui::{
    fixture, remote::RemoteSource, Config, RunOptions, Sample, Source, SourceError,
};
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// Process to watch.
    #[arg(long, conflicts_with_all = ["port", "source", "demo"])]
    pub pid: Option<u32>,
    /// Watch every process listening on this TCP port.
    #[arg(long, conflicts_with_all = ["source", "demo"])]
    pub port: Option<u16>,
    /// Read a remote `headroom probe` over its Prometheus endpoint instead, e.g. http://10.0.0.5:9464/metrics.
    #[arg(long, value_name = "URL", conflicts_with = "demo")]
    pub source: Option<String>,
    /// Seconds between refreshes.
    #[arg(long, short = 'd', value_name = "SECONDS", default_value_t = 1.0)]
    pub interval: f64,
    /// Seconds of history the connection growth rate (and so the time to limit) is measured over.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub rate_window: f64,
    /// Replay made-up data of a server ramping up (no server, no privileges needed).
    #[arg(long)]
    pub demo: bool,
}

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

pub fn run(args: Args) -> CmdResult {
    let options = run_options(args.interval, args.rate_window)?;
    let mut source: Box<dyn Source> = if let Some(url) = &args.source {
        if !url.starts_with("http://") {
            anyhow::bail!("--source must be an http:// URL of a probe's metrics, e.g. http://127.0.0.1:9464/metrics");
        }
        Box::new(RemoteSource::new(
            url,
            options.interval.max(Duration::from_secs(1)),
        ))
    } else if args.demo {
        Box::new(fixture::Demo {
            t_ms: 0,
            connections: 1000,
            step: 310,
        })
    } else {
        let target = match (args.pid, args.port) {
            (Some(pid), _) => Target::Pid(pid),
            (None, Some(port)) => Target::Port(port),
            (None, None) => anyhow::bail!(
                "give --pid or --port (or --source URL, or --demo); `headroom up` starts a server and watches it"
            ),
        };
        let mut local = LocalSource::new(target);
        // A target that is not there at the start is a usage error, not a dashboard.
        local.probe.snapshot()?;
        Box::new(local)
    };
    headroom_tui::run(source.as_mut(), options, |_| Ok(()))?;
    Ok(ExitCode::SUCCESS)
}

/// Samples from the probe on this host, with the model run on each.
pub struct LocalSource {
    probe: Probe,
    model: ModelConfig,
}

impl LocalSource {
    pub fn new(target: Target) -> LocalSource {
        LocalSource {
            probe: Probe::new(target),
            model: ModelConfig::default(),
        }
    }
}

impl Source for LocalSource {
    fn describe(&self) -> String {
        "/proc polling".to_string()
    }

    fn sample(&mut self) -> Result<Sample, SourceError> {
        let snapshot = self.probe.snapshot().map_err(|e| match e {
            ProbeError::NoSuchPid(_) | ProbeError::NoListener { .. } => {
                SourceError::TargetGone(e.to_string())
            }
            e => SourceError::Other(e.to_string()),
        })?;
        let prediction = predict(&snapshot, &self.model);
        Ok(Sample {
            snapshot,
            prediction,
        })
    }
}

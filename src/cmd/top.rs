//! `headroom top`: the live dashboard. The dashboard itself lives in the
//! headroom-tui crate; this file picks the source of samples.

use super::CmdResult;
use headroom_core::{predict, ModelConfig};
use headroom_probe::ebpf::{EbpfOverlay, EbpfProbe};
use headroom_probe::{Error as ProbeError, PollSource, Probe, Target};
use headroom_tui::{
    fixture, remote::RemoteSource, App, Config, RunOptions, Sample, Source, SourceError, View,
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
    /// Do not load the eBPF probe: poll /proc and sock_diag only (the title bar says so).
    #[arg(long)]
    pub no_ebpf: bool,
    #[command(flatten)]
    pub app: super::AppArgs,
    /// Seconds between full passes of the poll source (every fd link read,
    /// every socket matched); refreshes in between cost O(1) per process.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    pub resync: f64,
    /// No dashboard: take two samples one interval apart, print what the
    /// dashboard would show as one JSON object, and exit.
    #[arg(long)]
    pub once: bool,
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
    if !(args.resync.is_finite() && (0.0..=86_400.0).contains(&args.resync)) {
        anyhow::bail!(
            "--resync must be between 0 and 86400 seconds, got {}",
            args.resync
        );
    }
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
        let resync = Duration::from_secs_f64(args.resync);
        Box::new(LocalSource::open(
            target,
            resync,
            args.no_ebpf,
            args.app.options()?,
        )?)
    };
    if args.once {
        return once(source.as_mut(), options);
    }
    let result = headroom_tui::run(source.as_mut(), options, |_| Ok(()));
    // The terminal is back. Closing the eBPF programs' descriptors makes the
    // kernel detach them, which takes it seconds (a grace period per
    // program); a child that outlives us does that, so the shell has its
    // prompt now.
    super::detach_after_exit(source);
    result?;
    Ok(ExitCode::SUCCESS)
}

/// `--once`: the dashboard's content after two samples, as JSON.
fn once(source: &mut dyn Source, options: RunOptions) -> CmdResult {
    let mut app = App::new(source.describe(), options.config);
    app.apply(source.sample());
    std::thread::sleep(options.interval);
    app.apply(source.sample());
    if let Some(e) = &app.error {
        anyhow::bail!("{e}");
    }
    println!("{}", serde_json::to_string(&View::of(&app))?);
    Ok(ExitCode::SUCCESS)
}

/// Samples from the probe on this host, with the model run on each: the
/// incremental poll source, refined by the eBPF probe when it loads.
pub struct LocalSource {
    probe: Probe,
    model: ModelConfig,
    /// Why eBPF is off (shown beside the source in the title bar).
    ebpf_off: Option<String>,
}

/// The default resync period of the poll source (`--resync`).
pub const RESYNC: Duration = Duration::from_secs(30);

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

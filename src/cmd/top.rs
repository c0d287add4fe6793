//! `headroom top`: the live dashboard. The dashboard itself lives in the
//! headroom-tui crate; this file picks the source of samples.

use super::CmdResult;
use crate::dashboard::{run_options, LocalSource};
use headroom_probe::Target;
use headroom_tui::{fixture, remote::RemoteSource, App, RunOptions, Source, View};
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

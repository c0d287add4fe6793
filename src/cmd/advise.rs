//! `headroom advise`: reads the live signals of a target (two samples an
//! interval apart, eBPF when it loads), prints ranked advice (headroom-advise)
//! and, with `--apply`, makes the remedies a profile bounds through
//! preflight's journal.

use super::CmdResult;
use anyhow::Context;
use headroom_advise::{self as adv, Advice, Config, PreflightOwners, Targets};
use headroom_core::{Snapshot, Source};
use headroom_preflight::{self as pf, Loader, Root, Selector};
use headroom_probe::ebpf::{EbpfOverlay, EbpfProbe};
use headroom_probe::{Probe, Target};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
#[command(
    group(clap::ArgGroup::new("target").required(true).args(["port", "pid"])),
    after_help = "Exit status: 0 advice given (possibly none; missing inputs are listed), 2 bad command line, 3 could not advise (unknown pid or port, unreadable target, a failed --apply); one line on stderr says why."
)]
pub struct Args {
    /// Every process listening on this TCP port (this network namespace).
    #[arg(long)]
    pub port: Option<u16>,
    /// One process.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Re-evaluate every interval; print an event only when the advice changes.
    #[arg(long, conflicts_with_all = ["once", "apply"])]
    pub watch: bool,
    /// Seconds between the two samples (counter deltas, peaks), and between
    /// evaluations with --watch.
    #[arg(long, value_name = "S", default_value_t = 1.0)]
    pub interval: f64,
    /// One sample only: no deltas (totals since the namespace started).
    #[arg(long)]
    pub once: bool,
    /// JSON: one object (with --watch, one per event).
    #[arg(long)]
    pub json: bool,
    /// Do not load eBPF: poll only (fd errors are then not seen).
    #[arg(long)]
    pub no_ebpf: bool,
    /// Profile whose values advice raises limits to (default: c10k's, and
    /// the full port range); with --apply, the bounds of what is written.
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// Make the remedies the profile bounds (sysctls, nofile) through
    /// preflight's journal; a dry run without --yes. Never edits an
    /// application's configuration; backs off keys another writer set.
    #[arg(long, requires = "profile")]
    pub apply: bool,
    /// With --apply: write.
    #[arg(long, requires = "apply")]
    pub yes: bool,
    /// With --apply: prefix for persisted files and the rollback journal
    /// (default /); runtime values still go to /proc/sys.
    #[arg(long, value_name = "DIR", requires = "apply")]
    pub root: Option<PathBuf>,
    #[command(flatten)]
    pub app: super::AppArgs,
}

/// The targets advice raises limits to, from a profile.
fn targets(p: &pf::Profile) -> Targets {
    let d = Targets::default();
    let min = |k: &str| p.sysctls.get(k).and_then(|r| r.min.or(r.exact));
    Targets {
        somaxconn: min("net.core.somaxconn").unwrap_or(d.somaxconn),
        nofile: p.nofile.as_ref().map_or(d.nofile, |n| n.soft),
        port_range: p
            .sysctls
            .get("net.ipv4.ip_local_port_range")
            .and_then(|r| r.range)
            .map_or(d.port_range, |(lo, hi)| (lo as u16, hi as u16)),
        file_max: min("fs.file-max").unwrap_or(d.file_max),
        profile: Some(p.name.clone()),
    }
}

/// Whether this process is in the initial network namespace: the one
/// kernel threads (kthreadd, pid 2) live in, or init's.
fn initial_netns() -> Option<bool> {
    let ns = |p: &str| std::fs::read_link(p).ok();
    let initial = ns("/proc/2/ns/net").or_else(|| ns("/proc/1/ns/net"))?;
    Some(ns("/proc/self/ns/net")? == initial)
}

/// The probe, with eBPF when it loads; the reason when it does not.
fn open(
    target: &Target,
    no_ebpf: bool,
    app: &super::AppArgs,
) -> anyhow::Result<(Probe, Option<String>)> {
    let mut probe = Probe::new(target.clone()).with_apps(app.options()?);
    // An unknown pid or port is an error, not advice.
    probe
        .snapshot()
        .with_context(|| format!("advise {target}"))?;
    Ok(
        match EbpfProbe::load(no_ebpf).and_then(|p| EbpfOverlay::new(p, target)) {
            Ok(o) => (probe.with_overlay(Box::new(o)), None),
            Err(e) => (probe, Some(e.to_string())),
        },
    )
}

pub fn run(args: Args) -> CmdResult {
    if !(args.interval.is_finite() && (0.05..=3600.0).contains(&args.interval)) {
        anyhow::bail!(
            "--interval must be between 0.05 and 3600 seconds, got {}",
            args.interval
        );
    }
    let target = match (args.port, args.pid) {
        (Some(p), _) => Target::Port(p),
        (None, Some(p)) => Target::Pid(p),
        (None, None) => anyhow::bail!("give --port or --pid"),
    };
    let profile = args
        .profile
        .as_deref()
        .map(|n| Loader::default().load(n))
        .transpose()?;
    let (mut probe, ebpf_off) = open(&target, args.no_ebpf, &args.app)?;
    let mut cfg = Config {
        targets: profile.as_ref().map(targets).unwrap_or_default(),
        interval_s: (!args.once).then_some(args.interval),
        ebpf: ebpf_off.is_none(),
        initial_netns: initial_netns(),
        ..Config::default()
    };
    let owners = PreflightOwners::read(&Root::system());
    let interval = Duration::from_secs_f64(args.interval);
    let sample = |probe: &mut Probe| -> anyhow::Result<Snapshot> {
        probe.snapshot().with_context(|| format!("advise {target}"))
    };
    let mut before = sample(&mut probe)?;
    let status = match &ebpf_off {
        None => format!("eBPF on, watching {target}"),
        Some(why) => format!("eBPF off: {why}; polling, watching {target}"),
    };
    eprintln!("headroom advise: {status}");
    let mut watcher = adv::watch::Watcher::default();
    loop {
        let (now, prev) = if args.once {
            (before.clone(), None)
        } else {
            std::thread::sleep(interval);
            (sample(&mut probe)?, Some(before))
        };
        cfg.ebpf = ebpf_off.is_none() && now.source == Source::Ebpf;
        let advice = adv::advise(&now, prev.as_ref(), &owners, &cfg);
        let mut missing = adv::missing(&now, &cfg, ebpf_off.as_deref());
        if let (Some(note), true) = (&now.source_note, ebpf_off.is_none()) {
            missing.push(note.clone());
        }
        if !args.watch || watcher.changed(&advice) {
            let report =
                adv::render::Report::new(target.to_string(), &now, &advice, &missing, &cfg);
            let mut doc = serde_json::to_value(&report)?;
            let applied = match (&profile, args.apply) {
                (Some(p), true) => Some(apply(&args, p, prev.as_ref(), &now, &advice)?),
                _ => None,
            };
            if let Some((v, _)) = &applied {
                doc["apply"] = v.clone();
            }
            let mut out = std::io::stdout().lock();
            if args.json {
                writeln!(out, "{doc}")?;
            } else {
                write!(out, "{}", report.text())?;
                if let Some((_, t)) = &applied {
                    write!(out, "{t}")?;
                }
            }
            out.flush()?;
        }
        if !args.watch {
            super::detach_after_exit(probe);
            return Ok(ExitCode::SUCCESS);
        }
        before = now;
    }
}

/// `--apply`: the remedies the profile bounds, backing off keys another
/// writer set since advise first read them (its first sample), through
/// preflight's plan and journal.
fn apply(
    args: &Args,
    profile: &pf::Profile,
    first: Option<&Snapshot>,
    now: &Snapshot,
    advice: &[Advice],
) -> anyhow::Result<(Value, String)> {
    let root = match &args.root {
        Some(d) => Root::system().with_files(d),
        None => Root::system(),
    };
    let mut observed = BTreeMap::new();
    let mut current = BTreeMap::new();
    for r in advice.iter().flat_map(|a| &a.remedies) {
        if r.kind != adv::RemedyKind::Sysctl {
            continue;
        }
        let seen = first
            .and_then(|f| adv::apply::snapshot_value(f, &r.key))
            .or_else(|| r.current.clone());
        if let Some(c) = seen {
            observed.insert(r.key.clone(), c);
        }
        if let Ok(Some(v)) = root.read_sysctl(&r.key) {
            current.insert(r.key.clone(), v);
        }
    }
    let keys: Vec<String> = profile.sysctls.keys().cloned().collect();
    let sel = adv::apply::select(
        advice,
        &profile.name,
        &keys,
        profile.nofile.is_some(),
        &observed,
        &current,
    );
    let mut t = String::new();
    for s in &sel.skipped {
        t.push_str(&format!("apply: {} left alone: {}\n", s.key, s.reason));
    }
    if sel.is_empty() {
        t.push_str(&format!(
            "apply: nothing within profile {}'s bounds to change\n",
            profile.name
        ));
        let v = json!({"profile": profile.name, "selection": sel, "plan": null, "applied": null, "dry_run": !args.yes});
        return Ok((v, t));
    }
    let pid = now.processes.first().map(|p| p.pid);
    let readings = pf::read(&root, pid, profile.sysctls.keys().map(String::as_str))?;
    let opts = pf::ApplyOptions {
        unit: sel.unit.clone(),
        only: Selector::new(&sel.only()),
        ..Default::default()
    };
    let plan = pf::plan(profile, &root, &readings, &opts)?;
    t.push_str(&plan.render());
    let done = if args.yes && !plan.is_empty() {
        let d = pf::apply(&plan, &root).context("apply")?;
        if let Some(state) = &d.state_file {
            t.push_str(&format!(
                "applied {} sysctl(s) and {} file(s); previous values in {state}; undo with `headroom preflight rollback`\n",
                d.sysctls,
                d.files.len()
            ));
        }
        Some(d)
    } else {
        if plan.is_empty() {
            t.push_str("nothing to change\n");
        } else {
            t.push_str("dry run: nothing written; run again with --yes to apply\n");
        }
        None
    };
    let v = json!({
        "profile": profile.name,
        "selection": sel,
        "plan": plan,
        "applied": done,
        "dry_run": !args.yes,
    });
    Ok((v, t))
}

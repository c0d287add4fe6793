//! `headroom preflight check|apply|rollback`: argument parsing and printing;
//! the work is in the headroom-preflight crate.

use super::CmdResult;
use anyhow::Context;
use headroom_preflight::{self as pf, Loader, RollbackOutcome, Root, Selector};
use std::path::PathBuf;
use std::process::ExitCode;

/// Prints to stdout; a closed pipe (`| head`) ends the output quietly
/// instead of panicking.
fn emit(s: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(s.as_bytes());
}

macro_rules! out {
    ($($t:tt)*) => { emit(&format!($($t)*)) };
}

macro_rules! outln {
    ($($t:tt)*) => { emit(&(format!($($t)*) + "\n")) };
}

const PROFILES_HELP: &str = "Profiles: a path, or a name looked up in ./profiles, /etc/headroom/profiles, /usr/share/headroom/profiles, then the built-in baseline, c10k, c100k, c1m.";

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Compare this host (and a process) with a profile: one row per check, and the predicted capacity now and with the profile applied.
    #[command(after_help = concat!(
        "Exit status: 0 every check passes, 1 at least one check fails, 2 only warnings, 3 error (bad profile, unknown pid).\n",
        "net.* checks read the network namespace headroom runs in (printed in the header); run it under `ip netns exec` or `nsenter -n` to check another.\n",
        "Without --pid the nofile check reads this session's limits, which a server started from it inherits.\n",
        "Each sysctl and nofile row also shows the value the next boot (restart, login) sets and the file that sets it ",
        "(systemd-sysctl's order over /etc, /run, /usr/local/lib, /usr/lib sysctl.d; sysctl --system where it differs; ",
        "tuned, bpftune, Cilium and kube-proxy where found); a persisted value that does not meet the profile fails the row and names the file to edit."
    ))]
    Check(CheckArgs),
    /// Print the changes a profile needs (dry run); with --yes, make them: runtime sysctls, sysctl.d, limits.d and a systemd drop-in.
    #[command(after_help = concat!(
        "Before any write the previous values go to ROOT/var/lib/headroom/rollback.json (written atomically). ",
        "Values that already satisfy a rule are never lowered. If one write fails, the writes made before it are undone. ",
        "Before writing, each file is put in the boot order: if another file (/etc/sysctl.conf through 99-sysctl.conf, a later sysctl.d or limits.d file, a later drop-in, tuned) ",
        "would set a key back at the next boot, apply refuses and names the file to edit; --sysctl-file, --limits-file and --dropin-file choose a name that sorts later instead. ",
        "Exit status: 0 done (or nothing to do), 3 error or refused (the dry run exits 3 too when apply would refuse)."
    ))]
    Apply(ApplyArgs),
    /// Restore exactly what the last `apply --yes` changed and remove the files it wrote. Safe to run twice.
    Rollback(RollbackArgs),
}

#[derive(clap::Args)]
struct CheckArgs {
    /// Profile name or path.
    #[arg(long, long_help = PROFILES_HELP)]
    profile: String,
    /// Process whose nofile limits and open fds to check (default: this session).
    #[arg(long)]
    pid: Option<u32>,
    /// Print the report as JSON (docs/json.md).
    #[arg(long)]
    json: bool,
    /// Where persisted files are read from for the boot values (default /); runtime values still come from /proc.
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// The systemd service whose LimitNOFILE= the nofile row reports (default: the --pid's service, if it runs in one; else pam_limits for its user).
    #[arg(long, value_name = "NAME")]
    unit: Option<String>,
    /// Checks shown but not counted in the exit status: names (net.core.somaxconn, nofile, memory, conntrack, capacity) or prefixes (net, fs).
    #[arg(long, value_delimiter = ',', value_name = "CHECK,...")]
    ignore: Vec<String>,
}

#[derive(clap::Args)]
struct ApplyArgs {
    /// Profile name or path.
    #[arg(long, long_help = PROFILES_HELP)]
    profile: String,
    /// Make the changes; without it, only print them.
    #[arg(long)]
    yes: bool,
    /// systemd service to give a LimitNOFILE= drop-in.
    #[arg(long, value_name = "NAME")]
    unit: Option<String>,
    /// Prefix for persisted files and the rollback state (default /); runtime values still go to /proc/sys.
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Only these settings: names or prefixes, e.g. `net` (all net.*) or `nofile`.
    #[arg(long, value_delimiter = ',', value_name = "CHECK,...")]
    only: Vec<String>,
    /// Leave these settings alone: names or prefixes.
    #[arg(long, value_delimiter = ',', value_name = "CHECK,...")]
    skip: Vec<String>,
    /// Print the plan (and what was done) as JSON.
    #[arg(long)]
    json: bool,
    /// File name in /etc/sysctl.d to write (default 90-headroom.conf); choose one that sorts after a file that would override it at boot, e.g. 99-zz-headroom.conf.
    #[arg(long, value_name = "NAME")]
    sysctl_file: Option<String>,
    /// File name in /etc/security/limits.d to write (default 90-headroom.conf).
    #[arg(long, value_name = "NAME")]
    limits_file: Option<String>,
    /// Drop-in file name for --unit (default 90-headroom.conf).
    #[arg(long, value_name = "NAME")]
    dropin_file: Option<String>,
}

#[derive(clap::Args)]
struct RollbackArgs {
    /// The --root the apply used (default /).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

fn root_for(dir: Option<PathBuf>) -> Root {
    match dir {
        Some(d) => Root::system().with_files(d),
        None => Root::system(),
    }
}

pub fn run(args: Args) -> CmdResult {
    match args.cmd {
        Sub::Check(a) => check(a),
        Sub::Apply(a) => apply(a),
        Sub::Rollback(a) => rollback(a),
    }
}

fn load(name: &str) -> anyhow::Result<pf::Profile> {
    Ok(Loader::default().load(name)?)
}

fn check(a: CheckArgs) -> CmdResult {
    let profile = load(&a.profile)?;
    let root = root_for(a.root);
    let mut readings = pf::read(&root, a.pid, profile.sysctls.keys().map(String::as_str))?;
    if let Some(pid) = a.pid {
        // The probe sees what /proc/PID/limits does not: connections held,
        // the cgroup's memory.max, measured memory per connection.
        match headroom_probe::snapshot(&headroom_probe::Target::Pid(pid)) {
            Ok(snap) => readings.snapshot = snap,
            Err(e) => eprintln!("headroom: probe of pid {pid}: {e}; using its /proc limits only"),
        }
    }
    let mut report = pf::check(&profile, &readings);
    let boot = pf::boot::verdict::read(&root, a.pid, a.unit.as_deref());
    pf::boot::annotate(&mut report, &profile, &boot);
    report.ignore(&a.ignore)?;
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        outln!("{}", pf::check::render(&report));
    }
    Ok(ExitCode::from(report.exit_code()))
}

fn apply(a: ApplyArgs) -> CmdResult {
    let profile = load(&a.profile)?;
    let root = root_for(a.root);
    let readings = pf::read(&root, None, profile.sysctls.keys().map(String::as_str))?;
    let opts = pf::ApplyOptions {
        unit: a.unit,
        only: Selector::new(&a.only),
        skip: Selector::new(&a.skip),
        sysctl_file: a.sysctl_file,
        limits_file: a.limits_file,
        dropin_file: a.dropin_file,
    };
    let plan = pf::plan(&profile, &root, &readings, &opts)?;
    if !plan.conflicts.is_empty() {
        // Refused before any write, dry run or not: the same plan would be.
        if a.json {
            let v = serde_json::json!({
                "schema_version": headroom_core::SCHEMA_VERSION,
                "dry_run": !a.yes,
                "plan": plan,
                "applied": null,
            });
            outln!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            out!("{}", plan.render());
        }
        let files: Vec<&str> = plan.conflicts.iter().map(|c| c.edit.as_str()).collect();
        anyhow::bail!(
            "apply refused: the next boot would undo {} setting(s) (see the lines marked !); edit {} or choose a later file name; nothing written",
            plan.conflicts.len(),
            files.join(", ")
        );
    }
    let done = if a.yes {
        Some(pf::apply(&plan, &root).context("apply")?)
    } else {
        None
    };
    if a.json {
        let v = serde_json::json!({
            "schema_version": headroom_core::SCHEMA_VERSION,
            "dry_run": !a.yes,
            "plan": plan,
            "applied": done,
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    out!("{}", plan.render());
    match done {
        None if plan.is_empty() => outln!("nothing to change"),
        None => outln!("dry run: nothing written; run again with --yes to apply"),
        Some(d) => match d.state_file {
            None => outln!("nothing to change"),
            Some(state) => outln!(
                "applied {} sysctl(s) and {} file(s); previous values in {state}; undo with `headroom preflight rollback`",
                d.sysctls,
                d.files.len()
            ),
        },
    }
    Ok(ExitCode::SUCCESS)
}

fn rollback(a: RollbackArgs) -> CmdResult {
    let root = root_for(a.root);
    let outcome = pf::rollback(&root)?;
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&outcome)?);
        return Ok(ExitCode::SUCCESS);
    }
    match outcome {
        RollbackOutcome::Nothing => outln!("nothing to roll back"),
        RollbackOutcome::Restored {
            profile,
            sysctls,
            files_removed,
            files_restored,
            notes,
        } => {
            outln!("rolled back {profile}:");
            for (k, v) in &sysctls {
                outln!("  {k} = {v}");
            }
            for f in &files_removed {
                outln!("  - {f}");
            }
            for f in &files_restored {
                outln!("  ~ {f} (previous contents)");
            }
            for n in &notes {
                outln!("  note: {n}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

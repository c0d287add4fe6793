//! The plan of an apply: the diff from the readings, the files it would
//! write, and whether each of them wins at the next boot (see
//! [`crate::boot::persist`]): a plan with conflicts is refused. Each file
//! format apply writes has its own module (sysctl.d, limits.d, a unit's
//! drop-in); what changes against the host is in `diff`. Writing and
//! rolling back are in [`crate::journal`].

mod diff;
mod dropin;
mod limits_d;
mod sysctl_d;

use crate::boot::persist::Conflict;
use crate::boot::{valid_conf_name, verdict};
pub use crate::check::Selector;
pub use crate::journal::{apply, rollback, Applied, RollbackOutcome};
use crate::profile::Profile;
use crate::readings::Readings;
use crate::{Error, Root};
use serde::{Deserialize, Serialize};

pub const SYSCTL_FILE: &str = "/etc/sysctl.d/90-headroom.conf";
pub const LIMITS_FILE: &str = "/etc/security/limits.d/90-headroom.conf";
pub const STATE_FILE: &str = "/var/lib/headroom/rollback.json";
/// The name of every file apply writes unless told another.
pub const DEFAULT_NAME: &str = "90-headroom.conf";

/// `/etc/systemd/system/NAME.service.d/90-headroom.conf`.
pub fn dropin_path(unit: &str) -> String {
    format!("/etc/systemd/system/{unit}.service.d/{DEFAULT_NAME}")
}

#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    /// systemd service that gets a LimitNOFILE= drop-in.
    pub unit: Option<String>,
    /// Only these checks (names or prefixes such as `net`); empty: all.
    pub only: Selector,
    /// Never these.
    pub skip: Selector,
    /// File names in /etc/sysctl.d, /etc/security/limits.d and the unit's
    /// drop-in directory (default 90-headroom.conf): a name that sorts after
    /// a file that would override ours makes ours win.
    pub sysctl_file: Option<String>,
    pub limits_file: Option<String>,
    pub dropin_file: Option<String>,
}

impl ApplyOptions {
    fn name<'a>(&'a self, flag: &str, v: &'a Option<String>) -> Result<&'a str, Error> {
        let n = v.as_deref().unwrap_or(DEFAULT_NAME);
        valid_conf_name(flag, n)?;
        Ok(n)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SysctlChange {
    pub key: String,
    pub previous: String,
    pub applied: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileChange {
    /// The system path, e.g. `/etc/sysctl.d/90-headroom.conf` (under the root).
    pub path: String,
    /// Contents before apply; `None`: the file did not exist (rollback removes it).
    pub previous: Option<String>,
    pub content: String,
}

/// A setting apply leaves alone, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Kept {
    pub name: String,
    pub current: Option<String>,
    pub reason: String,
}

/// What `apply --yes` would do. Printed as the dry run.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub profile: String,
    pub netns: String,
    pub sysctls: Vec<SysctlChange>,
    pub files: Vec<FileChange>,
    /// Directories apply creates (outermost first); rollback removes them if empty.
    pub created_dirs: Vec<String>,
    pub kept: Vec<Kept>,
    pub notes: Vec<String>,
    /// Settings the next boot would take back: apply refuses while any is
    /// listed, and each names the file to edit.
    pub conflicts: Vec<Conflict>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.sysctls.is_empty() && self.files.is_empty()
    }

    /// The diff, one line per change.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = format!("profile {}, net namespace {}\n", self.profile, self.netns);
        let w = self
            .sysctls
            .iter()
            .map(|c| c.key.len())
            .chain(self.kept.iter().map(|k| k.name.len()))
            .max()
            .unwrap_or(0);
        for c in &self.sysctls {
            let _ = writeln!(out, "  ~ {:<w$}  {} -> {}", c.key, c.previous, c.applied);
        }
        for k in &self.kept {
            let cur = k.current.as_deref().unwrap_or("absent");
            let _ = writeln!(out, "  = {:<w$}  {cur} (kept: {})", k.name, k.reason);
        }
        for f in &self.files {
            let sign = if f.previous.is_some() { "~" } else { "+" };
            let _ = writeln!(out, "  {sign} {}", f.path);
            for l in f.content.lines() {
                let _ = writeln!(out, "      {l}");
            }
        }
        for n in &self.notes {
            let _ = writeln!(out, "  note: {n}");
        }
        for c in &self.conflicts {
            let _ = writeln!(out, "  ! {}: {}", c.name, c.message);
        }
        out
    }
}

fn selected(opts: &ApplyOptions, name: &str) -> bool {
    (opts.only.is_empty() || opts.only.matches(name)) && !opts.skip.matches(name)
}

/// The first line of every file apply writes.
fn header(profile: &str) -> String {
    format!(
        "# Written by `headroom preflight apply --profile {profile}`; `headroom preflight rollback` removes it.\n"
    )
}

fn valid_unit(u: &str) -> Result<String, Error> {
    let name = u.strip_suffix(".service").unwrap_or(u);
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '@' | '-' | '\\'));
    if !ok || name.starts_with('.') {
        return Err(Error::Usage(format!(
            "--unit {u:?}: not a systemd service name"
        )));
    }
    Ok(name.to_string())
}

/// A typo in --only/--skip must not silently select nothing.
fn check_selectors(profile: &Profile, opts: &ApplyOptions) -> Result<(), Error> {
    let names: Vec<&str> = profile
        .sysctls
        .keys()
        .map(String::as_str)
        .chain(profile.nofile.as_ref().map(|_| "nofile"))
        .collect();
    for (flag, sel) in [("--only", &opts.only), ("--skip", &opts.skip)] {
        if let Some(p) = sel
            .patterns()
            .iter()
            .find(|p| !names.iter().any(|n| Selector::one(p, n)))
        {
            return Err(Error::Usage(format!(
                "{flag} {p}: profile {} has no such setting ({})",
                profile.name,
                names.join(", ")
            )));
        }
    }
    Ok(())
}

/// Computes what `apply` would change. Reads nothing but `r` and, for the
/// files it would write, their current contents under `root`.
pub fn plan(
    profile: &Profile,
    root: &Root,
    r: &Readings,
    opts: &ApplyOptions,
) -> Result<Plan, Error> {
    if profile.observe_only {
        return Err(Error::Usage(format!(
            "profile {} is observe-only: check against it; apply c10k, c100k or c1m",
            profile.name
        )));
    }
    let unit = opts.unit.as_deref().map(valid_unit).transpose()?;
    let sysctl_name = opts.name("--sysctl-file", &opts.sysctl_file)?;
    let limits_name = opts.name("--limits-file", &opts.limits_file)?;
    let dropin_name = opts.name("--dropin-file", &opts.dropin_file)?;
    let sysctl_file = format!("/etc/sysctl.d/{sysctl_name}");
    let limits_file = format!("{}/{limits_name}", crate::boot::limits::LIMITS_D);
    for f in [&sysctl_file, &limits_file] {
        // Writing over a link (99-sysctl.conf -> ../sysctl.conf) would replace
        // the link with a file, and rollback could not bring the link back.
        if std::fs::symlink_metadata(root.file(f)).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(Error::Usage(format!(
                "{f} is a symlink: choose another name (--sysctl-file, --limits-file)"
            )));
        }
    }
    let view = verdict::read(root, None, None);
    check_selectors(profile, opts)?;
    let mut p = Plan {
        profile: profile.name.clone(),
        netns: r.snapshot.netns.clone(),
        sysctls: vec![],
        files: vec![],
        created_dirs: vec![],
        kept: vec![],
        notes: vec![],
        conflicts: vec![],
    };
    let persist_only = diff::sysctls(&mut p, profile, r, opts, &view);

    let mut files: Vec<(String, String)> = Vec::new();
    files.extend(sysctl_d::plan(
        &mut p,
        profile,
        root,
        &view,
        (sysctl_name, &sysctl_file),
        &persist_only,
    ));
    if let Some(n) = profile.nofile.as_ref().filter(|_| selected(opts, "nofile")) {
        files.extend(limits_d::plan(
            &mut p,
            profile,
            root,
            r,
            &view,
            n,
            (limits_name, &limits_file),
        ));
        if let Some(u) = &unit {
            files.extend(dropin::plan(&mut p, profile, root, u, n, dropin_name));
        }
    } else if unit.is_some() && profile.nofile.is_some() {
        p.notes
            .push("--unit ignored: nofile is not selected".into());
    }

    diff::files(&mut p, root, files)?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Loader;
    use crate::readings::parse_numbers;
    use std::fs;
    use std::path::Path;
    use std::path::PathBuf;

    const SYSCTLS: &[(&str, &str)] = &[
        ("fs/nr_open", "1048576"),
        ("fs/file-max", "200000"),
        ("fs/file-nr", "1000\t0\t200000"),
        ("net/core/somaxconn", "4096"),
        ("net/core/netdev_max_backlog", "1000"),
        ("net/ipv4/tcp_max_syn_backlog", "2048"),
        ("net/ipv4/ip_local_port_range", "32768\t60999"),
        ("net/ipv4/tcp_tw_reuse", "2"),
        ("net/ipv4/tcp_fin_timeout", "60"),
    ];

    /// A root with this machine's shape: nofile 20000/20000, no CAP_SYS_RESOURCE.
    fn fixture() -> (tempfile::TempDir, Root) {
        let t = tempfile::tempdir().unwrap();
        let p = t.path();
        for (k, v) in SYSCTLS {
            let f = p.join("proc/sys").join(k);
            fs::create_dir_all(f.parent().unwrap()).unwrap();
            fs::write(f, format!("{v}\n")).unwrap();
        }
        fs::create_dir_all(p.join("proc/self/ns")).unwrap();
        fs::create_dir_all(p.join("proc/self/fd")).unwrap();
        std::os::unix::fs::symlink("net:[4026532999]", p.join("proc/self/ns/net")).unwrap();
        fs::write(
            p.join("proc/self/limits"),
            "Limit Soft Hard Units\nMax open files            20000                20000                files\n",
        )
        .unwrap();
        fs::write(
            p.join("proc/self/status"),
            "Name: x\nCapEff:\t000001fffeffffff\n",
        )
        .unwrap();
        fs::write(
            p.join("proc/meminfo"),
            "MemTotal: 25165824 kB\nMemAvailable: 20971520 kB\n",
        )
        .unwrap();
        let root = Root::at(p);
        (t, root)
    }

    fn snapshot_sysctls(t: &Path) -> Vec<(PathBuf, String)> {
        SYSCTLS
            .iter()
            .map(|(k, _)| {
                let f = t.join("proc/sys").join(k);
                let v = fs::read_to_string(&f).unwrap();
                (f, v)
            })
            .collect()
    }

    fn builtin(name: &str) -> Profile {
        Loader {
            dirs: vec![],
            builtin: true,
        }
        .load(name)
        .unwrap()
    }

    fn readings(root: &Root, p: &Profile) -> Readings {
        crate::read(root, None, p.sysctls.keys().map(String::as_str)).unwrap()
    }

    #[test]
    fn apply_then_rollback_restores_exactly_and_twice_is_safe() {
        let (t, root) = fixture();
        let before = snapshot_sysctls(t.path());
        let prof = builtin("c100k");
        let r = readings(&root, &prof);
        let opts = ApplyOptions {
            unit: Some("web.service".into()),
            ..Default::default()
        };
        let plan = plan(&prof, &root, &r, &opts).unwrap();
        let changed: Vec<(&str, &str, &str)> = plan
            .sysctls
            .iter()
            .map(|c| (c.key.as_str(), c.previous.as_str(), c.applied.as_str()))
            .collect();
        assert_eq!(
            changed,
            [
                ("fs.file-max", "200000", "1048576"),
                ("net.core.netdev_max_backlog", "1000", "16384"),
                ("net.core.somaxconn", "4096", "65535"),
                ("net.ipv4.ip_local_port_range", "32768 60999", "1024 65535"),
                ("net.ipv4.tcp_fin_timeout", "60", "15"),
                ("net.ipv4.tcp_max_syn_backlog", "2048", "65535"),
                ("net.ipv4.tcp_tw_reuse", "2", "1"),
            ]
        );
        assert_eq!(plan.kept.len(), 1, "{:?}", plan.kept);
        assert_eq!(plan.kept[0].name, "fs.nr_open");
        let paths: Vec<&str> = plan.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                SYSCTL_FILE,
                LIMITS_FILE,
                "/etc/systemd/system/web.service.d/90-headroom.conf"
            ]
        );
        assert!(plan.files[2].content.contains("LimitNOFILE=262144:262144"));
        assert!(plan.files[1].content.contains("root  hard nofile 262144"));
        assert!(plan
            .notes
            .iter()
            .any(|n| n.contains("cannot be raised without CAP_SYS_RESOURCE")));
        let diff = plan.render();
        assert!(
            diff.contains("~ net.core.somaxconn") && diff.contains("4096 -> 65535"),
            "{diff}"
        );
        // The dry run wrote nothing.
        assert_eq!(snapshot_sysctls(t.path()), before);
        assert!(!t.path().join("etc").exists());

        let done = apply(&plan, &root).unwrap();
        assert_eq!((done.sysctls, done.files.len()), (7, 3));
        assert_eq!(
            root.read_sysctl("net.ipv4.ip_local_port_range")
                .unwrap()
                .unwrap(),
            "1024 65535"
        );
        assert_eq!(root.read_sysctl("fs.nr_open").unwrap().unwrap(), "1048576");
        let conf = fs::read_to_string(t.path().join("etc/sysctl.d/90-headroom.conf")).unwrap();
        assert!(conf.contains("net.core.somaxconn = 65535\n"), "{conf}");
        let state: serde_json::Value = serde_json::from_str(
            &fs::read_to_string(t.path().join("var/lib/headroom/rollback.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(state["sysctls"].as_array().unwrap().len(), 7);
        assert_eq!(state["netns"], "net:[4026532999]");
        // A second apply would lose the original values: refused.
        let again = plan_and_apply(&prof, &root, &opts).unwrap_err().to_string();
        assert!(
            again.contains("run `headroom preflight rollback` first"),
            "{again}"
        );

        match rollback(&root).unwrap() {
            RollbackOutcome::Restored {
                sysctls,
                files_removed,
                notes,
                ..
            } => {
                assert_eq!(sysctls.len(), 7);
                assert_eq!(files_removed.len(), 3);
                assert!(notes.is_empty(), "{notes:?}");
            }
            o => panic!("{o:?}"),
        }
        // Numbers compare equal; the kernel's tab in the range is restored as a space.
        for ((f, was), (_, now)) in before.iter().zip(snapshot_sysctls(t.path())) {
            assert_eq!(
                parse_numbers(was),
                parse_numbers(&now),
                "{} not restored",
                f.display()
            );
        }
        // Every file and directory apply created is gone; nothing else was touched.
        assert!(!t.path().join("etc/sysctl.d").exists());
        assert!(!t.path().join("etc/systemd").exists());
        assert!(!t.path().join("var/lib/headroom/rollback.json").exists());
        assert!(matches!(rollback(&root).unwrap(), RollbackOutcome::Nothing));
    }

    fn plan_and_apply(p: &Profile, root: &Root, o: &ApplyOptions) -> Result<Applied, Error> {
        let r = readings(root, p);
        apply(&plan(p, root, &r, o)?, root)
    }

    #[test]
    fn never_lowers_and_keeps_existing_files_for_rollback() {
        let (t, root) = fixture();
        fs::write(t.path().join("proc/sys/net/core/somaxconn"), "100000\n").unwrap();
        fs::write(
            t.path().join("proc/sys/net/ipv4/ip_local_port_range"),
            "2000\t65535\n",
        )
        .unwrap();
        fs::create_dir_all(t.path().join("etc/sysctl.d")).unwrap();
        fs::write(t.path().join("etc/sysctl.d/90-headroom.conf"), "# mine\n").unwrap();
        // The unit already allows more than c100k asks.
        fs::create_dir_all(t.path().join("etc/systemd/system")).unwrap();
        fs::write(
            t.path().join("etc/systemd/system/web.service"),
            "[Service]\nLimitNOFILE=500000\n",
        )
        .unwrap();
        let prof = builtin("c100k");
        let r = readings(&root, &prof);
        let opts = ApplyOptions {
            unit: Some("web".into()),
            ..Default::default()
        };
        let p = plan(&prof, &root, &r, &opts).unwrap();
        assert!(p.sysctls.iter().all(|c| c.key != "net.core.somaxconn"));
        let ports = p
            .sysctls
            .iter()
            .find(|c| c.key == "net.ipv4.ip_local_port_range")
            .unwrap();
        assert_eq!(
            ports.applied, "1024 65535",
            "low end widened, high end kept"
        );
        assert!(p
            .kept
            .iter()
            .any(|k| k.name == "net.core.somaxconn" && k.reason == "satisfies >= 65535"));
        assert!(p.kept.iter().any(|k| k.name == "web.service LimitNOFILE"));
        assert_eq!(p.files.len(), 2, "no drop-in for web");
        assert_eq!(p.files[0].previous.as_deref(), Some("# mine\n"));
        apply(&p, &root).unwrap();
        rollback(&root).unwrap();
        // The operator's file of the same name comes back, its directory stays.
        assert_eq!(
            fs::read_to_string(t.path().join("etc/sysctl.d/90-headroom.conf")).unwrap(),
            "# mine\n"
        );
        assert_eq!(
            root.read_sysctl("net.core.somaxconn").unwrap().unwrap(),
            "100000"
        );

        // A unit below the profile gets a drop-in that keeps its higher part.
        fs::write(
            t.path().join("etc/systemd/system/web.service"),
            "[Service]\nLimitNOFILE=1024:524288\n",
        )
        .unwrap();
        let p = plan(&prof, &root, &r, &opts).unwrap();
        let dropin = p
            .files
            .iter()
            .find(|f| f.path.contains("web.service.d"))
            .unwrap();
        assert!(
            dropin.content.contains("LimitNOFILE=262144:524288"),
            "{}",
            dropin.content
        );
    }

    #[test]
    fn only_skip_and_observe_only() {
        let (_t, root) = fixture();
        let prof = builtin("c100k");
        let r = readings(&root, &prof);
        let only_net = ApplyOptions {
            only: Selector::new(&["net".into()]),
            skip: Selector::new(&["net.ipv4.tcp_tw_reuse".into()]),
            ..Default::default()
        };
        let p = plan(&prof, &root, &r, &only_net).unwrap();
        assert_eq!(p.sysctls.len(), 5);
        assert!(p
            .sysctls
            .iter()
            .all(|c| c.key.starts_with("net.") && c.key != "net.ipv4.tcp_tw_reuse"));
        assert_eq!(p.files.len(), 1, "sysctl.d only: nofile not selected");
        let typo = ApplyOptions {
            only: Selector::new(&["nett".into()]),
            ..Default::default()
        };
        let err = plan(&prof, &root, &r, &typo).unwrap_err().to_string();
        assert!(
            err.starts_with("--only nett: profile c100k has no such setting"),
            "{err}"
        );
        let err = plan(&builtin("baseline"), &root, &r, &ApplyOptions::default()).unwrap_err();
        assert!(err.to_string().contains("observe-only"));
        let bad = ApplyOptions {
            unit: Some("../x".into()),
            ..Default::default()
        };
        assert!(plan(&prof, &root, &r, &bad)
            .unwrap_err()
            .to_string()
            .contains("not a systemd service name"));
    }

    /// A sysctl that exists, reads fine and refuses writes, as in a container
    /// with a read-only /proc/sys: kernel.ngroups_max is 0444 even for root.
    #[test]
    fn failed_sysctl_write_undoes_earlier_writes() {
        let (t, root) = fixture();
        let ro = Path::new("/proc/sys/kernel/ngroups_max");
        if !ro.exists() {
            eprintln!("skipped: no {}", ro.display());
            return;
        }
        let key = t.path().join("proc/sys/net/ipv4/tcp_max_syn_backlog");
        fs::remove_file(&key).unwrap();
        std::os::unix::fs::symlink(ro, &key).unwrap();
        let ngroups = fs::read_to_string(ro)
            .unwrap()
            .trim()
            .parse::<u64>()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("t.yaml"),
            format!(
                "name: t\ndescription: d\ntarget_connections: 10\nsysctls:\n  fs.file-max: {{min: 300000}}\n  net.core.somaxconn: {{min: 8192}}\n  net.ipv4.tcp_max_syn_backlog: {{min: {}}}\n  net.ipv4.tcp_tw_reuse: {{exact: 1}}\n",
                ngroups + 1
            ),
        )
        .unwrap();
        let prof = Loader {
            dirs: vec![dir.path().into()],
            builtin: false,
        }
        .load("t")
        .unwrap();
        let before = snapshot_sysctls(t.path());
        let err = plan_and_apply(&prof, &root, &ApplyOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("net.ipv4.tcp_max_syn_backlog: cannot write"),
            "{err}"
        );
        assert!(err.contains("Permission denied"), "{err}");
        assert!(err.contains("undid the 2 write(s) made before it"), "{err}");
        assert_eq!(snapshot_sysctls(t.path()), before);
        assert!(!t.path().join("var/lib/headroom/rollback.json").exists());
        assert!(!t.path().join("etc/sysctl.d").exists());
        assert!(matches!(rollback(&root).unwrap(), RollbackOutcome::Nothing));
    }

    #[test]
    fn failed_file_write_undoes_sysctls() {
        let (t, root) = fixture();
        // A directory where write_atomic puts its temp file: the limits.d
        // write fails after the runtime writes and the sysctl.d file.
        let blocker = t.path().join(format!(
            "etc/security/limits.d/.90-headroom.conf.tmp.{}",
            std::process::id()
        ));
        fs::create_dir_all(&blocker).unwrap();
        let prof = builtin("c10k");
        let before = snapshot_sysctls(t.path());
        let err = plan_and_apply(&prof, &root, &ApplyOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("{LIMITS_FILE}: cannot write")),
            "{err}"
        );
        assert!(err.contains("undid the 5 write(s)"), "{err}");
        assert_eq!(snapshot_sysctls(t.path()), before);
        assert!(!t.path().join("etc/sysctl.d").exists());
        assert!(!t.path().join("var/lib/headroom/rollback.json").exists());
    }

    #[test]
    fn rollback_refuses_another_namespace() {
        let (t, root) = fixture();
        let prof = builtin("c100k");
        plan_and_apply(&prof, &root, &ApplyOptions::default()).unwrap();
        fs::remove_file(t.path().join("proc/self/ns/net")).unwrap();
        std::os::unix::fs::symlink("net:[1]", t.path().join("proc/self/ns/net")).unwrap();
        let err = rollback(&root).unwrap_err().to_string();
        assert!(
            err.contains("applied in net:[4026532999], this is net:[1]"),
            "{err}"
        );
        assert!(t.path().join("var/lib/headroom/rollback.json").exists());
        fs::write(t.path().join("var/lib/headroom/rollback.json"), "{").unwrap();
        assert!(rollback(&root)
            .unwrap_err()
            .to_string()
            .starts_with("rollback state "));
    }
}

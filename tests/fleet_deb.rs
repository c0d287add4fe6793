//! The .deb: built by deploy/deb/build.sh with cargo-deb from the binary cargo
//! already built for these tests (no second, release build), unpacked into a
//! throwaway root, checked file by file, and its `headroom --version` run.

#[path = "util/fleet.rs"]
mod fleet;

use std::path::{Path, PathBuf};
use std::process::Command;

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Visible subcommands, from the binary's own help.
fn subcommands(bin: &Path) -> Vec<String> {
    let help = ok(Command::new(bin).arg("--help"));
    help.split("Commands:")
        .nth(1)
        .unwrap()
        .split("Options:")
        .next()
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| *w != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn deb_installs_binary_profiles_units_man_pages_and_completions() {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_headroom"));
    // cargo-deb's `--profile` names the directory the binary is in.
    let profile = match bin.parent().unwrap().file_name().unwrap().to_str().unwrap() {
        "debug" => "dev",
        other => other,
    }
    .to_string();
    let tmp = TempDir(std::env::temp_dir().join(format!("headroom-deb-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&tmp.0);
    let out_dir = tmp.0.join("out");
    let root = tmp.0.join("root");
    std::fs::create_dir_all(&out_dir).unwrap();

    ok(Command::new(fleet::repo().join("deploy/deb/build.sh"))
        .args([
            "--profile",
            &profile,
            "--no-build",
            "--",
            "--fast",
            "--strip",
            "-o",
        ])
        .arg(&out_dir));
    let debs: Vec<PathBuf> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "{debs:?}");
    let deb = &debs[0];
    let version = env!("CARGO_PKG_VERSION");
    assert!(deb
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with(&format!("headroom_{version}-1_")));

    let control = ok(Command::new("dpkg-deb").arg("-f").arg(deb));
    assert!(control.contains("Package: headroom\n"), "{control}");
    assert!(
        control.contains(&format!("Version: {version}-1\n")),
        "{control}"
    );

    ok(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root));

    // The binary, and only this binary.
    let installed = root.join("usr/bin/headroom");
    let bins: Vec<String> = std::fs::read_dir(root.join("usr/bin"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(bins, ["headroom"]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&installed).unwrap().permissions().mode() & 0o777,
        0o755
    );
    let v = ok(Command::new(&installed).arg("--version"));
    assert_eq!(v.trim(), format!("headroom {version}"));

    // Data files are the repository's, byte for byte.
    let same = |repo_rel: &str, pkg_rel: &str| {
        assert_eq!(
            fleet::read(&fleet::repo().join(repo_rel)),
            fleet::read(&root.join(pkg_rel)),
            "{pkg_rel} differs from {repo_rel}"
        );
    };
    let mut profiles = 0;
    for e in std::fs::read_dir(fleet::repo().join("profiles")).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".yaml") {
            same(
                &format!("profiles/{name}"),
                &format!("usr/share/headroom/profiles/{name}"),
            );
            profiles += 1;
        }
    }
    assert!(profiles >= 4, "{profiles} profiles");
    assert_eq!(
        std::fs::read_dir(root.join("usr/share/headroom/profiles"))
            .unwrap()
            .count(),
        profiles
    );
    for unit in ["headroom-probe.service", "headroom-serve.service"] {
        same(
            &format!("deploy/systemd/{unit}"),
            &format!("lib/systemd/system/{unit}"),
        );
    }
    same(
        "deploy/prometheus/headroom-rules.yml",
        "usr/share/headroom/prometheus/headroom-rules.yml",
    );
    same(
        "deploy/grafana/headroom.json",
        "usr/share/headroom/grafana/headroom.json",
    );
    same("docs/runbook.md", "usr/share/doc/headroom/runbook.md");

    // A man page per subcommand, each a roff page naming its command.
    let man = root.join("usr/share/man/man1");
    let subs = subcommands(&bin);
    assert!(
        subs.len() >= 10 && subs.contains(&"fleet".to_string()),
        "{subs:?}"
    );
    for page in
        std::iter::once("headroom".to_string()).chain(subs.iter().map(|s| format!("headroom-{s}")))
    {
        let text = fleet::read(&man.join(format!("{page}.1")));
        assert!(
            text.starts_with(".ie \\n(.g .ds Aq") || text.contains(".TH"),
            "{page}.1 is not roff"
        );
        assert!(
            text.contains(&format!(".TH {page} 1")),
            "{page}.1 has no title for {page}"
        );
    }
    assert!(
        !man.join("headroom-manpages.1").exists(),
        "the hidden packaging command has no page"
    );

    // Completions for bash, zsh and fish, generated by the same binary.
    for (path, shell) in [
        ("usr/share/bash-completion/completions/headroom", "bash"),
        ("usr/share/zsh/vendor-completions/_headroom", "zsh"),
        ("usr/share/fish/vendor_completions.d/headroom.fish", "fish"),
    ] {
        let want = ok(Command::new(&bin).args(["completions", shell]));
        assert_eq!(fleet::read(&root.join(path)), want, "{shell} completions");
        assert!(
            want.contains("fleet"),
            "{shell} completions lack subcommands"
        );
    }

    // Nothing of the conformance harness.
    let listing = ok(Command::new("dpkg-deb").arg("-c").arg(deb));
    assert!(!listing.contains("conformance"), "{listing}");
}

//! Builds the kernel side (probe-ebpf) for bpfel-unknown-none with nightly
//! and bpf-linker, and embeds it. When that toolchain is missing or the build
//! fails, the workspace build must still succeed: we warn, embed an empty
//! object and record why, so that `headroom probe` can say exactly why eBPF is
//! off at run time and fall back to polling.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const OBJECT: &str = "headroom-probe.bpf.o";

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let ebpf_dir = manifest.join("../probe-ebpf");
    for p in ["src", "Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", ebpf_dir.join(p).display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        manifest.join("../probe-common/src").display()
    );
    println!("cargo:rerun-if-env-changed=HEADROOM_SKIP_EBPF_BUILD");
    println!("cargo:rerun-if-env-changed=PATH");

    let dst = out.join(OBJECT);
    let status = if env::var_os("HEADROOM_SKIP_EBPF_BUILD").is_some() {
        Err("the eBPF object was not built (HEADROOM_SKIP_EBPF_BUILD was set)".to_string())
    } else {
        build(&ebpf_dir, &out, &dst)
    };
    match status {
        Ok(()) => println!("cargo:rustc-env=HEADROOM_EBPF_BUILD=ok"),
        Err(why) => {
            println!("cargo:warning=headroom-probe: eBPF disabled in this build: {why}");
            println!("cargo:warning=headroom-probe: run scripts/setup.sh (nightly rust-src, bpf-linker) and rebuild to enable it");
            fs::write(&dst, b"").expect("write empty eBPF object");
            // One line, shown by `headroom probe` as the reason eBPF is off.
            let why = why.replace(['\n', '\r'], " ");
            println!("cargo:rustc-env=HEADROOM_EBPF_BUILD=not built: {why}");
        }
    }
}

fn which(prog: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = env::var_os("PATH")
        .map(|p| env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cargo/bin"));
    }
    dirs.into_iter().map(|d| d.join(prog)).find(|p| p.is_file())
}

fn build(ebpf_dir: &Path, out: &Path, dst: &Path) -> Result<(), String> {
    let rustup = which("rustup").ok_or("rustup not found on PATH")?;
    let linker = which("bpf-linker").ok_or("bpf-linker not found on PATH")?;
    let nightly = Command::new(&rustup)
        .args(["run", "nightly", "rustc", "--version"])
        .output()
        .map_err(|e| format!("cannot run rustup: {e}"))?;
    if !nightly.status.success() {
        return Err(
            "no nightly toolchain (rustup toolchain install nightly --component rust-src)".into(),
        );
    }
    let target_dir = out.join("ebpf-target");
    let mut cmd = Command::new(&rustup);
    cmd.args(["run", "nightly", "cargo", "build", "--release"])
        .args(["-Z", "build-std=core", "--target", "bpfel-unknown-none"])
        .arg("--manifest-path")
        .arg(ebpf_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    // The outer build's compiler settings must not leak into the nightly one.
    for key in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTUP_TOOLCHAIN",
        "CARGO",
    ] {
        cmd.env_remove(key);
    }
    if let Some(dir) = linker.parent() {
        let path = env::var_os("PATH").unwrap_or_default();
        let mut paths: Vec<PathBuf> = env::split_paths(&path).collect();
        paths.insert(0, dir.to_path_buf());
        cmd.env("PATH", env::join_paths(paths).map_err(|e| e.to_string())?);
    }
    // As aya-build does: debug info for BTF, which bpf-linker emits with --btf.
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into());
    cmd.env(
        "CARGO_ENCODED_RUSTFLAGS",
        format!("--cfg=bpf_target_arch=\"{arch}\"\x1f-Cdebuginfo=2\x1f-Clink-arg=--btf"),
    );
    let res = cmd
        .output()
        .map_err(|e| format!("cannot run nightly cargo: {e}"))?;
    if !res.status.success() {
        let stderr = String::from_utf8_lossy(&res.stderr);
        for line in stderr
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with("Compiling"))
            .take(40)
        {
            println!("cargo:warning=  {line}");
        }
        let first = stderr
            .lines()
            .find(|l| l.starts_with("error"))
            .unwrap_or("see the build warnings");
        return Err(format!("nightly cargo build of probe-ebpf failed: {first}"));
    }
    let obj = target_dir.join("bpfel-unknown-none/release/headroom-probe-ebpf");
    fs::copy(&obj, dst).map_err(|e| format!("copy {}: {e}", obj.display()))?;
    Ok(())
}

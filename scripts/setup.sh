#!/usr/bin/env bash
# Installs everything headroom needs to build and test on a fresh Debian 12
# machine with rustup: apt packages, the nightly rust-src and bpf-linker for the
# eBPF object, the Python MCP SDK used by interop tests, and Prometheus/promtool.
# Idempotent: each step checks first, so a second run takes seconds.
set -euo pipefail

log() { printf 'setup: %s\n' "$*" >&2; }
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

apt_pkgs=(llvm-22-dev libpolly-22-dev libzstd-dev iproute2 tmux socat prometheus util-linux procps python3-venv systemd
  # Real servers for the app-aware model and the lab (tests start their own
  # instances on loopback with configurations they write; none is started here).
  redis-server memcached nginx-light haproxy postgresql erlang-base)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian package starts prometheus as a service where systemd runs; tests
# start their own on loopback, so a stray one is harmless but not needed.

if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
  log "rustup: nightly rust-src"
  rustup toolchain install nightly --profile minimal --component rust-src >/dev/null
fi

# bpf-linker links the bitcode that the nightly rustc emits, so it must use
# the same LLVM major as that rustc (nightlies moved to LLVM 23, newer than
# Debian's llvm-22): link it against the nightly toolchain's own libLLVM,
# through a prefix of symlinks, and rebuild when the nightly changes.
nightly_lib="$(rustc +nightly --print sysroot)/lib"
llvm_so="$(ls "$nightly_lib"/libLLVM.so.* 2>/dev/null | head -n1 || true)"
llvm_major="$(rustc +nightly -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')"
llvm_prefix="${CARGO_HOME:-$HOME/.cargo}/headroom-rust-llvm"
linker="$(command -v bpf-linker || true)"
if [ -n "$llvm_so" ]; then
  if [ -z "$linker" ] || ! ldd "$linker" 2>/dev/null | grep -q "$(basename "$llvm_so") => $llvm_prefix/lib/"; then
    log "cargo install bpf-linker against the nightly's LLVM $llvm_major (about 3 minutes)"
    mkdir -p "$llvm_prefix/lib"
    ln -sf "$llvm_so" "$llvm_prefix/lib/libLLVM.so"
    ln -sf "$llvm_so" "$llvm_prefix/lib/$(basename "$llvm_so")"
    LLVM_PREFIX="$llvm_prefix" cargo install --locked --force bpf-linker \
      --no-default-features --features "llvm-$llvm_major" >/dev/null
  fi
elif [ -z "$linker" ]; then
  log "cargo install bpf-linker against llvm-22 (about 2.5 minutes)"
  LLVM_PREFIX=/usr/lib/llvm-22 cargo install --locked bpf-linker --no-default-features --features llvm-22 >/dev/null
fi

# cargo-deb builds the .deb (tests/fleet_deb.rs); systemd-analyze (package
# systemd, above) checks the shipped units even where PID 1 is not systemd.
if ! command -v cargo-deb >/dev/null 2>&1; then
  log "cargo install cargo-deb (about 1 minute)"
  # Pinned: tests/fleet_deb.rs packages the test build (--profile dev), which
  # cargo-deb warns it may refuse in a later major version.
  cargo install --locked cargo-deb --version 3.8.0 >/dev/null
fi

# Python clients for interop tests: the official MCP SDK (2.x) in a venv that
# tests find at .venv/bin/python (override with HEADROOM_PYTHON).
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ ! -x "$root/.venv/bin/python" ] || ! "$root/.venv/bin/python" -c 'import mcp' 2>/dev/null; then
  log "python venv with mcp and kubernetes-validate"
  python3 -m venv "$root/.venv"
  "$root/.venv/bin/pip" install -q --upgrade pip >/dev/null
  "$root/.venv/bin/pip" install -q -r "$root/tests/python/requirements.txt" >/dev/null
fi

# The official MCP conformance suite (npm) for tests/conformance.rs: installed
# once into the cache scripts/conformance.sh reads, with its Node 20 adaptation.
if ! command -v node >/dev/null 2>&1; then
  log "apt-get install nodejs npm (the suite needs Node >= 20)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null || true
fi
if command -v npm >/dev/null 2>&1; then
  "$root/scripts/conformance.sh" install >/dev/null || log "conformance suite: npm install failed (tests/conformance.rs will say so)"
else
  log "npm not found: install nodejs and npm (Node >= 20) for the conformance suite"
fi

# tracefs: the eBPF probe attaches to tracepoints and needs it mounted.
if [ ! -e /sys/kernel/tracing/events ] && [ "$(id -u)" -eq 0 ]; then
  mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true
fi
log "ready"

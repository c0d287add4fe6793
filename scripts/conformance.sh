#!/usr/bin/env bash
# Runs the official MCP conformance suite (@modelcontextprotocol/conformance)
# against a Streamable HTTP endpoint and prints one verdict line per scenario.
#
#   scripts/conformance.sh install                 # fetch the suite only
#   scripts/conformance.sh list                    # the suite's server scenarios
#   scripts/conformance.sh URL [suite options...]  # run it
#
# Suite options pass through unchanged: --scenario NAME, --suite all,
# --requirements 2026-07-28, --spec-version V, --timeout MS, --verbose.
#
# The last line is the verdict, always in this form:
#   conformance: P passed, F failed, S skipped, W warnings
# A scenario passes when it ran at least one check and none failed; one that ran
# no check is skipped (it proved nothing); one the suite named but wrote no
# results for failed. Exit status 0 only when F is 0 and the suite itself exited 0.
#
# Environment:
#   CONFORMANCE_VERSION  suite version (default 0.2.0-alpha.12)
#   CONFORMANCE_CACHE    install root (default ${XDG_CACHE_HOME:-~/.cache}/headroom/conformance)
#   CONFORMANCE_OUT      keep per-scenario results here (default: a temp dir, removed)
set -uo pipefail

version="${CONFORMANCE_VERSION:-0.2.0-alpha.12}"
cache="${CONFORMANCE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/headroom/conformance}/$version"
pkg="$cache/node_modules/@modelcontextprotocol/conformance"
cli="$pkg/dist/index.js"

fail() {
  echo "conformance.sh: $*" >&2
  echo "conformance: 0 passed, 1 failed, 0 skipped, 0 warnings"
  exit 2
}

install_suite() {
  command -v node >/dev/null || fail "node is not installed (Node 20 or newer)"
  command -v npm >/dev/null || fail "npm is not installed"
  local major
  major="$(node -e 'console.log(process.versions.node.split(".")[0])')"
  [ "$major" -ge 20 ] || fail "node $(node --version) is older than 20"

  if [ ! -f "$pkg/package.json" ] || [ ! -f "$cache/node_modules/glob/package.json" ]; then
    mkdir -p "$cache" || fail "cannot create $cache"
    # Its own package.json, so npm never walks up into an enclosing project.
    [ -f "$cache/package.json" ] || printf '{"name":"headroom-conformance-cache","private":true}\n' >"$cache/package.json"
    echo "conformance.sh: installing @modelcontextprotocol/conformance@$version into $cache" >&2
    (cd "$cache" && npm install --no-audit --no-fund --loglevel=error --save-exact \
      "@modelcontextprotocol/conformance@$version" "glob@11") >&2 || fail "npm install failed"
  fi
  [ -f "$cli" ] || fail "$cli is missing after npm install"

  # Node 20: the suite's bundle takes `globSync` from "fs", which exists only in
  # Node 22 and later, so loading it fails before any scenario runs. Take that one
  # binding from the `glob` package instead (same call shape for the suite's use).
  # Rewrites only the import statement; runs once (the rewritten file no longer matches).
  if [ "$major" -lt 22 ]; then
    node --input-type=commonjs - "$pkg/dist" <<'JS' || fail "could not adapt the suite to Node 20"
const fs = require("fs");
const path = require("path");
const dir = process.argv[2];
const importFromFs = /import\{([^}]*)\}from"((?:node:)?fs)";?/g;
for (const file of fs.readdirSync(dir).filter((f) => f.endsWith(".js")).map((f) => path.join(dir, f))) {
  const before = fs.readFileSync(file, "utf8");
  const after = before.replace(importFromFs, (stmt, names, mod) => {
    const list = names.split(",").map((n) => n.trim());
    const glob = list.filter((n) => n === "globSync" || n.startsWith("globSync "));
    if (glob.length === 0) return stmt;
    const others = list.filter((n) => !glob.includes(n));
    return `import{${glob.join(",")}}from"glob";` + (others.length ? `import{${others.join(",")}}from"${mod}";` : "");
  });
  if (after !== before) {
    fs.writeFileSync(file, after);
    console.error(`conformance.sh: ${path.basename(file)}: globSync now imported from "glob" (Node 20)`);
  }
}
JS
  fi
}

case "${1:-}" in
  "" | -h | --help)
    sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  install)
    install_suite
    echo "conformance.sh: suite $version ready at $pkg" >&2
    exit 0
    ;;
  list)
    install_suite
    shift
    exec node "$cli" list --server "$@"
    ;;
esac

url="$1"
shift
install_suite

out="${CONFORMANCE_OUT:-}"
if [ -z "$out" ]; then
  out="$(mktemp -d "${TMPDIR:-/tmp}/headroom-conformance.XXXXXX")" || fail "mktemp failed"
  trap 'rm -rf "$out"' EXIT
else
  mkdir -p "$out" || fail "cannot create $out"
fi
# A fresh subdirectory per run: the verdict reads only this run's results.
run_dir="$out/run-$(date +%s)-$$"
mkdir -p "$run_dir"
log="$run_dir/suite.log"

echo "conformance.sh: suite $version, node $(node --version), url $url" >&2
node "$cli" server --url "$url" -o "$run_dir/results" "$@" 2>&1 | tee "$log"
suite_status=${PIPESTATUS[0]}

node --input-type=commonjs - "$run_dir" "$suite_status" <<'JS'
const fs = require("fs");
const path = require("path");
const [runDir, suiteStatus] = process.argv.slice(2);
const resultsDir = path.join(runDir, "results");

// Scenario name -> checks, from the per-scenario directories the suite wrote
// (named "server-<scenario>-<ISO timestamp>").
const results = new Map();
for (const entry of fs.existsSync(resultsDir) ? fs.readdirSync(resultsDir) : []) {
  const m = entry.match(/^server-(.+)-\d{4}-\d{2}-\d{2}T[\d-]+Z$/);
  const file = path.join(resultsDir, entry, "checks.json");
  if (!m || !fs.existsSync(file)) continue;
  let checks;
  try { checks = JSON.parse(fs.readFileSync(file, "utf8")); } catch { checks = null; }
  results.set(m[1], checks);
}

// The scenarios the suite meant to run: its summary names every one of them,
// including any that crashed before writing results.
const named = [];
const log = fs.readFileSync(path.join(runDir, "suite.log"), "utf8").split("\n");
const summary = log.indexOf("=== SUMMARY ===");
if (summary >= 0) {
  for (const line of log.slice(summary + 1)) {
    const m = line.match(/^\S+ (\S+): \d+ passed, \d+ failed$/);
    if (m) named.push(m[1]);
  }
}
const scenarios = [...new Set([...named, ...results.keys()])].sort();

let passed = 0, failed = 0, skipped = 0, warnings = 0;
const failedNames = [];
for (const name of scenarios) {
  const checks = results.get(name);
  if (!Array.isArray(checks)) {
    failed++; failedNames.push(name);
    console.log(`FAIL ${name}: no results written`);
    continue;
  }
  const count = (s) => checks.filter((c) => c.status === s).length;
  const [ok, bad, warn] = [count("SUCCESS"), count("FAILURE"), count("WARNING")];
  warnings += warn;
  for (const c of checks.filter((c) => c.status === "FAILURE" || c.status === "WARNING")) {
    const why = String(c.errorMessage || c.description || "").split("\n")[0];
    console.log(`  ${c.status === "FAILURE" ? "failure" : "warning"} ${name}/${c.id}: ${why}`);
  }
  if (bad > 0) { failed++; failedNames.push(name); console.log(`FAIL ${name}: ${ok} checks passed, ${bad} failed, ${warn} warnings`); }
  else if (ok === 0) { skipped++; console.log(`SKIP ${name}: ran no check`); }
  else { passed++; console.log(`PASS ${name}: ${ok} checks, ${warn} warnings`); }
}
if (scenarios.length === 0 && suiteStatus !== "0") {
  failed++; failedNames.push("(suite)");
  console.log(`FAIL (suite): exited ${suiteStatus} without running a scenario`);
}
if (failedNames.length) console.log(`failed scenarios: ${failedNames.join(" ")}`);
console.log(`conformance: ${passed} passed, ${failed} failed, ${skipped} skipped, ${warnings} warnings`);
process.exit(failed > 0 ? 1 : 0);
JS
verdict=$?
# The suite may exit 0 with failing checks (e.g. under --requirements) and our
# verdict may pass while the suite reports an error: either one failing fails the run.
[ "$verdict" -ne 0 ] && exit "$verdict"
exit "$suite_status"

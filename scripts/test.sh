#!/usr/bin/env bash
# Runs every test: `cargo test --workspace`, then, when run as root, the tests
# marked #[ignore = "needs root"] (network namespaces, eBPF, prlimit), which
# the first pass reports as ignored. Benchmarks (#[ignore = "benchmark: ..."])
# run in neither pass: they measure the host and are run on purpose, one at a
# time (the command is in each one's file).
#
# The last line sums both passes, from cargo's per-test and "test result:"
# lines:
#   test.sh: R ran, P passed, F failed; N not run (K needs root, B benchmark)
# Exit status 0 only when no test failed and both cargo runs succeeded; in CI
# (CI set) also only as root, since CI must run the root-only tests.
#
# --no-fail-fast: a failing test binary does not stop the others, so that the
# summary counts every test.
#
# Arguments, if any, select what to test in place of --workspace, in both
# passes (cargo test's own options: scripts/test.sh --test top_once).
set -uo pipefail
cd "$(dirname "$0")/.."

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

root=false
[ "$(id -u)" -eq 0 ] && root=true

# The benchmarks, by their ignore reason: libtest cannot select by reason,
# so the root pass skips them by name. Read from the sources so that a new
# benchmark needs no edit here.
skips=()
while read -r name; do
  [ -n "$name" ] && skips+=(--skip "$name")
done < <(grep -rh -A3 --include='*.rs' --exclude-dir=target --exclude-dir=.git --exclude-dir=.venv \
  '#\[ignore = "benchmark' . | sed -n 's/^.*\bfn \([A-Za-z0-9_]*\).*$/\1/p')

# --tests: doctests marked `ignore` need not compile, and --ignored would
# try them. Only for the whole workspace: beside --test NAME it would add
# every other target.
all=(--workspace)
root_only=(--workspace --tests)
if [ "$#" -gt 0 ]; then
  all=("$@")
  root_only=("$@")
fi

cargo test "${all[@]}" --no-fail-fast 2>&1 | tee "$tmp/all.log"
rc_all=${PIPESTATUS[0]}
rc_root=0
: >"$tmp/root.log"
if $root; then
  cargo test "${root_only[@]}" --no-fail-fast -- --ignored "${skips[@]}" 2>&1 | tee "$tmp/root.log"
  rc_root=${PIPESTATUS[0]}
fi

# Per pass: "result PASSED FAILED IGNORED" per test binary, "ignored BIN\tNAME\tREASON"
# and "ran BIN\tNAME" per test. BIN (cargo's Running/Doc-tests line) tells
# apart tests of the same name in different binaries.
parse() {
  awk '
    /^ *Running / { bin = $0; sub(/^ *Running /, "", bin); next }
    /^ *Doc-tests / { bin = $0; sub(/^ */, "", bin); next }
    /^test result: / {
      for (i = 1; i <= NF; i++) {
        if ($(i + 1) ~ /^passed;?$/) p = $i
        if ($(i + 1) ~ /^failed;?$/) f = $i
        if ($(i + 1) ~ /^ignored;?$/) g = $i
      }
      print "result", p, f, g
      next
    }
    /^test .* \.\.\. (ok|FAILED)$/ {
      name = $0; sub(/^test /, "", name); sub(/ \.\.\. [A-Z]*[a-z]*$/, "", name)
      print "ran " bin "\t" name
      next
    }
    /^test .* \.\.\. ignored/ {
      name = $0; sub(/^test /, "", name); sub(/ \.\.\. ignored.*$/, "", name)
      reason = $0; sub(/^.* \.\.\. ignored,? ?/, "", reason); sub(/:.*$/, "", reason)
      if (reason == "") reason = "ignored"
      print "ignored " bin "\t" name "\t" reason
    }
  ' "$1"
}
parse "$tmp/all.log" >"$tmp/all.txt"
parse "$tmp/root.log" >"$tmp/root.txt"

sum() { awk -v c="$2" '$1 == "result" { s += $c } END { print s + 0 }' "$1"; }
passed=$(($(sum "$tmp/all.txt" 2) + $(sum "$tmp/root.txt" 2)))
failed=$(($(sum "$tmp/all.txt" 3) + $(sum "$tmp/root.txt" 3)))
ran=$((passed + failed))
not_run=$(($(sum "$tmp/all.txt" 4) - $(sum "$tmp/root.txt" 2) - $(sum "$tmp/root.txt" 3)))

# Why the rest did not run: the first pass's ignore reasons, less what the
# root pass ran.
why=$(awk -F'\t' '
  FILENAME == ARGV[1] { if (sub(/^ran /, "")) ran[$1 "\t" $2] = 1; next }
  sub(/^ignored /, "") && !(($1 "\t" $2) in ran) { n[$3]++ }
  END { for (r in n) print n[r] " " r }
' "$tmp/root.txt" "$tmp/all.txt" | sort -rn | paste -sd, - | sed 's/,/, /g')

line="test.sh: $ran ran, $passed passed, $failed failed; $not_run not run"
[ -n "$why" ] && line="$line ($why)"
status=0
[ "$failed" -eq 0 ] || status=1
if [ "$rc_all" -ne 0 ] || [ "$rc_root" -ne 0 ]; then
  exits="$rc_all"
  $root && exits="$exits, then $rc_root"
  line="$line; cargo test exited $exits"
  status=1
fi
if ! $root; then
  if [ -n "${CI:-}" ]; then
    line="$line; CI must run as root"
    status=1
  else
    line="$line; run as root for the root-only tests"
  fi
fi
echo "$line"
exit "$status"

#!/usr/bin/env bash
# Builds the headroom .deb: the release binary, then the man pages and shell
# completions generated from it, then cargo-deb (installed by scripts/setup.sh).
#   deploy/deb/build.sh [--profile PROFILE] [--no-build] [-- extra cargo-deb args]
# Output: target/debian/headroom_VERSION-1_ARCH.deb
set -euo pipefail
cd "$(dirname "$0")/../.."

profile=release
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    --) shift; break ;;
    *) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

dir="$profile"
[ "$profile" = dev ] && dir=debug
[ "$profile" = test ] && dir=debug
target="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
bin="$target/$dir/headroom"

if [ "$build" = 1 ]; then
  cargo build --locked --profile "$profile" -p headroom --bin headroom
fi
[ -x "$bin" ] || { echo "build.sh: $bin not built" >&2; exit 1; }

assets="$target/$dir/headroom-assets"
rm -rf "$assets"
mkdir -p "$assets/completions"
"$bin" manpages "$assets/man"
"$bin" completions bash > "$assets/completions/headroom.bash"
"$bin" completions zsh > "$assets/completions/_headroom"
"$bin" completions fish > "$assets/completions/headroom.fish"

exec cargo deb -p headroom --no-build --profile "$profile" "$@"

#!/usr/bin/env bash
# Configures and builds Switchyard into build/ (after scripts/setup.sh). Extra arguments are
# ninja targets; none builds everything. BUILD_DIR and CMAKE_ARGS override the defaults.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${BUILD_DIR:-$root/build}"
"$root/scripts/setup.sh"
# Let ccache share results between clones in different folders (CI builds a fresh clone).
export CCACHE_BASEDIR="$root" CCACHE_NOHASHDIR=1
# shellcheck disable=SC2086
cmake -G Ninja -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo ${CMAKE_ARGS:-} >/dev/null
ninja -C "$build" "$@"

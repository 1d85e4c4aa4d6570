#!/usr/bin/env bash
# Sets up, builds and runs the whole test suite (unit, integration and e2e tiers; CTest labels).
# Extra arguments go to ctest (e.g. -L unit, -R config).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${BUILD_DIR:-$root/build}"
"$root/scripts/build.sh"
if [[ -d "$root/../shared/models" ]]; then
  export SWITCHYARD_MODELS="${SWITCHYARD_MODELS:+$SWITCHYARD_MODELS:}$(cd "$root/../shared/models" && pwd)"
fi
cd "$build"
ctest --output-on-failure --timeout 600 -j "$(nproc)" "$@"

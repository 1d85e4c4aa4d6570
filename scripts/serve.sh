#!/usr/bin/env bash
# Sets up, builds and runs the gateway. With no arguments: the embedded default (the local
# llama.cpp engine on stories260K.gguf, default policy, no API keys) on 127.0.0.1:8080 (HTTP)
# and 127.0.0.1:50051 (gRPC). Arguments go to `switchyard serve` (e.g. --config FILE).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/build.sh" switchyard
if [[ -d "$root/../shared/models" ]]; then
  export SWITCHYARD_MODELS="${SWITCHYARD_MODELS:+$SWITCHYARD_MODELS:}$(cd "$root/../shared/models" && pwd)"
fi
exec "${BUILD_DIR:-$root/build}/gateway/switchyard" serve "$@"

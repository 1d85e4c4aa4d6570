#!/usr/bin/env bash
# Local engine vs llama.cpp's own llama-server, side by side in one run (issue 5).
#
# Builds llama-server from the same pinned tree (.deps/llama.cpp) in build-llama-server/
# (GGML_NATIVE off, RelWithDebInfo like Switchyard's default), starts it and `switchyard serve` on
# the same model with the same threads, slots and per-slot context, and runs
# scripts/bench_load.py against each at 1, 4 and 16 concurrent streams with short and long
# prompts. One JSON line per (server, concurrency, prompt).
#
# Environment: MODEL (default stories260K.gguf, looked up in ../shared/models), THREADS (1),
# SLOTS (16), CONTEXT (per slot, 1024), MAX_TOKENS (128), REQUESTS (per stream, 4),
# STREAMS (the concurrencies, "1 4 16"), PROMPTS ("short long"), BUILD_DIR (Switchyard's build,
# default build), SKIP_LLAMA_SERVER=1 measures Switchyard only.
#
# MODEL=random-200m.gguf (any random-*.gguf name) writes a random-weight Llama model with ggml's
# GGUF writer (switchyard_random_gguf; stories260K's tokenizer, 1024 wide, 16 layers, FFN 2816,
# Q8_0: 207M parameters) into $BUILD_DIR/bench-models/ first, so the figures reflect real matrix
# sizes without a download. RANDOM_ARGS passes other shapes, e.g. "--layers 24 --type q4_0".
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${BUILD_DIR:-$root/build}"
models="${SWITCHYARD_MODELS:-$root/../shared/models}"
model="${MODEL:-stories260K.gguf}"
threads="${THREADS:-1}"
slots="${SLOTS:-16}"
context="${CONTEXT:-1024}"
max_tokens="${MAX_TOKENS:-128}"
requests="${REQUESTS:-4}"
streams="${STREAMS:-1 4 16}"
prompts="${PROMPTS:-short long}"
if [[ "$model" == random-*.gguf ]]; then
  models="$build/bench-models"
  if [[ ! -f "$models/$model" ]]; then
    mkdir -p "$models"
    ninja -C "$build" switchyard_random_gguf >/dev/null
    # shellcheck disable=SC2086
    "$build/tests/backends/local/switchyard_random_gguf" \
      --tokenizer-from "$root/../shared/models/stories260K.gguf" --out "$models/$model" \
      ${RANDOM_ARGS:-}
  fi
fi
sy_port=18990
ls_port=18991
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

wait_ready() {  # URL
  for _ in $(seq 1 600); do
    curl -sf "$1" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "bench_local: $1 did not come up" >&2
  return 1
}

run_mix() {  # LABEL URL MODEL_NAME
  for c in $streams; do
    for p in $prompts; do
      python3 "$root/scripts/bench_load.py" --url "$2" --model "$3" --concurrency "$c" \
        --requests "$requests" --prompt "$p" --max-tokens "$max_tokens" --label "$1"
    done
  done
}

cat >"$work/switchyard.yaml" <<EOF
listeners: { http: 127.0.0.1:$sy_port, grpc: 127.0.0.1:0 }
auth: { allow_unauthenticated: true }
models: { dirs: ["$models"] }
targets:
  - { name: local, kind: local, model: $model, threads: $threads, slots: $slots,
      context: $context, max_tokens: $max_tokens }
policy:
  default: local
EOF
ninja -C "$build" switchyard >/dev/null
"$build/gateway/switchyard" serve --config "$work/switchyard.yaml" 2>"$work/switchyard.log" &
pids+=($!)
wait_ready "http://127.0.0.1:$sy_port/readyz"
run_mix switchyard "http://127.0.0.1:$sy_port" local
kill "${pids[-1]}"

if [[ "${SKIP_LLAMA_SERVER:-0}" != 1 ]]; then
  ls_build="$root/build-llama-server"
  cmake -G Ninja -S "$root/.deps/llama.cpp" -B "$ls_build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DGGML_NATIVE=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF \
    -DBUILD_SHARED_LIBS=OFF >/dev/null
  ninja -C "$ls_build" llama-server >/dev/null
  # --ctx-size is the total over all slots in llama-server; --parallel is the slot count.
  "$ls_build/bin/llama-server" -m "$models/$model" --host 127.0.0.1 --port "$ls_port" \
    --threads "$threads" --threads-batch "$threads" --parallel "$slots" \
    --ctx-size $((context * slots)) --batch-size 512 --cont-batching \
    >"$work/llama-server.log" 2>&1 &
  pids+=($!)
  wait_ready "http://127.0.0.1:$ls_port/health"
  run_mix llama-server "http://127.0.0.1:$ls_port" "$model"
fi

#!/usr/bin/env bash
# Side-by-side data-plane comparison of two builds (say main's and a branch's): what each gateway
# adds over the same mock, measured in alternating rounds so both see the same machine state.
# Each round starts one mock and, in turn (the order flips every round), each build's gateway on
# tests/load/bench.yaml, and runs the closed-loop unary and SSE runs of scripts/bench_gateway.sh
# (direct to the mock, then through the gateway over HTTP, or gRPC: PATHS) at concurrency 1, 16
# and 64. The mock and the load tool come from the first build for both sides.
# Usage: scripts/bench_compare.sh BUILD_A BUILD_B
# Environment: ROUNDS (default 3), DURATION (s per run, default 5), WARMUP (default 1),
# PROMPT_BYTES (default 1024), OUT (markdown report, default ./bench_compare.md; raw JSON next
# to it), PIN (a prefix for mock, gateways and load tool alike, e.g. "taskset -c 1" to put all
# three on one vCPU), GATEWAY_PIN and PEER_PIN (the same for the gateways alone, and for mock
# and load tool: "taskset -c 0" and "taskset -c 1" give the gateway a vCPU of its own),
# MODES (default "unary sse"), CONCURRENCY (default "1 16 64"), PATHS (the gateway's front ends
# to load: "http" by default, "grpc" or "http grpc"; each is measured against direct-to-mock).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[[ $# -eq 2 ]] || { echo "usage: $0 BUILD_A BUILD_B" >&2; exit 2; }
builds=("$(cd "$1" && pwd)" "$(cd "$2" && pwd)")
rounds="${ROUNDS:-3}"
duration="${DURATION:-5}"
warmup="${WARMUP:-1}"
prompt_bytes="${PROMPT_BYTES:-1024}"
pin="${PIN:-}"
gateway_pin="${GATEWAY_PIN:-$pin}"
peer_pin="${PEER_PIN:-$pin}"
modes="${MODES:-unary sse}"
concurrency="${CONCURRENCY:-1 16 64}"
paths="${PATHS:-http}"
out="${OUT:-$PWD/bench_compare.md}"
load="${builds[0]}/tests/load/switchyard_load"
mock_bin="${builds[0]}/tests/load/switchyard_load_mock"

work="$(mktemp -d)"
results="${out%.md}.jsonl"
: >"$results"
mock_pid="" gateway_pid=""
# shellcheck source=scripts/bench_common.sh
source "$root/scripts/bench_common.sh"
trap cleanup_gateway_and_mock EXIT

echo "bench_compare: load average at the start $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for round in $(seq "$rounds"); do
  order=(0 1)
  (( round % 2 == 0 )) && order=(1 0)
  # shellcheck disable=SC2086
  $peer_pin "$mock_bin" --port 0 --tokens 16 2>"$work/mock.err" &
  mock_pid=$!
  mock_port="$(wait_line "$work/mock.err" 'listening' | grep -oE '[0-9]+$')"
  sed "s|@MOCK_URL@|http://127.0.0.1:$mock_port/v1|g" "$root/tests/load/bench.yaml" \
    >"$work/bench.yaml"
  for index in "${order[@]}"; do
    side=$([[ $index == 0 ]] && echo a || echo b)
    : >"$work/gateway.err"
    # shellcheck disable=SC2086
    $gateway_pin "${builds[$index]}/gateway/switchyard" serve --config "$work/bench.yaml" \
      2>"$work/gateway.err" &
    gateway_pid=$!
    line="$(wait_line "$work/gateway.err" 'listening http=')"
    http_port="$(grep -oE 'http=[^ ]+' <<<"$line" | grep -oE '[0-9]+$')"
    grpc_port="$(grep -oE 'grpc=[^ ]+' <<<"$line" | grep -oE '[0-9]+$')"
    for mode in $modes; do
      flags=()
      [[ $mode == sse ]] && flags=(--stream)
      for c in $concurrency; do
        for kind in direct $paths; do
          case $kind in
            direct) target=(--http "http://127.0.0.1:$mock_port") ;;
            http) target=(--http "http://127.0.0.1:$http_port") ;;
            grpc) target=(--grpc "127.0.0.1:$grpc_port") ;;
            *) echo "bench_compare: unknown path '$kind' in PATHS" >&2; exit 2 ;;
          esac
          label="$side/$round/$mode/$kind/$c"
          echo "  $label" >&2
          # shellcheck disable=SC2086
          $peer_pin "$load" --json --label "$label" --watch "gateway=$gateway_pid" --watch "mock=$mock_pid" \
            "${target[@]}" --prompt-bytes "$prompt_bytes" --concurrency "$c" \
            --duration "$duration" --warmup "$warmup" --max-tokens 16 --expect-tokens 16 \
            "${flags[@]}" >>"$results" || true
        done
      done
    done
    stop_pid "$gateway_pid"
    gateway_pid=""
  done
  stop_pid "$mock_pid"
  mock_pid=""
done

python3 - "$results" "$out" "$rounds" "$duration" "${builds[0]}" "${builds[1]}" "$modes" \
  "$concurrency" "$paths" <<'PY'
import json, os, statistics, sys
results, out, rounds, duration, build_a, build_b, modes, concurrency, paths = sys.argv[1:]
runs = {}
for line in open(results):
    if line.strip():
        r = json.loads(line)
        runs[r["label"]] = r
def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None
def fmt(v):
    if v is None: return "—"
    return f"{v:,.0f} µs" if abs(v) >= 100 else f"{v:.1f} µs"
def added(side, rnd, mode, path, c, key, field):
    d, h = runs.get(f"{side}/{rnd}/{mode}/direct/{c}"), runs.get(f"{side}/{rnd}/{mode}/{path}/{c}")
    if not d or not h or h["ok"] == 0: return None
    return h[key][field] - d[key][field]
def cpu(side, rnd, mode, path, c):
    h = runs.get(f"{side}/{rnd}/{mode}/{path}/{c}")
    if not h or h["ok"] == 0: return None
    return h["cpu_s"]["gateway"] / h["ok"] * 1e6
def rps(side, rnd, mode, path, c):
    h = runs.get(f"{side}/{rnd}/{mode}/{path}/{c}")
    return h["rps"] if h else None
def errors(side, mode, path, c):
    return sum(runs.get(f"{side}/{r}/{mode}/{path}/{c}", {}).get("errors", 0) for r in rng)
rng = range(1, int(rounds) + 1)
pin = os.environ.get("PIN", "")
gateway_pin = os.environ.get("GATEWAY_PIN", pin)
peer_pin = os.environ.get("PEER_PIN", pin)
lines = [f"A = `{build_a}`, B = `{build_b}`; {rounds} alternated rounds of {duration} s runs; "
         + (f"mock, gateways and load tool all run under `{pin}`; "
            if pin and gateway_pin == pin and peer_pin == pin else "")
         + (f"gateways run under `{gateway_pin}`, mock and load tool under `{peer_pin}`; "
            if gateway_pin != peer_pin else "")
         + f"medians over rounds; load average at the end {os.getloadavg()[0]:.1f}.\n",
         "| run | concurrency | added p50 A → B | added p99 A → B | gateway CPU/request A → B | req/s A → B | errors A / B |",
         "| --- | --- | --- | --- | --- | --- | --- |"]
path_names = {"http": "HTTP", "grpc": "gRPC"}
for path, mode, key in ((p, m, k) for p in paths.split()
                        for m, k in (("unary", "latency"), ("sse", "ttft"))):
    if mode not in modes.split(): continue
    for c in (int(c) for c in concurrency.split()):
        cols = []
        for field in ("p50_us", "p99_us"):
            a = med([added("a", r, mode, path, c, key, field) for r in rng])
            b = med([added("b", r, mode, path, c, key, field) for r in rng])
            cols.append(f"{fmt(a)} → **{fmt(b)}**")
        a = med([cpu("a", r, mode, path, c) for r in rng])
        b = med([cpu("b", r, mode, path, c) for r in rng])
        cols.append(f"{fmt(a)} → **{fmt(b)}**")
        a = med([rps("a", r, mode, path, c) for r in rng])
        b = med([rps("b", r, mode, path, c) for r in rng])
        cols.append(f"{a:,.0f} → {b:,.0f}" if a and b else "—")
        cols.append(f"{errors('a', mode, path, c)} / {errors('b', mode, path, c)}")
        name = "unary (latency)" if mode == "unary" else "SSE (time to first token)"
        if paths.split() != ["http"]: name = f"{path_names[path]} {name}"
        lines.append(f"| {name} | {c} | " + " | ".join(cols) + " |")
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY

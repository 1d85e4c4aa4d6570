#!/usr/bin/env bash
# System calls, context switches and CPU the gateway spends per request, for each build, path
# (HTTP, gRPC) and concurrency: the kernel side that scripts/bench_instructions.sh leaves out.
# Thread hand-offs show here (a futex call or an epoll interrupt each, and a context switch),
# which timings on a shared 2-vCPU VM hide in their noise. For each build, path and concurrency
# it starts the gateway on tests/load/bench.yaml (busy polling off: a spinning thread makes
# extra epoll calls), warms it up, then counts with perf's syscall tracepoints on the gateway's
# process while the load tool sends REQUESTS requests (1 KiB prompt, 16 tokens, every detector
# on). CPU per request comes from /proc (10 ms ticks: use enough requests); perf's tracing adds
# a little to it, the same for every build.
# Usage: scripts/bench_syscalls.sh BUILD [BUILD...]   (the first build is the baseline)
# Environment: PATHS (default "http grpc"), CONCURRENCY (default "1 64"), REQUESTS (per run,
# default 10000 at concurrency 1 and 40000 above), ROUNDS (default 1; builds alternate within
# a round, the table shows medians), STREAM=1 (SSE instead of unary), OUT (markdown report,
# default ./bench_syscalls.md).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[[ $# -ge 1 ]] || { echo "usage: $0 BUILD [BUILD...]" >&2; exit 2; }
command -v perf >/dev/null || { echo "$0: needs perf (apt-get install linux-perf)" >&2; exit 2; }
builds=()
for build in "$@"; do builds+=("$(cd "$build" && pwd)"); done
paths="${PATHS:-http grpc}"
concurrency="${CONCURRENCY:-1 64}"
rounds="${ROUNDS:-1}"
out="${OUT:-$PWD/bench_syscalls.md}"
flags=()
[[ -n "${STREAM:-}" ]] && flags=(--stream)
load="${builds[0]}/tests/load/switchyard_load"
mock_bin="${builds[0]}/tests/load/switchyard_load_mock"
events="futex epoll_wait epoll_ctl sendmsg recvmsg recvfrom read write"
tracepoints="$(for e in $events; do printf 'syscalls:sys_enter_%s,' "$e"; done)context-switches"

work="$(mktemp -d)"
mock_pid="" gateway_pid=""
# shellcheck source=scripts/bench_common.sh
source "$root/scripts/bench_common.sh"
trap cleanup_gateway_and_mock EXIT

start_counting_mock "$mock_bin"

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# One run: prints "req/s cpu_us context_switches <one count per event>", per request.
measure() {  # build path concurrency
  local build="$1" path="$2" c="$3" requests target line
  requests="${REQUESTS:-$(( c == 1 ? 10000 : 40000 ))}"
  : >"$work/gateway.err"
  "$build/gateway/switchyard" serve --config "$work/bench.yaml" 2>"$work/gateway.err" &
  gateway_pid=$!
  line="$(wait_line "$work/gateway.err" 'listening http=' 300)"
  if [[ $path == grpc ]]; then
    target=(--grpc "127.0.0.1:$(grep -oE 'grpc=[^ ]+' <<<"$line" | grep -oE '[0-9]+$')")
  else
    target=(--http "http://127.0.0.1:$(grep -oE 'http=[^ ]+' <<<"$line" | grep -oE '[0-9]+$')")
  fi
  run_load() {
    "$load" "${target[@]}" --prompt-bytes 1024 --concurrency "$c" --requests "$1" \
      --max-tokens 16 --expect-tokens 16 "${flags[@]}"
  }
  run_load 1000 >/dev/null  # warm-up: connections, caches, first-use allocations
  local before after perf_pid
  perf stat -x, -e "$tracepoints" -p "$gateway_pid" -o "$work/perf.csv" &
  perf_pid=$!
  sleep 0.5  # perf attaches
  before="$(cpu_ticks "$gateway_pid")"
  run_load "$requests" >"$work/load.out"
  after="$(cpu_ticks "$gateway_pid")"
  kill -INT "$perf_pid"
  wait "$perf_pid" || true
  stop_pid "$gateway_pid"
  gateway_pid=""
  grep -q " $requests ok, 0 errors" "$work/load.out" || {
    echo "$0: the load run failed:" >&2; cat "$work/load.out" >&2; exit 1; }
  python3 - "$work/perf.csv" "$work/load.out" "$requests" "$before" "$after" "$events" <<'EOF'
import re, sys
perf, load, n, before, after, events = sys.argv[1:]
n = int(n)
counts = {}
for row in open(perf):
    cells = row.strip().split(",")
    if len(cells) > 2 and cells[0].replace(".", "").isdigit():
        counts[cells[2].replace("syscalls:sys_enter_", "")] = float(cells[0])
rps = float(re.search(r"= ([0-9.]+) req/s", open(load).read()).group(1))
cpu_us = (int(after) - int(before)) * 10000 / n  # 100 ticks per second
cells = [f"{rps:.0f}", f"{cpu_us:.1f}", f"{counts.get('context-switches', 0) / n:.2f}"]
cells += [f"{counts.get(e, 0) / n:.2f}" for e in events.split()]
print(" ".join(cells))
EOF
}

declare -A results
for round in $(seq "$rounds"); do
  for path in $paths; do
    for c in $concurrency; do
      for index in "${!builds[@]}"; do
        echo "  round $round, build $index, $path, concurrency $c" >&2
        results["$index/$path/$c"]+="$(measure "${builds[$index]}" "$path" "$c")"$'\n'
      done
    done
  done
done

{
  echo "Per request, gateway process only; $rounds round(s), medians; ${STREAM:+SSE, }1 KiB prompt," \
    "16 tokens, every detector on (tests/load/bench.yaml, busy polling off)."
  echo
  printf '| build | path | concurrency | req/s | CPU µs | context switches |'
  for e in $events; do printf ' %s |' "$e"; done
  echo
  printf '| --- | --- | --- | --- | --- | --- |'
  for _ in $events; do printf ' --- |'; done
  echo
  for path in $paths; do
    for c in $concurrency; do
      for index in "${!builds[@]}"; do
        median="$(python3 -c '
import statistics, sys
rows = [list(map(float, l.split())) for l in sys.stdin if l.strip()]
print(" | ".join(f"{statistics.median(col):g}" for col in zip(*rows)))' \
          <<<"${results[$index/$path/$c]}")"
        echo "| $index | $path | $c | $median |"
      done
    done
  done
  echo
  for index in "${!builds[@]}"; do echo "Build $index: \`${builds[$index]}\`"; done
} | tee "$out"

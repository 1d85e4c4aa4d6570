#!/usr/bin/env bash
# User-space instructions the gateway executes per request, counted by Valgrind's callgrind: a
# figure that does not move with the machine's load, so two builds can be compared on a shared VM
# where timings swing by 10% from run to run. For each build and mode (unary, then SSE), it starts
# the gateway under callgrind on tests/load/bench.yaml (busy polling off: a spinning thread would
# count its spins), warms it up, counts only while the load tool runs a closed loop at
# concurrency 1 (1 KiB prompt, 16 tokens), and divides the instructions of all the gateway's
# threads by the requests answered. Kernel work (system calls, TCP) is not counted.
# Usage: scripts/bench_instructions.sh BUILD [BUILD...]   (the first build is the baseline)
# Environment: DURATION (s counted per run, default 6), MODES (default "unary sse"), TOP (the
# number of functions to list for each run, default 0), OUT (markdown report, default
# ./bench_instructions.md; callgrind's files next to it).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[[ $# -ge 1 ]] || { echo "usage: $0 BUILD [BUILD...]" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "$0: needs valgrind (apt-get install valgrind)" >&2; exit 2; }
builds=()
for build in "$@"; do builds+=("$(cd "$build" && pwd)"); done
duration="${DURATION:-6}"
modes="${MODES:-unary sse}"
top="${TOP:-0}"
out="${OUT:-$PWD/bench_instructions.md}"
out_dir="$(dirname "$out")"
load="${builds[0]}/tests/load/switchyard_load"
mock_bin="${builds[0]}/tests/load/switchyard_load_mock"

work="$(mktemp -d)"
mock_pid="" gateway_pid=""
# shellcheck source=scripts/bench_common.sh
source "$root/scripts/bench_common.sh"
trap cleanup_gateway_and_mock EXIT

start_counting_mock "$mock_bin"

rows=()
declare -A baseline
for index in "${!builds[@]}"; do
  build="${builds[$index]}"
  for mode in $modes; do
    flags=()
    [[ $mode == sse ]] && flags=(--stream)
    profile="$out_dir/callgrind.$index.$mode"
    rm -f "$profile" "$profile".*
    : >"$work/gateway.err"
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$profile" \
      "$build/gateway/switchyard" serve --config "$work/bench.yaml" 2>"$work/gateway.err" &
    gateway_pid=$!
    line="$(wait_line "$work/gateway.err" 'listening http=' 300)"
    http_port="$(grep -oE 'http=[^ ]+' <<<"$line" | grep -oE '[0-9]+$')"
    run_load() {
      "$load" --http "http://127.0.0.1:$http_port" --prompt-bytes 1024 --concurrency 1 \
        --duration "$1" --warmup 0 --max-tokens 16 --expect-tokens 16 "${flags[@]}"
    }
    echo "  build $index ($build), $mode" >&2
    run_load 2 >/dev/null  # warm-up: connections, caches, first-use allocations
    callgrind_control --instr=on "$gateway_pid" >/dev/null 2>&1
    run_load "$duration" >"$work/load.out"
    callgrind_control --dump "$gateway_pid" >/dev/null 2>&1
    callgrind_control --instr=off "$gateway_pid" >/dev/null 2>&1
    stop_pid "$gateway_pid"
    gateway_pid=""
    requests="$(grep -oE '[0-9]+ ok' "$work/load.out" | grep -oE '[0-9]+' | head -1)"
    dumps=("$profile".*)  # the --dump above: "$profile.1"
    dump="${dumps[0]}"
    instructions="$(callgrind_annotate "$dump" |
      awk '/PROGRAM TOTALS/ && !seen { gsub(",", "", $1); print $1; seen = 1 }')"
    per=$(( instructions / requests ))
    [[ $index == 0 ]] && baseline[$mode]=$per
    cells="$(python3 -c "print(f'{$per:,} | {$per / ${baseline[$mode]}:.3f}')")"
    rows+=("| $index | \`$build\` | $mode | $requests | $cells |")
    if (( top > 0 )); then
      echo "build $index, $mode: top $top functions (instructions over the whole run)" >&2
      callgrind_annotate "$dump" | sed -n '/file:function/,$p' | sed -n "3,$(( top + 2 ))p" \
        | cut -c1-160 >&2
    fi
  done
done

{
  echo "User-space instructions per request (callgrind), concurrency 1, $duration s counted per run;" \
    "1 KiB prompt, 16 tokens, every detector on (tests/load/bench.yaml, busy polling off)."
  echo
  echo "| build | path | mode | requests | instructions per request | vs build 0 |"
  echo "| --- | --- | --- | --- | --- | --- |"
  printf '%s\n' "${rows[@]}"
} | tee "$out"

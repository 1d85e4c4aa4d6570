# Shell helpers shared by the benchmark scripts; sourced, not run.

# wait_line FILE REGEX [SECONDS]: waits up to SECONDS (default 30) for a line of FILE matching
# REGEX and prints it; on time out prints FILE to stderr and exits the calling script.
wait_line() {
  for _ in $(seq "$(( ${3:-30} * 10 ))"); do
    if grep -qE "$2" "$1" 2>/dev/null; then grep -E "$2" "$1" | head -1; return 0; fi
    sleep 0.1
  done
  echo "$(basename "$0"): timed out waiting for '$2' in $1:" >&2
  cat "$1" >&2
  exit 1
}

# stop_pid PID: stops a process the script started, and reaps it.
stop_pid() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# cleanup_gateway_and_mock: an EXIT trap for scripts that run one gateway ($gateway_pid) and one
# mock ($mock_pid) at a time, with their files in $work.
cleanup_gateway_and_mock() {
  [[ -n "$gateway_pid" ]] && stop_pid "$gateway_pid"
  [[ -n "$mock_pid" ]] && stop_pid "$mock_pid"
  rm -rf "$work"
}

# start_counting_mock MOCK_BIN: for the scripts that count work per request. Starts the load mock
# (16 tokens) as $mock_pid and writes $work/bench.yaml, tests/load/bench.yaml aimed at it with
# busy polling off (a spinning thread would add its spins to the counts). Needs $root and $work.
start_counting_mock() {
  "$1" --port 0 --tokens 16 2>"$work/mock.err" &
  mock_pid=$!
  local port
  port="$(wait_line "$work/mock.err" 'listening' | grep -oE '[0-9]+$')"
  sed -e "s|@MOCK_URL@|http://127.0.0.1:$port/v1|g" \
      -e 's/busy_poll_microseconds: [0-9]*/busy_poll_microseconds: 0/' \
      "$root/tests/load/bench.yaml" >"$work/bench.yaml"
}

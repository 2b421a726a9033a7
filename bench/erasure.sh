#!/usr/bin/env bash
# erasure-executor end to end: COUNT `closed` statuses (AccountStatusReported on <ns>.lethe.pdr.status.v1, one tenant
# each, 4 tenants with delete/scrub/disassociate/delete, 2 apps) published at RATE/s, fanned out by the release
# erasure-executor to three participants that all ack: profile-store (the release binary, holding a profile for
# every closed account: erasure-bench publishes the matching ProfileFetched first and waits until profile-store has
# announced every one as AccountHeld, i.e. committed) and two in-process ErasureKit participants inside erasure-bench.
# Latency per erasure = from just before the driver hands the status to its producer to when the driver reads the
# erasure's ErasureCompleted (<ns>.lethe.erasure.completed.v1), both on the driver's monotonic clock.
# Needs KAFKA_BOOTSTRAP_SERVERS (make bench-erasure starts the dev broker) and release builds of erasure-executor,
# profile-store and erasure-bench. PROFILE=1 records the executor's CPU profile over the run (perf) and prints where it
# went (bench/perf-report); perf's load is then in the figures. Stops only what it started. Last line:
#   erasure: <n> completed, p50 <ms> ms, p99 <ms> ms at <rate>/s, <c> ms CPU per erasure (executor)
#   (latency: closed published → ErasureCompleted read; CPU: the executor's, per erasure, over the run)
set -euo pipefail
cd "$(dirname -- "$0")/.."
COUNT="${COUNT:-10000}"
RATE="${RATE:-2000}"
PARTITIONS="${PARTITIONS:-12}"
TIMEOUT="${TIMEOUT:-600}" # s for all COUNT to complete after the first status
SWEEP_MS="${ERASURE_SWEEP_MILLISECONDS:-100}"
RESEND_SECONDS="${ERASURE_RESEND_SECONDS:-300}" # the production default: a re-send means a lost ack, not a slow one
B="${KAFKA_BOOTSTRAP_SERVERS:?KAFKA_BOOTSTRAP_SERVERS is not set}"
BENCH="${BENCH_BIN:-.build/release/erasure-bench}"
EXECUTOR="${EXECUTOR_BIN:-.build/release/erasure-executor}"
PROFILE_STORE="${PROFILE_STORE_BIN:-.build/release/profile-store}"
for binary in "$BENCH" "$EXECUTOR" "$PROFILE_STORE"; do
  [ -x "$binary" ] || {
    echo "bench-erasure: $binary is missing; run: swift build -c release --product $(basename "$binary")" >&2
    exit 1
  }
done

run="erasure-bench-$(date +%s%N)"
data="$(mktemp -d -t lethe-erasure-bench.XXXXXX)"
mkdir -p "$data/executor" "$data/profile-store"
executor_pid=""
store_pid=""
source bench/lib.sh
cleanup() {
  stop_pid "$executor_pid"
  stop_pid "$store_pid"
  if [ -n "${KEEP_DATA:-}" ]; then echo "bench-erasure: data and logs kept in $data" >&2; else rm -rf "$data"; fi
}
trap cleanup EXIT
fail() {
  echo "bench-erasure: FAILED: $*" >&2
  for log in "$data"/*.log; do
    [ -s "$log" ] && { echo "--- last lines of $(basename "$log")" >&2; tail -n 20 "$log" >&2; }
  done
  exit 1
}
wait_service() { # name pid port seconds
  local name="$1" pid="$2" port="$3" deadline=$((SECONDS + $4))
  until curl -fsS -o /dev/null "http://127.0.0.1:$port/health/ready" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || fail "$name exited before it was ready"
    [ "$SECONDS" -lt "$deadline" ] || fail "$name not ready on port $port within $4 s"
    sleep 0.2
  done
}

echo "bench-erasure: namespace $run, $COUNT statuses at $RATE/s, $PARTITIONS partitions, data in $data" >&2
"$BENCH" prepare "$B" "$run" "$COUNT" "$PARTITIONS" || fail "could not publish tenants and profiles"

store_port="$(free_port)"
KAFKA_BOOTSTRAP_SERVERS="$B" LETHE_DATA_DIR="$data/profile-store" HTTP_PORT="$store_port" \
  LETHE_TOPIC_NAMESPACE="$run" KAFKA_TOPIC_PARTITIONS="$PARTITIONS" LOG_LEVEL="${SERVICE_LOG_LEVEL:-warning}" \
  "$PROFILE_STORE" 2>"$data/profile-store.log" &
store_pid=$!
wait_service profile-store "$store_pid" "$store_port" 60
"$BENCH" wait-held "$B" "$run" "$COUNT" 180 "$store_pid" || fail "profile-store did not take the profiles"

executor_port="$(free_port)"
KAFKA_BOOTSTRAP_SERVERS="$B" LETHE_DATA_DIR="$data/executor" HTTP_PORT="$executor_port" \
  LETHE_TOPIC_NAMESPACE="$run" KAFKA_TOPIC_PARTITIONS="$PARTITIONS" LOG_LEVEL="${SERVICE_LOG_LEVEL:-warning}" \
  LETHE_AUDIT_KEY="$(secret)" LETHE_ADMIN_TOKEN="$(secret)" ERASURE_SWEEP_MILLISECONDS="$SWEEP_MS" \
  ERASURE_RESEND_SECONDS="$RESEND_SECONDS" ERASURE_STATE_RESTORE_SECONDS=30 \
  "$EXECUTOR" 2>"$data/executor.log" &
executor_pid=$!
wait_service erasure-executor "$executor_pid" "$executor_port" 60

perf_pid=""
if [ -n "${PROFILE:-}" ]; then # the executor's CPU profile over the whole run; perf's own load is in every figure then
  perf record -q -F 499 -g -p "$executor_pid" -o "$data/perf.data" 2>"$data/perf.log" &
  perf_pid=$!
  sleep 0.5
fi
BENCH_LATENCY_DIR="$data" "$BENCH" run "$B" "$run" "$COUNT" "$RATE" "$TIMEOUT" "$executor_pid" "$store_pid" >"$data/result.txt" \
  || fail "the run did not complete (see above)"
if [ -n "$perf_pid" ]; then
  kill -INT "$perf_pid" && wait "$perf_pid" || true
  bench/perf-report "$data/perf.data" "where the executor's CPU went over the run (PROFILE=1: perf ran, figures below include its load)" erasure_executor
fi
metrics="$(curl -fsS "http://127.0.0.1:$executor_port/metrics" 2>/dev/null || true)"
metric() { awk -v name="$1" '$1 == name { print $2; exit }' <<<"$metrics"; }
echo "executor: requested $(metric lethe_erasures_requested_total), completed $(metric lethe_erasures_completed_total), re-sent commands $(metric lethe_erasure_commands_resent_total), dead-lettered $(awk '$1 ~ /^lethe_dead_letters_total/ { n += $2 } END { print n + 0 }' <<<"$metrics"); sweep ${SWEEP_MS} ms, first re-send after ${RESEND_SECONDS} s"
bench/cdf-svg --title "closed published → ErasureCompleted read, $COUNT at $RATE/s" --out bench/erasure-latency.svg \
  "erasures=$data/erasure.txt"
cat "$data/result.txt"

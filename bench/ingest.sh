#!/usr/bin/env bash
# profile-store's ingest rate next to two references run in the same script on the same machine: bare SQLite (the
# service's own ProfileDatabase.ingest with the same schema, upsert and outbox, at the service's mean batch size, no
# Kafka: `profile-store ingest-baseline`) and kcat consuming the same topic from the same broker.
# COUNT ProfileFetched are produced beforehand (distinct accounts); profile-store (release build) then starts on an
# empty SQLite file, and the clock runs from the first profile committed in SQLite to the last, counting only the
# profiles committed after the first observation (the first batch's transaction ran before the clock started; the
# group join at start, about 3 s on the dev broker, is reported separately). Its mean batch comes from its metrics
# (lethe_profiles_applied_total / lethe_profile_batches_total); the baseline then stores COUNT profiles in batches of
# that size in a fresh file, timed the same way. kcat consumes the whole topic once.
# Also reported: how long the outbox relay needs after the last commit to publish every AccountHeld (the clock does
# not wait for it, but a relay that falls behind shows here), and the service's CPU time per profile, which moves
# less than wall-clock rates when other work shares the machine.
# Needs KAFKA_BOOTSTRAP_SERVERS (make bench-ingest starts the dev broker) and release builds of profile-store and
# ingest-bench. PROFILE=1 records profile-store's CPU profile from its start to the last commit (perf) and prints where
# it went (bench/perf-report); perf's load is then in the figures. Last line:
#   ingest: <r> profiles/s committed, ratio <q> to bare SQLite (<b>/s), ratio <k> to kcat consume
set -euo pipefail
cd "$(dirname -- "$0")/.."
COUNT="${COUNT:-100000}"
PARTITIONS="${PARTITIONS:-12}"
B="${KAFKA_BOOTSTRAP_SERVERS:?KAFKA_BOOTSTRAP_SERVERS is not set}"
BENCH="${BENCH_BIN:-.build/release/ingest-bench}"
SERVICE="${SERVICE_BIN:-.build/release/profile-store}"
for binary in "$BENCH" "$SERVICE"; do
  [ -x "$binary" ] || {
    echo "bench: $binary is missing; run: swift build -c release --product $(basename "$binary")" >&2
    exit 1
  }
done

run="bench-$(date +%s%N)"
topic="$run.lethe.profiles.v1"
data="$(mktemp -d)"
service_pid=""
cleanup() {
  if [ -n "$service_pid" ]; then kill "$service_pid" 2>/dev/null || true; wait "$service_pid" 2>/dev/null || true; fi
  rm -rf "$data"
}
trap cleanup EXIT
source bench/lib.sh

"$BENCH" produce "$B" "$topic" "$COUNT" "$PARTITIONS" >&2

start=$(now)
got=$(kcat -C -b "$B" -t "$topic" -o beginning -e -q -f '.\n' | wc -l)
kcat_seconds=$(python3 -c "print($(now) - $start)")
[ "$got" -eq "$COUNT" ] || { echo "bench: kcat consumed $got of $COUNT" >&2; exit 1; }

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
launched=$(now)
KAFKA_BOOTSTRAP_SERVERS="$B" LETHE_DATA_DIR="$data" HTTP_PORT="$port" LETHE_TOPIC_NAMESPACE="$run" \
  KAFKA_TOPIC_PARTITIONS="$PARTITIONS" LOG_LEVEL="${SERVICE_LOG_LEVEL:-warning}" "$SERVICE" 2>"${SERVICE_LOG:-$data/service.log}" &
service_pid=$!
perf_pid=""
if [ -n "${PROFILE:-}" ]; then
  perf record -q -F 499 -g -p "$service_pid" -o "$data/perf.data" 2>"$data/perf.log" &
  perf_pid=$!
fi
read -r _ first _ first_count _ last _ drained _ rss _ cpu_last _ cpu_drained _ announced < <(
  "$BENCH" wait "$data/profile-store.sqlite" "$COUNT" "$service_pid" 300)
if [ -n "$perf_pid" ]; then
  kill -INT "$perf_pid" && wait "$perf_pid" || true
  bench/perf-report "$data/perf.data" "where profile-store's CPU went (PROFILE=1: perf ran, figures below include its load)" profile_store
fi
metrics="$(curl -fsS "http://127.0.0.1:$port/metrics")" || { echo "bench: cannot read profile-store's metrics" >&2; exit 1; }
metric() { awk -v name="$1" '$1 == name { print $2; exit }' <<<"$metrics"; }
applied="$(metric lethe_profiles_applied_total)"
batches="$(metric lethe_profile_batches_total)"
[ -n "$applied" ] && [ -n "$batches" ] && [ "${batches%.*}" -gt 0 ] \
  || { echo "bench: profile-store's metrics lack lethe_profiles_applied_total or lethe_profile_batches_total" >&2; exit 1; }
batch=$(python3 -c "print(max(1, round($applied / $batches)))")
kill "$service_pid" 2>/dev/null || true
wait "$service_pid" 2>/dev/null || true
service_pid=""
read -r _ baseline_rate _ < <("$SERVICE" ingest-baseline "$data/baseline" "$COUNT" "$batch")

python3 -c "
count, launched, first, last, drained, kcat, rss = $COUNT, $launched, $first, $last, $drained, $kcat_seconds, $rss
first_count, cpu_last, cpu_drained, announced = $first_count, $cpu_last, $cpu_drained, $announced
batch, baseline = $batch, $baseline_rate
# The first batch was committed before the clock started: only what was committed after it counts.
ingest = (count - first_count) / max(last - first, 1e-9)
kcat_rate = count / kcat
print(f'start-up (process start to first commit, includes the group join): {first - launched:.2f} s; '
      f'overall from process start: {count / (last - launched):.0f} profiles/s; peak RSS {rss / 1024:.0f} MiB')
print(f'relay: AccountHeld of {announced} accounts published {drained - last:.2f} s after the last commit '
      f'({(count - first_count) / max(drained - first, 1e-9):.0f} profiles/s stored and announced); service CPU '
      f'{cpu_last * 1e6 / count:.0f} us/profile to the last commit, {cpu_drained * 1e6 / count:.0f} with the relay')
print(f'bare SQLite (profile-store ingest-baseline, batches of {batch}, the service\'s mean): {baseline:.0f} profiles/s; '
      f'kcat consume {kcat_rate:.0f} msg/s')
print(f'ingest: {ingest:.0f} profiles/s committed, ratio {ingest / baseline:.2f} to bare SQLite ({baseline:.0f}/s), '
      f'ratio {ingest / kcat_rate:.2f} to kcat consume')
"

#!/usr/bin/env bash
# profile-store ingest throughput next to kcat consuming the same topic, in the same run, on the same broker.
# COUNT ProfileFetched are produced beforehand (distinct accounts); profile-store (release build) then starts on an
# empty SQLite file, and the clock runs from the first profile committed in SQLite to the last, counting only the
# profiles committed after the first observation (the first batch's transaction ran before the clock started; the
# group join at start, about 3 s on the dev broker, is reported separately). kcat consumes the whole topic once for
# comparison.
# Also reported: how long the outbox relay needs after the last commit to publish every AccountHeld (the clock does
# not wait for it, but a relay that falls behind shows here), and the service's CPU time per profile, which moves
# less than wall-clock rates when other work shares the machine.
# Needs KAFKA_BOOTSTRAP_SERVERS (make bench-ingest starts the dev broker) and release builds of profile-store and
# ingest-bench. Last line: ingest: <n> profiles/s committed (kcat consume <k> msg/s, ratio <r>)
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
now() { date +%s.%N; }

"$BENCH" produce "$B" "$topic" "$COUNT" "$PARTITIONS" >&2

start=$(now)
got=$(kcat -C -b "$B" -t "$topic" -o beginning -e -q -f '.\n' | wc -l)
kcat_seconds=$(python3 -c "print($(now) - $start)")
[ "$got" -eq "$COUNT" ] || { echo "bench: kcat consumed $got of $COUNT" >&2; exit 1; }

launched=$(now)
KAFKA_BOOTSTRAP_SERVERS="$B" LETHE_DATA_DIR="$data" HTTP_PORT=0 LETHE_TOPIC_NAMESPACE="$run" \
  KAFKA_TOPIC_PARTITIONS="$PARTITIONS" LOG_LEVEL="${SERVICE_LOG_LEVEL:-warning}" "$SERVICE" 2>"${SERVICE_LOG:-$data/service.log}" &
service_pid=$!
read -r _ first _ first_count _ last _ drained _ rss _ cpu_last _ cpu_drained _ announced < <(
  "$BENCH" wait "$data/profile-store.sqlite" "$COUNT" "$service_pid" 300)

python3 -c "
count, launched, first, last, drained, kcat, rss = $COUNT, $launched, $first, $last, $drained, $kcat_seconds, $rss
first_count, cpu_last, cpu_drained, announced = $first_count, $cpu_last, $cpu_drained, $announced
# The first batch was committed before the clock started: only what was committed after it counts.
ingest = (count - first_count) / max(last - first, 1e-9)
kcat_rate = count / kcat
print(f'start-up (process start to first commit, includes the group join): {first - launched:.2f} s; '
      f'overall from process start: {count / (last - launched):.0f} profiles/s; peak RSS {rss / 1024:.0f} MiB')
print(f'relay: AccountHeld of {announced} accounts published {drained - last:.2f} s after the last commit '
      f'({(count - first_count) / max(drained - first, 1e-9):.0f} profiles/s stored and announced); service CPU '
      f'{cpu_last * 1e6 / count:.0f} us/profile to the last commit, {cpu_drained * 1e6 / count:.0f} with the relay')
print(f'ingest: {ingest:.0f} profiles/s committed (kcat consume {kcat_rate:.0f} msg/s, ratio {ingest / kcat_rate:.2f})')
"

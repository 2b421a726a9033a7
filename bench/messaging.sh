#!/usr/bin/env bash
# Messaging throughput next to kcat on the same broker, in the same run: produce and consume COUNT messages of about
# SIZE bytes, ROUNDS rounds, medians. Both sides use one partition, acks=all, idempotence and linger.ms=5, and both
# times include connecting. Needs KAFKA_BOOTSTRAP_SERVERS (make bench-messaging starts the dev broker) and a release
# build of messaging-bench.
set -euo pipefail
cd "$(dirname -- "$0")/.."
COUNT="${COUNT:-200000}"
SIZE="${SIZE:-200}"
ROUNDS="${ROUNDS:-5}"
B="${KAFKA_BOOTSTRAP_SERVERS:?KAFKA_BOOTSTRAP_SERVERS is not set}"
BENCH="${BENCH_BIN:-.build/release/messaging-bench}"
[ -x "$BENCH" ] || { echo "bench: $BENCH is missing; run: swift build -c release --product messaging-bench" >&2; exit 1; }

payloads="$(mktemp)"
trap 'rm -f "$payloads"' EXIT
python3 -c "import sys; line='x'*$((SIZE - 1)) + '\n'; sys.stdout.write(line * $COUNT)" > "$payloads"
KCAT_SETTINGS=(-X acks=all -X enable.idempotence=true -X linger.ms=5)

source bench/lib.sh
rates=()
for round in $(seq 1 "$ROUNDS"); do
  run="bench-$(date +%s%N)"
  "$BENCH" create "$B" "$run-lethe" 1
  "$BENCH" create "$B" "$run-kcat" 1

  lethe_produce=$("$BENCH" produce "$B" "$run-lethe" "$COUNT" "$SIZE" | awk '{print $3}')
  start=$(now)
  kcat -P -b "$B" -t "$run-kcat" -p 0 "${KCAT_SETTINGS[@]}" -l "$payloads"
  kcat_produce=$(python3 -c "print($(now) - $start)")

  lethe_consume=$("$BENCH" consume "$B" "$run-lethe" "$COUNT" | awk '{print $3}')
  start=$(now)
  got=$(kcat -C -b "$B" -t "$run-lethe" -p 0 -o beginning -e -q -f '.\n' | wc -l)
  kcat_consume=$(python3 -c "print($(now) - $start)")
  [ "$got" -eq "$COUNT" ] || { echo "bench: kcat consumed $got of $COUNT" >&2; exit 1; }

  echo "round $round: produce lethe ${lethe_produce}s kcat ${kcat_produce}s; consume lethe ${lethe_consume}s kcat ${kcat_consume}s" >&2
  rates+=("$lethe_produce $kcat_produce $lethe_consume $kcat_consume")
done

printf '%s\n' "${rates[@]}" | python3 -c "
import statistics, sys
rows = [list(map(float, line.split())) for line in sys.stdin if line.strip()]
count = $COUNT
median = [statistics.median(count / row[i] for row in rows) for i in range(4)]
lp, kp, lc, kc = median
print(f'messaging: produce {lp:.0f} msg/s (kcat {kp:.0f} msg/s, ratio {lp / kp:.2f}), '
      f'consume {lc:.0f} msg/s (kcat {kc:.0f} msg/s, ratio {lc / kc:.2f})')
"

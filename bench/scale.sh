#!/usr/bin/env bash
# How Lethe's throughput goes with 1, 2 and 3 replicas of a service, in one run on one broker, and how long a
# reporter takes to restore a partition of RESTORE_COUNT (100,000) accounts. Three parts, each on a topic namespace
# of its own:
#
# - Reporting, for each replica count r: ACCOUNTS AccountHeld over 3 apps on a PARTITIONS-partition accounts topic,
#   r pdr-reporters (release) in one group, each with its own data directory (as they run: the registry is a
#   per-replica cache of the partitions Kafka assigned it). While they ingest, the sandbox answers every PDR call 429
#   (Retry-After 1 s); once the r registries hold every account and every account is due (its first due time,
#   first seen + spread × CYCLE, has passed), the hold lifts and the reporters report as fast as they can
#   (PDR_REQUEST_INTERVAL_MS=1: the machine bounds them, not their pacing). Throughput = accounts in the calls the
#   sandbox accepted after the lift ÷ the time from the first to the last of those calls (the sandbox's call log;
#   CYCLE is long enough that no account comes due twice in that time, which the analysis checks).
# - Erasure, for each replica count r: ERASURES `closed` statuses published at once (ERASURE_RATE/s) through r
#   erasure-executors and r profile-stores (each on a data directory of its own, owning a share of the partitions)
#   and erasure-bench's two in-process participants (bench/erasure.sh describes the data set). Throughput = ERASURES
#   ÷ (first status published → last ErasureCompleted read). erasure-bench's CPU figures are the first executor's and
#   the first profile-store's.
# - Restore: RESTORE_COUNT AccountHeld and their AccountReported changelog on one partition; one reporter starts on
#   an empty data directory. Printed: the changelog restore (the reporter's own pdr.restore_time) and the time from
#   the assignment until its registry holds every account with its last report (the restore of the partition).
#
# - Executor restore: EXECUTOR_RESTORE_COUNT (100,000) erasures of erasure-executor's changelog read back into an
#   empty file (printed before the last line, which the issue fixes).
#
# Each part prints the machine's busy share: on 2 shared cores the broker, the sandbox and every replica compete for
# the same cores, so more replicas cannot add throughput once the machine is busy — the ratios say how much the code
# lets replicas add, the busy share says whether the box let them. Needs KAFKA_BOOTSTRAP_SERVERS (make bench-scale
# starts the dev broker) and release builds (see BIN). REPLICAS (default "1 2 3") picks the counts; KEEP_DATA=1
# keeps logs and data. Stops only what it started. About 10 minutes with the defaults. Last line:
#   scale: erasure <a>/<b>/<c> per s, reporting <x>/<y>/<z> accounts per s with 1/2/3 replicas, restore 100k in <r> s
set -euo pipefail
cd "$(dirname -- "$0")/.."
source bench/lib.sh
REPLICAS="${REPLICAS:-1 2 3}"
ACCOUNTS="${ACCOUNTS:-60000}"
PARTITIONS="${PARTITIONS:-6}"
CYCLE="${PDR_CYCLE_SECONDS:-90}"
ERASURES="${ERASURES:-10000}"
ERASURE_RATE="${ERASURE_RATE:-20000}"
RESTORE_COUNT="${RESTORE_COUNT:-100000}"
EXECUTOR_RESTORE_COUNT="${EXECUTOR_RESTORE_COUNT:-100000}"
APPS=3
B="${KAFKA_BOOTSTRAP_SERVERS:?KAFKA_BOOTSTRAP_SERVERS is not set}"
BIN="${BIN_DIR:-.build/release}"
require_built "$BIN" atlassian-sandbox oauth-gateway pdr-reporter pdr-bench erasure-executor profile-store erasure-bench

bench_workspace scale
fail() {
  echo "bench-scale: FAILED: $*" >&2
  for log in $(ls -t "$data"/*.log 2>/dev/null | head -n 3); do
    echo "--- last lines of $(basename "$log")" >&2; tail -n 20 "$log" >&2
  done
  exit 1
}
note() { echo "bench-scale: $*" >&2; }
# launch LOG VAR=value... BINARY: starts BINARY with those variables in the background; its pid in $launched.
launch() {
  local log="$1"; shift
  env "$@" >"$log" 2>&1 &
  launched=$!
  pids+=("$launched")
}
# stop_group PID...: stops those processes and forgets them.
stop_group() {
  local pid kept=()
  for pid in "$@"; do stop_pid "$pid"; done
  for pid in "${pids[@]}"; do [[ " $* " == *" $pid "* ]] || kept+=("$pid"); done
  pids=("${kept[@]}")
}
# wait_active SECONDS PORT...: the index (0-based) of the first port whose /health/ready answers 200 — the active
# replica of a leased service (its standbys answer 503) — within SECONDS.
# wait_all_ready SECONDS PORT...: returns once every port's /health/ready answers 200 (replicas that share the work).
wait_all_ready() {
  local deadline=$((SECONDS + $1)) port; shift
  for port in "$@"; do
    until curl -fsS -o /dev/null "http://127.0.0.1:$port/health/ready" 2>/dev/null; do
      [ "$SECONDS" -lt "$deadline" ] || return 1
      sleep 0.2
    done
  done
}

wait_active() {
  local deadline=$((SECONDS + $1)) index port; shift
  while [ "$SECONDS" -lt "$deadline" ]; do
    index=0
    for port in "$@"; do
      curl -fsS -o /dev/null "http://127.0.0.1:$port/health/ready" 2>/dev/null && { echo "$index"; return 0; }
      index=$((index + 1))
    done
    sleep 0.2
  done
  return 1
}

run="scale-bench-$(date +%s%N)"
sandbox_port=$(free_port); gateway_port=$(free_port); gateway_internal_port=$(free_port)
sandbox="http://127.0.0.1:$sandbox_port"
gateway="http://127.0.0.1:$gateway_port"
gateway_internal="http://127.0.0.1:$gateway_internal_port"
admin="bench-admin-$(secret)"
internal="bench-internal-$(secret)"
mkdir -p "$data/gateway"
note "namespace $run, data in $data"

# The sandbox (no request-count limit; Cycle-Period = the reporters' cycle) and the gateway that holds the apps' grants.
launch "$data/sandbox.log" HTTP_PORT="$sandbox_port" SANDBOX_RATE_LIMIT=0 SANDBOX_CYCLE_PERIOD_SECONDS="$CYCLE" \
  LOG_LEVEL=warning "$BIN/atlassian-sandbox"
launch "$data/gateway.log" KAFKA_BOOTSTRAP_SERVERS="$B" LETHE_DATA_DIR="$data/gateway" HTTP_PORT="$gateway_port" \
  LETHE_GATEWAY_URL="$gateway" HTTP_INTERNAL_PORT="$gateway_internal_port" LETHE_TOPIC_NAMESPACE="$run" \
  ATLASSIAN_AUTH_URL="$sandbox" ATLASSIAN_API_URL="$sandbox" LETHE_ADMIN_TOKEN="$admin" LETHE_INTERNAL_TOKEN="$internal" \
  LETHE_MASTER_KEY="$(openssl rand -base64 32)" LOG_LEVEL=warning "$BIN/oauth-gateway"
wait_active 60 "$sandbox_port" >/dev/null || fail "the sandbox did not become ready"
wait_active 60 "$gateway_port" >/dev/null || fail "the gateway did not become ready"
"$BIN/pdr-bench" setup "$gateway" "$gateway_internal" "$sandbox" "$admin" "$internal" "$APPS" >"$data/apps" \
  || fail "setting up the apps failed"
app_tenants=$(awk '{printf "%s%s:%s", (NR>1?",":""), $1, $2}' "$data/apps")
app_ids=$(awk '{printf "%s%s", (NR>1?",":""), $1}' "$data/apps")
faults() { # the sandbox's PDR fault rule: "" for none, else one fault for every report-accounts call
  curl -fsS -o /dev/null -XDELETE "$sandbox/_sandbox/faults" || fail "cannot clear the sandbox's faults"
  [ -z "$1" ] || curl -fsS -o /dev/null -XPOST -H 'content-type: application/json' "$sandbox/_sandbox/faults" \
    -d "{\"endpoint\":\"report-accounts\",\"random\":[{\"probability\":1.0,\"fault\":$1}]}" \
    || fail "cannot set the sandbox's fault rule"
}
faults ""

# start_reporter LOG DATA_DIR NAMESPACE PARTITIONS CYCLE [VAR=value...]: one pdr-reporter; pid in $launched.
start_reporter() {
  local log="$1" dir="$2" ns="$3" partitions="$4" cycle="$5"; shift 5
  mkdir -p "$dir"
  launch "$log" KAFKA_BOOTSTRAP_SERVERS="$B" LETHE_DATA_DIR="$dir" HTTP_PORT="$(free_port)" LETHE_TOPIC_NAMESPACE="$ns" \
    KAFKA_TOPIC_PARTITIONS="$partitions" PDR_CYCLE_SECONDS="$cycle" LETHE_GATEWAY_INTERNAL_URL="$gateway_internal" \
    LETHE_INTERNAL_TOKEN="$internal" LETHE_ADMIN_TOKEN="$admin" ATLASSIAN_AUTH_URL="$sandbox" \
    ATLASSIAN_API_URL="$sandbox" "$@" "$BIN/pdr-reporter"
}

# registries MODE COUNT TIMEOUT PID... -- FILE...: polls the reporters' SQLite registries (read-only).
#   held: until together they hold COUNT accounts, unchanged for 3 s; prints when the last of them is due (epoch
#         seconds; before its first report an account's next due time is its first due time).
#   complete: until they hold COUNT accounts, each with a last report; prints the seconds that took.
registries() {
  python3 - "$@" <<'PY'
import os, sqlite3, sys, time
mode, count, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
split = sys.argv.index("--")
pids, files = sys.argv[4:split], sys.argv[split + 1:]
start, stable_since, last, last_note = time.time(), None, None, 0.0
def read():
    held = reported = 0
    due = 0.0
    for path in files:
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
            h, r, d = db.execute("SELECT COUNT(*), COALESCE(SUM(last_reported_at IS NOT NULL), 0), "
                                 "COALESCE(MAX(next_due_at), 0) FROM pdr_accounts").fetchone()
            db.close()
            held, reported, due = held + h, reported + r, max(due, d)
        except sqlite3.Error:
            pass
    return held, reported, due
while time.time() - start < timeout:
    for pid in pids:
        if not os.path.exists(f"/proc/{pid}"): sys.exit(f"bench-scale: pdr-reporter {pid} exited")
    held, reported, due = read()
    if mode == "held" and held == count:
        if last != (held, due): stable_since, last = time.time(), (held, due)
        elif time.time() - stable_since >= 3: print(f"{due + 978307200:.3f}"); sys.exit(0)
    if mode == "complete" and held == count and reported == count:
        print(f"{time.time() - start:.3f}"); sys.exit(0)
    if time.time() - last_note >= 15:
        last_note = time.time()
        print(f"bench-scale: {time.time() - start:.0f} s: {held} accounts held, {reported} reported", file=sys.stderr)
    time.sleep(0.2)
sys.exit(f"bench-scale: timed out after {timeout:.0f} s ({mode}: {held} held, {reported} reported of {count})")
PY
}

# reporting REPLICAS: the reporting part with that many reporters; prints accounts per second.
reporting() {
  local r="$1" ns="$run-report-$1" group=() files=() i
  "$BIN/pdr-bench" produce "$B" "$ns.lethe.pdr.accounts.v1" "$ACCOUNTS" "$PARTITIONS" "$app_tenants" >/dev/null \
    || fail "producing AccountHeld failed"
  faults '{"kind":"429","retryAfter":1}'
  for i in $(seq 1 "$r"); do
    start_reporter "$data/$ns-$i.log" "$data/$ns-$i" "$ns" "$PARTITIONS" "$CYCLE" PDR_ALLOW_SHORT_CYCLE=1 \
      PDR_REQUEST_INTERVAL_MS=1 LOG_LEVEL=warning
    group+=("$launched"); files+=("$data/$ns-$i/pdr-reporter.sqlite")
  done
  local due
  due=$(registries held "$ACCOUNTS" 300 "${group[@]}" -- "${files[@]}") || fail "the $r reporters did not ingest every account"
  local wait
  wait=$(python3 -c "import time; print(max(0.0, $due + 1 - time.time()))")
  note "reporting, $r replica(s): $ACCOUNTS accounts held; every one due in ${wait%.*} s, then the hold lifts"
  sleep "$wait"
  local lifted busy
  lifted=$(now); busy=$(machine_jiffies)
  faults ""
  registries complete "$ACCOUNTS" "$((CYCLE - 5))" "${group[@]}" -- "${files[@]}" >/dev/null \
    || fail "the $r reporters did not report every account within the cycle"
  note "reporting, $r replica(s): machine busy $(machine_busy_percent "$busy") %"
  stop_group "${group[@]}"
  local calls="$data/$ns-calls.json"
  python3 - "$sandbox" "$app_ids" "$lifted" "$ACCOUNTS" "$r" <<'PY' || fail "the call-log analysis failed"
import datetime, json, sys, urllib.request
sandbox, apps, lifted, count, replicas = sys.argv[1], sys.argv[2].split(","), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
def at(call): return datetime.datetime.fromisoformat(call["time"].replace("Z", "+00:00")).timestamp()
ok, reports = [], 0
for app in apps:
    calls = json.load(urllib.request.urlopen(f"{sandbox}/_sandbox/calls?clientId={app}"))["calls"]
    for call in calls:
        if call["status"] in (200, 204) and at(call) >= lifted:
            ok.append(at(call))
            reports += len(call["accounts"])
if reports != count:
    sys.exit(f"bench-scale: {reports} account reports after the lift, expected {count} (each account once)")
span = max(ok) - min(ok)
print(f"bench-scale: reporting, {replicas} replica(s): {count} accounts in {len(ok)} calls over {span:.2f} s", file=sys.stderr)
print(f"{count / span:.0f}")
PY
}

# erasure REPLICAS: the erasure part with that many executors and profile-stores; prints erasures per second.
erasure() {
  local r="$1" ns="$run-erasure-$1" group=() store_ports=() store_pids=() executor_ports=() executor_pids=() i port
  "$BIN/erasure-bench" prepare "$B" "$ns" "$ERASURES" "$PARTITIONS" || fail "could not publish tenants and profiles"
  for i in $(seq 1 "$r"); do
    port=$(free_port)
    mkdir -p "$data/$ns-store-$i"
    launch "$data/$ns-store-$i.log" KAFKA_BOOTSTRAP_SERVERS="$B" LETHE_DATA_DIR="$data/$ns-store-$i" \
      HTTP_PORT="$port" LETHE_TOPIC_NAMESPACE="$ns" KAFKA_TOPIC_PARTITIONS="$PARTITIONS" LOG_LEVEL=warning \
      "$BIN/profile-store"
    store_ports+=("$port"); store_pids+=("$launched")
  done
  wait_all_ready 90 "${store_ports[@]}" || fail "not every profile-store became ready"
  local store_pid="${store_pids[0]}"
  "$BIN/erasure-bench" wait-held "$B" "$ns" "$ERASURES" 180 "$store_pid" || fail "profile-store did not take the profiles"
  local audit_key admin_token
  audit_key=$(secret); admin_token=$(secret)
  for i in $(seq 1 "$r"); do
    port=$(free_port)
    mkdir -p "$data/$ns-executor-$i"
    launch "$data/$ns-executor-$i.log" KAFKA_BOOTSTRAP_SERVERS="$B" LETHE_DATA_DIR="$data/$ns-executor-$i" \
      HTTP_PORT="$port" LETHE_TOPIC_NAMESPACE="$ns" KAFKA_TOPIC_PARTITIONS="$PARTITIONS" LOG_LEVEL=warning \
      LETHE_AUDIT_KEY="$audit_key" LETHE_ADMIN_TOKEN="$admin_token" ERASURE_SWEEP_MILLISECONDS=100 \
      ERASURE_RESEND_SECONDS=300 ERASURE_STATE_RESTORE_SECONDS=30 "$BIN/erasure-executor"
    executor_ports+=("$port"); executor_pids+=("$launched")
  done
  wait_all_ready 90 "${executor_ports[@]}" || fail "not every erasure-executor became ready"
  local busy
  busy=$(machine_jiffies)
  "$BIN/erasure-bench" run "$B" "$ns" "$ERASURES" "$ERASURE_RATE" 600 "${executor_pids[0]}" "$store_pid" \
    >"$data/$ns-result.txt" || fail "the erasure run with $r replica(s) did not complete"
  note "erasure, $r replica(s): machine busy $(machine_busy_percent "$busy") %; $(grep '^erasure:' "$data/$ns-result.txt")"
  stop_group "${store_pids[@]}" "${executor_pids[@]}"
  awk '/^completed at/ { print $3; exit }' "$data/$ns-result.txt"
}

reporting_rates=() erasure_rates=()
for r in $REPLICAS; do reporting_rates+=("$(reporting "$r")"); done
for r in $REPLICAS; do erasure_rates+=("$(erasure "$r")"); done

# The restore: RESTORE_COUNT accounts and their changelog on one partition, one reporter on an empty directory. A
# production cycle (a day) and next reports a day away: nothing is due, the reporter only restores.
ns="$run-restore"
"$BIN/pdr-bench" produce "$B" "$ns.lethe.pdr.accounts.v1" "$RESTORE_COUNT" 1 "$app_tenants" >/dev/null \
  || fail "producing AccountHeld for the restore failed"
"$BIN/pdr-bench" produce-reported "$B" "$ns.lethe.pdr.reports.v1" "$RESTORE_COUNT" 1 "$app_tenants" 86400 >/dev/null \
  || fail "producing the changelog for the restore failed"
restore_started=$(now)
start_reporter "$data/$ns.log" "$data/$ns" "$ns" 1 86400 LOG_LEVEL=info
restore_pid="$launched"
# Polls the log for the restore's line (every 50 ms: the assignment is that moment minus the restore time the line
# carries) and then the registry until it holds every account with its last report.
read -r changelog_seconds partition_seconds since_start < <(python3 - "$data/$ns.log" "$data/$ns/pdr-reporter.sqlite" \
  "$RESTORE_COUNT" "$restore_pid" "$restore_started" <<'PY'
import os, re, sqlite3, sys, time
log, path, count, pid, started = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], float(sys.argv[5])
marker = "partitions assigned; changelog restored"
deadline = time.time() + 600
def alive():
    if not os.path.exists(f"/proc/{pid}"): sys.exit("bench-scale: the restoring reporter exited")
while time.time() < deadline:
    alive()
    line = next((l for l in open(log).read().splitlines() if marker in l), None)
    if line: break
    time.sleep(0.05)
else:
    sys.exit("bench-scale: the reporter never logged its restore")
seen = time.time()
m = re.search(r"pdr\.restore_time=([0-9.e+-]+) (seconds|milliseconds)", line)
restore = float(m.group(1)) / (1000 if m.group(2) == "milliseconds" else 1)
assigned = seen - restore
while time.time() < deadline:
    alive()
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        held, reported = db.execute("SELECT COUNT(*), COALESCE(SUM(last_reported_at IS NOT NULL), 0) FROM pdr_accounts").fetchone()
        db.close()
        if held == count and reported == count:
            done = time.time()
            print(f"{restore:.2f} {done - assigned:.2f} {done - started:.2f}"); sys.exit(0)
    except sqlite3.Error:
        pass
    time.sleep(0.05)
sys.exit("bench-scale: the restored registry never held every account with its report")
PY
) || fail "the restore did not complete"
[ -n "${partition_seconds:-}" ] || fail "the restore did not complete"
stop_group "$restore_pid"
note "restore: $RESTORE_COUNT AccountReported of the changelog read and stored in $changelog_seconds s; the registry complete (changelog + $RESTORE_COUNT AccountHeld) $partition_seconds s after the assignment, $since_start s after the process started"

# The executor's changelog read back into an empty file (a lost volume, or a standby on a volume of its own taking
# over): EXECUTOR_RESTORE_COUNT completed erasures (three participants each, no audit entry) produced straight to
# <ns>.lethe.erasure.state.v1, then an executor started on an empty directory; printed: its own erasure.restore_time and
# the time from its start to ready. Its first start (to create the topics) is not timed.
ns="$run-executor-restore"
mkdir -p "$data/$ns"
executor_port=$(free_port)
start_restoring_executor() { # LOG
  launch "$1" KAFKA_BOOTSTRAP_SERVERS="$B" LETHE_DATA_DIR="$data/$ns" HTTP_PORT="$executor_port" \
    LETHE_TOPIC_NAMESPACE="$ns" LETHE_AUDIT_KEY="$(secret)" LETHE_ADMIN_TOKEN="$(secret)" LOG_LEVEL=info \
    "$BIN/erasure-executor"
  wait_active 600 "$executor_port" >/dev/null || fail "the executor did not become ready"
}
start_restoring_executor "$data/$ns-first.log"
stop_group "$launched"
rm -f "$data/$ns"/erasure-executor.sqlite*
python3 - "$B" "$ns.lethe.erasure.state.v1" "$EXECUTOR_RESTORE_COUNT" <<'PY' || fail "producing the executor's changelog failed"
import json, sys, uuid
from confluent_kafka import Producer
bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": "all",
                     "queue.buffering.max.messages": 200000})
at = "2026-12-01T10:00:00.000Z"
for index in range(count):
    erasure = f"01a2{index:028x}"
    body = {"schemaVersion": "1.0", "erasureId": erasure, "tenantId": "tenant-1", "appId": "app-1",
            "subject": f"{index:064x}", "policy": "delete", "cause": "atlassian-closed", "status": "completed",
            "overdue": False, "deadline": at, "requests": 1, "issuedAt": at, "createdAt": at, "updatedAt": at,
            "completedAt": at, "version": 2,
            "participants": [{"participant": name, "outcome": "erased", "failedAttempts": 0, "sends": 1,
                              "lastSentAt": at, "ackedAt": at} for name in ("profile-store", "oauth-gateway", "billing")]}
    headers = [("ce_specversion", b"1.0"), ("ce_id", str(uuid.uuid4()).encode()), ("ce_type", b"lethe.ErasureState"),
               ("ce_source", b"lethe/scale-bench"), ("ce_time", at.encode()), ("content-type", b"application/json")]
    while True:
        try:
            producer.produce(topic, key=erasure.encode(), value=json.dumps(body).encode(), headers=headers)
            break
        except BufferError:
            producer.poll(0.1)
    if index % 10000 == 0:
        producer.poll(0)
if producer.flush(120) != 0:
    sys.exit("bench-scale: the changelog records were not all acknowledged")
PY
executor_started=$(now)
start_restoring_executor "$data/$ns.log"
executor_ready=$(python3 -c "import time; print(f'{time.time() - $executor_started:.1f}')")
stop_group "$launched"
# The start's read-back of the whole changelog (the one at its assignment that follows finds everything there).
started_read=$(grep '\] changelog read back$' "$data/$ns.log" | tail -n 1)
read_back=$(grep -o 'erasure.restore_time=[0-9.e+-]* [a-z]*' <<<"$started_read" | cut -d= -f2 \
  | awk '{ printf "%.1f s", $1 / ($2 == "milliseconds" ? 1000 : 1) }')
restored=$(grep -o 'erasure.restored=[0-9]*' <<<"$started_read" | cut -d= -f2)
[ "${restored:-0}" = "$EXECUTOR_RESTORE_COUNT" ] || fail "the executor restored ${restored:-no} erasures of $EXECUTOR_RESTORE_COUNT"
note "executor restore: $EXECUTOR_RESTORE_COUNT erasures of its changelog read back into an empty file in ${read_back}; ready ${executor_ready} s after its start"

join_slash() { local IFS=/; echo "$*"; }
counts=$(join_slash $REPLICAS)
echo "scale: erasure $(join_slash "${erasure_rates[@]}") per s, reporting $(join_slash "${reporting_rates[@]}") accounts per s with $counts replicas, restore $((RESTORE_COUNT / 1000))k in $partition_seconds s"

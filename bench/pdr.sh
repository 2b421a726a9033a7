#!/usr/bin/env bash
# One PDR cycle of COUNT accounts over APPS apps through pdr-reporter, against the sandbox with 10 % 429s.
#
# Starts the sandbox and the gateway (release builds) on free loopback ports with a fresh data directory and a unique
# topic namespace; pdr-bench registers APPS apps in both (one tenant per app), signs one user in per app through the
# real gateway flow (so the gateway holds a grant per app) and installs the fault rule (report-accounts: 10 % 429 with
# Retry-After 1); it then produces COUNT AccountHeld (round-robin over the apps) to <ns>.lethe.pdr.accounts.v1 with
# the reporter's partition count. pdr-reporter (release) then starts with a short cycle (PDR_CYCLE_SECONDS, the sandbox
# answers the same Cycle-Period) and a small PDR_REQUEST_INTERVAL_MS; the script waits until every account was reported
# once (its SQLite registry, polled read-only: every held row has a last report), at most 2 cycles + 300 s.
# Restore: the reporter is then stopped (SIGTERM) and started again on the same group; the time to its
# "changelog restored" log line (group join + restore of the changelog of all its partitions; the line's own
# pdr.restore_time is the restore alone) and to a complete registry (COUNT rows, each with its last report, i.e. the
# accounts topic consumed too) are printed. It keeps running SETTLE_SECONDS so an early re-report after the restart
# would show. Finally pdr-bench reads the sandbox call log (the oracle) and prints the result, with how late each
# account's first report came after its first due time (read from the registry before the restart).
# KEEP_DATA=1 keeps the temp dir (logs, due times); PDR_BENCH_CALL_LOG=<file> saves the raw call log.
# Stops only what it started. Needs KAFKA_BOOTSTRAP_SERVERS (make bench-pdr starts the dev broker).
# Last line: pdr: <c> calls for <n> accounts (minimum <m>, ratio <c/m>), <a> accounts/s, duplicates <d>, early <e>
set -euo pipefail
cd "$(dirname -- "$0")/.."
COUNT="${COUNT:-100000}"
APPS="${APPS:-3}"
PARTITIONS="${PARTITIONS:-${KAFKA_TOPIC_PARTITIONS:-12}}"
CYCLE="${PDR_CYCLE_SECONDS:-120}"
INTERVAL_MS="${PDR_REQUEST_INTERVAL_MS:-100}"
SETTLE="${SETTLE_SECONDS:-15}"
B="${KAFKA_BOOTSTRAP_SERVERS:?KAFKA_BOOTSTRAP_SERVERS is not set}"
BIN="${BIN_DIR:-.build/release}"
for binary in atlassian-sandbox oauth-gateway pdr-reporter pdr-bench; do
  [ -x "$BIN/$binary" ] || { echo "bench: $BIN/$binary is missing; run: swift build -c release --product $binary" >&2; exit 1; }
done

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
data="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "${KEEP_DATA:-}" ]; then echo "bench: data kept in $data" >&2; else rm -rf "$data"; fi
}
trap cleanup EXIT
die() { echo "bench: $*" >&2; exit 1; }
wait_ready() {
  for _ in $(seq 1 150); do
    curl -sf -o /dev/null "$1/health/ready" && return 0
    sleep 0.2
  done
  echo "bench: $1 did not become ready; log: $2" >&2; tail -n 50 "$2" >&2; exit 1
}

run="pdrbench-$(date +%s%N)"
sandbox_port=$(free_port)
gateway_port=$(free_port)
reporter_port=$(free_port)
sandbox="http://127.0.0.1:$sandbox_port"
gateway="http://127.0.0.1:$gateway_port"
admin="bench-admin-$(openssl rand -hex 12)"
internal="bench-internal-$(openssl rand -hex 12)"
mkdir -p "$data/gateway" "$data/reporter"

# No request-count rate limit (only the injected 10 % 429s); Cycle-Period = the reporter's cycle, so Atlassian's
# answer confirms the cycle instead of moving every account to 7 days.
HTTP_PORT="$sandbox_port" SANDBOX_RATE_LIMIT=0 SANDBOX_CYCLE_PERIOD_SECONDS="$CYCLE" LOG_LEVEL=warning \
  "$BIN/atlassian-sandbox" >"$data/sandbox.log" 2>&1 &
pids+=($!)
KAFKA_BOOTSTRAP_SERVERS="$B" LETHE_DATA_DIR="$data/gateway" HTTP_PORT="$gateway_port" LETHE_GATEWAY_URL="$gateway" \
  LETHE_TOPIC_NAMESPACE="$run" KAFKA_TOPIC_PARTITIONS="$PARTITIONS" ATLASSIAN_AUTH_URL="$sandbox" \
  ATLASSIAN_API_URL="$sandbox" LETHE_ADMIN_TOKEN="$admin" LETHE_INTERNAL_TOKEN="$internal" \
  LETHE_MASTER_KEY="$(openssl rand -base64 32)" LOG_LEVEL=warning "$BIN/oauth-gateway" >"$data/gateway.log" 2>&1 &
pids+=($!)
wait_ready "$sandbox" "$data/sandbox.log"
wait_ready "$gateway" "$data/gateway.log"

"$BIN/pdr-bench" setup "$gateway" "$sandbox" "$admin" "$internal" "$APPS" >"$data/apps" || die "setup failed"
app_tenants=$(awk '{printf "%s%s:%s", (NR>1?",":""), $1, $2}' "$data/apps")
app_counts=$(awk -v n="$COUNT" -v a="$APPS" '{i=NR-1; c=int(n/a)+(i<n%a?1:0); printf "%s%s:%d", (NR>1?",":""), $1, c}' "$data/apps")
echo "bench: $APPS apps signed in through the gateway; fault rule: report-accounts 10 % 429 (Retry-After 1 s)" >&2

"$BIN/pdr-bench" produce "$B" "$run.lethe.pdr.accounts.v1" "$COUNT" "$PARTITIONS" "$app_tenants" >&2 \
  || die "producing AccountHeld failed"

reporter_pid=""
start_reporter() {
  KAFKA_BOOTSTRAP_SERVERS="$B" LETHE_DATA_DIR="$data/reporter" HTTP_PORT="$reporter_port" \
    LETHE_TOPIC_NAMESPACE="$run" KAFKA_TOPIC_PARTITIONS="$PARTITIONS" PDR_CYCLE_SECONDS="$CYCLE" \
    PDR_REQUEST_INTERVAL_MS="$INTERVAL_MS" LETHE_GATEWAY_URL="$gateway" LETHE_INTERNAL_TOKEN="$internal" \
    LETHE_ADMIN_TOKEN="$admin" ATLASSIAN_AUTH_URL="$sandbox" ATLASSIAN_API_URL="$sandbox" LOG_LEVEL=info \
    "$BIN/pdr-reporter" >"$1" 2>&1 &
  reporter_pid=$!
  pids+=("$reporter_pid")
}
stop_reporter() {
  kill -TERM "$reporter_pid" 2>/dev/null || { tail -n 30 "$1" >&2; die "pdr-reporter ($reporter_pid) was not running (its log above)"; }
  for _ in $(seq 1 300); do
    kill -0 "$reporter_pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$reporter_pid" 2>/dev/null && { tail -n 30 "$1" >&2; die "pdr-reporter did not stop within 30 s of SIGTERM (its log above)"; }
  wait "$reporter_pid" 2>/dev/null || true
  # Reaped: forget its pid, so the cleanup can never signal a process that reused it.
  local kept=() pid
  for pid in "${pids[@]}"; do [ "$pid" = "$reporter_pid" ] || kept+=("$pid"); done
  pids=("${kept[@]}")
}

# wait_registry <launched-epoch> <timeout-seconds> <log> [marker]: polls the reporter's SQLite file (read-only) until it
# holds COUNT accounts, each with a last report; with a marker, first waits for that log line (so rows left by an
# earlier run, dropped at start, are never taken for a complete registry). Prints "<seconds since launch to the marker
# or 0> <seconds since launch to complete> <peak RSS kB> <restore_time seconds from the log line or -1>".
wait_registry() {
  python3 - "$data/reporter/pdr-reporter.sqlite" "$COUNT" "$reporter_pid" "$1" "$2" "$3" "${4:-}" <<'PY'
import os, re, sqlite3, sys, time
path, count, pid, launched, timeout, log, marker = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), float(sys.argv[5]), sys.argv[6], sys.argv[7]
def rss():
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"): return int(line.split()[1])
    except OSError: pass
    return 0
def dead(): return not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split(") ")[1][0] == "Z"
def fail(why):
    print(f"bench: {why}; last log lines:", file=sys.stderr)
    print("".join(open(log).readlines()[-30:]), file=sys.stderr); sys.exit(1)
peak, marked, restore, last_note = 0, 0.0, -1.0, 0.0
while time.time() - launched < timeout:
    peak = max(peak, rss())
    if dead(): fail("pdr-reporter exited")
    if marker and not marked:
        text = open(log).read()
        if marker in text:
            marked = time.time() - launched
            m = re.search(r"pdr\.restore_time=([0-9.e+-]+) (seconds|milliseconds)", text)
            if m: restore = float(m.group(1)) / (1000 if m.group(2) == "milliseconds" else 1)
        else:
            time.sleep(0.05); continue
    held = reported = 0
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        held, unreported = db.execute("SELECT COUNT(*), COALESCE(SUM(last_reported_at IS NULL), 0) FROM pdr_accounts").fetchone()
        db.close()
        reported = held - unreported
    except sqlite3.Error:
        pass
    if held == count and reported == count:
        print(f"{marked:.3f} {time.time() - launched:.3f} {max(peak, rss())} {restore:.3f}"); sys.exit(0)
    if time.time() - last_note >= 15:
        last_note = time.time()
        print(f"bench: {time.time() - launched:.0f} s: {held} accounts held, {reported} reported", file=sys.stderr)
    time.sleep(0.25 if marker else 1)
fail(f"timed out after {timeout:.0f} s waiting for {count} accounts held and reported")
PY
}

# The cycle: every account reported once.
launched=$(now)
start_reporter "$data/reporter-1.log"
echo "bench: pdr-reporter started (cycle $CYCLE s, request interval $INTERVAL_MS ms, $PARTITIONS partitions)" >&2
read -r _ cycle_done cycle_rss _ < <(wait_registry "$launched" "$((2 * CYCLE + 300))" "$data/reporter-1.log") \
  || die "the cycle did not complete"
[ -n "${cycle_done:-}" ] || die "the cycle did not complete"
# Every account's first due time (firstSeen + spread x cycle, dates stored as seconds since 2001) from the registry,
# before the restart rebuilds it: the analysis prints how late the first reports came.
python3 - "$data/reporter/pdr-reporter.sqlite" "$CYCLE" >"$data/due.txt" <<'PY' || die "cannot read the registry"
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True, timeout=10)
for app, account, seen, spread in db.execute("SELECT app_id, account_id, first_seen_at, spread FROM pdr_accounts"):
    print(app, account, round((seen + 978307200 + spread * float(sys.argv[2])) * 1000))
PY
stop_reporter "$data/reporter-1.log"

# The restore: a new instance rebuilds the registry from the changelog (COUNT reports) and the accounts topic.
launched=$(now)
start_reporter "$data/reporter-2.log"
read -r joined restored restore_rss restore_time < <(wait_registry "$launched" "$((CYCLE + 300))" \
  "$data/reporter-2.log" "partitions assigned; changelog restored") || die "the restore did not complete"
[ -n "${restored:-}" ] || die "the restore did not complete"
records=$(grep -o 'pdr.changelog_records=[0-9]*' "$data/reporter-2.log" | head -n 1 | cut -d= -f2)
sleep "$SETTLE"
stop_reporter "$data/reporter-2.log"

python3 -c "
cycle_done, cycle_rss, joined, restored, restore_rss, restore_time = $cycle_done, $cycle_rss, $joined, $restored, $restore_rss, $restore_time
print(f'cycle: every account reported {cycle_done:.1f} s after the reporter started (ingest of $COUNT AccountHeld included); peak RSS {cycle_rss / 1024:.0f} MiB')
print(f'restore ($PARTITIONS partitions, ${records:-?} changelog records, $COUNT accounts, one instance): changelog restored {restore_time:.2f} s '
      f'(log line {joined:.2f} s after start, group join included); registry complete {restored:.2f} s after start; peak RSS {restore_rss / 1024:.0f} MiB')
"
"$BIN/pdr-bench" analyze "$sandbox" "$CYCLE" "$app_counts" "$data/due.txt" || die "analysis failed"

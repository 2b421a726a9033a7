#!/usr/bin/env bash
# Peak memory (VmHWM, the peak resident set from /proc) of every Lethe service, in three situations:
#   idle    — each service a second after it answered /health/ready, in the demo scenario (the end-to-end suite,
#             Tests/e2e, on release builds, with the Python participant and the sandbox; the sandbox is printed but not
#             a Lethe service, so not in the figure);
#   loaded  — each service at the end of that scenario (sign-ins, PDR cycles, closed, updated, erasures);
#   registry — pdr-reporter holding ACCOUNTS accounts (default 1,000,000 AccountHeld of 3 apps in PARTITIONS
#             partitions, default 3) in its registry, once every one is stored (its SQLite file polled read-only),
#             with the 7-day default cycle so that none is due and reporting costs nothing.
# Needs KAFKA_BOOTSTRAP_SERVERS (make bench-memory starts the dev broker) and release builds of the services and
# pdr-bench. Stops only what it started.
# Last line: memory: idle <i> MiB max (<service>), loaded <l> MiB max (<service>), registry 1M rows <g> MiB
set -euo pipefail
cd "$(dirname -- "$0")/.."
ACCOUNTS="${ACCOUNTS:-1000000}"
PARTITIONS="${PARTITIONS:-3}"
TIMEOUT="${TIMEOUT:-600}"
B="${KAFKA_BOOTSTRAP_SERVERS:?KAFKA_BOOTSTRAP_SERVERS is not set}"
BIN="${BIN_DIR:-.build/release}"
source bench/lib.sh
require_built "$BIN" atlassian-sandbox oauth-gateway profile-store pdr-reporter erasure-executor pdr-bench

data="$(mktemp -d -t lethe-memory-bench.XXXXXX)"
reporter_pid=""
cleanup() {
  if [ -n "$reporter_pid" ]; then kill "$reporter_pid" 2>/dev/null || true; wait "$reporter_pid" 2>/dev/null || true; fi
  if [ -n "${KEEP_DATA:-}" ]; then echo "bench-memory: data kept in $data" >&2; else rm -rf "$data"; fi
}
trap cleanup EXIT
die() { echo "bench-memory: $*" >&2; exit 1; }

echo "bench-memory: the demo scenario on release builds (idle and loaded)" >&2
LETHE_DEMO_BIN_DIR="$(pwd)/$BIN" LETHE_DEMO_MEMORY_REPORT="$data/scenario.json" LETHE_RUN_DIR="$data/run" \
  python3 -m pytest -q Tests/e2e >"$data/e2e.log" 2>&1 \
  || { tail -n 40 "$data/e2e.log" >&2; die "the scenario failed (its output above)"; }

echo "bench-memory: pdr-reporter with $ACCOUNTS accounts in $PARTITIONS partitions" >&2
run="memorybench-$(date +%s%N)"
"$BIN/pdr-bench" produce "$B" "$run.lethe.pdr.accounts.v1" "$ACCOUNTS" "$PARTITIONS" \
  "app-a:tenant-a,app-b:tenant-b,app-c:tenant-c" >&2 || die "producing AccountHeld failed"
mkdir -p "$data/reporter"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
# No gateway: nothing is due within the run (7-day cycle), so no token is ever asked for.
KAFKA_BOOTSTRAP_SERVERS="$B" LETHE_DATA_DIR="$data/reporter" HTTP_PORT="$port" LETHE_TOPIC_NAMESPACE="$run" \
  KAFKA_TOPIC_PARTITIONS="$PARTITIONS" LETHE_GATEWAY_URL="http://127.0.0.1:9" LETHE_INTERNAL_TOKEN="memory-bench-internal" \
  LETHE_ADMIN_TOKEN="memory-bench-admin-token" LOG_LEVEL=warning "$BIN/pdr-reporter" >"$data/reporter.log" 2>&1 &
reporter_pid=$!

python3 - "$data/reporter/pdr-reporter.sqlite" "$ACCOUNTS" "$reporter_pid" "$TIMEOUT" "$data/scenario.json" <<'EOF'
import json, os, sqlite3, sys, time
path, accounts, pid, timeout, scenario = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]

def peak_kib(pid):
    with open(f"/proc/{pid}/status") as file:
        return next(int(line.split()[1]) for line in file if line.startswith("VmHWM:"))

deadline, held, last_progress = time.monotonic() + timeout, 0, time.monotonic()
while True:
    if not os.path.exists(f"/proc/{pid}"):
        sys.exit(f"bench-memory: pdr-reporter exited (see its log) with {held} accounts stored")
    if os.path.exists(path):
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
            # WITHOUT ROWID: a count (SQLite walks its smallest index; about 0.1 s at 1M rows, every 2 s).
            held = db.execute("SELECT count(*) FROM pdr_accounts").fetchone()[0]
            db.close()
        except sqlite3.Error:
            pass
    if held >= accounts:
        break
    if time.monotonic() - last_progress >= 10:
        print(f"bench-memory: {held} of {accounts} accounts stored", file=sys.stderr)
        last_progress = time.monotonic()
    if time.monotonic() > deadline:
        sys.exit(f"bench-memory: only {held} of {accounts} accounts stored after {timeout:.0f} s")
    time.sleep(2)
time.sleep(5)  # let the last batch's transaction and the changelog catch up
registry = peak_kib(pid) / 1024

with open(scenario) as file:
    report = json.load(file)
services = ["oauth-gateway", "profile-store", "pdr-reporter", "erasure-executor"]
for phase in ("idle", "loaded"):
    values = report[phase]
    missing = [s for s in services if not values.get(s)]
    if missing:
        sys.exit(f"bench-memory: no {phase} figure for {', '.join(missing)}")
    print(f"{phase}: " + ", ".join(f"{name} {values[name] / 1024:.0f} MiB" for name in services)
          + (f"; atlassian-sandbox {values['atlassian-sandbox'] / 1024:.0f} MiB" if values.get("atlassian-sandbox") else ""))
idle = max(services, key=lambda s: report["idle"][s])
loaded = max(services, key=lambda s: report["loaded"][s])
print(f"pdr-reporter with {accounts} accounts: peak RSS {registry:.0f} MiB")
rows = "1M" if accounts == 1_000_000 else str(accounts)  # bench/record files only the 1M figure
print(f"memory: idle {report['idle'][idle] / 1024:.0f} MiB max ({idle}), loaded {report['loaded'][loaded] / 1024:.0f} MiB "
      f"max ({loaded}), registry {rows} rows {registry:.0f} MiB")
EOF

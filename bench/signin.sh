#!/usr/bin/env bash
# What one sign-in costs oauth-gateway, and the latency it adds, measured below saturation next to the same sandbox
# calls alone, in the same run, on the same machine. Starts the sandbox and the gateway (release builds) on free
# loopback ports with a fresh data directory, then runs signin-bench: open loop at RATE/s for SECONDS_OPEN, first bare
# sandbox sequences (authorize → token → /me), then complete sign-ins (start → sandbox authorize → gateway callback →
# exchange); then COUNT sign-ins with CONCURRENCY in flight for the most this box completes per second; then a
# Hummingbird hello-world reference. CPU per operation of each process comes from /proc. Stops only what it started.
# Needs KAFKA_BOOTSTRAP_SERVERS (make bench-signin starts the dev broker). One tenant plays every user, so its per-client
# rate limit is lifted (GATEWAY_CLIENT_RATE_PER_MINUTE).
# When perf (Debian's linux-perf) is installed it also records the gateway's CPU profile over one more open-loop phase
# after the measured ones (so perf's load changes no figure) and prints where a sign-in's CPU goes before the last line
# (bench/perf-report); PROFILE=0 skips it.
# Last line: signin: <c> ms gateway CPU per sign-in, added p99 <a> ms at <r>/s open loop, max <m>/s
set -euo pipefail
cd "$(dirname -- "$0")/.."
COUNT="${COUNT:-3000}"
RATE="${RATE:-200}"
SECONDS_OPEN="${SECONDS_OPEN:-30}"
CONCURRENCY="${CONCURRENCY:-16}"
B="${KAFKA_BOOTSTRAP_SERVERS:?KAFKA_BOOTSTRAP_SERVERS is not set}"
BIN="${BIN_DIR:-.build/release}"
source bench/lib.sh
require_built "$BIN" atlassian-sandbox oauth-gateway signin-bench
bench_workspace signin

sandbox_port=$(free_port)
gateway_port=$(free_port)
gateway_internal_port=$(free_port)
sandbox="http://127.0.0.1:$sandbox_port"
gateway="http://127.0.0.1:$gateway_port"
admin="bench-admin-$(openssl rand -hex 12)"

HTTP_PORT="$sandbox_port" LOG_LEVEL=warning "$BIN/atlassian-sandbox" >"$data/sandbox.log" 2>&1 &
pids+=($!)
KAFKA_BOOTSTRAP_SERVERS="$B" LETHE_DATA_DIR="$data" HTTP_PORT="$gateway_port" LETHE_GATEWAY_URL="$gateway" \
  HTTP_INTERNAL_PORT="$gateway_internal_port" LETHE_TOPIC_NAMESPACE="bench-$(date +%s%N)" ATLASSIAN_AUTH_URL="$sandbox" ATLASSIAN_API_URL="$sandbox" \
  LETHE_ADMIN_TOKEN="$admin" LETHE_INTERNAL_TOKEN="bench-internal-$(openssl rand -hex 12)" \
  LETHE_MASTER_KEY="$(openssl rand -base64 32)" GATEWAY_CLIENT_RATE_PER_MINUTE=10000000 GATEWAY_IP_RATE_PER_MINUTE=10000000 LOG_LEVEL=warning \
  "$BIN/oauth-gateway" >"$data/gateway.log" 2>&1 &
pids+=($!)
wait_ready "$sandbox" "$data/sandbox.log"
wait_ready "$gateway" "$data/gateway.log"

perf_data=""
if [ "${PROFILE:-1}" != 0 ]; then
  if perf record -q -o /dev/null -- true >/dev/null 2>&1; then
    perf_data="$data/perf.data"
  else
    echo "bench: no CPU profile: perf cannot record here (install linux-perf; as root, or lower kernel.perf_event_paranoid)" >&2
  fi
fi
BENCH_PIDS="sandbox=${pids[0]},gateway=${pids[1]}" BENCH_PERF_DATA="$perf_data" BENCH_LATENCY_DIR="$data" \
  "$BIN/signin-bench" "$gateway" "$sandbox" "$admin" "$COUNT" "$CONCURRENCY" "$RATE" "$SECONDS_OPEN" >"$data/result.txt" \
  || { cat "$data/result.txt"; echo "bench: signin-bench failed" >&2; exit 1; }
if [ -n "$perf_data" ]; then
  bench/perf-report "$perf_data" \
    "where the gateway's CPU goes: $((SECONDS_OPEN < 15 ? SECONDS_OPEN : 15)) s more of sign-ins at $RATE/s, after the measured phases" \
    oauth_gateway
fi
# The open-loop latencies as a picture next to bench/RESULTS.md (bench/record links it).
bench/cdf-svg --title "Open loop at $RATE/s: sandbox sequences alone and complete sign-ins through the gateway" \
  --out bench/signin-latency.svg "sandbox alone=$data/signin-alone.txt" "sign-ins=$data/signin-full.txt"
# The bench's lines, its last line last.
cat "$data/result.txt"

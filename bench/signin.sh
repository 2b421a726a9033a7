#!/usr/bin/env bash
# Complete sign-ins through oauth-gateway next to bare sandbox sequences, in the same run, on the same machine.
# Starts the sandbox and the gateway (release builds) on free loopback ports with a fresh data directory, then runs
# signin-bench: COUNT bare authorize → token → /me sequences against the sandbox, and COUNT complete sign-ins
# (start → sandbox authorize → gateway callback → exchange), CONCURRENCY in flight each. Stops only what it started.
# Needs KAFKA_BOOTSTRAP_SERVERS (make bench-signin starts the dev broker).
# Before it: a Hummingbird hello-world reference (the sandbox's /health/live) and the CPU each process spent per
# operation (from /proc), with how busy the machine was, per phase.
# Last line: signin: <n>/s, p99 <ms> ms (sandbox alone <n>/s, p99 <ms> ms; added p99 <ms> ms)
set -euo pipefail
cd "$(dirname -- "$0")/.."
COUNT="${COUNT:-5000}"
CONCURRENCY="${CONCURRENCY:-16}"
B="${KAFKA_BOOTSTRAP_SERVERS:?KAFKA_BOOTSTRAP_SERVERS is not set}"
BIN="${BIN_DIR:-.build/release}"
for binary in atlassian-sandbox oauth-gateway signin-bench; do
  [ -x "$BIN/$binary" ] || { echo "bench: $BIN/$binary is missing; run: swift build -c release --product $binary" >&2; exit 1; }
done

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
data="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$data"
}
trap cleanup EXIT
wait_ready() {
  for _ in $(seq 1 100); do
    curl -sf -o /dev/null "$1/health/ready" && return 0
    sleep 0.2
  done
  echo "bench: $1 did not become ready; log: $2" >&2; cat "$2" >&2; exit 1
}

sandbox_port=$(free_port)
gateway_port=$(free_port)
sandbox="http://127.0.0.1:$sandbox_port"
gateway="http://127.0.0.1:$gateway_port"
admin="bench-admin-$(openssl rand -hex 12)"

HTTP_PORT="$sandbox_port" LOG_LEVEL=warning "$BIN/atlassian-sandbox" >"$data/sandbox.log" 2>&1 &
pids+=($!)
KAFKA_BOOTSTRAP_SERVERS="$B" LETHE_DATA_DIR="$data" HTTP_PORT="$gateway_port" LETHE_GATEWAY_URL="$gateway" \
  LETHE_TOPIC_NAMESPACE="bench-$(date +%s%N)" ATLASSIAN_AUTH_URL="$sandbox" ATLASSIAN_API_URL="$sandbox" \
  LETHE_ADMIN_TOKEN="$admin" LETHE_INTERNAL_TOKEN="bench-internal-$(openssl rand -hex 12)" \
  LETHE_MASTER_KEY="$(openssl rand -base64 32)" LOG_LEVEL=warning "$BIN/oauth-gateway" >"$data/gateway.log" 2>&1 &
pids+=($!)
wait_ready "$sandbox" "$data/sandbox.log"
wait_ready "$gateway" "$data/gateway.log"

BENCH_PIDS="sandbox=${pids[0]},gateway=${pids[1]}" \
  "$BIN/signin-bench" "$gateway" "$sandbox" "$admin" "$COUNT" "$CONCURRENCY"

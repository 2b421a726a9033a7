# Helpers the bench scripts share; sourced (`source bench/lib.sh`), never run.

# A free TCP port on the loopback interface.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Seconds since the epoch, with nanoseconds.
now() { date +%s.%N; }

# A random secret (48 URL-safe characters) for an admin token or a key.
secret() { python3 -c 'import secrets; print(secrets.token_urlsafe(36))'; }

# stop_pid PID: SIGTERM, then SIGKILL if it is still there after 10 s; reaps it.
stop_pid() {
  local pid="$1"
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# The machine's jiffies as "<busy> <total>" (every CPU, from /proc/stat), for machine_busy_percent.
machine_jiffies() { awk '$1 == "cpu" { busy = $2 + $3 + $4 + $7 + $8; total = busy + $5 + $6; print busy, total; exit }' /proc/stat; }

# machine_busy_percent "<busy> <total>" (from machine_jiffies): the share of the machine busy since then.
machine_busy_percent() {
  read -r busy0 total0 <<<"$1"
  read -r busy1 total1 < <(machine_jiffies)
  awk -v b="$((busy1 - busy0))" -v t="$((total1 - total0))" 'BEGIN { printf "%d", (t > 0 ? 100 * b / t : 0) }'
}

# require_built DIR NAME...: exits, naming the build command, unless each binary NAME is in DIR.
require_built() {
  local dir="$1" binary; shift
  for binary in "$@"; do
    [ -x "$dir/$binary" ] || { echo "bench: $dir/$binary is missing; run: swift build -c release --product $binary" >&2; exit 1; }
  done
}

# bench_workspace NAME: a fresh directory in $data and an empty $pids; at exit every pid in $pids is stopped (SIGTERM
# to all, then stop_pid each) and the directory removed — kept, and said so, when KEEP_DATA is set.
bench_workspace() {
  data="$(mktemp -d -t "lethe-$1-bench.XXXXXX")"
  pids=()
  trap bench_cleanup EXIT
}
bench_cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do stop_pid "$pid"; done
  if [ -n "${KEEP_DATA:-}" ]; then echo "bench: data and logs kept in $data" >&2; else rm -rf "$data"; fi
}

# wait_ready URL LOG [SECONDS]: until URL/health/ready answers 200 (30 s by default); else exits with LOG's tail.
wait_ready() {
  local deadline=$((SECONDS + ${3:-30}))
  until curl -sf -o /dev/null "$1/health/ready"; do
    [ "$SECONDS" -lt "$deadline" ] || { echo "bench: $1 did not become ready; log: $2" >&2; tail -n 50 "$2" >&2; exit 1; }
    sleep 0.2
  done
}

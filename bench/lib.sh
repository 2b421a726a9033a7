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

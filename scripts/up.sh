#!/usr/bin/env bash
# `make up`: start Kafka, PostgreSQL and every service in the foreground.
# Ctrl-C (or SIGTERM) stops the services, then the platform (if this started it).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
platform_was_running=0
bash scripts/platform.sh status >/dev/null 2>&1 && platform_was_running=1
bash scripts/platform.sh start
eval "$(bash scripts/platform.sh env)"
export IOC_LOG_LEVEL="${IOC_LOG_LEVEL:-INFO}"
export IOC_DEV_MODE=1

pids=()
stop_all() {
  trap - INT TERM EXIT
  echo "[up] stopping services" >&2
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  # A platform that was already running before `make up` is left as it was.
  if (( platform_was_running )); then
    echo "[up] Kafka and PostgreSQL were running before; left running" >&2
  else
    bash scripts/platform.sh stop
  fi
}
trap stop_all INT TERM EXIT

# Ports 18080, 18081, ... in the order of services/, one per process. Ingest scales by
# partitions: INGEST_PROCESSES=N (default 1) runs N members of its consumer group, each on
# the next port (the services after it move up by N-1).
port=18080
for dir in services/*/; do
  name="$(basename "$dir")"
  module="${name//-/_}"
  [[ -f "$dir/pyproject.toml" && -f "$dir/$module/main.py" ]] || { echo "[up] $name: not built yet, skipped" >&2; continue; }
  prefix="$(echo "$module" | tr '[:lower:]' '[:upper:]')_"
  count=1
  [[ "$name" == ingest ]] && count="${INGEST_PROCESSES:-1}"
  [[ "$count" =~ ^[1-9][0-9]*$ ]] || { echo "[up] INGEST_PROCESSES must be a positive number" >&2; exit 2; }
  for ((n = 1; n <= count; n++)); do
    label="$name"
    (( count > 1 )) && label="$name $n/$count"
    echo "[up] starting $label (health and metrics on http://127.0.0.1:$port/health, /metrics)" >&2
    env "${prefix}HTTP_PORT=$port" .venv/bin/python -m "$module" serve &
    pids+=($!)
    port=$((port + 1))
  done
done
(( ${#pids[@]} )) || { echo "[up] no service to run" >&2; exit 1; }
echo "[up] running; Ctrl-C stops everything" >&2
# Exit (and stop everything) as soon as any service dies.
wait -n "${pids[@]}" || true
echo "[up] a service exited" >&2

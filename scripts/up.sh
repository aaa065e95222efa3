#!/usr/bin/env bash
# `make up`: start Kafka, PostgreSQL and every service in the foreground.
# Ctrl-C (or SIGTERM) stops the services, then the platform (if this started it).
# HTTP ports: IOC_HTTP_BASE_PORT (18080), one more per service in the order of services/;
# a service's own <SERVICE>_HTTP_PORT, if set, wins.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
platform_was_running=0
bash scripts/platform.sh status >/dev/null 2>&1 && platform_was_running=1
bash scripts/platform.sh start
eval "$(bash scripts/platform.sh env)"
export IOC_LOG_LEVEL="${IOC_LOG_LEVEL:-INFO}"
export IOC_DEV_MODE=1
# Spans of every service, as OTLP/JSON lines in one file (each line one atomic append):
# `ioc trace TRACE_ID` reads it, no server needed. IOC_TRACES_FILE= (empty) turns it off.
export IOC_TRACES_FILE="${IOC_TRACES_FILE-${IOC_RUN_DIR:-$ROOT/.run}/traces.jsonl}"

pids=()
stopping=0
stop_all() {
  trap - INT TERM EXIT
  stopping=1
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
trap stop_all EXIT
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM

# The provincial IOC's HTTPS gateway, simulated (services/sync-province/README.md): its own
# schema, the local platform CA's certificate, a bearer token made once under .run/.
# sync-province then sends to both province targets, Kafka and HTTP, from one process.
if [[ -f services/sync-province/pyproject.toml && -n "${IOC_PROVINCE_KAFKA_CA_FILE:-}" ]]; then
  sim_port="${PROVINCE_SIM_PORT:-18443}"
  pki="$(dirname "$IOC_PROVINCE_KAFKA_CA_FILE")"
  token="$ROOT/.run/province-sim/gateway-token"
  if [[ ! -s "$token" ]]; then
    mkdir -p "$(dirname "$token")"
    (umask 077; .venv/bin/python -c 'import secrets; print(secrets.token_hex(24))' >"$token")
  fi
  echo "[up] starting the province simulator (https://127.0.0.1:$sim_port, schema province_sim)" >&2
  setsid .venv/bin/python -m sync_province.simulator --port "$sim_port" --schema province_sim \
    --token-file "$token" --tls-cert "$pki/broker.pem" --tls-key "$pki/broker.key" &
  pids+=($!)
  export SYNC_PROVINCE_TARGETS="${SYNC_PROVINCE_TARGETS:-kafka,http}"
  export SYNC_PROVINCE_GATEWAY_URL="https://127.0.0.1:$sim_port"
  export SYNC_PROVINCE_GATEWAY_CA_FILE="$IOC_PROVINCE_KAFKA_CA_FILE" SYNC_PROVINCE_GATEWAY_TOKEN_FILE="$token"
fi

# Ports IOC_HTTP_BASE_PORT (18080), +1, ... in the order of services/, one per process (a
# service's own <SERVICE>_HTTP_PORT wins). Ingest scales by partitions: INGEST_PROCESSES=N
# (default 1) runs N members of its consumer group, each on the next port (the services
# after it move up by N-1).
port="${IOC_HTTP_BASE_PORT:-18080}"
for dir in services/*/; do
  name="$(basename "$dir")"
  module="${name//-/_}"
  [[ -f "$dir/pyproject.toml" && -f "$dir/$module/main.py" ]] || { echo "[up] $name: not built yet, skipped" >&2; continue; }
  prefix="$(echo "$module" | tr '[:lower:]' '[:upper:]')_"
  count=1
  [[ "$name" == ingest ]] && count="${INGEST_PROCESSES:-1}"
  [[ "$count" =~ ^[1-9][0-9]*$ ]] || { echo "[up] INGEST_PROCESSES must be a positive number" >&2; exit 2; }
  own="${prefix}HTTP_PORT"
  for ((n = 1; n <= count; n++)); do
    label="$name"
    (( count > 1 )) && label="$name $n/$count"
    this="$port"
    (( count == 1 )) && [[ -n "${!own:-}" ]] && this="${!own}"
    echo "[up] starting $label (health and metrics on http://127.0.0.1:$this/health, /metrics)" >&2
    # setsid: Ctrl-C reaches the services only through stop_all (one SIGTERM, in order),
    # not also straight from the terminal.
    env "$own=$this" setsid .venv/bin/python -m "$module" serve &
    pids+=($!)
    port=$((port + 1))
  done
done
(( ${#pids[@]} )) || { echo "[up] no service to run" >&2; exit 1; }
echo "[up] running; Ctrl-C stops everything." >&2
# ioc refuses clear-text Kafka and the repository's dev credentials outside dev mode.
echo "[up] operators, in another shell: eval \"\$(bash scripts/platform.sh env)\"; export IOC_DEV_MODE=1; .venv/bin/ioc status (ioc --help)" >&2
if [[ -n "$IOC_TRACES_FILE" ]]; then
  echo "[up] spans go to $IOC_TRACES_FILE: .venv/bin/ioc trace TRACE_ID (the trace_id of a log line; --file if moved)" >&2
fi
# Stop everything as soon as any service dies on its own.
code=0
wait -n "${pids[@]}" || code=$?
if (( !stopping )); then
  echo "[up] a service exited (code $code); stopping the others" >&2
fi

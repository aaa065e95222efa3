#!/usr/bin/env bash
# Run a command with the local Kafka and PostgreSQL up; stop them afterwards
# if this script started them (a platform that was already running is left alone).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
started=0
if ! bash "$ROOT/scripts/platform.sh" status >/dev/null 2>&1; then
  started=1
fi
cleanup() {
  if (( started )); then bash "$ROOT/scripts/platform.sh" stop || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
bash "$ROOT/scripts/platform.sh" start
eval "$(bash "$ROOT/scripts/platform.sh" env)"
"$@"

#!/usr/bin/env bash
# Create the virtual environment and install the pinned dependencies and the
# project's packages (editable). Re-runs are cheap: it reinstalls only when
# requirements.lock or a pyproject.toml changed since the last install.
# Quiet: the installers' output goes to .venv-bootstrap.log, shown when a step fails.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
VENV="$ROOT/.venv"
STAMP="$VENV/.installed"
LOG="$ROOT/.venv-bootstrap.log"

quiet() { # <description> <command>...: run it with its output in $LOG; show the log if it fails
  local what="$1"; shift
  if ! "$@" >>"$LOG" 2>&1; then
    echo "[bootstrap] ERROR: $what failed; last 40 lines of $LOG:" >&2
    tail -n 40 "$LOG" >&2
    return 1
  fi
}

"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "[bootstrap] Python >= 3.11 is required (found $("$PY" --version))" >&2; exit 1; }

# A whole venv has a python that runs and has pip; `python3 -m venv` that fails at
# ensurepip (Debian without python3-venv) leaves .venv/bin/python without pip behind.
venv_whole() { [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -m pip --version >/dev/null 2>&1; }

make_venv() {
  rm -rf "$VENV"
  "$PY" -m venv "$VENV" >>"$LOG" 2>&1 && venv_whole && return 0
  rm -rf "$VENV"
  return 1
}

if ! venv_whole; then
  : >"$LOG"
  [[ -e "$VENV" ]] && echo "[bootstrap] $VENV is incomplete (no pip); creating it anew" >&2
  echo "[bootstrap] creating $VENV" >&2
  if ! make_venv; then
    # Debian's python3 lacks venv/ensurepip until python3-venv is installed.
    if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null; then
      echo "[bootstrap] installing python3-venv (apt)" >&2
      quiet "apt-get update" apt-get update -qq
      quiet "apt-get install python3-venv" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq python3-venv
      make_venv || { echo "[bootstrap] ERROR: python3 -m venv failed; see $LOG" >&2; tail -n 40 "$LOG" >&2; exit 1; }
    else
      echo "[bootstrap] ERROR: python3 -m venv failed (install python3-venv); see $LOG" >&2
      tail -n 40 "$LOG" >&2
      exit 1
    fi
  fi
fi

# Debian's chromium for the headless-browser test of reporting's KPI page (checked on
# every run, installed once; IOC_NO_BROWSER=1 skips it). Without root or apt-get: a note,
# and that test skips (in CI, CI=true, it fails instead).
if [[ "${IOC_NO_BROWSER:-0}" != 1 ]] && ! command -v chromium >/dev/null; then
  if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "[bootstrap] installing chromium (apt, once; log: $LOG)" >&2
    quiet "apt-get update" apt-get update -qq
    quiet "apt-get install chromium" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends chromium
  else
    echo "[bootstrap] note: chromium is not installed (apt-get install chromium); the KPI page's browser test will skip" >&2
  fi
fi

# The project's own packages: shared/ and every service that has a pyproject.toml.
packages=()
for p in shared services/* tools/*; do
  [[ -f "$p/pyproject.toml" ]] && packages+=("$p")
done
want="$(for p in requirements.lock "${packages[@]/%//pyproject.toml}"; do cat "$p"; done | sha256sum | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  exit 0
fi
: >"$LOG"
echo "[bootstrap] installing pinned dependencies (log: $LOG)" >&2
quiet "pip upgrade" "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade "pip==26.3"
editable=()
for p in "${packages[@]}"; do editable+=(-e "$p"); done
quiet "pip install" "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
  -c requirements.lock -r requirements.lock "${editable[@]}"
echo "$want" > "$STAMP"
echo "[bootstrap] ready: $VENV" >&2

#!/usr/bin/env bash
# Create the virtual environment and install the pinned dependencies and the
# project's packages (editable). Re-runs are cheap: it reinstalls only when
# requirements.lock or a pyproject.toml changed since the last install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
VENV="$ROOT/.venv"
STAMP="$VENV/.installed"

"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "[bootstrap] Python >= 3.11 is required (found $("$PY" --version))" >&2; exit 1; }

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "[bootstrap] creating $VENV" >&2
  "$PY" -m venv "$VENV" || {
    # Debian's python3 lacks venv until python3-venv is installed.
    if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
      "$PY" -m venv "$VENV"
    else
      exit 1
    fi
  }
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
echo "[bootstrap] installing pinned dependencies" >&2
"$VENV/bin/python" -m pip install -q --upgrade "pip==26.3" >&2
editable=()
for p in "${packages[@]}"; do editable+=(-e "$p"); done
"$VENV/bin/python" -m pip install -q -c requirements.lock -r requirements.lock "${editable[@]}" >&2
echo "$want" > "$STAMP"
echo "[bootstrap] ready: $VENV" >&2

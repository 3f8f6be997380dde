#!/usr/bin/env bash
# Create or update the project's virtual environment from requirements.lock (idempotent).
# A stamp file holds the hash of the lock file: an unchanged lock skips the install entirely.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${OPSASSIST_VENV:-$ROOT/.venv}"
PYTHON="${OPSASSIST_PYTHON:-python3.11}"
UV_VERSION="0.13.9"

if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "setup-venv: $PYTHON not found; Python 3.11 is required" >&2
    exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
    echo "setup-venv: creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
if [[ "$("$VENV/bin/uv" --version 2>/dev/null)" != *"$UV_VERSION"* ]]; then
    "$VENV/bin/python" -m pip install --quiet "uv==$UV_VERSION"
fi
STAMP="$VENV/.opsassist-lock.sha256"
WANT="$(cat "$ROOT/requirements.lock" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
    echo "setup-venv: $VENV is up to date"
    exit 0
fi
echo "setup-venv: installing requirements.lock into $VENV (first run downloads torch: several GB)"
export VIRTUAL_ENV="$VENV"
# Byte-compile at install: PYTHONDONTWRITEBYTECODE may be set, and then every import of torch
# and transformers would recompile thousands of files (25 s per process instead of 5).
"$VENV/bin/uv" pip install --system-certs --compile-bytecode --python "$VENV/bin/python" -r "$ROOT/requirements.lock"
"$VENV/bin/uv" pip install --system-certs --python "$VENV/bin/python" --no-deps -e "$ROOT"
echo "$WANT" > "$STAMP"
echo "setup-venv: done"

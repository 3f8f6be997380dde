#!/usr/bin/env bash
# The demo command (`make demo`): set up the venv, then index the shipped runbooks on the
# embedded defaults (LanceDB under var/data, in-process cache) and answer a few questions.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup-venv.sh
export OPSASSIST_DATA_DIR="${OPSASSIST_DATA_DIR:-$ROOT/var/data}"
export OPSASSIST_LOG_FORMAT="${OPSASSIST_LOG_FORMAT:-text}"
exec "${OPSASSIST_VENV:-$ROOT/.venv}/bin/opsassist" demo

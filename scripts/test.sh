#!/usr/bin/env bash
# The test command (`make test`, and `.ci/run` in CI): set up the venv, start the real services
# the tests use, then lint, type-check and run pytest. Idempotent; safe to re-run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${OPSASSIST_VENV:-$ROOT/.venv}"

step() { printf '\n==> %s\n' "$*"; }

step "virtual environment"
bash scripts/setup-venv.sh

step "services"
SERVICES="${OPSASSIST_TEST_SERVICES:-redis postgres prometheus node-exporter kafka opensearch etcd kube-apiserver}"
# shellcheck disable=SC2086
scripts/services up $SERVICES
export OPSASSIST_REQUIRE_SERVICES="${OPSASSIST_REQUIRE_SERVICES:-1}"

step "tools"
OPSASSIST_STATSD_EXPORTER="${OPSASSIST_STATSD_EXPORTER:-$(scripts/tools.sh statsd_exporter)}"
export OPSASSIST_STATSD_EXPORTER
OPSASSIST_DOCKER_COMPOSE="${OPSASSIST_DOCKER_COMPOSE:-$(scripts/tools.sh docker_compose)}"
export OPSASSIST_DOCKER_COMPOSE
export PATH="$VENV/bin:$PATH"

step "ruff"
ruff check .
ruff format --check .

step "mypy"
mypy

step "pytest"
set +e
pytest -ra -p no:cacheprovider "$@"
status=$?
set -e
if [ "$status" = 5 ]; then
    echo "pytest collected no tests: that is a failure here" >&2
    exit 1
fi
exit "$status"

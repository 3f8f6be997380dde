#!/usr/bin/env bash
# The test command (`make test`, and `.ci/run` in CI): set up the venv, start the real services
# the tests use, then lint, type-check and run pytest. Idempotent; safe to re-run.
#
# What can overlap does, on 2 cores: the services (apt, Maven, the kube-apiserver Go build) and
# the Go tools build in the background from the first second; the venv installs meanwhile, then
# the model server starts and Open WebUI's venv and Chromium install in the background while
# ruff, mypy and the unit tests (which need no service) run; the tests that need services run last, in two pytest-xdist workers (one file
# per worker at a time; the Spark files on one worker: tests/conftest.py).
# Each phase's log is in var/test-run/<phase>.log; a table of phase timings ends the output.
#
#   scripts/test.sh                 the whole suite (what CI runs)
#   scripts/test.sh PYTEST_ARGS...  the same set-up, then one pytest run with these arguments
#
# Environment: OPSASSIST_TEST_SERVICES (the services to start; default all of them),
# OPSASSIST_TEST_WORKERS (pytest-xdist workers for the service tests, default 2; 0 = no xdist).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${OPSASSIST_VENV:-$ROOT/.venv}"
RUNLOG="$ROOT/var/test-run"
PHASES="$RUNLOG/phases.tsv"
SERVICES="${OPSASSIST_TEST_SERVICES:-redis postgres prometheus node-exporter kafka opensearch etcd kube-apiserver}"
WORKERS="${OPSASSIST_TEST_WORKERS:-2}"
T0="$EPOCHREALTIME"

rm -rf "$RUNLOG"
mkdir -p "$RUNLOG"

elapsed() { awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$PHASES"; }  # phase start end rc

# run PHASE COMMAND...: a phase in the foreground.
run() {
    local name="$1" start rc=0
    shift
    printf '\n==> %s\n' "$name"
    start="$(elapsed)"
    "$@" || rc=$?
    record "$name" "$start" "$(elapsed)" "$rc"
    return "$rc"
}

# background PHASE COMMAND...: a phase in the background, its output in var/test-run/PHASE.log.
declare -A BACKGROUND
background() {
    local name="$1"
    shift
    (
        start="$(elapsed)"
        rc=0
        "$@" || rc=$?
        record "$name" "$start" "$(elapsed)" "$rc"
        exit "$rc"
    ) > "$RUNLOG/$name.log" 2>&1 < /dev/null &
    BACKGROUND[$name]=$!
    printf '\n==> %s: started in the background (log: var/test-run/%s.log)\n' "$name" "$name"
}

# await PHASE: waits for a background phase and shows the end of its output (all of it when it
# failed); fails when it failed.
await() {
    local rc=0 log="$RUNLOG/$1.log"
    wait "${BACKGROUND[$1]}" || rc=$?
    printf '\n==> %s (ran in the background; log: var/test-run/%s.log)\n' "$1" "$1"
    if [ "$rc" = 0 ]; then
        grep -v '^ [+-] ' "$log" | tail -n 20  # package lists of the installs left out
    else
        cat "$log"
        echo "test: $1 failed (exit $rc)" >&2
    fi
    return "$rc"
}

# The Go tools the tests use (scripts/tools.sh), one after the other; each path in var/test-run.
build_tools() {
    local tool start
    for tool in statsd_exporter docker_compose helm sops age age-keygen consul-template crds; do
        start="$(elapsed)"
        scripts/tools.sh "$tool" > "$RUNLOG/$tool.path" || return 1
        record "  go-tools: $tool" "$start" "$(elapsed)" 0
    done
}

# pytest with the test command's rules: a run that collects no test fails (exit 5), and so does
# a skip that tests/conftest.py does not allow (OPSASSIST_FAIL_ON_SKIP=1).
run_pytest() {
    local rc=0
    OPSASSIST_FAIL_ON_SKIP=1 pytest -ra -p no:cacheprovider "$@" || rc=$?
    if [ "$rc" = 5 ]; then
        echo "pytest collected no tests: that is a failure here" >&2
        return 1
    fi
    return "$rc"
}

xdist() { [ "$WORKERS" -gt 0 ] && echo "-n $WORKERS"; }  # scheduling: tests/conftest.py

phase_table() {
    local total
    total="$(elapsed)"
    [ -s "$PHASES" ] || return 0
    printf '\n==> phase timings (seconds from the start of the test command; %s s in all)\n' "$total"
    printf '%-36s %8s %8s %8s  %s\n' phase start end seconds status
    sort -t$'\t' -k2,2n -k3,3nr "$PHASES" | while IFS=$'\t' read -r name start end rc; do
        printf '%-36s %8s %8s %8.1f  %s\n' "$name" "$start" "$end" \
            "$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')" \
            "$([ "$rc" = 0 ] && echo ok || echo "FAILED ($rc)")"
    done
    if [ -s "$RUNLOG/services.tsv" ]; then
        printf '%-36s %8s %8s\n' "services, each" install start
        while IFS=$'\t' read -r name install started; do
            printf '  %-34s %8s %8s\n' "$name" "$install" "$started"
        done < "$RUNLOG/services.tsv"
    fi
}
trap 'phase_table || true' EXIT

# 1. In the background from the start: the services and the Go tools (neither needs the venv).
# shellcheck disable=SC2086
background services env OPSASSIST_SERVICES_TIMINGS="$RUNLOG/services.tsv" scripts/services up $SERVICES
background go-tools build_tools

# 2. The venv; then the model server and Open WebUI with Debian's Chromium for the browser test
#    (their venvs reuse the package cache the first one filled: torch is not downloaded again).
run venv bash scripts/setup-venv.sh
background model-server scripts/model-server up
background open-webui bash -c 'scripts/open-webui browser && scripts/open-webui venv'
export PATH="$VENV/bin:$PATH"

# 3. What needs no service, while they come up.
run "ruff check" ruff check .
run "ruff format" ruff format --check .
run mypy mypy
if [ $# = 0 ]; then
    # shellcheck disable=SC2046
    run "pytest tests/unit" run_pytest $(xdist) tests/unit
fi

# 4. The services, the tools and the model server, then the tests that use them.
status=0
await services || status=1
await go-tools || status=1
await model-server || status=1
await open-webui || status=1
[ "$status" = 0 ] || exit 1
OPSASSIST_STATSD_EXPORTER="${OPSASSIST_STATSD_EXPORTER:-$(cat "$RUNLOG/statsd_exporter.path")}"
OPSASSIST_DOCKER_COMPOSE="${OPSASSIST_DOCKER_COMPOSE:-$(cat "$RUNLOG/docker_compose.path")}"
export OPSASSIST_STATSD_EXPORTER OPSASSIST_DOCKER_COMPOSE
export OPSASSIST_REQUIRE_SERVICES="${OPSASSIST_REQUIRE_SERVICES:-1}"
if [ $# = 0 ]; then
    # shellcheck disable=SC2046
    run "pytest tests/{dags,deploy,e2e,integration}" run_pytest $(xdist) \
        tests/dags tests/deploy tests/e2e tests/integration
else
    run "pytest $*" run_pytest "$@"
fi

#!/usr/bin/env bash
# Command-line tools the tests need that neither Debian nor PyPI ship, built from the Go module
# proxy into var/tools/bin (git-ignored) and reused while the stamp (version + Go version) holds.
#
#   scripts/tools.sh statsd_exporter     # prints the binary's path
#
# statsd_exporter: the version docker-compose runs (prom/statsd-exporter), so the mapping the
# tests check is read by the same code production uses. About 2 minutes cold on 2 cores.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/var/tools"
GO="${OPSASSIST_GO:-$(command -v go 2>/dev/null || echo /usr/local/go/bin/go)}"
STATSD_EXPORTER_VERSION="${OPSASSIST_STATSD_EXPORTER_VERSION:-v0.28.0}"

err() { echo "tools: $*" >&2; }

go_install() {  # module@version binary
    local module="$1" name="$2" bin="$TOOLS/bin/$2" want log="$TOOLS/$2-install.log"
    if [ ! -x "$GO" ]; then
        err "FAILED $name: Go not found (set OPSASSIST_GO or put go on PATH)"
        return 1
    fi
    mkdir -p "$TOOLS/bin" "$TOOLS/go/mod" "$TOOLS/go/cache"
    want="$module $("$GO" env GOVERSION)"
    if [ -x "$bin" ] && [ "$(cat "$bin.stamp" 2>/dev/null)" = "$want" ]; then
        echo "$bin"
        return 0
    fi
    local started=$SECONDS
    if ! env GOBIN="$TOOLS/bin" GOMODCACHE="$TOOLS/go/mod" GOCACHE="$TOOLS/go/cache" \
            GOFLAGS=-trimpath CGO_ENABLED=0 GOTOOLCHAIN=local \
            "$GO" install "$module" > "$log" 2>&1; then
        err "FAILED $name: go install $module; log: $log"
        tail -n 20 "$log" >&2
        return 1
    fi
    echo "$want" > "$bin.stamp"
    err "built $name in $((SECONDS - started)) s"
    echo "$bin"
}

case "${1:-}" in
    statsd_exporter)
        go_install "github.com/prometheus/statsd_exporter@$STATSD_EXPORTER_VERSION" statsd_exporter
        ;;
    *)
        err "usage: scripts/tools.sh statsd_exporter"
        exit 2
        ;;
esac

#!/usr/bin/env bash
# Command-line tools the tests need that neither Debian nor PyPI ship, built from the Go module
# proxy into var/tools/bin (git-ignored) and reused while the stamp (version + Go version) holds.
# Go's module and build caches are var/go/ (shared with the kube-apiserver build).
#
#   scripts/tools.sh statsd_exporter     # prints the binary's path
#   scripts/tools.sh docker_compose
#
# statsd_exporter: the version docker-compose runs (prom/statsd-exporter), so the mapping the
# tests check is read by the same code production uses. About 2 minutes cold on 2 cores.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/var/tools"
GOCACHES="$ROOT/var/go"  # module and build caches, shared with the kube-apiserver build
GO="${OPSASSIST_GO:-$(command -v go 2>/dev/null || echo /usr/local/go/bin/go)}"
STATSD_EXPORTER_VERSION="${OPSASSIST_STATSD_EXPORTER_VERSION:-v0.28.0}"
DOCKER_COMPOSE_VERSION="${OPSASSIST_DOCKER_COMPOSE_VERSION:-v5.6.0}"
# Without optimizations or inlining, as the kube-apiserver build (test tools: less build CPU).
GCFLAGS="${OPSASSIST_TOOLS_GCFLAGS-all=-N -l}"

err() { echo "tools: $*" >&2; }

go_install() {  # module@version binary
    local module="$1" name="$2" bin="$TOOLS/bin/$2" want log="$TOOLS/$2-install.log"
    if [ ! -x "$GO" ]; then
        err "FAILED $name: Go not found (set OPSASSIST_GO or put go on PATH)"
        return 1
    fi
    mkdir -p "$TOOLS/bin" "$GOCACHES/mod" "$GOCACHES/cache"
    want="$module $("$GO" env GOVERSION) gcflags=$GCFLAGS"
    if [ -x "$bin" ] && [ "$(cat "$bin.stamp" 2>/dev/null)" = "$want" ]; then
        echo "$bin"
        return 0
    fi
    local started=$SECONDS
    if ! env GOBIN="$TOOLS/bin" GOMODCACHE="$GOCACHES/mod" GOCACHE="$GOCACHES/cache" \
            GOFLAGS=-trimpath CGO_ENABLED=0 GOTOOLCHAIN=local \
            "$GO" install -gcflags="$GCFLAGS" "$module" > "$log" 2>&1; then
        err "FAILED $name: go install $module; log: $log"
        tail -n 20 "$log" >&2
        return 1
    fi
    echo "$want" > "$bin.stamp"
    err "built $name in $((SECONDS - started)) s"
    echo "$bin"
}

# docker compose: the Compose CLI (standalone binary, also usable as a docker CLI plugin), so the
# tests can run `docker compose config` on docker-compose.yaml without a Docker engine. Its
# go.mod has exclude directives, which `go install module@version` refuses: it is built from a
# small wrapper module instead (as scripts/services.d/kube_build.sh does). About 1-3 minutes cold.
go_build_wrapped() {  # module version package binary
    local module="$1" version="$2" package="$3" name="$4" bin="$TOOLS/bin/$4" want
    local src="$TOOLS/src/$4" log="$TOOLS/$4-install.log"
    if [ ! -x "$GO" ]; then
        err "FAILED $name: Go not found (set OPSASSIST_GO or put go on PATH)"
        return 1
    fi
    want="$module@$version $("$GO" env GOVERSION) gcflags=$GCFLAGS"
    if [ -x "$bin" ] && [ "$(cat "$bin.stamp" 2>/dev/null)" = "$want" ]; then
        echo "$bin"
        return 0
    fi
    local started=$SECONDS
    mkdir -p "$src" "$TOOLS/bin" "$GOCACHES/mod" "$GOCACHES/cache"
    printf 'module opsassist.local/%s-build\n\ngo 1.26\n\nrequire %s %s\n' \
        "$name" "$module" "$version" > "$src/go.mod"
    printf '//go:build tools\n\npackage tools\n\nimport _ "%s"\n' "$package" > "$src/tools.go"
    if ! (cd "$src" && env GOMODCACHE="$GOCACHES/mod" GOCACHE="$GOCACHES/cache" \
            GOFLAGS="-trimpath -mod=mod" CGO_ENABLED=0 GOTOOLCHAIN=local \
            sh -c "'$GO' mod tidy && '$GO' build -gcflags='$GCFLAGS' -o '$bin' '$package'") > "$log" 2>&1; then
        err "FAILED $name: go build $package ($module@$version); log: $log"
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
    docker_compose)
        go_build_wrapped github.com/docker/compose/v5 "$DOCKER_COMPOSE_VERSION" \
            github.com/docker/compose/v5/cmd docker-compose
        ;;
    *)
        err "usage: scripts/tools.sh statsd_exporter|docker_compose"
        exit 2
        ;;
esac

#!/usr/bin/env bash
# Command-line tools the tests need that neither Debian nor PyPI ship, built from the Go module
# proxy into var/tools/bin (git-ignored) and reused while the stamp (version + Go version) holds.
# Go's module and build caches are var/go/ (shared with the kube-apiserver build).
#
#   scripts/tools.sh statsd_exporter     # prints the binary's path
#   scripts/tools.sh docker_compose
#   scripts/tools.sh helm | sops | age | age-keygen | consul-template
#   scripts/tools.sh crds                # prints the folder of the published CRDs (below)
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
# The Helm chart's checks (tests/deploy/test_helm_chart.py): helm lint/template, sops decrypting
# the KSOPS example with an age key. Measured cold on the 2 shared cores (load 5-13): helm 340 s,
# sops 214 s, age 11 s, age-keygen 2 s, consul-template 173 s, crds 7 s (537 MB of module zips
# unpacked in var/go/mod).
HELM_VERSION="${OPSASSIST_HELM_VERSION:-v4.3.2}"
SOPS_VERSION="${OPSASSIST_SOPS_VERSION:-v3.13.3}"
AGE_VERSION="${OPSASSIST_AGE_VERSION:-v1.3.2}"
# consul-template: Vault Agent's template engine, to render the chart's Vault Agent template.
CONSUL_TEMPLATE_VERSION="${OPSASSIST_CONSUL_TEMPLATE_VERSION:-v0.41.4}"
# The published CRDs the chart's custom resources are checked against (installed into the
# project's kube-apiserver, then the objects dry-run there), from the projects' own module zips.
CRD_MODULES="github.com/kserve/kserve@${OPSASSIST_KSERVE_CRD_VERSION:-v0.16.0}:config/crd/full/serving.kserve.io_inferenceservices.yaml
github.com/prometheus-operator/prometheus-operator@${OPSASSIST_PROMETHEUS_OPERATOR_VERSION:-v0.85.0}:example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml
github.com/prometheus-operator/prometheus-operator@${OPSASSIST_PROMETHEUS_OPERATOR_VERSION:-v0.85.0}:example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml
github.com/prometheus-operator/prometheus-operator@${OPSASSIST_PROMETHEUS_OPERATOR_VERSION:-v0.85.0}:example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml
github.com/external-secrets/external-secrets@${OPSASSIST_EXTERNAL_SECRETS_VERSION:-v0.16.2}:config/crds/bases/external-secrets.io_externalsecrets.yaml
github.com/external-secrets/external-secrets@${OPSASSIST_EXTERNAL_SECRETS_VERSION:-v0.16.2}:config/crds/bases/external-secrets.io_secretstores.yaml
github.com/argoproj/argo-cd/v3@${OPSASSIST_ARGO_CD_VERSION:-v3.5.8}:manifests/crds/application-crd.yaml
github.com/argoproj/argo-cd/v3@${OPSASSIST_ARGO_CD_VERSION:-v3.5.8}:manifests/crds/appproject-crd.yaml"
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

# crds: `go mod download` of each module (cached in var/go/mod), its CRD file copied into
# var/tools/crds. About 30 s cold (Argo CD's zip is the large one).
fetch_crds() {
    local out="$TOOLS/crds" entry module file dir want
    want="$(printf '%s' "$CRD_MODULES" | md5sum | cut -d' ' -f1)"
    if [ "$(cat "$out/.stamp" 2>/dev/null)" = "$want" ]; then
        echo "$out"
        return 0
    fi
    mkdir -p "$out" "$GOCACHES/mod"
    rm -f "$out"/*.yaml
    while IFS= read -r entry; do
        module="${entry%%:*}"
        file="${entry#*:}"
        if ! dir="$(cd "$TOOLS" && env GOMODCACHE="$GOCACHES/mod" GOFLAGS=-mod=mod GOTOOLCHAIN=local \
                "$GO" mod download -json "$module" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')" \
                || [ ! -f "$dir/$file" ]; then
            err "FAILED crds: $module $file"
            return 1
        fi
        cp "$dir/$file" "$out/$(basename "$file")"
    done <<< "$CRD_MODULES"
    echo "$want" > "$out/.stamp"
    echo "$out"
}

case "${1:-}" in
    statsd_exporter)
        go_install "github.com/prometheus/statsd_exporter@$STATSD_EXPORTER_VERSION" statsd_exporter
        ;;
    docker_compose)
        go_build_wrapped github.com/docker/compose/v5 "$DOCKER_COMPOSE_VERSION" \
            github.com/docker/compose/v5/cmd docker-compose
        ;;
    helm)
        go_install "helm.sh/helm/v4/cmd/helm@$HELM_VERSION" helm
        ;;
    sops)
        go_install "github.com/getsops/sops/v3/cmd/sops@$SOPS_VERSION" sops
        ;;
    age | age-keygen)
        go_install "filippo.io/age/cmd/$1@$AGE_VERSION" "$1"
        ;;
    consul-template)
        go_install "github.com/hashicorp/consul-template@$CONSUL_TEMPLATE_VERSION" consul-template
        ;;
    crds)
        fetch_crds
        ;;
    *)
        err "usage: scripts/tools.sh statsd_exporter|docker_compose|helm|sops|age|age-keygen|consul-template|crds"
        exit 2
        ;;
esac

# kube-build: builds kube-apiserver from the Go module proxy into var/services/kube-apiserver/bin
# (sourced by kube_apiserver.sh; not a service of its own).
#
# k8s.io/kubernetes is not meant to be used as a module: its go.mod requires the k8s.io staging
# modules at v0.0.0 and replaces them with ./staging/src/... paths. A small wrapper module pins each
# staging module to the published v0.<minor>.<patch> tag with `replace` lines derived from that
# go.mod, then `go build k8s.io/kubernetes/cmd/kube-apiserver`. Static (CGO_ENABLED=0), -trimpath;
# module and build caches in var/go/ (shared with scripts/tools.sh: the standard library and
# common modules are compiled once), so a clean clone rebuilds alone and a warm machine skips the
# build (stamp = version + Go version).
# shellcheck shell=bash
KUBE_VERSION="${OPSASSIST_KUBE_VERSION:-v1.34.4}"
# Compiler flags: by default without optimizations or inlining. The binary only serves tests on
# loopback, and the cold build takes a quarter less CPU (on 2 cores: 138 s instead of 181 s).
KUBE_GCFLAGS="${OPSASSIST_KUBE_GCFLAGS-all=-N -l}"
KUBE_GO="${OPSASSIST_GO:-$(command -v go 2>/dev/null || echo /usr/local/go/bin/go)}"

kube_bin() { echo "$VAR/kube-apiserver/bin/kube-apiserver"; }

kube_build() {
    local home="$VAR/kube-apiserver" log="$LOGS/kube-apiserver-install.log" want src staging
    local bin
    bin="$(kube_bin)"
    if [ ! -x "$KUBE_GO" ]; then
        err "FAILED kube-apiserver install: Go not found (set OPSASSIST_GO or put go on PATH)"
        return 1
    fi
    want="$KUBE_VERSION $("$KUBE_GO" env GOVERSION) gcflags=$KUBE_GCFLAGS"
    if [ -x "$bin" ] && [ -f "$bin.stamp" ] && [ "$(cat "$bin.stamp")" = "$want" ]; then
        return 0
    fi
    src="$home/src"
    mkdir -p "$src" "$home/bin" "$ROOT/var/go/mod" "$ROOT/var/go/cache"
    (
        export GOMODCACHE="$ROOT/var/go/mod" GOCACHE="$ROOT/var/go/cache" GOFLAGS="-trimpath -mod=mod" \
            CGO_ENABLED=0 GOTOOLCHAIN=local GOPROXY="${GOPROXY:-https://proxy.golang.org,direct}"
        echo "=== $(date -Is) building kube-apiserver $KUBE_VERSION with $("$KUBE_GO" version)"
        local kmod staging_ver="v0.${KUBE_VERSION#v1.}"
        kmod="$(cd "$src" && "$KUBE_GO" mod download -json "k8s.io/kubernetes@$KUBE_VERSION" \
            | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
        [ -s "$kmod" ] || { echo "no go.mod for k8s.io/kubernetes@$KUBE_VERSION"; exit 1; }
        staging="$(sed -n 's|^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*|\1|p' "$kmod")"
        {
            echo "module opsassist.local/kube-apiserver-build"
            echo
            grep -E '^go [0-9]' "$kmod"
            grep -E '^godebug ' "$kmod" || true
            echo
            echo "require k8s.io/kubernetes $KUBE_VERSION"
            echo
            echo "replace ("
            for m in $staging; do echo "	$m => $m $staging_ver"; done
            echo ")"
        } > "$src/go.mod"
        : > "$src/go.sum"
        cd "$src" && "$KUBE_GO" build -gcflags="$KUBE_GCFLAGS" -ldflags "-s -w \
            -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION \
            -X k8s.io/component-base/version.gitMajor=1 \
            -X k8s.io/component-base/version.gitMinor=$(echo "$KUBE_VERSION" | cut -d. -f2)" \
            -o "$bin.tmp" k8s.io/kubernetes/cmd/kube-apiserver
    ) >> "$log" 2>&1 || {
        err "FAILED kube-apiserver install: go build failed; log: $log"
        log_tail "$log"
        return 1
    }
    mv -f "$bin.tmp" "$bin"
    echo "$want" > "$bin.stamp"
}

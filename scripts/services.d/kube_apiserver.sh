# kube-apiserver: a real Kubernetes API (no kubelet, no controllers) on https://127.0.0.1:16443,
# built from the Go module proxy by kube_build.sh (cached), storing in the local etcd.
# Loopback-only TLS with our own CA (openssl), static bearer tokens, RBAC authorization:
#   var/services/kube-apiserver/pki/ca.crt       CA of the serving certificate
#   var/services/kube-apiserver/tokens/<id>.token one token per identity:
#     admin   user opsassist-admin, group system:masters (test set-up only)
#     reader  system:serviceaccount:default:opsassist-reader   (read-only ClusterRole)
#     dryrun  system:serviceaccount:default:opsassist-dryrun   (dry-run writes only)
#     writer  system:serviceaccount:default:opsassist-operator (ops_action DAG)
# The three service-account identities get nothing until RBAC manifests are applied (the tests
# apply deploy/k8s/base/rbac/*.yaml). The ServiceAccount admission plugin is off: without a
# controller manager no "default" service account is ever created.
# shellcheck shell=bash source-path=SCRIPTDIR
# shellcheck source=kube_build.sh
source "$SVC_D/kube_build.sh"
kube_apiserver_port() { echo "${OPSASSIST_KUBE_APISERVER_PORT:-16443}"; }
kube_apiserver_home() { echo "$VAR/kube-apiserver"; }
kube_apiserver_need() { echo "openssl:openssl curl:curl"; }
kube_apiserver_deps() { echo etcd; }
KUBE_IDENTITIES="admin|opsassist-admin|system:masters
reader|system:serviceaccount:default:opsassist-reader|system:serviceaccounts
dryrun|system:serviceaccount:default:opsassist-dryrun|system:serviceaccounts
writer|system:serviceaccount:default:opsassist-operator|system:serviceaccounts"

kube_pki() {
    local pki="$VAR/kube-apiserver/pki" log="$LOGS/kube-apiserver-install.log"
    [ -s "$pki/apiserver.crt" ] && [ -s "$pki/sa.key" ] && return 0
    mkdir -p "$pki" && chmod 700 "$pki"
    {
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=opsassist-local-ca" \
            -keyout "$pki/ca.key" -out "$pki/ca.crt" &&
        openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
            -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" &&
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n' \
            > "$pki/san.ext" &&
        openssl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
            -CAcreateserial -days 3650 -extfile "$pki/san.ext" -out "$pki/apiserver.crt" &&
        openssl genrsa -out "$pki/sa.key" 2048 &&
        openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub"
    } >> "$log" 2>&1 || { err "FAILED kube-apiserver install: openssl; log: $log"; return 1; }
}

kube_tokens() {
    local dir="$VAR/kube-apiserver/tokens" line id user groups token
    mkdir -p "$dir" && chmod 700 "$dir"
    : > "$dir/tokens.csv.tmp"
    while IFS= read -r line; do
        IFS='|' read -r id user groups <<< "$line"
        [ -s "$dir/$id.token" ] || { head -c 32 /dev/urandom | base64 | tr -d '/+=\n' > "$dir/$id.token"; }
        chmod 600 "$dir/$id.token"
        token="$(cat "$dir/$id.token")"
        printf '%s,%s,%s,"%s"\n' "$token" "$user" "$id" "$groups" >> "$dir/tokens.csv.tmp"
    done <<< "$KUBE_IDENTITIES"
    mv "$dir/tokens.csv.tmp" "$dir/tokens.csv" && chmod 600 "$dir/tokens.csv"
}

kube_apiserver_prepare() {
    kube_build && kube_pki && kube_tokens
}

kube_apiserver_start() {
    local home="$VAR/kube-apiserver" pki="$VAR/kube-apiserver/pki"
    launch kube_apiserver "$home" "$(kube_bin)" \
        --etcd-servers="http://127.0.0.1:$(etcd_port)" \
        --etcd-prefix=/opsassist-registry \
        --bind-address=127.0.0.1 --advertise-address=127.0.0.1 \
        --secure-port="$(kube_apiserver_port)" \
        --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
        --token-auth-file="$home/tokens/tokens.csv" \
        --authorization-mode=RBAC \
        --anonymous-auth=false \
        --service-account-issuer=https://kubernetes.default.svc \
        --service-account-key-file="$pki/sa.pub" \
        --service-account-signing-key-file="$pki/sa.key" \
        --service-cluster-ip-range=10.96.0.0/16 \
        --disable-admission-plugins=ServiceAccount \
        --enable-priority-and-fairness=false \
        --profiling=false \
        --cert-dir="$pki"
}

kube_apiserver_healthy() {
    local token="$VAR/kube-apiserver/tokens/admin.token"
    [ -s "$token" ] || return 1
    http_has '^ok$' "https://127.0.0.1:$(kube_apiserver_port)/readyz" \
        --cacert "$VAR/kube-apiserver/pki/ca.crt" -H "Authorization: Bearer $(cat "$token")"
}
kube_apiserver_stop_timeout() { echo 20; }

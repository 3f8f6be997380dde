# etcd: Debian's etcd-server as the storage of the local kube-apiserver; one member, plain HTTP
# on 127.0.0.1 only, data under var/services/etcd/data.
# shellcheck shell=bash
etcd_port() { echo "${OPSASSIST_ETCD_PORT:-12379}"; }
etcd_peer_port() { echo "${OPSASSIST_ETCD_PEER_PORT:-12380}"; }
etcd_home() { echo "$VAR/etcd"; }
etcd_need() { echo "etcd:etcd-server curl:curl"; }
etcd_prepare() { mkdir -p "$VAR/etcd/data" && chmod 700 "$VAR/etcd/data"; }
etcd_start() {
    local client peer
    client="http://127.0.0.1:$(etcd_port)"
    peer="http://127.0.0.1:$(etcd_peer_port)"
    launch etcd "$VAR/etcd" etcd --name opsassist --data-dir "$VAR/etcd/data" \
        --listen-client-urls "$client" --advertise-client-urls "$client" \
        --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
        --initial-cluster "opsassist=$peer" --quota-backend-bytes 1073741824 \
        --auto-compaction-retention 1h
}
etcd_healthy() { http_has '"health": ?"true"' "http://127.0.0.1:$(etcd_port)/health"; }

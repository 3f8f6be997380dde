# node-exporter: Debian's prometheus-node-exporter on 127.0.0.1, scraped by our prometheus.
# Metrics files dropped in var/services/node-exporter/textfile/*.prom are exported too.
# shellcheck shell=bash
node_exporter_port() { echo "${OPSASSIST_NODE_EXPORTER_PORT:-19100}"; }
node_exporter_home() { echo "$VAR/node-exporter"; }
node_exporter_need() { echo "prometheus-node-exporter:prometheus-node-exporter curl:curl"; }
node_exporter_prepare() { mkdir -p "$VAR/node-exporter/textfile"; }
node_exporter_start() {
    launch node_exporter "$VAR/node-exporter" prometheus-node-exporter \
        "--web.listen-address=127.0.0.1:$(node_exporter_port)" \
        "--collector.textfile.directory=$VAR/node-exporter/textfile"
}
node_exporter_healthy() {
    http_has '^node_exporter_build_info' "http://127.0.0.1:$(node_exporter_port)/metrics"
}

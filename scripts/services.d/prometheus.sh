# prometheus: Debian's prometheus with our own prometheus.yml (scrapes itself and node-exporter
# every 5 s) and its own storage under var/. Ready = /-/ready, the node target scraped (health up)
# and a sample of up{job="node"}.
# Extra scrape targets: drop file_sd JSON files in var/services/prometheus/targets/.
# shellcheck shell=bash
prometheus_port() { echo "${OPSASSIST_PROMETHEUS_PORT:-19090}"; }
prometheus_home() { echo "$VAR/prometheus"; }
prometheus_need() { echo "prometheus:prometheus curl:curl"; }
prometheus_deps() { echo node_exporter; }
prometheus_prepare() {
    mkdir -p "$VAR/prometheus/data" "$VAR/prometheus/targets"
    render "$SVC_D/prometheus.yml.in" "$VAR/prometheus/prometheus.yml" \
        "PORT=$(prometheus_port)" "NODE_EXPORTER_PORT=$(node_exporter_port)" \
        "TARGETS=$VAR/prometheus/targets"
}
prometheus_start() {
    launch prometheus "$VAR/prometheus" prometheus \
        "--config.file=$VAR/prometheus/prometheus.yml" \
        "--storage.tsdb.path=$VAR/prometheus/data" \
        "--storage.tsdb.retention.time=2d" \
        "--web.listen-address=127.0.0.1:$(prometheus_port)" \
        "--web.enable-lifecycle"
}
prometheus_healthy() {
    local base
    base="http://127.0.0.1:$(prometheus_port)"
    http_get "$base/-/ready" > /dev/null || return 1
    # scraped by this process (a sample kept from a previous run would satisfy the query alone)
    http_has '"scrapePool":"node".*"health":"up"' "$base/api/v1/targets?scrapePool=node&state=active" \
        || return 1
    http_has '"result":\[\{' "$base/api/v1/query" --data-urlencode 'query=up{job="node"} == 1'
}

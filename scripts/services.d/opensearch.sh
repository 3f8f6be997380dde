# opensearch: OpenSearch 2.19.1 + k-NN 2.19.1.0 + neural-search 2.19.1.0 from Maven Central
# (opensearch/pom.xml), run by the tiny launcher opensearch/OpsAssistNode.java: single node,
# HTTP on 127.0.0.1, no security plugin. Ready = cluster health yellow or green.
# Vector fields must say "engine": "lucene" (faiss/nmslib native libraries are not shipped).
# Heap: OPSASSIST_OPENSEARCH_HEAP (a size such as 1g, or JVM flags; default -Xms512m -Xmx1g).
# shellcheck shell=bash
OPENSEARCH_PLUGINS=(
    org.opensearch.transport.Netty4Plugin
    org.opensearch.analysis.common.CommonAnalysisPlugin
    org.opensearch.painless.PainlessPlugin
    org.opensearch.index.mapper.MapperExtrasPlugin
    org.opensearch.knn.plugin.KNNPlugin
    org.opensearch.neuralsearch.plugin.NeuralSearch
)
opensearch_port() { echo "${OPSASSIST_OPENSEARCH_PORT:-19200}"; }
opensearch_transport_port() { echo "${OPSASSIST_OPENSEARCH_TRANSPORT_PORT:-19300}"; }
opensearch_home() { echo "$VAR/opensearch"; }
opensearch_need() { echo "java:openjdk-17-jdk-headless javac:openjdk-17-jdk-headless mvn:maven curl:curl"; }
opensearch_runtime() { echo "$VAR/opensearch/runtime"; }
# Classpath: the core jars, then each plugin's jars, minus any jar whose artifact (name without
# version) is already there (the plugin zips bundle some of the core's libraries).
opensearch_classpath() {
    local rt
    rt="$(opensearch_runtime)"
    printf '%s' "$rt/opsassist-node.jar"
    {
        find "$rt/lib" -maxdepth 1 -name '*.jar' | LC_ALL=C sort
        find "$rt/plugins/opensearch-knn" -maxdepth 1 -name '*.jar' | LC_ALL=C sort
        find "$rt/plugins/neural-search" -maxdepth 1 -name '*.jar' | LC_ALL=C sort
    } | awk '{ n = $0; sub(/.*\//, "", n); sub(/-[0-9][^-]*(-[a-zA-Z]+)?\.jar$/, "", n);
               if (!(n in seen)) { seen[n] = 1; printf ":%s", $0 } }'
}
opensearch_prepare() {
    local home rt
    home="$(opensearch_home)"
    rt="$(opensearch_runtime)"
    setup_java || { err "FAILED opensearch install: no Java 17 JDK found"; return 1; }
    maven_runtime opensearch "$SVC_D/opensearch/pom.xml" "$rt" || return 1
    compile_java opensearch "$SVC_D/opensearch/OpsAssistNode.java" "$rt/opsassist-node.jar" \
        "$(find "$rt/lib" -maxdepth 1 -name '*.jar' | LC_ALL=C sort | tr '\n' ':')" || return 1
    mkdir -p "$home"/{config,data,logs,modules,plugins}
    render "$SVC_D/opensearch/opensearch.yml.in" "$home/config/opensearch.yml" \
        "PORT=$(opensearch_port)" "TRANSPORT_PORT=$(opensearch_transport_port)" \
        "DATA=$home/data" "LOGS=$home/logs"
    cp "$SVC_D/opensearch/log4j2.properties" "$home/config/log4j2.properties"
}
opensearch_start() {
    local home cp
    home="$(opensearch_home)"
    cp="$(opensearch_classpath)"
    # shellcheck disable=SC2046
    launch opensearch "$home" "$JAVA" \
        $(heap_flags "${OPSASSIST_OPENSEARCH_HEAP:-}" "-Xms512m -Xmx1g") \
        -XX:+UseG1GC -Djava.awt.headless=true -Dfile.encoding=UTF-8 \
        -Dlog4j2.disable.jmx=true -Dlog4j.shutdownHookEnabled=false \
        -XX:+HeapDumpOnOutOfMemoryError "-XX:HeapDumpPath=$home/logs" \
        $(java_cds_flags "$(opensearch_runtime)/opensearch.jsa" "$cp") \
        -Dlog4j2.configurationFile="$home/config/log4j2.properties" \
        -cp "$cp" OpsAssistNode "$home" "${OPENSEARCH_PLUGINS[@]}"
}
opensearch_healthy() {
    http_has '"status":"(green|yellow)"' \
        "http://127.0.0.1:$(opensearch_port)/_cluster/health?wait_for_status=yellow&timeout=1s"
}
opensearch_stop_timeout() { echo 60; }  # the first clean stop also writes the class-data archive

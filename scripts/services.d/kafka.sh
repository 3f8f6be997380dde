# kafka: Apache Kafka 4.x from Maven Central (kafka/pom.xml), KRaft single node, combined broker +
# controller on 127.0.0.1, replication factor 1, topics auto-created. Storage is formatted once in
# its own JVM run. Ready = KafkaReady (kafka/KafkaReady.java): Admin DescribeCluster + ListTopics.
# Heap: OPSASSIST_KAFKA_HEAP (a size such as 512m, or JVM flags; default -Xms256m -Xmx512m).
# shellcheck shell=bash
kafka_port() { echo "${OPSASSIST_KAFKA_PORT:-19092}"; }
kafka_controller_port() { echo "${OPSASSIST_KAFKA_CONTROLLER_PORT:-19093}"; }
kafka_home() { echo "$VAR/kafka"; }
kafka_need() { echo "java:openjdk-17-jdk-headless javac:openjdk-17-jdk-headless mvn:maven"; }
kafka_runtime() { echo "$VAR/kafka/runtime"; }
kafka_classpath() {
    local rt
    rt="$(kafka_runtime)"
    printf '%s' "$rt/opsassist-kafka.jar"
    find "$rt/lib" -maxdepth 1 -name '*.jar' | LC_ALL=C sort | sed 's/^/:/' | tr -d '\n'
}
kafka_java() {  # a short-lived java (storage format, readiness) with the broker's classpath
    local cds=() archive
    archive="$(kafka_runtime)/kafka.jsa"
    [ -s "$archive" ] && cds=("-XX:SharedArchiveFile=$archive" -Xshare:auto -Xlog:cds=off -Xlog:cds+dynamic=off)
    "$JAVA" -XX:TieredStopAtLevel=1 -XX:+UseSerialGC "${cds[@]}" \
        -Dlog4j2.configurationFile="$SVC_D/kafka/log4j2.xml" -cp "$(kafka_classpath)" "$@"
}
kafka_prepare() {
    local home rt data log="$LOGS/kafka-install.log" id
    home="$(kafka_home)"
    rt="$(kafka_runtime)"
    data="$home/data"
    setup_java || { err "FAILED kafka install: no Java 17 JDK found"; return 1; }
    maven_runtime kafka "$SVC_D/kafka/pom.xml" "$rt" || return 1
    compile_java kafka "$SVC_D/kafka/KafkaReady.java" "$rt/opsassist-kafka.jar" \
        "$(find "$rt/lib" -maxdepth 1 -name '*.jar' | LC_ALL=C sort | tr '\n' ':')" || return 1
    mkdir -p "$data"
    render "$SVC_D/kafka/server.properties.in" "$home/server.properties" \
        "PORT=$(kafka_port)" "CONTROLLER_PORT=$(kafka_controller_port)" "DATA=$data"
    if [ ! -f "$data/meta.properties" ]; then
        # a cluster id is 16 random bytes in URL-safe base64 without padding (kafka-storage random-uuid)
        id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
        id="A${id:1}"
        echo "=== $(date -Is) format $data (cluster id $id)" >> "$log"
        if ! (cd "$home" && kafka_java -Dopsassist.loglevel=warn kafka.tools.StorageTool format \
                -t "$id" -c "$home/server.properties") >> "$log" 2>&1; then
            err "FAILED kafka install: storage format failed; log: $log"
            log_tail "$log"
            return 1
        fi
    fi
}
kafka_start() {
    local home cp
    home="$(kafka_home)"
    cp="$(kafka_classpath)"
    # shellcheck disable=SC2046
    launch kafka "$home" "$JAVA" \
        $(heap_flags "${OPSASSIST_KAFKA_HEAP:-}" "-Xms256m -Xmx512m") \
        -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
        $(java_cds_flags "$(kafka_runtime)/kafka.jsa" "$cp") \
        -Dlog4j2.configurationFile="$SVC_D/kafka/log4j2.xml" \
        -Dkafka.logs.dir="$home/logs" \
        -cp "$cp" kafka.Kafka "$home/server.properties"
}
kafka_healthy() {
    port_open "$(kafka_port)" || return 1
    [ -n "$JAVA" ] || setup_java || return 1
    kafka_java -Dopsassist.loglevel=error KafkaReady "127.0.0.1:$(kafka_port)" "${1:-8}" > /dev/null 2>&1
}

# redis: Debian's redis-server run as our own process, our own config and directory (the system
# service is left alone). No persistence: it is a cache for tests.
# shellcheck shell=bash
redis_port() { echo "${OPSASSIST_REDIS_PORT:-16379}"; }
redis_home() { echo "$VAR/redis"; }
redis_need() { echo "redis-server:redis-server redis-cli:redis-tools"; }
redis_prepare() {
    mkdir -p "$VAR/redis"
    render "$SVC_D/redis.conf.in" "$VAR/redis/redis.conf" \
        "PORT=$(redis_port)" "DIR=$VAR/redis"
}
redis_start() {
    launch redis "$VAR/redis" redis-server "$VAR/redis/redis.conf"
}
redis_healthy() {
    [ "$(timeout 3 redis-cli -h 127.0.0.1 -p "$(redis_port)" ping 2>/dev/null)" = PONG ]
}

# postgres: Debian's PostgreSQL 15 binaries, our own cluster (initdb) under var/, listening on
# 127.0.0.1 only (no unix socket), md5 password auth. As root the server runs as user postgres
# (the cluster directory is chown'ed to it). Role opsassist (password opsassist, CREATEDB) owns
# the databases opsassist and mlflow. Tuned for tests: fsync and synchronous_commit are off.
# shellcheck shell=bash
PG_BIN="/usr/lib/postgresql/15/bin"
postgres_port() { echo "${OPSASSIST_POSTGRES_PORT:-15432}"; }
postgres_need() { echo "$PG_BIN/initdb:postgresql-15 psql:postgresql-client-15"; }

# As root, user postgres must be able to reach the cluster directory. When a parent directory of
# the checkout is closed to other users (e.g. a checkout under /root), the cluster goes to
# /var/tmp/opsassist-postgres-<hash of the checkout path> instead (printed on `up`).
PG_HOME=""
postgres_home() {
    if [ -n "$PG_HOME" ]; then
        echo "$PG_HOME"
    elif [ "$(id -u)" != 0 ]; then
        PG_HOME="$VAR/postgres"
        echo "$PG_HOME"
    elif ! id postgres > /dev/null 2>&1; then
        echo "$VAR/postgres"  # not installed yet: decided again once it is
    else
        mkdir -p "$VAR"
        PG_HOME="$VAR/postgres"
        if ! runuser -u postgres -- test -x "$VAR" 2> /dev/null; then
            PG_HOME="/var/tmp/opsassist-postgres-$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)"
        fi
        echo "$PG_HOME"
    fi
}
# The server's log: under var/services/logs, or beside the cluster when that had to move.
postgres_log() {
    local home
    home="$(postgres_home)"
    if [ "$home" = "$VAR/postgres" ]; then
        echo "$LOGS/postgres.log"
    else
        echo "$home/postgres.log"
    fi
}
as_pg() {  # runs a command as postgres (when root), from the cluster's directory
    (
        cd "$(postgres_home)" 2> /dev/null || cd /
        close_fds
        exec < /dev/null
        if [ "$(id -u)" = 0 ]; then
            exec runuser -u postgres -- "$@"
        fi
        exec "$@"
    )
}
postgres_prepare() {
    local home data pw log="$LOGS/postgres-install.log"
    home="$(postgres_home)"
    data="$home/data"
    pw="$home/superuser-password"
    [ "$home" = "$VAR/postgres" ] || say "postgres: user postgres cannot reach $VAR; cluster in $home"
    mkdir -p "$home"
    if [ "$(id -u)" = 0 ]; then
        chmod 700 "$home"
        [ "$(stat -c %U "$home")" = postgres ] || chown -R postgres:postgres "$home"
    fi
    [ -s "$pw" ] || { head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$pw"; chmod 600 "$pw"; }
    [ "$(id -u)" != 0 ] || chown postgres:postgres "$pw"
    if [ ! -f "$data/PG_VERSION" ]; then
        rm -rf "$data"
        echo "=== $(date -Is) initdb $data" >> "$log"
        if ! as_pg "$PG_BIN/initdb" -D "$data" -U postgres -E UTF8 --locale=C.UTF-8 \
                --auth-local=peer --auth-host=md5 "--pwfile=$pw" >> "$log" 2>&1; then
            err "FAILED postgres install: initdb failed; log: $log"
            log_tail "$log"
            return 1
        fi
        cat >> "$data/postgresql.conf" <<'CONF'

# scripts/services (local test cluster)
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
CONF
        printf '# scripts/services: TCP on 127.0.0.1 only, password auth\nhost all all 127.0.0.1/32 md5\n' \
            > "$data/pg_hba.conf"
        [ "$(id -u)" != 0 ] || chown postgres:postgres "$data/postgresql.conf" "$data/pg_hba.conf"
    fi
}
postgres_start() {
    local home data log
    home="$(postgres_home)"
    log="$(postgres_log)"
    data="$home/data"
    [ -f "$log" ] && mv -f "$log" "$log.1"
    : > "$log"
    [ "$(id -u)" != 0 ] || chown postgres "$log"
    # a postmaster.pid left by a killed server is handled by postgres itself
    if ! as_pg "$PG_BIN/pg_ctl" -D "$data" -l "$log" -o "-p $(postgres_port)" -w -t "$TIMEOUT" start \
            >> "$LOGS/postgres-install.log" 2>&1; then
        return 1
    fi
    head -n1 "$data/postmaster.pid" > "$(pidfile postgres)"
    postgres_bootstrap_sql
}
# shellcheck disable=SC2120
postgres_superuser_psql() {  # psql as the cluster's superuser; extra psql arguments allowed
    PGPASSWORD="$(cat "$(postgres_home)/superuser-password")" PGCONNECT_TIMEOUT=5 \
        psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$(postgres_port)" -U postgres -d postgres "$@"
}
postgres_bootstrap_sql() {
    postgres_superuser_psql >> "$LOGS/postgres-install.log" 2>&1 <<'SQL'
SELECT 'CREATE ROLE opsassist LOGIN CREATEDB PASSWORD ''opsassist'''
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'opsassist') \gexec
SELECT 'CREATE DATABASE opsassist OWNER opsassist'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'opsassist') \gexec
SELECT 'CREATE DATABASE mlflow OWNER opsassist'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'mlflow') \gexec
SQL
}
postgres_healthy() {
    [ "$(PGPASSWORD=opsassist PGCONNECT_TIMEOUT=3 psql -X -h 127.0.0.1 -p "$(postgres_port)" \
        -U opsassist -d opsassist -tAc 'SELECT 1' 2>/dev/null)" = 1 ]
}
postgres_stop_signal() { echo INT; }  # fast shutdown: ends open sessions

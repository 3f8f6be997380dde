# Helpers shared by scripts/services and the per-service files beside this one (sourced, not run).
# Layout under $VAR ($ROOT/var/services, git-ignored):
#   run/<name>.pid      pid of a server that `up` started (`down` stops only those)
#   logs/<name>.log     the server's output (the previous run's is kept as <name>.log.1)
#   logs/<name>-install.log, logs/apt.log
#   <name>/...          data, config and downloaded runtime of each service

# shellcheck shell=bash disable=SC2034
LC_ALL=C
export LC_ALL

VAR="$ROOT/var/services"
RUN="$VAR/run"
LOGS="$VAR/logs"
SVC_D="$ROOT/scripts/services.d"
TIMEOUT="${OPSASSIST_SERVICES_TIMEOUT:-180}"

say() { printf 'services: %s\n' "$*"; }
err() { printf 'services: %s\n' "$*" >&2; }

# Seconds since a ${EPOCHREALTIME} value, one decimal.
# in_list WORD ITEM...: WORD is one of the ITEMs. (Not `printf | grep -qx`: under pipefail that
# pipeline fails at random when grep exits on its match before printf has written everything.)
in_list() {
    local word="$1" item
    shift
    for item in "$@"; do
        [ "$item" = "$word" ] && return 0
    done
    return 1
}

since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1fs", b - a }'; }

# Prints the last lines of a log to stderr, indented, after a one-line error.
log_tail() {
    [ -s "$1" ] || return 0
    tail -n "${2:-15}" "$1" | sed 's/^/    | /' >&2
}

# render TEMPLATE OUT KEY=VALUE...: copies TEMPLATE to OUT, replacing each @KEY@ by VALUE.
render() {
    local template="$1" out="$2" kv key value expr=()
    shift 2
    for kv in "$@"; do
        key="${kv%%=*}"
        value="${kv#*=}"
        value="${value//\\/\\\\}"
        value="${value//|/\\|}"
        value="${value//&/\\&}"
        expr+=(-e "s|@${key}@|${value}|g")
    done
    sed "${expr[@]}" "$template" > "$out.tmp" && mv "$out.tmp" "$out"
}

# Port helpers ------------------------------------------------------------------------------------

port_open() {  # port: something accepts TCP connections on 127.0.0.1:port
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# http_get URL [curl args...]: the body on stdout when the answer is 2xx, else returns non-zero.
http_get() { curl -fsS --max-time "${HTTP_MAX_TIME:-3}" "$@" 2>/dev/null; }

# http_has PATTERN URL [curl args...]: the 2xx body matches the extended regex PATTERN. (The body
# is read whole first: `curl | grep -q` fails under pipefail when grep stops reading early.)
http_has() {
    local pattern="$1" body
    shift
    body="$(http_get "$@")" || return 1
    grep -Eq -- "$pattern" <<< "$body"
}

# Packages ----------------------------------------------------------------------------------------

APT_UPDATED=0

# apt_install PACKAGE...: non-interactive install that starts no system service: a policy-rc.d
# answering 101 is put in place for the install (unless one is already there) and removed after.
apt_install() {
    local log="$LOGS/apt.log" rc=0 made_policy=0
    if [ "$(id -u)" != 0 ]; then
        err "FAILED install: packages missing ($*) and not running as root; install them with apt-get"
        return 1
    fi
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\n# scripts/services: no service starts during its apt-get install\nexit 101\n' \
            > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    export DEBIAN_FRONTEND=noninteractive
    local opts=(-q -y -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    {
        echo "=== $(date -Is) apt-get install $*"
        if [ "$APT_UPDATED" = 0 ]; then
            apt-get "${opts[@]}" update
        fi
    } >> "$log" 2>&1 || rc=$?
    APT_UPDATED=1
    if [ "$rc" = 0 ]; then
        apt-get "${opts[@]}" install --no-install-recommends "$@" >> "$log" 2>&1 || rc=$?
    fi
    if [ "$made_policy" = 1 ]; then
        rm -f /usr/sbin/policy-rc.d
        trap - EXIT
    fi
    if [ "$rc" != 0 ]; then
        err "FAILED install: apt-get install $* exited $rc; log: $log"
        log_tail "$log"
        return 1
    fi
}

# Java and Maven ----------------------------------------------------------------------------------

# The OpenSearch 2.19 and Kafka runtimes are run with Java 17 (not whatever JAVA_HOME says: 2.19
# does not run on Java 24+). OPSASSIST_SERVICES_JAVA_HOME overrides.
java_home() {
    local h
    for h in "${OPSASSIST_SERVICES_JAVA_HOME:-}" /usr/lib/jvm/java-17-openjdk-amd64 /usr/lib/jvm/java-17-openjdk-arm64; do
        if [ -n "$h" ] && [ -x "$h/bin/javac" ]; then
            echo "$h"
            return 0
        fi
    done
    local javac
    javac="$(command -v javac 2>/dev/null)" || return 1
    dirname "$(dirname "$(readlink -f "$javac")")"
}
JAVA_HOME_17=""
JAVA=""
JAVAC=""
JAR=""
setup_java() {
    JAVA_HOME_17="$(java_home)" || return 1
    JAVA="$JAVA_HOME_17/bin/java"
    JAVAC="$JAVA_HOME_17/bin/javac"
    JAR="$JAVA_HOME_17/bin/jar"
}

# maven_runtime NAME POM OUT: resolves POM's runtime into OUT with Maven (cached in ~/.m2), unless
# OUT/.stamp holds the hash of POM (then nothing runs: no Maven start-up on a warm machine).
maven_runtime() {
    local name="$1" pom="$2" out="$3" want log="$LOGS/$1-install.log"
    want="$(sha256sum < "$pom" | cut -d' ' -f1)"
    if [ -f "$out/.stamp" ] && [ "$(cat "$out/.stamp")" = "$want" ]; then
        return 0
    fi
    rm -rf "$out"
    mkdir -p "$out"
    echo "=== $(date -Is) mvn -f $pom generate-resources -Dout=$out" >> "$log"
    if ! JAVA_HOME="$JAVA_HOME_17" mvn -B -q -Dstyle.color=never -f "$pom" generate-resources \
            "-Dout=$out" >> "$log" 2>&1; then
        err "FAILED $name install: Maven could not resolve $pom; log: $log"
        log_tail "$log"
        return 1
    fi
    echo "$want" > "$out/.stamp"
}

# compile_java NAME SOURCE JAR CLASSPATH: compiles one source file into JAR unless JAR's stamp
# holds the hash of SOURCE and CLASSPATH. A rebuilt jar drops the class-data archives beside it.
compile_java() {
    local name="$1" src="$2" jar="$3" cp="$4" want log="$LOGS/$1-install.log" classes
    want="$( (cat "$src"; echo "$cp") | sha256sum | cut -d' ' -f1)"
    if [ -f "$jar" ] && [ -f "$jar.stamp" ] && [ "$(cat "$jar.stamp")" = "$want" ]; then
        return 0
    fi
    classes="$(dirname "$jar")/classes"
    rm -rf "$classes" "$jar" "$(dirname "$jar")"/*.jsa
    mkdir -p "$classes"
    echo "=== $(date -Is) javac $src" >> "$log"
    if ! { "$JAVAC" -nowarn -d "$classes" -cp "$cp" "$src" && "$JAR" cf "$jar" -C "$classes" .; } >> "$log" 2>&1; then
        err "FAILED $name install: javac $src failed; log: $log"
        log_tail "$log"
        return 1
    fi
    rm -rf "$classes"
    echo "$want" > "$jar.stamp"
}

# Processes ---------------------------------------------------------------------------------------

pidfile() { echo "$RUN/${1//_/-}.pid"; }  # node_exporter -> node-exporter.pid

# Pid of the running server that `up` started for service $1 (its pid file names a live process
# whose working directory lies under the service's home), else returns 1.
svc_pid() {
    local id="$1" f pid state cwd home
    f="$(pidfile "$id")"
    [ -s "$f" ] || return 1
    pid="$(head -n1 "$f")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [ -r "/proc/$pid/stat" ] || return 1
    state="$(sed 's/^.*) //' "/proc/$pid/stat" | cut -d' ' -f1)"
    [ "$state" != Z ] || return 1
    cwd="$(readlink "/proc/$pid/cwd" 2>/dev/null)" || return 1
    home="$("${id}_home")"
    case "$cwd/" in
        "$home"/*) echo "$pid" ;;
        *) return 1 ;;
    esac
}

# close_fds: closes every descriptor above 2 of the current (sub)shell, so that a server keeps
# neither the lock of scripts/services nor a pipe of whoever ran it (a CI runner waiting for EOF).
close_fds() {
    local fd
    for fd in "/proc/$BASHPID/fd/"*; do
        fd="${fd##*/}"
        if [ "$fd" -gt 2 ]; then
            eval "exec $fd>&-" 2> /dev/null
        fi
    done
    return 0
}

# launch ID CWD CMD...: starts CMD in the background in its own session, in CWD, output to its
# log; the pid file is written by the process itself (then exec'ed into CMD), so it is CMD's pid.
launch() {
    local id="$1" cwd="$2" log="$LOGS/${1//_/-}.log" f
    shift 2
    f="$(pidfile "$id")"
    rm -f "$f"
    [ -f "$log" ] && mv -f "$log" "$log.1"
    local a colons shown=()
    for a in "$@"; do  # the header names the command; a long classpath is shown as its size
        if [ "${#a}" -gt 300 ]; then
            colons="${a//[^:]/}"
            a="<$((${#colons} + 1)) classpath entries>"
        fi
        shown+=("$a")
    done
    echo "=== $(date -Is) scripts/services starts: ${shown[*]}" > "$log"
    (
        cd "$cwd" || exit 1
        close_fds
        # shellcheck disable=SC2016
        exec setsid bash -c 'echo $$ > "$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' "$f" "$@"
    ) >> "$log" 2>&1 < /dev/null &
    local _
    for _ in $(seq 1 50); do
        [ -s "$f" ] && return 0
        sleep 0.1
    done
    return 1
}

# stop_pid ID SIGNAL TIMEOUT: signals the server that `up` started, waits for it to exit, kills
# it after TIMEOUT seconds. Returns 2 if it had to be killed.
stop_pid() {
    local id="$1" sig="$2" limit="$3" pid t0
    pid="$(svc_pid "$id")" || { rm -f "$(pidfile "$id")"; return 0; }
    kill "-$sig" "$pid" 2>/dev/null || true
    t0="$SECONDS"
    while [ -d "/proc/$pid" ] && [ "$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)" != Z ]; do
        if [ $((SECONDS - t0)) -ge "$limit" ]; then
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
            rm -f "$(pidfile "$id")"
            return 2
        fi
        sleep 0.2
    done
    rm -f "$(pidfile "$id")"
}

# java_cds_flags ARCHIVE CLASSPATH: class-data sharing for a JVM with a fixed classpath. The first
# run writes the archive when it exits (a clean `down`); later runs map it, which starts OpenSearch
# about 40% faster. An archive that no longer maps (truncated by a kill, or a changed classpath)
# is deleted and written again.
java_cds_flags() {
    local archive="$1" cp="$2"
    # -XX:ErrorFile: a broken archive crashes this probe JVM; keep its report out of the cwd.
    if [ -s "$archive" ] && ! "$JAVA" "-XX:SharedArchiveFile=$archive" -Xshare:on \
            "-XX:ErrorFile=${TMPDIR:-/tmp}/opsassist-cds-probe-%p.log" -cp "$cp" \
            -version > /dev/null 2>&1; then
        rm -f "$archive"
    fi
    if [ -s "$archive" ]; then
        echo "-XX:SharedArchiveFile=$archive -Xshare:auto -Xlog:cds=off -Xlog:cds+dynamic=off"
    else
        echo "-XX:ArchiveClassesAtExit=$archive -Xlog:cds=off -Xlog:cds+dynamic=off"
    fi
}

# heap_flags VALUE DEFAULT: "-Xms.. -Xmx.." flags as given, or a size like 1g for -Xms1g -Xmx1g.
heap_flags() {
    local v="${1:-$2}"
    case "$v" in
        -*) echo "$v" ;;
        *) echo "-Xms$v -Xmx$v" ;;
    esac
}

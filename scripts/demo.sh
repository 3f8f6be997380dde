#!/usr/bin/env bash
# The demo command (`make demo`): set up the venv, index the shipped runbooks on the embedded
# defaults (LanceDB under var/data, in-process cache), show what search finds, then start the
# local KServe model server and the chat server and ask one question the way Open WebUI does:
# the answer, with its citations and source links, is what an on-call engineer would read.
# Servers the demo started are stopped at the end (a model server already running is left).
#
# Environment: OPSASSIST_DEMO_PORT (chat server port, default 18000), OPSASSIST_DEMO_QUESTION.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup-venv.sh
VENV="${OPSASSIST_VENV:-$ROOT/.venv}"
export OPSASSIST_DATA_DIR="${OPSASSIST_DATA_DIR:-$ROOT/var/data}"
export OPSASSIST_LOG_FORMAT="${OPSASSIST_LOG_FORMAT:-text}"
PORT="${OPSASSIST_DEMO_PORT:-18000}"
QUESTION="${OPSASSIST_DEMO_QUESTION:-pod keeps restarting, what do I do?}"
LOG="$ROOT/var/demo-chat-server.log"

# 1. index and search (the CLI; an unchanged corpus re-embeds nothing)
"$VENV/bin/opsassist" demo

# 2. the model server (its own venv on first use: a few minutes) and the chat server
started_model=0
if ! scripts/model-server status > /dev/null 2>&1; then
    echo
    echo "==> starting the local KServe model server (scripts/model-server up)"
    scripts/model-server up
    started_model=1
fi
echo
echo "==> starting the chat server on http://127.0.0.1:$PORT (log: ${LOG#"$ROOT"/})"
OPSASSIST_LOG_FORMAT=json "$VENV/bin/uvicorn" serving.app:app --host 127.0.0.1 --port "$PORT" \
    > "$LOG" 2>&1 &
chat_pid=$!
cleanup() {
    kill "$chat_pid" 2> /dev/null || true
    wait "$chat_pid" 2> /dev/null || true
    if [ "$started_model" = 1 ]; then scripts/model-server down > /dev/null || true; fi
}
trap cleanup EXIT
for _ in $(seq 1 240); do
    if curl -fsS "http://127.0.0.1:$PORT/readyz" > /dev/null 2>&1; then break; fi
    if ! kill -0 "$chat_pid" 2> /dev/null; then
        echo "demo: the chat server exited; its log:" >&2
        tail -n 30 "$LOG" >&2
        exit 1
    fi
    sleep 0.5
done
curl -fsS "http://127.0.0.1:$PORT/readyz" | "$VENV/bin/python" -c '
import json, sys
checks = json.load(sys.stdin)["checks"]
print("    index %s, cache %s, model %s (%s)" % (checks["index"].get("version"),
      checks["cache"]["backend"], checks["model"]["model"],
      "ready" if checks["model"]["ok"] else checks["model"]["detail"]))'

# 3. one question, answered as Open WebUI would show it
echo
echo "==> asking: $QUESTION"
echo
"$VENV/bin/opsassist" ask "$QUESTION" --url "http://127.0.0.1:$PORT"
echo
echo "Open WebUI (or any OpenAI client) can use the same server: base URL"
echo "http://127.0.0.1:$PORT/v1, model \"opsassist\". This demo stops it now."

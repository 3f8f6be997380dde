"""The feedback loop end to end: a question asked through the real Open WebUI (the pip package,
``scripts/open-webui up`` on its own port and folder) to the real chat server (``uvicorn``, its
answers logged in the real PostgreSQL), ratings created through Open WebUI's API as its front end
sends them, then the ``chat_feedback`` DAG via ``dag.test()``.

Checked: the answer log row holds Open WebUI's message id; with Open WebUI down (a port with
nothing listening) the import task is retried, fails, and writes nothing (no set, no checkpoint);
with it up, the rating joined by message id and one joined by question and time (a message the
log does not know) are in the feedback set with their cited sources marked, a malformed and an
unjoined rating are dead-lettered and counted, ``feedback_bad_share`` of the index version is in
MLflow, and a re-run adds nothing (no item, no dead letter, no MLflow point).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT, free_port, require_service, service_port
from tests.e2e.chat_fixtures import chat_server, indexed_env

pytestmark = pytest.mark.slow

SCRIPT = ROOT / "scripts" / "open-webui"
KEY = "feedback-" + uuid.uuid4().hex[:8]
MODEL = "opsassist"
QUESTION = "pod keeps restarting, what do I do?"
TARGET = "kubernetes/KubePodCrashLooping.md"


@pytest.fixture(scope="module")
def audit_dsn() -> str:
    port = service_port("postgres", 15432)
    require_service("postgres", port)
    return f"postgresql://opsassist:opsassist@127.0.0.1:{port}/opsassist"


@pytest.fixture(scope="module")
def backend(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, audit_dsn: str
) -> Iterator[str]:
    """The chat server over a small runbook index, logging answers to PostgreSQL."""
    root = tmp_path_factory.mktemp("feedback-chat")
    with (
        indexed_env(root, redis_url, KEY, OPSASSIST_AUDIT_DSN=audit_dsn) as env,
        chat_server(env, root / "chat.log") as base,
    ):
        yield base


def webui_script(command: str, env: dict[str, str], timeout: float) -> None:
    done = subprocess.run(
        [str(SCRIPT), command],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"scripts/open-webui {command} failed:\n{done.stdout}\n{done.stderr}")


@pytest.fixture(scope="module")
def webui(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[str]:
    """Open WebUI on its own port and folder, pointed at the chat server; stopped afterwards."""
    port = free_port()
    env = {
        "OPSASSIST_WEBUI_PORT": str(port),
        "OPSASSIST_WEBUI_RUN_DIR": str(tmp_path_factory.mktemp("feedback-webui")),
        "OPSASSIST_WEBUI_OPENAI_URL": f"{backend}/v1",
        "OPSASSIST_WEBUI_OPENAI_KEY": KEY,
        "OPSASSIST_WEBUI_MODEL": MODEL,
    }
    webui_script("venv", env, 1800)
    webui_script("up", env, 900)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        webui_script("down", env, 120)


def signin(base: str) -> str:
    """The admin's token (the instance runs without login: WEBUI_AUTH=False)."""
    response = httpx.post(
        f"{base}/api/v1/auths/signin",
        json={"email": "admin@localhost", "password": "admin"},
        timeout=60,
    )
    response.raise_for_status()
    return str(response.json()["token"])


def ask(base: str, token: str, question: str) -> tuple[str, str]:
    """Ask as Open WebUI's front end does in a new chat; returns (chat id, assistant message id)
    once the answer is stored in the chat."""
    headers = {"Authorization": f"Bearer {token}"}
    user_id, assistant_id = str(uuid.uuid4()), str(uuid.uuid4())
    body = {
        "model": MODEL,
        "stream": False,
        "messages": [{"role": "user", "content": question}],
        "parent_id": None,
        "id": assistant_id,
        "user_message": {
            "id": user_id,
            "parentId": None,
            "childrenIds": [],
            "role": "user",
            "content": question,
            "timestamp": int(time.time()),
            "models": [MODEL],
        },
    }
    response = httpx.post(f"{base}/api/chat/completions", json=body, headers=headers, timeout=300)
    assert response.status_code == 200, response.text[:2000]
    chats = httpx.get(f"{base}/api/v1/chats/", headers=headers, timeout=60).json()
    for summary in chats:
        chat = httpx.get(f"{base}/api/v1/chats/{summary['id']}", headers=headers, timeout=60)
        if assistant_id in chat.json()["chat"]["history"]["messages"]:
            return str(summary["id"]), assistant_id
    raise AssertionError(f"no chat holds message {assistant_id}: {chats}")


def rate(
    base: str,
    token: str,
    chat_id: str,
    message_id: str,
    rating: int,
    comment: str,
    snapshot: dict[str, Any],
) -> str:
    """A rating as Open WebUI's front end posts it (thumbs up 1, down -1, the chat as snapshot)."""
    body = {
        "type": "rating",
        "data": {"rating": rating, "model_id": MODEL, "reason": "", "comment": comment},
        "meta": {"chat_id": chat_id, "message_id": message_id, "message_index": 1},
        "snapshot": {"chat": snapshot},
    }
    response = httpx.post(
        f"{base}/api/v1/evaluations/feedback",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    assert response.status_code == 200, response.text[:2000]
    return str(response.json()["id"])


def logged_answer(dsn: str, message_id: str) -> dict[str, Any]:
    """The chat server's answer log row of an Open WebUI message (written after the answer)."""
    import psycopg

    deadline = time.monotonic() + 30
    while True:
        with psycopg.connect(dsn, autocommit=True) as conn:
            cursor = conn.execute(
                "SELECT id, correlation_id, question, sources, index_version, webui_chat_id "
                "FROM chat_answers WHERE webui_message_id = %s",
                (message_id,),
            )
            row = cursor.fetchone()
            if row is not None:
                return dict(zip([d.name for d in cursor.description], row, strict=True))
        if time.monotonic() > deadline:
            raise AssertionError(f"no chat_answers row for Open WebUI message {message_id}")
        time.sleep(0.5)


def made_up_snapshot(question: str, message_id: str, at: int) -> dict[str, Any]:
    """The chat snapshot of a rating on a message the answer log does not know."""
    return {
        "chat": {
            "history": {
                "messages": {
                    "u": {"id": "u", "role": "user", "content": question},
                    message_id: {
                        "id": message_id,
                        "role": "assistant",
                        "parentId": "u",
                        "timestamp": at,
                    },
                }
            }
        }
    }


@contextlib.contextmanager
def dag_settings(monkeypatch: pytest.MonkeyPatch, values: dict[str, str]) -> Iterator[Any]:
    from opsassist.settings import get_settings

    for name, value in values.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        yield get_settings()
    finally:
        get_settings.cache_clear()


def feedback_dag(retries: int) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(str(ROOT / "dags" / "chat_feedback.py")).get_dag("chat_feedback")
    for task in dag.tasks:  # retried at once here (the DAG waits minutes between tries)
        task.retries = retries
        task.retry_delay = timedelta(seconds=0)
        task.retry_exponential_backoff = False
    return dag


def run_states(run: Any) -> dict[str, tuple[str, int]]:
    return {ti.task_id: (ti.state, ti.try_number) for ti in run.get_task_instances()}


def test_ratings_reach_the_feedback_set_and_mlflow(
    airflow_home: Path,
    webui: str,
    audit_dsn: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from opsassist import feedback
    from opsassist.evaluation import tracking

    token = signin(webui)
    chat_id, message_id = ask(webui, token, QUESTION)
    row = logged_answer(audit_dsn, message_id)
    assert row["id"].startswith("chatcmpl-") and row["correlation_id"] not in ("", "-")
    assert row["question"] == QUESTION and row["webui_chat_id"] == chat_id
    assert TARGET in [s["source"] for s in row["sources"]]
    version = row["index_version"]
    assert version and version.startswith("runbooks-v")

    headers = {"Authorization": f"Bearer {token}"}
    chat = httpx.get(f"{webui}/api/v1/chats/{chat_id}", headers=headers, timeout=60).json()
    assert chat["chat"]["history"]["messages"][message_id]["content"]  # Open WebUI kept it
    bad_id = rate(webui, token, chat_id, message_id, -1, "quotes the wrong runbook", chat)
    now = int(time.time())
    fallback_message = f"not-logged-{uuid.uuid4().hex[:8]}"
    rate(
        webui,
        token,
        chat_id,
        fallback_message,
        1,
        "",
        made_up_snapshot(QUESTION, fallback_message, now),
    )
    rate(webui, token, chat_id, message_id, 5, "five stars", chat)  # not a thumb: malformed
    lost = f"not-logged-{uuid.uuid4().hex[:8]}"
    rate(webui, token, chat_id, lost, -1, "", made_up_snapshot("what is a kubelet?", lost, now))

    values = {
        "OPSASSIST_DATA_DIR": str(tmp_path / "data"),
        "OPSASSIST_AUDIT_DSN": audit_dsn,
        "OPSASSIST_FEEDBACK_WEBUI_TOKEN": token,
        "OPSASSIST_FEEDBACK_JOIN_WINDOW_SECONDS": "900",
        "OPSASSIST_CHAT_MODEL_ID": MODEL,
    }
    # Open WebUI down: the import is retried, then fails; nothing is written
    down = f"http://127.0.0.1:{free_port()}"
    with dag_settings(monkeypatch, {**values, "OPSASSIST_FEEDBACK_WEBUI_URL": down}) as settings:
        run = feedback_dag(retries=1).test()
        states = run_states(run)
        assert run.state == "failed", states
        assert states["import_ratings"] == ("failed", 2), states  # the first try and one retry
        assert states["track_bad_share"][0] == "upstream_failed", states
        assert not feedback.checkpoint_path(settings).exists()
        assert feedback.read_set(settings) == []

    with dag_settings(monkeypatch, {**values, "OPSASSIST_FEEDBACK_WEBUI_URL": webui}) as settings:
        dag = feedback_dag(retries=1)
        run = dag.test()
        states = run_states(run)
        assert run.state == "success", states
        items = {item["joined_by"]: item for item in feedback.read_set(settings)}
        assert set(items) == {"message_id", "question_time"}, items
        joined = items["message_id"]
        assert joined["feedback_id"] == bad_id and joined["rating"] == "bad"
        assert joined["answer_id"] == row["id"] and joined["webui_message_id"] == message_id
        assert joined["comment"] == "quotes the wrong runbook"
        assert joined["question"] == QUESTION and joined["index_version"] == version
        assert joined["split"] == "dev"
        marked = {s["source"]: s["verdict"] for s in joined["sources"]}
        assert marked[TARGET] == "bad" and set(marked.values()) == {"bad"}
        fallback = items["question_time"]
        assert fallback["rating"] == "good" and fallback["answer_id"] == row["id"]
        assert {s["verdict"] for s in fallback["sources"]} == {"good"}
        dead = [json.loads(line) for line in feedback.deadletter_path(settings).open()]
        assert sorted(d["reason"] for d in dead) == ["malformed", "unjoined"], dead
        assert feedback.read_checkpoint(settings) >= now

        flagged = feedback.flagged_questions(settings, min_bad=1)
        assert [(f["question"], f["bad_count"], f["index_version"]) for f in flagged] == [
            (QUESTION, 1, version)
        ]
        assert feedback.flagged_questions(settings) == []  # three bad ratings flag a question

        runs = tracking.runs_by_tag(settings, "feedback", "opsassist.index_version", version)
        assert len(runs) == 1
        metrics = runs[0].data.metrics
        assert metrics["feedback_bad_share"] == 0.5 and metrics["feedback_ratings"] == 2
        assert runs[0].data.tags["opsassist.run_id"] == run.run_id

        # a re-run adds nothing: no item, no dead letter, no new MLflow point
        again = dag.test()
        assert again.state == "success", run_states(again)
        assert len(feedback.read_set(settings)) == 2
        assert len(feedback.deadletter_path(settings).read_text().splitlines()) == 2
        history = tracking.client(settings).get_metric_history(
            runs[0].info.run_id, "feedback_bad_share"
        )
        assert [point.value for point in history] == [0.5]

"""Ratings of chat answers from Open WebUI into the ``feedback`` evaluation set, and MLflow.

Hourly (and on demand): ``import_ratings`` reads Open WebUI's feedback export
(``OPSASSIST_FEEDBACK_WEBUI_URL`` with an admin's ``OPSASSIST_FEEDBACK_WEBUI_TOKEN``), joins each
rating to the chat server's answer log by the rated message's id (fallback: the same question
within ``OPSASSIST_FEEDBACK_JOIN_WINDOW_SECONDS``), appends the joined ratings to the feedback
set (``<data dir>/feedback/feedback.jsonl``, cited sources marked good or bad; deterministic ids,
so a re-run adds nothing), dead-letters malformed and unjoined ratings with a reason, and only
then advances its checkpoint. With Open WebUI down the task fails and is retried; nothing is
written and the checkpoint stays. ``track_bad_share`` logs ``feedback_bad_share`` per index
version to the MLflow experiment ``opsassist-feedback``. Questions rated bad three times or more
show in the Airflow plugin's view. Wiring only: ``opsassist.feedback``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import dag, task

DEFAULT_ARGS = {
    "owner": "sre-platform",
    "retries": 3,
    "retry_delay": timedelta(minutes=2),
    "retry_exponential_backoff": True,
}


@dag(
    dag_id="chat_feedback",
    schedule="@hourly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["feedback", "evaluation", "mlflow", "chat"],
    description="Hourly: Open WebUI ratings joined to the answer log, into the feedback set and "
    "MLflow.",
    doc_md=__doc__,
)
def chat_feedback() -> None:
    @task
    def import_ratings() -> dict[str, Any]:
        from opsassist.feedback import import_feedback
        from opsassist.logs import get_logger
        from opsassist.pipelines.context import task_scope
        from opsassist.progress import progress

        with (
            task_scope() as (settings, _),
            progress("ratings imported", logger=get_logger("opsassist.feedback")) as tracker,
        ):
            return import_feedback(settings, tracker=tracker)

    @task
    def track_bad_share(imported: dict[str, Any]) -> dict[str, Any]:
        from opsassist.feedback import track_bad_share
        from opsassist.pipelines.context import task_scope

        with task_scope() as (settings, run_id):
            result = track_bad_share(settings, {"opsassist.run_id": run_id})
            return {"imported": imported["added"], **result}

    track_bad_share(import_ratings())


chat_feedback()

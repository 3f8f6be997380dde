"""Signal retention: keep the signal index to ``OPSASSIST_SIGNALS_RETENTION_DAYS`` (default 7).

Hourly: roll the day's version over if the ingest has not yet done so today (copy, drop what is
older than the retention, finalize, promote), delete every document whose time range ended
before the cutoff (windows the ingest state knows, plus a sweep for any it does not), and
rebuild the search indexes (``finalize``). Shares the ingest's file lock, so it never interleaves
with a batch. Wiring only: ``opsassist.pipelines.signals.stage_retention``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import dag, task

DEFAULT_ARGS = {
    "owner": "sre-platform",
    "retries": 2,
    "retry_delay": timedelta(minutes=2),
}


@dag(
    dag_id="signals_retention",
    schedule="@hourly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["signals", "retention", "index"],
    description="Hourly: keeps the signal index to OPSASSIST_SIGNALS_RETENTION_DAYS days.",
    doc_md=__doc__,
)
def signals_retention() -> None:
    @task
    def retention() -> dict[str, Any]:
        from opsassist.pipelines import signals
        from opsassist.pipelines.context import task_scope
        from opsassist.stores import get_index_store

        with task_scope() as (settings, _):
            return signals.stage_retention(settings, get_index_store(settings))

    retention()


signals_retention()

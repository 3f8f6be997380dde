"""Runbook knowledge pipeline (CAG): Markdown runbooks -> validated index + Redis knowledge pack.

sync -> collect (parse, chunk, quarantine bad files) -> plan (diff with the promoted version) ->
[short-circuit when nothing changed] -> embed (new chunks only) -> build (new version) ->
validate (Great Expectations) -> gate (retrieval quality vs the promoted version, MLflow) ->
promote (alias swap) -> cache (knowledge pack, answer carry-over)
-> warm-up. Wiring only: every step is a function in ``opsassist.pipelines.runbooks`` (embed to
promote: the tasks ``opsassist.dag_tasks`` builds for both index DAGs).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Param, dag, task

from opsassist.dag_tasks import build_gate_promote

DEFAULT_ARGS = {
    "owner": "sre-platform",
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
}


@dag(
    dag_id="runbooks_index",
    schedule="@weekly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["cag", "runbooks", "index"],
    description="Runbooks -> validated, quality-gated index and knowledge pack (incremental).",
    params={
        "runbooks_path": Param(
            None,
            type=["null", "string"],
            description="Folder to index instead of the configured source.",
        ),
        "allow_shrink": Param(
            False,
            type="boolean",
            description="Let this build delete more than OPSASSIST_INDEX_MAX_SHRINK of the index "
            "(runbooks really were removed).",
        ),
        "allow_empty": Param(
            False, type="boolean", description="Let a source with no runbook build."
        ),
    },
    doc_md=__doc__,
)
def runbooks_index() -> None:
    @task
    def sync(params: dict[str, Any] | None = None) -> str:
        from pathlib import Path

        from opsassist.pipelines.context import task_scope
        from opsassist.sources.runbooks import sync_runbooks

        override = (params or {}).get("runbooks_path") or None
        with task_scope() as (settings, _):
            return str(sync_runbooks(settings, Path(override) if override else None))

    @task
    def collect(root: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        from pathlib import Path

        from opsassist.pipelines import runbooks
        from opsassist.pipelines.context import task_scope

        with task_scope() as (settings, run_id):
            settings = runbooks.with_run_params(settings, params)
            return runbooks.stage_collect(settings, run_id, Path(root))

    @task
    def plan(collected: dict[str, Any], params: dict[str, Any] | None = None) -> dict[str, Any]:
        from opsassist.pipelines import runbooks
        from opsassist.pipelines.context import task_scope
        from opsassist.stores import get_cache, get_index_store

        with task_scope() as (settings, run_id):
            settings = runbooks.with_run_params(settings, params)
            store, cache = get_index_store(settings), get_cache(settings)
            return runbooks.stage_plan(settings, run_id, store, cache)

    @task
    def refresh_cache(promoted: dict[str, Any]) -> dict[str, Any]:
        from opsassist.pipelines import runbooks
        from opsassist.pipelines.context import task_scope
        from opsassist.stores import get_cache

        with task_scope() as (settings, run_id):
            return runbooks.stage_cache(
                settings, run_id, get_cache(settings), promoted["version"], promoted["previous"]
            )

    @task
    def warm_up(promoted: dict[str, Any], _cache: dict[str, Any]) -> dict[str, Any]:
        from opsassist.pipelines import runbooks
        from opsassist.pipelines.context import task_scope
        from opsassist.stores import get_cache, get_index_store

        with task_scope() as (settings, _):
            return runbooks.stage_warmup(
                settings, get_index_store(settings), get_cache(settings), promoted["version"]
            )

    promoted = build_gate_promote("runbooks", plan(collect(sync())))
    warm_up(promoted, refresh_cache(promoted))


runbooks_index()

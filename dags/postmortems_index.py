"""Postmortems ("have we seen this before"): incident write-ups -> validated, gated index.

sync (folder or Git) -> collect (parse write-ups, metadata, section chunks; quarantine bad files) ->
plan (diff with the promoted version) -> [short-circuit when nothing changed] -> embed (new chunks
only) -> build -> validate (Great Expectations, ``postmortem_chunks``) -> gate (the postmortem
evaluation set vs the promoted version) -> promote (alias ``postmortems``) -> pack (digests kept
beside the version, read by the chat's "Seen before" line). The runbook pipeline's stages with the
``POSTMORTEMS`` corpus: wiring only, every step is a function in ``opsassist.pipelines.runbooks``
(embed to promote: the tasks ``opsassist.dag_tasks`` builds for both index DAGs).
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
    dag_id="postmortems_index",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["postmortems", "index"],
    description="Incident write-ups -> validated, quality-gated postmortem index (incremental).",
    params={
        "postmortems_path": Param(
            None,
            type=["null", "string"],
            description="Folder to index instead of the configured source.",
        ),
        "allow_shrink": Param(
            False,
            type="boolean",
            description="Let this build delete more than OPSASSIST_INDEX_MAX_SHRINK of the index.",
        ),
    },
    doc_md=__doc__,
)
def postmortems_index() -> None:
    @task
    def sync(params: dict[str, Any] | None = None) -> str:
        from pathlib import Path

        from opsassist.pipelines.context import task_scope
        from opsassist.sources.postmortems import sync_postmortems

        override = (params or {}).get("postmortems_path") or None
        with task_scope() as (settings, _):
            return str(sync_postmortems(settings, Path(override) if override else None))

    @task
    def collect(root: str) -> dict[str, Any]:
        from pathlib import Path

        from opsassist.pipelines import runbooks
        from opsassist.pipelines.context import task_scope

        with task_scope() as (settings, run_id):
            return runbooks.stage_collect(settings, run_id, Path(root), runbooks.POSTMORTEMS)

    @task
    def plan(collected: dict[str, Any], params: dict[str, Any] | None = None) -> dict[str, Any]:
        from opsassist.pipelines import runbooks
        from opsassist.pipelines.context import task_scope
        from opsassist.stores import get_index_store

        with task_scope() as (settings, run_id):
            settings = runbooks.with_run_params(settings, params)
            store = get_index_store(settings)
            return runbooks.stage_plan(settings, run_id, store, None, runbooks.POSTMORTEMS)

    @task
    def pack(promoted: dict[str, Any]) -> dict[str, Any]:
        from opsassist.pipelines import runbooks
        from opsassist.pipelines.context import task_scope

        with task_scope() as (settings, run_id):
            return runbooks.stage_pack(settings, run_id, promoted["version"], runbooks.POSTMORTEMS)

    pack(build_gate_promote("postmortems", plan(collect(sync()))))


postmortems_index()

"""The tasks the runbook and postmortem index DAGs share, built inside the calling DAG.

``planned -> [short-circuit when nothing changed] -> embed (new chunks only) -> build -> validate
(Great Expectations) -> gate (the corpus's evaluation set vs the promoted version) -> promote``.
Every task calls the stage of ``opsassist.pipelines.runbooks`` with the corpus named by the DAG;
the corpus is looked up when the task runs. Outside ``opsassist.pipelines`` on purpose: DAG files
import this at parse time (every 30 s), so it imports nothing heavy at module level, only Airflow's
``task`` decorator when called.
"""

from __future__ import annotations

from typing import Any


def build_gate_promote(corpus_name: str, planned: Any) -> Any:
    """Adds has_changes, embed, build, validate, gate and promote to the current DAG (task ids as
    named), the embed skipped unless ``planned`` (the plan task's output) has changes; returns
    promote's output (``{"version", "previous"}``)."""
    from airflow.sdk import task

    @task.short_circuit
    def has_changes(planned: dict[str, Any]) -> bool:
        return bool(planned["has_changes"])

    @task
    def embed() -> dict[str, Any]:
        from opsassist.pipelines import runbooks
        from opsassist.pipelines.context import task_scope

        with task_scope() as (settings, run_id):
            return runbooks.stage_embed(settings, run_id, None, runbooks.CORPORA[corpus_name])

    @task
    def build(embedded: dict[str, Any]) -> str:
        from opsassist.pipelines import runbooks
        from opsassist.pipelines.context import task_scope
        from opsassist.stores import get_index_store

        with task_scope() as (settings, run_id):
            store = get_index_store(settings)
            corpus = runbooks.CORPORA[corpus_name]
            return str(runbooks.stage_build(settings, run_id, store, corpus)["version"])

    @task(retries=0)
    def validate(version: str) -> str:
        from opsassist.pipelines import runbooks
        from opsassist.pipelines.context import task_scope
        from opsassist.stores import get_index_store

        with task_scope() as (settings, run_id):
            store = get_index_store(settings)
            runbooks.stage_validate(settings, run_id, store, version, runbooks.CORPORA[corpus_name])
            return version

    @task(retries=0)
    def gate(version: str) -> str:
        from opsassist.pipelines import runbooks
        from opsassist.pipelines.context import task_scope
        from opsassist.stores import get_index_store

        with task_scope() as (settings, run_id):
            store = get_index_store(settings)
            runbooks.stage_gate(settings, run_id, store, version, runbooks.CORPORA[corpus_name])
            return version

    @task
    def promote(version: str) -> dict[str, Any]:
        from opsassist.pipelines import runbooks
        from opsassist.pipelines.context import task_scope
        from opsassist.stores import get_index_store

        with task_scope() as (settings, run_id):
            store = get_index_store(settings)
            corpus = runbooks.CORPORA[corpus_name]
            return runbooks.stage_promote(settings, run_id, store, version, corpus)

    # XComArgs stand for the values at parse time: typed Any, as Airflow passes them on
    embedded: Any = embed()
    has_changes(planned) >> embedded
    built: Any = build(embedded)
    validated: Any = validate(built)
    gated: Any = gate(validated)
    return promote(gated)

"""Retrieval evaluation on demand: an evaluation set against an index, logged to MLflow.

Trigger it from the Airflow UI with params ``set`` (``runbooks``, ``signals`` or ``postmortems``)
and ``index`` (an alias or a version such as ``runbooks-v0007``; empty: the set's default index,
the postmortem alias for ``postmortems``, and for ``signals`` the loghub evaluation index, built
first if missing or stale). resolve -> evaluate: every question in BM25, vector and hybrid mode,
one MLflow run in experiment
``opsassist-<set>`` with the metrics, the per-question CSV and the recall@k plot.
Wiring only: the steps are ``opsassist.evaluation.service`` functions.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Param, dag, task

DEFAULT_ARGS = {
    "owner": "sre-platform",
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
}


@dag(
    dag_id="evaluate_index",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["evaluation", "mlflow", "index"],
    description="Retrieval evaluation of an index (BM25, vector, hybrid), logged to MLflow.",
    params={
        "set": Param(
            "runbooks", enum=["runbooks", "signals", "postmortems"], description="Evaluation set."
        ),
        "index": Param(
            None,
            type=["null", "string"],
            description="Alias or version, e.g. runbooks-v0007 (empty: the set's default index).",
        ),
    },
    doc_md=__doc__,
)
def evaluate_index() -> None:
    @task
    def resolve(params: dict[str, Any] | None = None) -> dict[str, str]:
        from opsassist.evaluation.service import resolve_index
        from opsassist.pipelines.context import task_scope

        set_name = str((params or {}).get("set") or "runbooks")
        index = str((params or {}).get("index") or "") or None
        with task_scope() as (settings, _):
            return {"set": set_name, "version": resolve_index(settings, set_name, index)}

    @task
    def evaluate(target: dict[str, str]) -> dict[str, Any]:
        from opsassist.evaluation.service import evaluate_set
        from opsassist.pipelines.context import task_scope

        with task_scope() as (settings, run_id):
            result = evaluate_set(
                settings, target["set"], target["version"], tags={"opsassist.run_id": run_id}
            )
            summary = result.to_json()
            keep = ("recall_at_5", "mrr_at_10", "latency_p95_ms", "questions")
            summary["metrics"] = {
                k: v for k, v in summary["metrics"].items() if k.endswith(keep) and k.count(".") < 2
            }
            return summary  # small XCom: headline metrics; everything else is in MLflow

    evaluate(resolve())


evaluate_index()

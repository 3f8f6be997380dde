"""One call for the CLI and the evaluation DAG: evaluate a set on an index, log it to MLflow."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from opsassist.evaluation.evalset import EvalSetError, applicable, load_evalset, unmatched_rules
from opsassist.evaluation.runner import (
    MODES,
    EvalReport,
    document_refs,
    embed_questions,
    evaluate_version,
)
from opsassist.index.base import IndexStore, SearchMode, resolve_target
from opsassist.logs import get_logger
from opsassist.settings import Settings
from opsassist.stores import fusion_config, get_index_store

log = get_logger(__name__)
SETS: tuple[str, ...] = ("runbooks", "signals", "postmortems")


@dataclasses.dataclass(slots=True)
class Evaluation:
    report: EvalReport
    unmatched: list[str]  # relevance rules that match no document of the index
    mlflow_run_id: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "evalset": self.report.evalset,
            "version": self.report.version,
            "questions": self.report.questions,
            "total_items": self.report.total_items,
            "unmatched_rules": self.unmatched,
            "mlflow_run_id": self.mlflow_run_id,
            "metrics": {key: round(value, 4) for key, value in sorted(self.report.metrics.items())},
        }


def resolve_index(
    settings: Settings, set_name: str, index: str | None, store: IndexStore | None = None
) -> str:
    """The version to evaluate: ``index`` (alias or version), else the set's default index
    (the runbook alias, the postmortem alias; for signals the loghub evaluation index, built if
    missing or stale)."""
    if set_name not in SETS:
        raise EvalSetError(f"unknown evaluation set {set_name!r} (use {', '.join(SETS)})")
    store = store or get_index_store(settings)
    if index:
        return resolve_target(store, index)
    if set_name == "signals":
        from opsassist.evaluation.signals import ensure_signal_index

        return ensure_signal_index(settings, store)
    if set_name == "postmortems":
        return resolve_target(store, settings.postmortem_index)
    return resolve_target(store, settings.runbook_index)


def evaluate_set(
    settings: Settings,
    set_name: str,
    version: str,
    *,
    store: IndexStore | None = None,
    modes: Sequence[SearchMode] = MODES,
    log_to_mlflow: bool = True,
    tags: dict[str, str] | None = None,
) -> Evaluation:
    """Evaluate a set on one version in every mode (same run, same query vectors)."""
    store = store or get_index_store(settings)
    evalset = load_evalset(settings.evalsets_dir, set_name)
    docs = document_refs(store, version, evalset.needs_templates)
    items = applicable(evalset.items, docs)
    unmatched = unmatched_rules(evalset, docs)
    if not items:
        raise EvalSetError(f"no question of {evalset.label} has a relevant document in {version}")
    vectors = embed_questions(
        [a.item for a in items], settings.embedding_model, settings.embedding_device
    )
    report = evaluate_version(
        store,
        version,
        items,
        vectors,
        fusion_config(settings),
        evalset=evalset.label,
        total_items=len(evalset.items),
        modes=modes,
    )
    run_id = None
    if log_to_mlflow:
        from opsassist.evaluation.tracking import log_run, run_params

        run_id = log_run(
            settings,
            set_name,
            report,
            run_params(settings, index_version=version, evalset_version=evalset.label),
            tags={"opsassist.kind": "evaluation", **(tags or {})},
            run_name=f"eval {version}",
        )
    log.info(
        "evaluation done",
        extra={"set": set_name, "version": version, "questions": report.questions},
    )
    return Evaluation(report, unmatched, run_id)

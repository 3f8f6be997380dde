"""The retrieval quality gate: a runbook build is promoted only if retrieval did not get worse.

Before the alias moves, the candidate version and the promoted one are evaluated in the same run,
on the same questions (those of the runbook set whose runbooks both versions contain) with the
same question vectors (each version's own embedding model: a build that changes the model is
compared with what the promoted version really does). The gate compares hybrid recall@5 and
MRR@10 for each language of ``OPSASSIST_GATE_LANGUAGES`` on its own questions: a drop larger than
``OPSASSIST_GATE_TOLERANCE`` on either, in any language, refuses the build (a build that improves
English but breaks Russian is refused). With no promoted version (a first build) the candidate
must reach the absolute floors ``OPSASSIST_GATE_MIN_RECALL_AT_5`` / ``_MIN_MRR_AT_10`` in the
first language. A language with fewer applicable questions than ``OPSASSIST_GATE_MIN_QUESTIONS``
is not judged (said so); with no language judged a build passes, saying so, except a first
build: its floors were never checked, so it is refused unless
``OPSASSIST_GATE_ALLOW_UNJUDGED_FIRST_BUILD`` (runbooks the evaluation set has no questions for).

The decision and its reason go to the task log and to an MLflow run (tags ``gate.decision`` =
promote/refuse and ``gate.reason``). The caller turns a refusal into ``BuildRefusedError``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from opsassist.evaluation.evalset import ApplicableItem, applicable, load_evalset
from opsassist.evaluation.runner import (
    EvalReport,
    QueryVector,
    document_refs,
    embed_questions,
    evaluate_version,
)
from opsassist.index.base import LEGACY_MODEL, IndexStore
from opsassist.logs import get_correlation_id, get_logger
from opsassist.settings import Settings
from opsassist.stores import fusion_config

log = get_logger(__name__)
GATED_METRICS: tuple[str, ...] = ("recall_at_5", "mrr_at_10")
SET_NAME = "runbooks"


@dataclasses.dataclass(frozen=True, slots=True)
class GateDecision:
    promote: bool
    reason: str
    questions: int  # applicable questions in the gate's language
    candidate: dict[str, float]  # the gated metrics of the candidate
    baseline: dict[str, float] | None  # ... and of the promoted version, if any
    baseline_version: str | None = None
    mlflow_run_id: str | None = None

    @property
    def label(self) -> str:
        return "promote" if self.promote else "refuse"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"decision": self.label}


def decide_languages(
    candidate: Mapping[str, float],
    baseline: Mapping[str, float] | None,
    *,
    questions: Mapping[str, int],
    languages: Sequence[str],
    tolerance: float,
    floors: Mapping[str, float],
    min_questions: int,
    baseline_version: str | None = None,
    allow_unjudged_first: bool = False,
) -> GateDecision:
    """The rule of :func:`decide` for every language (floors: the first language only); the
    build is promoted only if no language refuses it."""
    decisions = {
        language: decide(
            candidate,
            baseline,
            questions=questions.get(language, 0),
            language=language,
            tolerance=tolerance,
            floors=floors if index == 0 else dict.fromkeys(floors, 0.0),
            min_questions=min_questions,
            baseline_version=baseline_version,
            allow_unjudged_first=allow_unjudged_first,
        )
        for index, language in enumerate(languages)
    }
    judged = {lang: d for lang, d in decisions.items() if not d.reason.startswith("too few")}
    picked = {k: v for d in decisions.values() for k, v in d.candidate.items()}
    base = {k: v for d in decisions.values() for k, v in (d.baseline or {}).items()} or None
    reason = "; ".join(f"{lang}: {d.reason}" for lang, d in decisions.items())
    promote = all(d.promote for d in decisions.values())
    counted = sum(questions.get(lang, 0) for lang in (judged or decisions))
    return GateDecision(promote, reason, counted, picked, base, baseline_version if base else None)


def gated_keys(language: str) -> list[str]:
    return [f"hybrid.{language}.{name}" for name in GATED_METRICS]


def decide(
    candidate: Mapping[str, float],
    baseline: Mapping[str, float] | None,
    *,
    questions: int,
    language: str,
    tolerance: float,
    floors: Mapping[str, float],
    min_questions: int,
    baseline_version: str | None = None,
    allow_unjudged_first: bool = False,
) -> GateDecision:
    """The gate's rule, as a pure function of the metrics (``floors`` maps metric -> minimum).
    A first build whose floors cannot be checked (too few questions) is refused unless
    ``allow_unjudged_first``: nothing is promoted without passing something."""
    keys = gated_keys(language)
    picked = {key: float(candidate[key]) for key in keys if key in candidate}
    if questions < max(1, min_questions):
        reason = (
            f"too few applicable questions: {questions} in language {language!r} "
            f"(< {max(1, min_questions)}); not judged"
        )
        has_floors = any(value > 0 for value in floors.values())
        if baseline is None and has_floors and not allow_unjudged_first:
            reason = (
                f"first build not judged: {reason}; add evaluation questions for these runbooks "
                "(OPSASSIST_EVALSETS_DIR) or set OPSASSIST_GATE_ALLOW_UNJUDGED_FIRST_BUILD=true"
            )
            return GateDecision(False, reason, questions, picked, None, None)
        return GateDecision(True, reason, questions, picked, None, baseline_version)
    if baseline is None:
        failures = [
            f"{key} {picked[key]:.3f} < floor {floors[name]:.3f}"
            for key, name in zip(keys, GATED_METRICS, strict=True)
            if picked[key] < floors[name]
        ]
        passed = ", ".join(
            f"{key} {picked[key]:.3f} >= {floors[n]:.3f}"
            for key, n in zip(keys, GATED_METRICS, strict=True)
        )
        reason = (
            f"first build below floors: {'; '.join(failures)}"
            if failures
            else f"first build above floors: {passed}"
        )
        return GateDecision(not failures, reason, questions, picked, None, None)
    base = {key: float(baseline[key]) for key in keys}
    failures = [
        f"{key} {picked[key]:.3f} vs {base[key]:.3f} "
        f"(drop {base[key] - picked[key]:.3f} > tolerance {tolerance:.3f})"
        for key in keys
        if base[key] - picked[key] > tolerance + 1e-9
    ]
    compared = ", ".join(f"{key} {picked[key]:.3f} vs {base[key]:.3f}" for key in keys)
    where = f"vs {baseline_version}" if baseline_version else "vs the promoted version"
    reason = (
        f"regression {where}: {'; '.join(failures)}"
        if failures
        else f"no regression beyond {tolerance:.3f} {where}: {compared}"
    )
    return GateDecision(not failures, reason, questions, picked, base, baseline_version)


def _log_decision(
    settings: Settings,
    decision: GateDecision,
    report: EvalReport,
    baseline_report: EvalReport | None,
    run_id: str,
    set_name: str = SET_NAME,
) -> str | None:
    """Record the decision in MLflow; a tracking outage is logged, it does not block the build."""
    from opsassist.evaluation.tracking import log_run, run_params

    extra = {"gate.questions": float(decision.questions)}
    if baseline_report is not None:
        extra |= {f"baseline.{key}": value for key, value in baseline_report.metrics.items()}
    try:
        return log_run(
            settings,
            set_name,
            report,
            run_params(
                settings,
                index_version=report.version,
                evalset_version=report.evalset,
                baseline_version=decision.baseline_version or "none",
                gate_tolerance=settings.gate_tolerance,
                gate_languages=settings.gate_languages,
            ),
            tags={
                "opsassist.kind": "gate",
                "opsassist.run_id": run_id,
                # a DAG task's is <dag id>/<run id>: the Airflow plugin links the run
                "opsassist.correlation_id": get_correlation_id(),
                "gate.decision": decision.label,
                "gate.reason": decision.reason,
            },
            extra_metrics=extra,
            run_name=f"gate {report.version}",
        )
    except Exception as exc:
        log.error(
            "gate decision not recorded in MLflow",
            extra={"error": f"{type(exc).__name__}: {exc}", "decision": decision.label},
        )
        return None


def _baseline_report(
    store: IndexStore,
    baseline: str,
    items: list[ApplicableItem],
    vectors: dict[str, QueryVector],
    settings: Settings,
    evalset: str,
    total: int,
) -> EvalReport | None:
    try:
        return evaluate_version(
            store,
            baseline,
            items,
            vectors,
            fusion_config(settings),
            evalset=evalset,
            total_items=total,
            modes=("hybrid",),
        )
    except Exception as exc:  # e.g. a baseline built with another embedding model
        log.warning(
            "baseline could not be evaluated: the gate falls back to the floors",
            extra={"baseline": baseline, "error": f"{type(exc).__name__}: {exc}"},
        )
        return None


def run_gate(
    settings: Settings,
    store: IndexStore,
    version: str,
    baseline: str | None,
    run_id: str,
    set_name: str = SET_NAME,
) -> GateDecision:
    """Evaluate ``version`` (all modes) and ``baseline`` (hybrid) and decide; logs both ways.
    ``set_name``: the evaluation set of the corpus built (``runbooks``, ``postmortems``).

    Both are scored on the questions whose relevant runbooks exist in both versions (like with
    like: a runbook added or removed by the build neither helps nor hurts the comparison).
    """
    if not settings.gate_enabled:
        decision = GateDecision(True, "gate disabled (OPSASSIST_GATE_ENABLED=false)", 0, {}, None)
        log.info("quality gate", extra=decision.to_json())
        return decision
    evalset = load_evalset(settings.evalsets_dir, set_name)
    if baseline == version:
        baseline = None
    docs = document_refs(store, version, evalset.needs_templates)
    if baseline is not None:
        kept = set(store.ids_by_source(baseline))
        docs = [doc for doc in docs if doc.source in kept]
    items = applicable(evalset.items, docs)
    languages = [x.strip() for x in settings.gate_languages.split(",") if x.strip()]
    questions = {
        language: sum(1 for a in items if a.item.language == language) for language in languages
    }
    report = EvalReport(evalset.label, version, (), [], {}, len(evalset.items))
    baseline_report: EvalReport | None = None
    if max(questions.values(), default=0) >= settings.gate_min_questions:
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
        )
        if baseline is not None:
            baseline_model = store.version_model(baseline) or LEGACY_MODEL
            if baseline_model != settings.embedding_model:  # its own model's question vectors
                vectors = embed_questions(
                    [a.item for a in items], baseline_model, settings.embedding_device
                )
            baseline_report = _baseline_report(
                store, baseline, items, vectors, settings, evalset.label, len(evalset.items)
            )
    decision = decide_languages(
        report.metrics,
        baseline_report.metrics if baseline_report else None,
        questions=questions,
        languages=languages,
        tolerance=settings.gate_tolerance,
        floors={
            "recall_at_5": settings.gate_min_recall_at_5,
            "mrr_at_10": settings.gate_min_mrr_at_10,
        },
        min_questions=settings.gate_min_questions,
        baseline_version=baseline if baseline_report else None,
        allow_unjudged_first=settings.gate_allow_unjudged_first_build,
    )
    decision = dataclasses.replace(
        decision,
        mlflow_run_id=_log_decision(settings, decision, report, baseline_report, run_id, set_name),
    )
    (log.info if decision.promote else log.warning)(
        f"quality gate: {decision.label}: {decision.reason}",
        extra={"version": version, **decision.to_json()},
    )
    return decision

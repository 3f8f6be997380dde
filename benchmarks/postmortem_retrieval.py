"""Postmortem retrieval ("have we seen this before"): recall@3 / MRR@10 on the postmortem set's
frozen test split and its dev split, hybrid (the default search) against a plain BM25 baseline
(no glossary) in the same run, and the chat's "Seen before" threshold chosen on dev.

Builds the postmortem index of ``OPSASSIST_POSTMORTEMS_PATH`` (default: the shipped examples)
with the pipeline's own functions in a scratch store (``<data dir>/bench/postmortem_retrieval``),
evaluates ``evalsets/postmortems.yaml`` in hybrid, vector and BM25 mode plus plain BM25 on the
same index and question vectors, then, for the chat, searches every question as the chat does
(top 3 postmortem chunks) and records the cosine of the best one: the questions of
``postmortems.yaml`` should show their write-up, those of ``postmortems_unseen.yaml`` nothing.
The line is shown when the best write-up is in the top ``AGREEMENT_RANK`` of both the keyword and
the vector list and its cosine reaches the threshold: the cosine with the best dev accuracy
(ties: the higher one); test accuracy, precision and recall are reported at it, and for the
cosine alone as the baseline. ``--mlflow`` logs the evaluation (``opsassist-postmortems``).

    .venv/bin/python -m benchmarks.postmortem_retrieval [--json] [--mlflow]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks._common import emit, machine
from opsassist.documents import SearchHit
from opsassist.embedding import model_dimension
from opsassist.evaluation.evalset import applicable, check_frozen, load_evalset
from opsassist.evaluation.runner import (
    EvalReport,
    QuestionResult,
    document_refs,
    embed_questions,
    evaluate_version,
    summarize,
)
from opsassist.index.base import FusionConfig, IndexStore, Query, hybrid_search
from opsassist.index.embedded import EmbeddedIndexStore
from opsassist.logs import configure_logging
from opsassist.pipelines.runbooks import POSTMORTEMS, Plan, build_version, collect, embed_chunks
from opsassist.postmortems import AGREEMENT_RANK, shows_incident
from opsassist.settings import Settings
from opsassist.stores import fusion_config

ALIAS = "pm-bench"
HEADLINE = ("recall_at_1", "recall_at_3", "recall_at_5", "mrr_at_10")


@dataclasses.dataclass(frozen=True, slots=True)
class Probe:
    """One question searched as the chat searches it: the best postmortem and its cosine."""

    id: str
    split: str
    language: str
    expected: str | None  # the write-up it should show (None: none)
    best: SearchHit | None  # the best postmortem hit, as the chat sees it

    @property
    def cosine(self) -> float:
        return float(self.best.vector_score or 0.0) if self.best else 0.0


def build_index(settings: Settings, folder: Path) -> tuple[EmbeddedIndexStore, str, float]:
    store = EmbeddedIndexStore(folder, settings.embedded_ann_min_rows)
    for old in store.list_versions(ALIAS):
        store.drop_version(old)
    started = time.perf_counter()
    result = collect(settings.postmortems_path, settings, POSTMORTEMS)
    embedded = embed_chunks(result.chunks, settings)
    plan = Plan(None, [c.id for c in embedded], [], 0, [], [])
    dimension = model_dimension(settings.embedding_model, settings.embedding_device)
    version = build_version(store, ALIAS, plan, embedded, dimension, settings.embedding_model)
    return store, version, time.perf_counter() - started


def probes(
    store: IndexStore,
    version: str,
    settings: Settings,
    items: list[tuple[str, str, str, str, str | None]],
) -> list[Probe]:
    """``items``: (id, split, language, question, expected source)."""
    from opsassist.evaluation.evalset import EvalItem

    vectors = embed_questions(
        [EvalItem(i, q, (), lang, "paraphrase") for i, _, lang, q, _ in items],
        settings.embedding_model,
        settings.embedding_device,
    )
    fusion = fusion_config(settings)
    out: list[Probe] = []
    for item_id, split, language, question, expected in items:
        query = Query(text=question, vector=vectors[item_id].vector, k=3, mode="hybrid")
        hits = hybrid_search(store, version, query, fusion)
        out.append(Probe(item_id, split, language, expected, hits[0] if hits else None))
    return out


def judged(probes_: list[Probe], threshold: float, agreement: bool = True) -> dict[str, float]:
    """Accuracy (right write-up shown, or nothing shown when none applies), precision (shown
    lines that are right) and recall (questions with a write-up that get the right one)."""
    right = shown = shown_right = positives = found = 0
    for p in probes_:
        if p.best is None:
            show = False
        elif agreement:  # the chat's rule
            show = shows_incident(p.best, threshold)
        else:  # the baseline: the cosine alone
            show = p.cosine >= threshold
        correct_show = show and p.best is not None and p.best.source == p.expected
        if p.expected is None:
            right += not show
        else:
            positives += 1
            right += correct_show
            found += correct_show
        shown += show
        shown_right += correct_show
    return {
        "accuracy": right / len(probes_) if probes_ else 0.0,
        "precision": shown_right / shown if shown else 1.0,
        "recall": found / positives if positives else 0.0,
        "shown": float(shown),
        "questions": float(len(probes_)),
    }


def choose_threshold(dev: list[Probe], agreement: bool = True) -> float:
    """The cosine cut with the best dev accuracy; ties go to the higher cut (fewer wrong lines)."""
    candidates = sorted({round(p.cosine, 4) for p in dev} | {0.0})
    best = max(candidates, key=lambda t: (judged(dev, t, agreement)["accuracy"], t))
    return float(best)


def unseen_items(settings: Settings) -> list[tuple[str, str, str, str, str | None]]:
    path = settings.evalsets_dir / "postmortems_unseen.yaml"
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    check_frozen(path, raw["items"])
    return [
        (str(i["id"]), str(i["split"]), str(i["language"]), str(i["question"]), None)
        for i in raw["items"]
    ]


def table(metrics: dict[str, float], modes: list[str], groups: list[str]) -> list[str]:
    lines = [f"{'group':<22} {'mode':<10} " + " ".join(f"{h:>12}" for h in HEADLINE)]
    for group in groups:
        for mode in modes:
            prefix = f"{mode}.{group}." if group else f"{mode}."
            if f"{prefix}recall_at_3" not in metrics:
                continue
            values = " ".join(f"{metrics[prefix + h]:>12.3f}" for h in HEADLINE)
            lines.append(f"{group or 'all':<22} {mode:<10} {values}")
    return lines


def recurrence_metrics(results: list[QuestionResult], ids: set[str]) -> dict[str, float]:
    """The same metrics over the explicit "have we seen X before" questions only."""
    return summarize([r for r in results if r.item_id in ids], prefix="recurrence.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--mlflow", action="store_true", help="log the evaluation to MLflow")
    args = parser.parse_args()
    configure_logging("WARNING", "text")
    settings = Settings()
    store, version, build_s = build_index(
        settings, settings.data_dir / "bench" / "postmortem_retrieval"
    )
    evalset = load_evalset(settings.evalsets_dir, "postmortems")
    items = applicable(evalset.items, document_refs(store, version, False))
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
    plain = FusionConfig(expand_lexical=False)  # the baseline: BM25 as the index has it
    baseline: EvalReport = evaluate_version(
        store,
        version,
        items,
        vectors,
        plain,
        evalset=evalset.label,
        total_items=len(evalset.items),
        modes=("bm25",),
    )
    metrics = dict(report.metrics)
    metrics |= {
        k.replace("bm25.", "bm25_plain.", 1): v
        for k, v in baseline.metrics.items()
        if k.startswith("bm25.")
    }
    recurrent = {i.id for i in evalset.items if i.notes == "recurrence"}
    metrics |= recurrence_metrics(report.results + baseline.results, recurrent)

    positives = [
        (a.item.id, a.item.split, a.item.language, a.item.question, next(iter(a.relevant)))
        for a in items
    ]
    probed = probes(store, version, settings, positives + unseen_items(settings))
    dev = [p for p in probed if p.split == "dev"]
    test = [p for p in probed if p.split == "test"]
    threshold = choose_threshold(dev)
    current = settings.chat_postmortem_min_similarity
    cosine_only = choose_threshold(dev, agreement=False)
    chat = {
        "rule": f"top {AGREEMENT_RANK} of both lists and cosine >= threshold",
        "threshold_chosen_on_dev": threshold,
        "dev": judged(dev, threshold),
        "test": judged(test, threshold),
        "setting": current,
        "dev_at_setting": judged(dev, current),
        "test_at_setting": judged(test, current),
        "baseline_cosine_only": {
            "threshold_chosen_on_dev": cosine_only,
            "dev": judged(dev, cosine_only, agreement=False),
            "test": judged(test, cosine_only, agreement=False),
        },
        "cosines": {
            "dev_with_writeup": sorted(round(p.cosine, 3) for p in dev if p.expected),
            "dev_unseen": sorted(round(p.cosine, 3) for p in dev if p.expected is None),
        },
    }
    run_id = None
    if args.mlflow:
        from opsassist.evaluation.tracking import log_run, run_params

        run_id = log_run(
            settings,
            "postmortems",
            dataclasses.replace(report, metrics=metrics),
            run_params(settings, index_version=version, evalset_version=evalset.label),
            tags={"opsassist.kind": "benchmark"},
            extra_metrics={"chat.threshold": threshold}
            | {f"chat.{s}.{k}": v for s in ("dev", "test") for k, v in chat[s].items()},
            run_name="benchmark postmortem_retrieval",
        )
    result: dict[str, Any] = {
        "machine": machine(),
        "evalset": evalset.label,
        "index": {"version": version, "rows": store.count(version), "build_s": round(build_s, 1)},
        "metrics": {k: round(v, 4) for k, v in sorted(metrics.items())},
        "ratio_hybrid_vs_plain_bm25": {
            f"{split}.{m}": round(
                metrics[f"hybrid.{split}.{m}"] / metrics[f"bm25_plain.{split}.{m}"], 3
            )
            for split in ("test", "dev")
            for m in ("recall_at_3", "mrr_at_10")
            if metrics.get(f"bm25_plain.{split}.{m}")
        },
        "chat": chat,
        "mlflow_run_id": run_id,
    }
    if args.json:
        emit(result, True)
        return
    groups = ["test", "test.en", "test.ru", "dev", "dev.en", "dev.ru", ""]
    print(
        f"{evalset.label} on {version} ({result['index']['rows']} chunks, built in {build_s:.0f} s)"
    )
    print("\n".join(table(metrics, ["hybrid", "vector", "bm25", "bm25_plain"], groups)))
    print("explicit 'seen before' questions:")
    rec = {
        k.removeprefix("recurrence."): v for k, v in metrics.items() if k.startswith("recurrence.")
    }
    print("\n".join(table(rec, ["hybrid", "bm25_plain"], ["test", "dev"])[1:]))
    print(f"ratio hybrid / plain BM25: {result['ratio_hybrid_vs_plain_bm25']}")
    print(
        f"chat 'Seen before' threshold chosen on dev: cosine {threshold:.3f}; "
        f"dev {chat['dev']}; test {chat['test']}"
    )
    base = chat["baseline_cosine_only"]
    print(
        f"baseline, cosine alone: threshold {base['threshold_chosen_on_dev']:.3f}; "
        f"dev {base['dev']}; test {base['test']}"
    )
    print(f"at the setting {current}: dev {chat['dev_at_setting']}; test {chat['test_at_setting']}")
    print(f"dev cosines with a write-up: {chat['cosines']['dev_with_writeup']}")
    print(f"dev cosines without: {chat['cosines']['dev_unseen']}")
    print(f"machine: {result['machine']}")


if __name__ == "__main__":
    main()

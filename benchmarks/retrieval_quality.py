"""Retrieval quality on the shipped evaluation sets: hybrid vs BM25-only vs vector-only, same run.

Builds the runbook index of ``OPSASSIST_RUNBOOKS_PATH`` with the current settings in its own
store (``<data dir>/bench/retrieval_quality``; chunk vectors are cached by chunk id, so re-runs
and sweep points re-embed only chunks they have not seen), evaluates the runbook set (and with
``--signals`` the loghub signal set) in the three modes on the same index and query vectors,
prints recall@k / MRR@10 / nDCG@10 / latency per split (dev, and the frozen test split), language
and kind with the hybrid-to-baseline ratios, then the same for the plain baseline (RRF of BM25
and MiniLM vectors, no glossary) built in the same run, and logs each evaluation as an MLflow run
(``opsassist-runbooks``, ``opsassist-signals``).

``--sweep`` tunes the defaults: every chunking point (max chars x overlap) is built once, then
every fusion point (RRF k and vector weight, weighted fusion and its weight, candidates per list)
is evaluated on it in hybrid mode; each point is one MLflow run tagged ``sweep=<id>``. The
ranking key is English recall@5, then English MRR@10, then MRR@10 over all questions.
``--chunking 1200:0,1200:150`` and ``--weights 0.1,0.2`` replace those axes of the grid.

    .venv/bin/python -m benchmarks.retrieval_quality [--signals] [--sweep [--quick]
        [--chunking M:O,...] [--weights W,...]] [--no-mlflow] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import time
from pathlib import Path
from typing import Any

from benchmarks._common import emit, machine
from opsassist.embedding import model_dimension
from opsassist.evaluation.evalset import EvalSet, applicable, load_evalset
from opsassist.evaluation.rerank_training import (
    candidate_groups,
    weights_payload,
)
from opsassist.evaluation.rerank_training import leave_one_folder_out as rerank_lofo
from opsassist.evaluation.rerank_training import mean_scores as rerank_scores
from opsassist.evaluation.runner import (
    EvalReport,
    QueryVector,
    document_refs,
    embed_questions,
    evaluate_version,
)
from opsassist.evaluation.service import evaluate_set
from opsassist.evaluation.signals import ensure_signal_index
from opsassist.evaluation.tracking import log_run, run_params
from opsassist.index.embedded import EmbeddedIndexStore
from opsassist.logs import configure_logging
from opsassist.pipelines.runbooks import Plan, build_version, collect, embed_chunks
from opsassist.settings import Settings
from opsassist.stores import fusion_config

ALIAS = "bench"
BASELINE_MODEL = "all-MiniLM-L6-v2"
CHUNKING = [(600, 100), (800, 150), (1200, 0), (1200, 150), (1200, 300), (1600, 150)]
CHUNKING_QUICK = [(800, 150), (1200, 150)]
HEADLINE = ("recall_at_1", "recall_at_3", "recall_at_5", "recall_at_10", "mrr_at_10", "ndcg_at_10")


def fusion_grid(quick: bool, weights: list[float] | None = None) -> list[dict[str, Any]]:
    """Fusion points as setting overrides (names as in ``Settings``)."""
    rrf_weights = weights or [0.3, 0.5, 0.6, 0.7]
    methods = [
        {"fusion": "rrf", "rrf_k": rrf_k, "fusion_vector_weight": weight}
        for rrf_k, weight in itertools.product([60] if quick else [20, 60], rrf_weights)
    ] + [
        {"fusion": "weighted", "rrf_k": 60, "fusion_vector_weight": w}
        for w in weights or (0.3, 0.5, 0.7)
    ]
    candidates = [30] if quick else [20, 30, 50, 100]
    return [method | {"candidates_per_list": n} for n in candidates for method in methods]


class IndexBuilder:
    """Builds one index version per chunking configuration, embedding each distinct chunk once."""

    def __init__(self, settings: Settings, folder: Path) -> None:
        self.settings = settings
        self.store = EmbeddedIndexStore(folder, settings.embedded_ann_min_rows)
        for old in self.store.list_versions(ALIAS):  # scratch versions of an earlier run
            self.store.drop_version(old)
        self.vectors: dict[str, list[float]] = {}
        self.dimension = model_dimension(settings.embedding_model, settings.embedding_device)

    def build(self, settings: Settings) -> str:
        chunks = collect(settings.runbooks_path, settings).chunks
        todo = [c for c in chunks if c.id not in self.vectors]
        for chunk in embed_chunks(todo, settings):
            self.vectors[chunk.id] = chunk.vector or []
        embedded = [dataclasses.replace(c, vector=self.vectors[c.id]) for c in chunks]
        fresh = Plan(None, [c.id for c in chunks], [], 0, [], [])  # a full build, no base
        return build_version(
            self.store, ALIAS, fresh, embedded, self.dimension, settings.embedding_model
        )


def table(report: EvalReport) -> list[str]:
    """Rows per split (dev, then the frozen test split) and, within it, per language and kind."""
    m = report.metrics
    lines = [f"{'group':15} {'mode':7} {'n':>4} " + " ".join(f"{h[:9]:>9}" for h in HEADLINE)]
    first_mode = [r for r in report.results if r.mode == report.modes[0]]
    for split in ["", *sorted({r.split for r in first_mode})]:
        in_split = [r for r in first_mode if not split or r.split == split]
        groups = ["", *sorted({r.language for r in in_split}), *sorted({r.kind for r in in_split})]
        for group in groups:
            n = sum(1 for r in in_split if not group or group in (r.language, r.kind))
            label = "/".join(p for p in (split or "all", group) if p)
            for mode in report.modes:
                prefix = ".".join(p for p in (mode, split, group) if p) + "."
                values = " ".join(f"{m[prefix + h]:9.3f}" for h in HEADLINE)
                lines.append(f"{label:15} {mode:7} {n:4d} {values}")
    lines.append(
        f"latency embed   p50 {m['embedding.latency_p50_ms']:7.1f} ms  "
        f"p95 {m['embedding.latency_p95_ms']:7.1f} ms (inside vector and hybrid)"
    )
    for mode in report.modes:
        lines.append(
            f"latency {mode:7} p50 {m[f'{mode}.latency_p50_ms']:7.1f} ms  "
            f"p95 {m[f'{mode}.latency_p95_ms']:7.1f} ms"
        )
    return lines


def ratios(report: EvalReport) -> dict[str, float]:
    m = report.metrics
    out: dict[str, float] = {}
    for group, metric, base in itertools.product(
        ["", "en."], ["recall_at_5", "mrr_at_10"], ["bm25", "vector"]
    ):
        denominator = m[f"{base}.{group}{metric}"]
        key = f"hybrid/{base}.{group}{metric}"
        out[key] = round(m[f"hybrid.{group}{metric}"] / denominator, 3) if denominator else 0.0
    return out


def folder_of(relevant: tuple[str, ...]) -> str:
    return relevant[0].split("/", 1)[0] if relevant and "/" in relevant[0] else "."


def leave_one_folder_out(
    settings: Settings,
    store: EmbeddedIndexStore,
    version: str,
    evalset: EvalSet,
    vectors: dict[str, QueryVector],
) -> dict:
    """Each folder's questions scored with the settings chosen on the *other* folders' dev
    questions (fusion points of the quick grid, glossary on and off), beside the defaults.

    A choice that only fits one folder shows as a folder whose own score under the choice made
    without it is below its score under the defaults (or as choices that differ by folder).
    """
    items = applicable(evalset.items, document_refs(store, version, False))
    points = [
        point | {"query_glossary": glossary}
        for point in fusion_grid(True)
        for glossary in (True, False)
    ]
    per_point: list[dict[str, Any]] = []  # item id -> (recall@5, mrr@10) under each point
    for point in points:
        report = evaluate_version(
            store,
            version,
            items,
            vectors,
            fusion_config(settings.model_copy(update=point)),
            evalset=evalset.label,
            total_items=len(evalset.items),
            modes=("hybrid",),
        )
        per_point.append(
            {r.item_id: (r.scores["recall_at_5"], r.scores["mrr_at_10"]) for r in report.results}
        )
    default = next(
        i for i, p in enumerate(points) if all(getattr(settings, k) == v for k, v in p.items())
    )
    folders = sorted({folder_of(tuple(sorted(a.relevant))) for a in items})
    folder_items = {
        f: [a.item for a in items if folder_of(tuple(sorted(a.relevant))) == f] for f in folders
    }

    def mean(scores: dict[str, tuple[float, float]], ids: list[str], k: int) -> float:
        return sum(scores[i][k] for i in ids) / len(ids) if ids else float("nan")

    rows = []
    lofo_scores: dict[str, tuple[float, float]] = {}
    for folder in folders:
        tuning = [
            a.item.id for a in items if a.item.split == "dev" and a.item not in folder_items[folder]
        ]
        chosen = max(
            range(len(points)),
            key=lambda i: (
                mean(per_point[i], tuning, 0),
                mean(per_point[i], tuning, 1),
                i == default,
            ),
        )
        for item in folder_items[folder]:
            lofo_scores[item.id] = per_point[chosen][item.id]
        row: dict[str, Any] = {
            "folder": folder,
            "chosen": points[chosen],
            "same_as_default": chosen == default,
        }
        for split in ("dev", "test"):
            ids = [i.id for i in folder_items[folder] if i.split == split]
            row[f"{split}_n"] = len(ids)
            row[f"{split}_lofo"] = (
                mean(per_point[chosen], ids, 0),
                mean(per_point[chosen], ids, 1),
            )
            row[f"{split}_default"] = (
                mean(per_point[default], ids, 0),
                mean(per_point[default], ids, 1),
            )
        rows.append(row)
    overall = {}
    for split in ("dev", "test"):
        ids = [a.item.id for a in items if a.item.split == split]
        overall[split] = {
            "lofo": (mean(lofo_scores, ids, 0), mean(lofo_scores, ids, 1)),
            "default": (mean(per_point[default], ids, 0), mean(per_point[default], ids, 1)),
        }
    return {"points": len(points), "default": points[default], "folders": rows, "overall": overall}


def lofo_table(lofo: dict) -> list[str]:
    lines = [
        f"leave-one-folder-out: {lofo['points']} settings points; each folder scored with the "
        "point chosen on the other folders' dev questions (recall@5 / MRR@10)",
        f"{'folder':20} {'dev n':>5} {'dev lofo':>13} {'dev default':>13} {'test n':>6} "
        f"{'test lofo':>13} {'test default':>13}  chosen",
    ]

    def pair(v: tuple[float, float]) -> str:
        return "-" if v[0] != v[0] else f"{v[0]:.3f}/{v[1]:.3f}"

    for r in lofo["folders"]:
        chosen = (
            "default"
            if r["same_as_default"]
            else ", ".join(f"{k}={v}" for k, v in r["chosen"].items())
        )
        lines.append(
            f"{r['folder']:20} {r['dev_n']:5d} {pair(r['dev_lofo']):>13} "
            f"{pair(r['dev_default']):>13} {r['test_n']:6d} {pair(r['test_lofo']):>13} "
            f"{pair(r['test_default']):>13}  {chosen}"
        )
    for split, v in lofo["overall"].items():
        lines.append(f"all {split:16} lofo {pair(v['lofo'])}  default {pair(v['default'])}")
    return lines


def reranker_checks(
    settings: Settings,
    store: EmbeddedIndexStore,
    version: str,
    evalset: EvalSet,
    vectors: dict[str, QueryVector],
    log: bool,
    train_to: Path | None,
) -> dict[str, Any]:
    """The same index without the re-ranker (fused order), and the re-ranker fitted anew with
    each folder's dev questions left out, every question ranked by the fit without its folder.
    ``train_to``: also write weights fitted on every dev question there (the packaged file)."""
    off = settings.model_copy(update={"reranker": False})
    fused = evaluate_set(off, "runbooks", version, store=store, log_to_mlflow=log)
    items = applicable(evalset.items, document_refs(store, version, False))
    groups = candidate_groups(store, version, items, vectors, fusion_config(off))
    lofo = rerank_lofo(groups)
    out: dict[str, Any] = {"fused_table": table(fused.report), "lofo": {}}
    for split in ("dev", "test"):
        for language in ("", "en", "ru"):
            chosen = [
                g
                for g in groups
                if g.item.item.split == split and language in ("", g.item.item.language)
            ]
            out["lofo"][f"{split}.{language or 'all'}"] = rerank_scores(chosen, lofo)
        incident = [
            g for g in groups if g.item.item.split == split and g.item.item.kind == "incident"
        ]
        out["lofo"][f"{split}.incident"] = rerank_scores(incident, lofo)
    if train_to is not None:
        payload = weights_payload(groups, "runbook", evalset.label, version)
        train_to.write_text(json.dumps(payload, indent=2) + "\n", "utf-8")
        out["trained"] = str(train_to)
    return out


def evaluate_default(
    settings: Settings,
    builder: IndexBuilder,
    log: bool,
    signals: bool,
    train_to: Path | None = None,
) -> dict[str, Any]:
    version = builder.build(settings)
    result = evaluate_set(settings, "runbooks", version, store=builder.store, log_to_mlflow=log)
    out: dict[str, Any] = {"runbooks": result.to_json(), "runbooks_ratios": ratios(result.report)}
    out["runbooks_table"] = table(result.report)
    # every question embedded once for both leave-one-folder-out checks
    evalset = load_evalset(settings.evalsets_dir, "runbooks")
    vectors = embed_questions(evalset.items, settings.embedding_model, settings.embedding_device)
    out["lofo"] = leave_one_folder_out(settings, builder.store, version, evalset, vectors)
    out["lofo_table"] = lofo_table(out["lofo"])
    out["reranker"] = reranker_checks(
        settings, builder.store, version, evalset, vectors, log, train_to
    )
    # the plain baseline, same run and questions: RRF of BM25 and MiniLM vectors, no glossary
    plain = settings.model_copy(
        update={"embedding_model": BASELINE_MODEL, "query_glossary": False, "reranker": False}
    )
    folder = settings.data_dir / "bench" / "retrieval_quality-baseline"
    baseline_builder = IndexBuilder(plain, folder)
    baseline = evaluate_set(
        plain,
        "runbooks",
        baseline_builder.build(plain),
        store=baseline_builder.store,
        log_to_mlflow=log,
    )
    out["runbooks_baseline"] = baseline.to_json()
    out["runbooks_baseline_table"] = table(baseline.report)
    if signals:
        signal_version = ensure_signal_index(settings, builder.store)
        signal = evaluate_set(
            settings, "signals", signal_version, store=builder.store, log_to_mlflow=log
        )
        out |= {"signals": signal.to_json(), "signals_ratios": ratios(signal.report)}
        out["signals_table"] = table(signal.report)
    return out


def sweep(
    settings: Settings,
    builder: IndexBuilder,
    quick: bool,
    log: bool,
    chunking: list[tuple[int, int]] | None = None,
    weights: list[float] | None = None,
) -> dict[str, Any]:
    evalset = load_evalset(settings.evalsets_dir, "runbooks")
    sweep_id = time.strftime("%Y%m%dT%H%M%S")
    vectors = embed_questions(evalset.items, settings.embedding_model, settings.embedding_device)
    rows: list[dict[str, Any]] = []
    for max_chars, overlap in chunking or (CHUNKING_QUICK if quick else CHUNKING):
        chunk_settings = {"chunk_max_chars": max_chars, "chunk_overlap_chars": overlap}
        version = builder.build(settings.model_copy(update=chunk_settings))
        items = applicable(evalset.items, document_refs(builder.store, version, False))
        for point in fusion_grid(quick, weights):
            overrides = chunk_settings | point
            configured = settings.model_copy(update=overrides)
            report = evaluate_version(
                builder.store,
                version,
                items,
                vectors,
                fusion_config(configured),
                evalset=evalset.label,
                total_items=len(evalset.items),
                modes=("hybrid",),
            )
            m = report.metrics
            rows.append(
                overrides
                | {
                    "en_recall_at_5": m["hybrid.en.recall_at_5"],
                    "en_mrr_at_10": m["hybrid.en.mrr_at_10"],
                    "all_recall_at_5": m["hybrid.recall_at_5"],
                    "all_mrr_at_10": m["hybrid.mrr_at_10"],
                    "ru_recall_at_5": m["hybrid.ru.recall_at_5"],
                    "default": all(getattr(settings, k) == v for k, v in overrides.items()),
                }
            )
            if log:
                log_run(
                    configured,
                    "runbooks",
                    report,
                    run_params(configured, index_version=version, evalset_version=evalset.label),
                    tags={"opsassist.kind": "sweep", "sweep": sweep_id},
                    artifacts=False,
                    run_name=f"sweep {sweep_id} #{len(rows)}",
                )
    ranked = sorted(
        rows,
        key=lambda r: (r["en_recall_at_5"], r["en_mrr_at_10"], r["all_mrr_at_10"]),
        reverse=True,
    )
    default = next((r for r in rows if r["default"]), None)
    return {"sweep_id": sweep_id, "points": len(rows), "best": ranked[:10], "default": default}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", action="store_true", help="tune chunking and fusion")
    parser.add_argument("--quick", action="store_true", help="a small sweep grid")
    parser.add_argument(
        "--chunking", help="sweep these max_chars:overlap points, e.g. 1200:0,1200:150"
    )
    parser.add_argument("--weights", help="sweep these vector weights, e.g. 0.1,0.2,0.3")
    parser.add_argument("--signals", action="store_true", help="also evaluate the signals set")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log MLflow runs")
    parser.add_argument(
        "--train-reranker",
        type=Path,
        metavar="PATH",
        help="write re-ranker weights fitted on this run's dev questions to PATH "
        "(include/opsassist/index/rerank_weights.json: the packaged ones)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    settings = Settings()
    configure_logging("WARNING", "text")
    builder = IndexBuilder(settings, settings.data_dir / "bench" / "retrieval_quality")
    started = time.perf_counter()
    result: dict[str, Any] = {"benchmark": "retrieval_quality", "machine": machine()}
    if args.sweep:
        chunking = (
            [(int(a), int(b)) for a, b in (p.split(":") for p in args.chunking.split(","))]
            if args.chunking
            else None
        )
        weights = [float(w) for w in args.weights.split(",")] if args.weights else None
        result["sweep"] = sweep(
            settings, builder, args.quick, not args.no_mlflow, chunking, weights
        )
    else:
        result |= evaluate_default(
            settings, builder, not args.no_mlflow, args.signals, args.train_reranker
        )
    result["seconds"] = round(time.perf_counter() - started, 1)
    if args.json:
        emit(result, True)
        return
    if args.sweep:
        print(f"sweep {result['sweep']['sweep_id']}: {result['sweep']['points']} points")
        columns = [
            "chunk_max_chars",
            "chunk_overlap_chars",
            "fusion",
            "rrf_k",
            "fusion_vector_weight",
            "candidates_per_list",
            "en_recall_at_5",
            "en_mrr_at_10",
            "all_mrr_at_10",
            "ru_recall_at_5",
        ]
        print(" ".join(f"{c[:12]:>12}" for c in columns))
        for row in [*result["sweep"]["best"], result["sweep"]["default"] or {}]:
            print(
                " ".join(
                    f"{row.get(c, ''):>12.3f}"
                    if isinstance(row.get(c), float)
                    else f"{row.get(c, ''):>12}"
                    for c in columns
                )
            )
        print("(last row: the current defaults)")
        return
    for name in ("runbooks", "signals"):
        if name in result:
            print(f"\n{result[name]['evalset']} on {result[name]['version']}")
            print("\n".join(result[f"{name}_table"]))
            print("same-run ratios:", result[f"{name}_ratios"])
            if name == "runbooks":
                print("\n".join(result["lofo_table"]))
                print("\nthe same index without the re-ranker (fused order):")
                print("\n".join(result["reranker"]["fused_table"]))
                print(
                    "\nre-ranker refitted without each folder's dev questions (recall@5 / MRR@10):"
                )
                for key, value in result["reranker"]["lofo"].items():
                    print(f"  {key:14} {value['recall_at_5']:.3f} / {value['mrr_at_10']:.3f}")
    if "runbooks_baseline" in result:
        print(f"\nplain baseline ({BASELINE_MODEL}, no glossary), same questions:")
        print("\n".join(result["runbooks_baseline_table"]))
    print(f"\n{result['seconds']} s")


if __name__ == "__main__":
    main()

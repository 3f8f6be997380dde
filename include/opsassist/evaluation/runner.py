"""Run an evaluation set against one index version, in several search modes, in one process.

Each question is embedded once (timed) and the vector is reused by every mode and every version
evaluated in the same run, so the modes and the versions are compared on identical queries.
A mode's latency is the search call plus, for ``vector`` and ``hybrid``, the question's embedding
time: what a caller of :func:`opsassist.search.search` waits for.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import numpy as np

from opsassist.embedding import embed_query
from opsassist.evaluation.evalset import ApplicableItem, DocRef, EvalItem
from opsassist.evaluation.metrics import (
    CUTOFF,
    dedupe_sources,
    first_relevant_rank,
    latency_scores,
    mean_scores,
    question_scores,
)
from opsassist.index.base import FusionConfig, IndexStore, Query, SearchMode, hybrid_search
from opsassist.logs import get_logger
from opsassist.progress import progress

log = get_logger(__name__)

MODES: tuple[SearchMode, ...] = ("hybrid", "bm25", "vector")
CHUNK_DEPTH = 50  # chunks fetched per question: enough to fill the top 10 distinct documents


@dataclasses.dataclass(frozen=True, slots=True)
class QueryVector:
    vector: np.ndarray
    embed_ms: float


@dataclasses.dataclass(slots=True)
class QuestionResult:
    item_id: str
    question: str
    language: str
    kind: str
    mode: str
    version: str
    relevant: tuple[str, ...]
    ranking: tuple[str, ...]  # top documents, deduplicated, best first
    first_relevant_rank: int | None
    latency_ms: float
    scores: dict[str, float]
    split: str = "dev"

    def row(self) -> dict[str, object]:
        """A flat row for the per-question CSV."""
        return {
            "id": self.item_id,
            "mode": self.mode,
            "version": self.version,
            "split": self.split,
            "language": self.language,
            "kind": self.kind,
            **{name: round(value, 4) for name, value in self.scores.items()},
            "first_relevant_rank": self.first_relevant_rank or "",
            "latency_ms": round(self.latency_ms, 2),
            "relevant": " ".join(self.relevant),
            "top5": " ".join(self.ranking[:5]),
            "question": self.question,
        }


@dataclasses.dataclass(slots=True)
class EvalReport:
    evalset: str
    version: str
    modes: tuple[str, ...]
    results: list[QuestionResult]
    metrics: dict[str, float]
    total_items: int

    @property
    def questions(self) -> int:
        return len({r.item_id for r in self.results})


def document_refs(store: IndexStore, version: str, with_templates: bool) -> list[DocRef]:
    """The documents of a version, as relevance rules see them."""
    by_source = store.ids_by_source(version)
    if not with_templates:
        return [DocRef(source) for source in sorted(by_source)]
    refs: dict[str, DocRef] = {}
    ids = [i for ids in by_source.values() for i in sorted(ids)]
    for chunk in store.fetch(version, ids):
        system, template = chunk.metadata.get("system"), chunk.metadata.get("template")
        refs.setdefault(
            chunk.source,
            DocRef(
                chunk.source,
                None if system is None else str(system),
                None if template is None else str(template),
            ),
        )
    return [refs[source] for source in sorted(refs)]


def embed_questions(
    items: Sequence[EvalItem], model: str, device: str = "cpu"
) -> dict[str, QueryVector]:
    """One timed embedding per question (the model is loaded before the first timing)."""
    if items:
        embed_query(items[0].question, model, device)  # warm-up: model load is not latency
    vectors: dict[str, QueryVector] = {}
    with progress("questions embedded", len(items), logger=log) as tracker:
        for item in items:
            start = time.perf_counter()
            vector = embed_query(item.question, model, device)
            vectors[item.id] = QueryVector(vector, (time.perf_counter() - start) * 1000)
            tracker.advance()
    return vectors


def run_questions(
    store: IndexStore,
    version: str,
    items: Sequence[ApplicableItem],
    vectors: dict[str, QueryVector],
    fusion: FusionConfig,
    modes: Sequence[SearchMode] = MODES,
) -> list[QuestionResult]:
    results: list[QuestionResult] = []
    with progress("questions searched", len(items) * len(modes), logger=log) as tracker:
        for mode in modes:
            _search_mode(store, version, items, vectors, fusion, mode, results, tracker.advance)
    return results


def _search_mode(
    store: IndexStore,
    version: str,
    items: Sequence[ApplicableItem],
    vectors: dict[str, QueryVector],
    fusion: FusionConfig,
    mode: SearchMode,
    results: list[QuestionResult],
    advance: Callable[[], None],
) -> None:
    """Every question in one mode, appended to ``results``."""
    for applicable in items:
        item = applicable.item
        query_vector = vectors[item.id]
        query = Query(
            text=item.question,
            vector=None if mode == "bm25" else query_vector.vector,
            k=CHUNK_DEPTH,
            mode=mode,
        )
        start = time.perf_counter()
        hits = hybrid_search(store, version, query, fusion)
        elapsed = (time.perf_counter() - start) * 1000
        if mode != "bm25":
            elapsed += query_vector.embed_ms
        ranking = dedupe_sources(hit.source for hit in hits)
        results.append(
            QuestionResult(
                item_id=item.id,
                question=item.question,
                language=item.language,
                kind=item.kind,
                mode=mode,
                version=version,
                relevant=tuple(sorted(applicable.relevant)),
                ranking=tuple(ranking[:CUTOFF]),
                first_relevant_rank=first_relevant_rank(ranking, applicable.relevant),
                latency_ms=elapsed,
                scores=question_scores(ranking, applicable.relevant),
                split=item.split,
            )
        )
        advance()


def summarize(results: Sequence[QuestionResult], prefix: str = "") -> dict[str, float]:
    """Metrics named ``<mode>.<metric>``, ``<mode>.<language>.<metric>``, ``<mode>.<kind>.<metric>``
    (e.g. ``hybrid.recall_at_5``, ``bm25.en.mrr_at_10``, ``vector.incident.ndcg_at_10``), the
    same per split (``hybrid.test.ru.recall_at_5``: the frozen split, reported beside ``dev``),
    ``<mode>.latency_p50_ms`` / ``_p95_ms`` and question counts (``questions``, ``questions.ru``).
    (:func:`evaluate_version` adds ``embedding.latency_p50_ms`` / ``_p95_ms``: the part of the
    vector and hybrid latencies spent embedding the question.)
    """
    metrics: dict[str, float] = {}
    modes = sorted({r.mode for r in results})
    for mode in modes:
        rows = [r for r in results if r.mode == mode]
        for name, value in mean_scores([r.scores for r in rows]).items():
            metrics[f"{prefix}{mode}.{name}"] = value
        for name, value in latency_scores([r.latency_ms for r in rows]).items():
            metrics[f"{prefix}{mode}.{name}"] = value
        for group in sorted({r.language for r in rows} | {r.kind for r in rows}):
            members = [r.scores for r in rows if group in (r.language, r.kind)]
            for name, value in mean_scores(members).items():
                metrics[f"{prefix}{mode}.{group}.{name}"] = value
        for split in sorted({r.split for r in rows}):
            in_split = [r for r in rows if r.split == split]
            for name, value in mean_scores([r.scores for r in in_split]).items():
                metrics[f"{prefix}{mode}.{split}.{name}"] = value
            for group in sorted({r.language for r in in_split} | {r.kind for r in in_split}):
                members = [r.scores for r in in_split if group in (r.language, r.kind)]
                for name, value in mean_scores(members).items():
                    metrics[f"{prefix}{mode}.{split}.{group}.{name}"] = value
    if modes:
        first = [r for r in results if r.mode == modes[0]]
        metrics[f"{prefix}questions"] = float(len(first))
        for group in sorted({r.language for r in first} | {r.kind for r in first}):
            count = sum(1 for r in first if group in (r.language, r.kind))
            metrics[f"{prefix}questions.{group}"] = float(count)
    return metrics


def evaluate_version(
    store: IndexStore,
    version: str,
    items: Sequence[ApplicableItem],
    vectors: dict[str, QueryVector],
    fusion: FusionConfig,
    *,
    evalset: str,
    total_items: int,
    modes: Sequence[SearchMode] = MODES,
) -> EvalReport:
    results = run_questions(store, version, items, vectors, fusion, modes)
    metrics = summarize(results)
    embed_ms = [vectors[a.item.id].embed_ms for a in items]
    metrics |= {f"embedding.{name}": v for name, v in latency_scores(embed_ms).items()}
    return EvalReport(evalset, version, tuple(modes), results, metrics, total_items)

"""Retrieval metrics at the document level, as pure functions of rankings.

A *ranking* is the list of document sources a search returned, best first, already deduplicated
(:func:`dedupe_sources`: a runbook whose chunks come back three times counts once, at its best
rank). *Relevant* is the set of sources that answer the question. Gains are binary.

- ``recall_at_k``: share of the relevant documents found in the top k
  (``|relevant ∩ top k| / |relevant|``; monotonic in k, so a question with two relevant
  runbooks scores at most 0.5 at k = 1: MRR is the metric of "the first hit is relevant").
- ``reciprocal_rank``: 1 / rank of the first relevant document within the top k (0 if none).
- ``ndcg_at_k``: DCG of the top k over the DCG of an ideal ranking, log2 discounts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence, Set

RECALL_KS: tuple[int, ...] = (1, 3, 5, 10)
CUTOFF = 10


def dedupe_sources(sources: Iterable[str]) -> list[str]:
    """Sources in rank order, each kept at its first (best) position."""
    seen: set[str] = set()
    ranked: list[str] = []
    for source in sources:
        if source not in seen:
            seen.add(source)
            ranked.append(source)
    return ranked


def _check(relevant: Set[str], k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if not relevant:
        raise ValueError("a question needs at least one relevant document")


def recall_at_k(ranking: Sequence[str], relevant: Set[str], k: int) -> float:
    _check(relevant, k)
    found = sum(1 for source in ranking[:k] if source in relevant)
    return found / len(relevant)


def reciprocal_rank(ranking: Sequence[str], relevant: Set[str], k: int = CUTOFF) -> float:
    _check(relevant, k)
    for rank, source in enumerate(ranking[:k], start=1):
        if source in relevant:
            return 1.0 / rank
    return 0.0


def ndcg_at_k(ranking: Sequence[str], relevant: Set[str], k: int = CUTOFF) -> float:
    _check(relevant, k)
    dcg = sum(
        1.0 / math.log2(rank + 1)
        for rank, source in enumerate(ranking[:k], start=1)
        if source in relevant
    )
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(k, len(relevant)) + 1))
    return dcg / ideal


def first_relevant_rank(ranking: Sequence[str], relevant: Set[str]) -> int | None:
    """1-based rank of the first relevant document anywhere in the ranking (None if absent)."""
    for rank, source in enumerate(ranking, start=1):
        if source in relevant:
            return rank
    return None


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between order statistics."""
    if not values:
        return float("nan")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {q}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def question_scores(ranking: Sequence[str], relevant: Set[str]) -> dict[str, float]:
    """Every per-question metric, under the names the aggregates use."""
    scores = {f"recall_at_{k}": recall_at_k(ranking, relevant, k) for k in RECALL_KS}
    scores[f"mrr_at_{CUTOFF}"] = reciprocal_rank(ranking, relevant, CUTOFF)
    scores[f"ndcg_at_{CUTOFF}"] = ndcg_at_k(ranking, relevant, CUTOFF)
    return scores


def mean_scores(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over questions (an empty group gives no metrics)."""
    if not rows:
        return {}
    return {name: sum(row[name] for row in rows) / len(rows) for name in rows[0]}


def latency_scores(millis: Sequence[float]) -> dict[str, float]:
    if not millis:
        return {}
    return {"latency_p50_ms": percentile(millis, 50), "latency_p95_ms": percentile(millis, 95)}

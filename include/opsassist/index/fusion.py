"""Rank fusion of result lists (one implementation for every backend and for the evaluation)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal


def reciprocal_rank_fusion(
    lists: Sequence[Sequence[tuple[str, float]]], weights: Sequence[float], k: int = 60
) -> list[tuple[str, float]]:
    """Weighted RRF (Cormack et al. 2009): score(d) = sum_i w_i / (k + rank_i(d))."""
    scores: dict[str, float] = {}
    for results, weight in zip(lists, weights, strict=True):
        for rank, (doc_id, _) in enumerate(results, start=1):
            scores[doc_id] = scores.get(doc_id, 0.0) + weight / (k + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def weighted_score_fusion(
    lists: Sequence[Sequence[tuple[str, float]]], weights: Sequence[float]
) -> list[tuple[str, float]]:
    """Min-max normalise each list's scores to [0, 1], then a weighted sum (missing = 0)."""
    scores: dict[str, float] = {}
    for results, weight in zip(lists, weights, strict=True):
        if not results:
            continue
        values = [score for _, score in results]
        low, high = min(values), max(values)
        span = high - low
        for doc_id, score in results:
            normalised = (score - low) / span if span > 0 else 1.0
            scores[doc_id] = scores.get(doc_id, 0.0) + weight * normalised
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def fuse(
    lists: Sequence[Sequence[tuple[str, float]]],
    weights: Sequence[float],
    method: Literal["rrf", "weighted"] = "rrf",
    rrf_k: int = 60,
) -> list[tuple[str, float]]:
    if method == "rrf":
        return reciprocal_rank_fusion(lists, weights, rrf_k)
    return weighted_score_fusion(lists, weights)

"""A learned re-ranking stage after fusion: the fused candidates' documents ordered by a linear
model of LLM-free features.

Fusion sees two ranks per chunk and nothing else. The features below add what RRF throws away
(how far ahead a BM25 or vector score is, not only its rank), the question's language (Russian
questions lean on the vector list, whose multilingual part reads them; their keyword list only
has the glossary's words) and whether the question names the document's alert or section words.
No cross-encoder ships in a package here; these features cost well under a millisecond.

The weights are data (``rerank_weights.json``, one model per ``source_type``), fitted by
:mod:`opsassist.evaluation.rerank_training` on the dev split of an evaluation set: pairwise
logistic regression (a relevant document should score above every other candidate of the same
question). A document kind without a model (postmortems, signals) keeps the fused order.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from opsassist.index.base import Candidates, RankedRow

FEATURES: tuple[str, ...] = (
    "fused_reciprocal_rank",  # 1 / the document's rank after fusion
    "fused_relative",  # its best fused score / the question's best
    "bm25_reciprocal_rank",  # 1 / its rank in the BM25 list (0: not in it)
    "bm25_relative",  # its best BM25 score / the list's best
    "vector_reciprocal_rank",
    "vector_cosine",  # its best cosine in the vector list (not in it: the list's lowest)
    "russian_vector_cosine",  # the same for a Russian question, else 0
    "russian_bm25_relative",
    "title_overlap",  # share of the title's words (alert name split) the question has
    "section_overlap",  # the same for the best-matching section heading of its candidates
    "chunks",  # how many of its chunks are candidates (capped at 10, over 10)
)
WEIGHTS_FILE = "rerank_weights.json"
PRIMARY_CHUNKS = 2  # the best document's sections kept together at the top

_WORD = re.compile(r"[a-z0-9]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_STEM = 5
# Stems in many titles and headings that say nothing about which runbook is meant.
_GENERIC = frozenset(
    {"the", "is", "on", "in", "of", "to", "and", "for", "high", "kube", "down", "faili", "error"}
)


@dataclasses.dataclass(frozen=True, slots=True)
class RerankModel:
    source_type: str
    weights: np.ndarray
    trained: Mapping[str, Any]


def stems(text: str) -> set[str]:
    """Word stems (first five letters) of ``text``, CamelCase words split."""
    return {w[:_STEM] for w in _WORD.findall(_CAMEL.sub(" ", text).lower()) if len(w) > 1}


def _overlap(heading: str, words: set[str]) -> float:
    wanted = stems(heading) - _GENERIC
    return len(wanted & words) / len(wanted) if wanted else 0.0


def document_features(
    question: str, found: Candidates
) -> tuple[list[str], dict[str, list[str]], np.ndarray]:
    """The candidate documents (best fused first), each one's chunk ids in fused order, and a
    matrix of :data:`FEATURES`, one row per document."""
    from opsassist.glossary import expand_query
    from opsassist.language import detect_language

    lexical, semantic, fused, rows = found.lexical, found.semantic, found.fused, found.rows
    russian = 1.0 if detect_language(question) == "ru" else 0.0
    words = stems(expand_query(question))

    def source(chunk_id: str) -> str:
        return str(rows[chunk_id].row.get("source", ""))

    chunks: dict[str, list[str]] = {}
    fused_best: dict[str, float] = {}
    for chunk_id, score in fused:
        chunks.setdefault(source(chunk_id), []).append(chunk_id)
        fused_best.setdefault(source(chunk_id), score)
    documents = list(chunks)
    top_fused = fused[0][1] if fused and fused[0][1] > 0 else 1.0

    def by_document(results: Sequence[RankedRow]) -> tuple[dict[str, int], dict[str, float]]:
        rank: dict[str, int] = {}
        best: dict[str, float] = {}
        for row in results:
            doc = source(row.id)
            if doc not in rank:
                rank[doc] = len(rank) + 1
                best[doc] = row.score
        return rank, best

    bm25_rank, bm25_best = by_document(lexical)
    vector_rank, vector_best = by_document(semantic)
    top_bm25 = lexical[0].score if lexical and lexical[0].score > 0 else 1.0
    lowest_cosine = semantic[-1].score if semantic else 0.0
    matrix = np.zeros((len(documents), len(FEATURES)), dtype=np.float64)
    for i, doc in enumerate(documents):
        first = rows[chunks[doc][0]].row
        bm25 = bm25_best.get(doc, 0.0) / top_bm25
        cosine = vector_best.get(doc, lowest_cosine)
        sections = {str(rows[c].row.get("section", "")) for c in chunks[doc]}
        matrix[i] = (
            1.0 / (i + 1),
            fused_best[doc] / top_fused,
            1.0 / bm25_rank[doc] if doc in bm25_rank else 0.0,
            bm25,
            1.0 / vector_rank[doc] if doc in vector_rank else 0.0,
            cosine,
            russian * cosine,
            russian * bm25,
            _overlap(str(first.get("title", "")), words),
            max(_overlap(section, words) for section in sections),
            min(len(chunks[doc]), 10) / 10,
        )
    return documents, chunks, matrix


def rerank(question: str, found: Candidates, model: RerankModel) -> list[tuple[str, float]]:
    """Chunk ids with their document's model score, documents in re-ranked order (ties keep the
    fused order) and each document's chunks in fused order: the best document's first
    :data:`PRIMARY_CHUNKS` chunks, then every other document's best chunk, then the rest round by
    round. A short top k (the chat's 4) so holds two sections of the runbook the answer quotes and
    the next runbooks for "Also relevant"; a document's first appearance is its re-ranked place."""
    if not found.fused:
        return []
    documents, chunks, matrix = document_features(question, found)
    scores = matrix @ model.weights
    order = np.argsort(-scores, kind="stable")

    def round_of(position: int, index: int) -> int:
        if position == 0:  # the best document: its first chunks share the first round
            return max(0, index - PRIMARY_CHUNKS + 1)
        return index

    keyed = [
        ((round_of(position, index), position, index), chunk_id, float(scores[i]))
        for position, i in enumerate(order)
        for index, chunk_id in enumerate(chunks[documents[i]])
    ]
    return [(chunk_id, round(score, 6)) for _, chunk_id, score in sorted(keyed)]


def parse_models(payload: Mapping[str, Any]) -> dict[str, RerankModel]:
    """Models of a weights file; features must be :data:`FEATURES`, in order."""
    models: dict[str, RerankModel] = {}
    for source_type, entry in payload.get("models", {}).items():
        if tuple(entry["features"]) != FEATURES:
            raise ValueError(
                f"re-ranker weights for {source_type!r} use features {entry['features']}, "
                f"this version computes {list(FEATURES)}: retrain (opsassist reranker train)"
            )
        weights = np.asarray(entry["weights"], dtype=np.float64)
        models[source_type] = RerankModel(source_type, weights, entry.get("trained", {}))
    return models


@lru_cache(maxsize=4)
def load_models(path: str = "") -> dict[str, RerankModel]:
    """The models of the weights file at ``path`` (empty: the packaged one)."""
    if path:
        text = Path(path).read_text("utf-8")
    else:
        text = resources.files("opsassist").joinpath("index", WEIGHTS_FILE).read_text("utf-8")
    return parse_models(json.loads(text))


def model_for(found: Candidates, path: str) -> RerankModel | None:
    """The model of the top fused chunk's document kind (None: that kind has none)."""
    if not found.fused:
        return None
    source_type = str(found.rows[found.fused[0][0]].row.get("source_type", ""))
    return load_models(path).get(source_type)

"""The index interface every backend implements, and the hybrid search built on it.

A backend stores *versions* (one physical index or table each) and *aliases* (a name such as
``runbooks`` pointing at one version). A build writes a new version while readers keep using the
alias; only ``promote`` moves the alias, so a failed build never replaces a good one (blue/green).

Backends provide two primitive searches (BM25 and vector, each with the same filters); hybrid
search fuses them here, once, so every backend ranks the same way. A backend may override
``search`` with a native hybrid query when it is equivalent.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from opsassist.documents import Chunk, SearchHit
from opsassist.index.fusion import fuse

SearchMode = Literal["hybrid", "bm25", "vector"]
_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="opsassist-search")
_VERSION = re.compile(r"^(?P<alias>[a-z0-9_-]+?)-v(?P<number>\d{4,})$")


class IndexUnavailableError(RuntimeError):
    """The index cannot be reached or has no promoted version."""


class IndexNotFoundError(IndexUnavailableError):
    """No index or version of that name exists (retrying will not help, unlike a store that
    is down)."""


class EmbeddingModelMismatch(RuntimeError):
    """An index version is searched with vectors of another embedding model than it was built
    with: the similarities would be meaningless. Rebuild the index with the configured model or
    configure the model the index was built with."""


LEGACY_MODEL = "all-MiniLM-L6-v2"  # what versions that record no model were built with


def check_model(store: IndexStore, version: str, model: str) -> None:
    """Refuse to search ``version`` with query vectors of ``model`` if it was built with another."""
    built = store.version_model(version) or LEGACY_MODEL
    if built != model:
        raise EmbeddingModelMismatch(
            f"index version {version} was built with the embedding model {built!r}, but "
            f"OPSASSIST_EMBEDDING_MODEL is {model!r}: rebuild the index (opsassist index "
            f"runbooks) or set OPSASSIST_EMBEDDING_MODEL={built}"
        )


@dataclasses.dataclass(slots=True)
class Filters:
    source_types: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    since: dt.datetime | None = None
    until: dt.datetime | None = None


@dataclasses.dataclass(slots=True)
class Query:
    text: str
    vector: np.ndarray | None = None
    k: int = 10
    mode: SearchMode = "hybrid"
    filters: Filters = dataclasses.field(default_factory=Filters)


@dataclasses.dataclass(slots=True)
class FusionConfig:
    method: Literal["rrf", "weighted"] = "rrf"
    vector_weight: float = 0.5
    rrf_k: int = 60
    candidates: int = 50
    expand_lexical: bool = False  # BM25 gets the English terms of a Russian question's words
    # The learned re-ranker's weights file ("": the packaged one; None: fused order is final).
    rerank_weights: str | None = None


@dataclasses.dataclass(slots=True)
class RankedRow:
    """One primitive-search result: id, backend score and the stored fields (no vector)."""

    id: str
    score: float
    row: dict[str, object]


@dataclasses.dataclass(slots=True)
class WriteReport:
    written: int = 0
    failed: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (id, reason)


def version_name(alias: str, number: int) -> str:
    return f"{alias}-v{number:04d}"


def version_number(version: str) -> int:
    match = _VERSION.match(version)
    if not match:
        raise ValueError(f"not a version name: {version!r}")
    return int(match.group("number"))


def versions_of(alias: str, names: Sequence[str]) -> list[str]:
    """Names that are versions of ``alias``, oldest first."""
    found = [n for n in names if (m := _VERSION.match(n)) and m.group("alias") == alias]
    return sorted(found, key=version_number)


@runtime_checkable
class IndexStore(Protocol):
    """What the pipelines, the CLI, the evaluation gate and the chat server need of an index."""

    def current_version(self, alias: str) -> str | None: ...

    def list_versions(self, alias: str) -> list[str]: ...

    def create_version(
        self, alias: str, dimension: int, base: str | None = None, model: str | None = None
    ) -> str:
        """A new version of ``alias`` (a copy of ``base`` when given), its vectors made by the
        embedding ``model`` (default: the base's)."""
        ...

    def version_model(self, version: str) -> str | None:
        """The embedding model a version records (None: built before versions recorded it)."""
        ...

    def upsert(self, version: str, chunks: Sequence[Chunk]) -> WriteReport: ...

    def delete(self, version: str, ids: Sequence[str]) -> int: ...

    def ids_by_source(self, version: str) -> dict[str, set[str]]: ...

    def fetch(self, version: str, ids: Sequence[str]) -> list[Chunk]: ...

    def count(self, version: str) -> int: ...

    def finalize(self, version: str) -> None: ...

    def promote(self, alias: str, version: str) -> str | None: ...

    def drop_version(self, version: str) -> None: ...

    def bm25(self, target: str, text: str, n: int, filters: Filters) -> list[RankedRow]: ...

    def knn(self, target: str, vector: np.ndarray, n: int, filters: Filters) -> list[RankedRow]: ...

    def ping(self) -> bool: ...


def check_version_exists(store: IndexStore, target: str) -> None:
    """``IndexNotFoundError`` if ``target`` names a version that does not exist (an alias is
    checked by :func:`resolve_target`). One listing: for requests that name a version."""
    match = _VERSION.match(target)
    if match and target not in store.list_versions(match.group("alias")):
        raise IndexNotFoundError(f"index version {target!r} does not exist")


def resolve_target(store: IndexStore, target: str) -> str:
    """An alias resolves to its promoted version; a version name is used as is."""
    if _VERSION.match(target):
        return target
    version = store.current_version(target)
    if version is None:
        if not store.list_versions(target):
            raise IndexNotFoundError(f"no index named {target!r}; build it first")
        raise IndexUnavailableError(f"index {target!r} has no promoted version; build it first")
    return version


def _hit(
    row: RankedRow,
    score: float,
    bm25_rank: int | None,
    vector_rank: int | None,
    vector_score: float | None = None,
) -> SearchHit:
    fields = row.row

    def iso(value: object) -> str | None:
        return value.isoformat() if isinstance(value, dt.datetime) else None

    return SearchHit(
        id=row.id,
        source=str(fields.get("source", "")),
        source_type=str(fields.get("source_type", "")),
        title=str(fields.get("title", "")),
        section=str(fields.get("section", "")),
        score=round(float(score), 6),
        text=str(fields.get("text", "")),
        timestamp=iso(fields.get("timestamp")),
        end_timestamp=iso(fields.get("end_timestamp")),
        bm25_rank=bm25_rank,
        vector_rank=vector_rank,
        vector_score=None if vector_score is None else round(float(vector_score), 6),
    )


@dataclasses.dataclass(slots=True)
class Candidates:
    """The two primitive lists of one search, best first, and the fused order of their union."""

    lexical: list[RankedRow]
    semantic: list[RankedRow]
    fused: list[tuple[str, float]]  # (chunk id, score): hybrid fusion, or the one list searched
    rows: dict[str, RankedRow] = dataclasses.field(init=False)  # both lists' rows by chunk id

    def __post_init__(self) -> None:
        self.rows = {r.id: r for r in self.semantic} | {r.id: r for r in self.lexical}


def candidate_lists(
    store: IndexStore,
    version: str,
    query: Query,
    fusion: FusionConfig,
    embed: Callable[[str], np.ndarray] | None = None,
) -> Candidates:
    """BM25 and vector lists of ``query`` on a version and their fusion (no re-ranking). A
    hybrid query takes ``fusion.candidates`` from each list whatever its ``k`` (so an evaluation
    asking for 50 chunks ranks what the chat server's searches rank); a single list, ``k``."""
    n = fusion.candidates if query.mode == "hybrid" else max(fusion.candidates, query.k)
    lexical: list[RankedRow] = []
    semantic: list[RankedRow] = []
    want_lexical = query.mode in ("hybrid", "bm25") and bool(query.text.strip())
    lexical_text = query.text
    if want_lexical and fusion.expand_lexical:
        from opsassist.glossary import expand_query

        lexical_text = expand_query(query.text)
    want_semantic = query.mode in ("hybrid", "vector")
    if want_semantic and query.vector is None and embed is None:
        raise ValueError("vector and hybrid search need a query vector")

    def vector() -> np.ndarray:
        return query.vector if query.vector is not None else embed(query.text)  # type: ignore[misc]

    if want_lexical and want_semantic:
        # Both backends release the GIL while searching (and the encoders while embedding):
        # run the two lists concurrently.
        pending = _POOL.submit(store.bm25, version, lexical_text, n, query.filters)
        semantic = store.knn(version, vector(), n, query.filters)
        lexical = pending.result()
    elif want_lexical:
        lexical = store.bm25(version, lexical_text, n, query.filters)
    elif want_semantic:
        semantic = store.knn(version, vector(), n, query.filters)

    if query.mode == "bm25":
        fused = [(r.id, r.score) for r in lexical]
    elif query.mode == "vector":
        fused = [(r.id, r.score) for r in semantic]
    else:
        fused = fuse(
            [[(r.id, r.score) for r in lexical], [(r.id, r.score) for r in semantic]],
            weights=[1.0 - fusion.vector_weight, fusion.vector_weight],
            method=fusion.method,
            rrf_k=fusion.rrf_k,
        )
    return Candidates(lexical, semantic, fused)


def hybrid_search(
    store: IndexStore,
    target: str,
    query: Query,
    fusion: FusionConfig | None = None,
    embed: Callable[[str], np.ndarray] | None = None,
) -> list[SearchHit]:
    """BM25, vector or fused search on an alias or a version; best first. A hybrid search's
    fused candidates are re-ranked when ``fusion.rerank_weights`` is set and has a model for
    their kind (:mod:`opsassist.index.rerank`).

    Without ``query.vector``, ``embed(query.text)`` gives it, computed while the BM25 list is
    searched (the query embedding is most of a search's latency on a CPU).
    """
    fusion = fusion or FusionConfig()
    version = resolve_target(store, target)
    found = candidate_lists(store, version, query, fusion, embed)
    rows = found.rows
    ranked = found.fused
    if query.mode == "hybrid" and fusion.rerank_weights is not None:
        from opsassist.index.rerank import model_for, rerank

        model = model_for(found, fusion.rerank_weights)
        if model is not None:
            ranked = rerank(query.text, found, model)
    bm25_rank = {r.id: i + 1 for i, r in enumerate(found.lexical)}
    vector_rank = {r.id: i + 1 for i, r in enumerate(found.semantic)}
    similarity = {r.id: r.score for r in found.semantic}
    return [
        _hit(
            rows[doc_id],
            score,
            bm25_rank.get(doc_id),
            vector_rank.get(doc_id),
            similarity.get(doc_id),
        )
        for doc_id, score in ranked[: query.k]
    ]

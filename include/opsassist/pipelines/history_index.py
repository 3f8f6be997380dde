"""Indexing a reprocessed day: validate (Great Expectations), then replace the day's documents.

Runs on the Spark driver (or any single process) once a day's documents and vectors are built.

Where the documents go
    Into the version the alias (``OPSASSIST_HISTORY_INDEX``, default the signal alias) points
    at, under the same file lock as the streaming ingest, through the :class:`IndexStore`
    interface: bulk ``upsert`` of the day's documents, then ``delete`` of the documents of the
    same kinds whose window starts in that day and that the run did not produce (what an older
    parser or model left). Ids are deterministic (:mod:`opsassist.documents`), so a document the
    streaming path already indexed is replaced in place, never duplicated, and a re-run changes
    nothing. The alias never moves to a half-written version: if none exists yet, an empty one
    is created and promoted first (the streaming ingest adopts it), and a suite failure raises
    before anything is written.

    A kind with no record in the day is left alone (a missing archive folder must not wipe a
    day that was streamed). The signal alias keeps ``OPSASSIST_SIGNALS_RETENTION_DAYS`` of
    documents: days older than that are deleted again by the retention DAG, so months of history
    belong in their own alias (``OPSASSIST_HISTORY_INDEX=signals-history``), which nothing expires.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from opsassist.documents import Chunk, content_hash
from opsassist.index.base import Filters, IndexStore, check_model
from opsassist.logs import get_logger
from opsassist.pipelines.history import DayScope
from opsassist.pipelines.signals import TEXT_MAX_LENGTH, BatchRefusedError, _row_time, state_lock
from opsassist.settings import Settings

log = get_logger(__name__)
UPSERT_BATCH = 2000
SEARCH_CAP = 10_000  # OpenSearch's default max result window


def target_alias(settings: Settings) -> str:
    return settings.history_index or settings.signal_index


def validate_documents(chunks: Sequence[Chunk], dimension: int) -> None:
    """The ``signal_documents`` suite (as for every streaming batch); raises if it fails."""
    from opsassist.validation import validate_chunks

    for chunk in chunks:
        if chunk.timestamp is None or chunk.end_timestamp is None:
            raise BatchRefusedError(f"signal document {chunk.id} has no time range")
    result = validate_chunks(
        chunks, "signal_documents", {"vector_dim": dimension, "text_max_length": TEXT_MAX_LENGTH}
    )
    if not result.success:
        raise BatchRefusedError(result.summary())


def day_ids(
    store: IndexStore,
    version: str,
    kinds: Sequence[str],
    start: dt.datetime,
    end: dt.datetime,
    dimension: int,
) -> set[str]:
    """Ids of documents of these kinds whose time starts in ``[start, end)``.

    Filtered searches return at most ``SEARCH_CAP`` rows, so a full slice is halved until each
    part fits: every matching document is found, however many the day has.
    """
    probe = np.zeros(dimension, dtype=np.float32)
    probe[0] = 1.0
    found: set[str] = set()
    pending = [(start, end)]
    while pending:
        low, high = pending.pop()
        rows = store.knn(
            version, probe, SEARCH_CAP, Filters(source_types=tuple(kinds), since=low, until=high)
        )
        if len(rows) >= SEARCH_CAP and high - low > dt.timedelta(seconds=1):
            middle = low + (high - low) / 2
            pending += [(low, middle), (middle, high)]
            continue
        for ranked in rows:
            when = _row_time(ranked.row.get("timestamp"))
            if when is not None and low <= when < high:
                found.add(ranked.id)
    return found


def _version(store: IndexStore, alias: str, dimension: int, model: str) -> str:
    current = store.current_version(alias)
    if current is not None:
        check_model(store, current, model)
        return current
    version = store.create_version(alias, dimension, model=model)
    store.finalize(version)
    store.promote(alias, version)
    log.info("history: created the first version", extra={"alias": alias, "version": version})
    return version


def index_day(
    settings: Settings,
    store: IndexStore,
    chunks: Sequence[Chunk],
    scope: DayScope,
    kinds: Sequence[str],
    *,
    alias: str | None = None,
) -> dict[str, Any]:
    """Validate the day's documents and make them the day's documents of ``kinds`` in the index.

    ``kinds``: the source types the day had records of (only their stale documents are deleted).
    Returns what was written and deleted.
    """
    alias = alias or target_alias(settings)
    started = time.perf_counter()
    dimension = len(chunks[0].vector or []) if chunks else 0
    if chunks:
        validate_documents(chunks, dimension)
    validated = time.perf_counter() - started
    result: dict[str, Any] = {
        "day": scope.day.isoformat(),
        "alias": alias,
        "documents": len(chunks),
        "upserted": 0,
        "deleted": 0,
        "kinds": sorted(kinds),
    }
    if not chunks and not kinds:
        log.warning("history: no archived records for the day; index unchanged", extra=result)
        return result | {"version": store.current_version(alias)}
    with state_lock(settings):
        if not chunks:
            version = store.current_version(alias)
            if version is None:
                return result | {"version": None}
            dimension = _dimension_of(store, version) or 0
            if not dimension:  # an empty version: nothing to replace
                return result | {"version": version}
        else:
            version = _version(store, alias, dimension, settings.embedding_model)
        for offset in range(0, len(chunks), UPSERT_BATCH):
            written = store.upsert(version, chunks[offset : offset + UPSERT_BATCH])
            if written.failed:
                failed = written.failed[:3]
                raise BatchRefusedError(f"{len(written.failed)} documents not indexed: {failed}")
            result["upserted"] += written.written
        start = dt.datetime.fromtimestamp(scope.start, tz=dt.UTC)
        end = dt.datetime.fromtimestamp(scope.end, tz=dt.UTC)
        if kinds:
            stale = day_ids(store, version, kinds, start, end, dimension) - {c.id for c in chunks}
            if stale:
                result["deleted"] = store.delete(version, sorted(stale))
        store.finalize(version)
    result |= {
        "version": version,
        "validate_s": round(validated, 3),
        "seconds": round(time.perf_counter() - started, 3),
    }
    log.info("history: day indexed", extra=result)
    return result


def _dimension_of(store: IndexStore, version: str) -> int | None:
    """The vector dimension of a version's documents (None: it has none)."""
    for ids in store.ids_by_source(version).values():
        for chunk in store.fetch(version, sorted(ids)[:1]):
            return len(chunk.vector or []) or None
    return None


# --- vectors: shared with the streaming ingest's cache -----------------------------------------
def _vector_key(settings: Settings, text: str) -> str:
    """The streaming ingest's cache key of an embedding text (model + text)."""
    return content_hash(settings.embedding_model + "\x1f" + text)


def cached_vectors(settings: Settings, texts: Sequence[str]) -> dict[str, list[float]]:
    """Vectors already embedded for these texts (by the streaming ingest or an earlier run)."""
    from opsassist.pipelines.signals import SignalState, signals_dir

    keys = {_vector_key(settings, text): text for text in texts}
    state = SignalState(signals_dir(settings) / "state.sqlite")
    try:
        found = state.vectors(list(keys))
    finally:
        state.close()
    return {keys[key]: vector for key, vector in found.items()}


def remember_vectors(settings: Settings, vectors: Mapping[str, Sequence[float]]) -> None:
    """Add new vectors to the shared cache (the streaming ingest reuses them, and vice versa)."""
    from opsassist.pipelines.signals import SignalState, signals_dir

    if not vectors:
        return
    state = SignalState(signals_dir(settings) / "state.sqlite")
    try:
        state.put_vectors({_vector_key(settings, t): v for t, v in vectors.items()})
    finally:
        state.close()

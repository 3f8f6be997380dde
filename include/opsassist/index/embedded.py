"""Embedded index store on LanceDB: no server, files under ``OPSASSIST_DATA_DIR/index``.

Why LanceDB: an actively maintained embedded engine (Lance columnar format, Rust core) that gives
in one library what the interface needs: persisted tables, SQL filters, a native full-text (BM25)
index and vector search with optional HNSW indexes. Each index version is one table
(``runbooks-v0003``); aliases are a small JSON file replaced atomically under a file lock, so a
reader sees either the old or the new version, never a half-written one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import math
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from opsassist.documents import Chunk
from opsassist.index.base import (
    Filters,
    IndexUnavailableError,
    RankedRow,
    WriteReport,
    version_name,
    version_number,
    versions_of,
)
from opsassist.logs import get_logger

log = get_logger(__name__)

_FIELDS = [
    "id",
    "source_type",
    "source",
    "title",
    "section",
    "text",
    "content_hash",
    "timestamp",
    "end_timestamp",
    "metadata",
]


MODEL_KEY = b"opsassist.embedding_model"


def chunk_schema(dimension: int, model: str | None = None) -> pa.Schema:
    """The table schema; ``model`` (the embedding model of the vectors) rides in its metadata."""
    schema = pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("source_type", pa.string()),
            pa.field("source", pa.string()),
            pa.field("title", pa.string()),
            pa.field("section", pa.string()),
            pa.field("text", pa.string()),
            pa.field("content_hash", pa.string()),
            pa.field("timestamp", pa.timestamp("us", tz="UTC")),
            pa.field("end_timestamp", pa.timestamp("us", tz="UTC")),
            pa.field("metadata", pa.string()),
            pa.field("vector", pa.list_(pa.float32(), dimension)),
        ]
    )
    return schema.with_metadata({MODEL_KEY: model.encode()}) if model else schema


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _where(filters: Filters) -> str | None:
    clauses: list[str] = []
    if filters.source_types:
        clauses.append(f"source_type IN ({', '.join(_quote(s) for s in filters.source_types)})")
    if filters.sources:
        clauses.append(f"source IN ({', '.join(_quote(s) for s in filters.sources)})")
    if filters.since is not None:
        since = filters.since.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        clauses.append(f"coalesce(end_timestamp, timestamp) >= timestamp '{since}'")
    if filters.until is not None:
        until = filters.until.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        clauses.append(f"timestamp <= timestamp '{until}'")
    return " AND ".join(clauses) or None


class EmbeddedIndexStore:
    """LanceDB-backed implementation of ``IndexStore``."""

    def __init__(
        self,
        root: Path,
        ann_min_rows: int = 50_000,
        *,
        read_consistency_seconds: float = 1.0,
        refine_factor: int = 10,
        memory_max_rows: int = 20_000,
    ) -> None:
        import lancedb

        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.ann_min_rows = ann_min_rows
        self.refine_factor = refine_factor
        self.memory_max_rows = memory_max_rows
        self._read_consistency = read_consistency_seconds
        # Without an interval an open table never sees rows that another process (the signal
        # DAG) adds later, so a long-lived chat server would answer from a frozen snapshot.
        self._db = lancedb.connect(
            str(root / "lancedb"),
            read_consistency_interval=dt.timedelta(seconds=read_consistency_seconds),
        )
        self._tables: dict[str, Any] = {}
        self._tables_lock = threading.Lock()
        self._memory: dict[str, _MemoryTable | None] = {}  # None: too big to hold in memory
        self._memory_lock = threading.Lock()
        self._aliases_path = root / "aliases.json"
        self._aliases_cache: tuple[float, dict[str, str]] = (-1.0, {})

    # --- aliases ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _alias_lock(self) -> Iterator[None]:
        with open(self.root / ".aliases.lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _read_aliases(self) -> dict[str, str]:
        try:
            mtime = self._aliases_path.stat().st_mtime_ns
        except FileNotFoundError:
            return {}
        if mtime != self._aliases_cache[0]:
            self._aliases_cache = (mtime, json.loads(self._aliases_path.read_text()))
        return dict(self._aliases_cache[1])

    def _write_aliases(self, aliases: dict[str, str]) -> None:
        tmp = self._aliases_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(aliases, indent=2, sort_keys=True))
        os.replace(tmp, self._aliases_path)

    def current_version(self, alias: str) -> str | None:
        return self._read_aliases().get(alias)

    def promote(self, alias: str, version: str) -> str | None:
        if version not in self._table_names():
            raise IndexUnavailableError(f"cannot promote {version}: no such version")
        with self._alias_lock():
            aliases = self._read_aliases()
            previous = aliases.get(alias)
            aliases[alias] = version
            self._write_aliases(aliases)
        log.info("alias promoted", extra={"alias": alias, "version": version, "previous": previous})
        return previous

    # --- versions --------------------------------------------------------------------------------
    def _table_names(self) -> list[str]:
        result = self._db.list_tables()
        names = getattr(result, "tables", result)
        return list(names)

    def list_versions(self, alias: str) -> list[str]:
        return versions_of(alias, self._table_names())

    def _table(self, version: str) -> Any:
        with self._tables_lock:
            table = self._tables.get(version)
            if table is None:
                try:
                    table = self._db.open_table(version)
                except (FileNotFoundError, ValueError) as exc:
                    raise IndexUnavailableError(f"index version {version} not found") from exc
                self._tables[version] = table
            return table

    def create_version(
        self, alias: str, dimension: int, base: str | None = None, model: str | None = None
    ) -> str:
        model = model or (self.version_model(base) if base is not None else None)
        schema = chunk_schema(dimension, model)
        with self._alias_lock():
            existing = self.list_versions(alias)
            number = version_number(existing[-1]) + 1 if existing else 1
            version = version_name(alias, number)
            if base is not None:
                data = self._table(base).to_arrow()
                self._db.create_table(version, data=data, schema=schema)
            else:
                self._db.create_table(version, schema=schema)
        return version

    def version_model(self, version: str) -> str | None:
        value = (self._table(version).schema.metadata or {}).get(MODEL_KEY)
        return value.decode() if value else None

    def drop_version(self, version: str) -> None:
        if version in self._read_aliases().values():
            raise ValueError(f"refusing to drop {version}: an alias points at it")
        with self._tables_lock:
            self._tables.pop(version, None)
        self._forget(version)
        self._db.drop_table(version)

    # --- writes ----------------------------------------------------------------------------------
    def upsert(self, version: str, chunks: Sequence[Chunk]) -> WriteReport:
        report = WriteReport()
        good: list[dict[str, Any]] = []
        table = self._table(version)
        dimension = table.schema.field("vector").type.list_size
        for chunk in chunks:
            vector = chunk.vector
            if vector is None or len(vector) != dimension:
                report.failed.append((chunk.id, f"vector dimension != {dimension}"))
                continue
            row = chunk.to_record()
            good.append(row)
        if good:
            ids = [row["id"] for row in good]
            self.delete(version, ids)
            table.add(pa.Table.from_pylist(good, schema=chunk_schema(dimension)))
            report.written = len(good)
            self._forget(version)
        return report

    def delete(self, version: str, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        table = self._table(version)
        before = table.count_rows()
        for start in range(0, len(ids), 1000):
            batch = ids[start : start + 1000]
            table.delete(f"id IN ({', '.join(_quote(i) for i in batch)})")
        self._forget(version)
        return int(before - table.count_rows())

    def finalize(self, version: str) -> None:
        """Build the BM25 index (always) and an HNSW vector index on large tables."""
        from lancedb.index import FTS, HnswSq

        table = self._table(version)
        rows = table.count_rows()
        if rows == 0:
            return
        table.create_index("text", config=FTS(stem=True, remove_stop_words=True), replace=True)
        table.create_index("id", replace=True)
        if rows >= self.ann_min_rows:
            table.create_index("vector", config=HnswSq(distance_type="cosine"), replace=True)
        _tag(table, _BM25_EXACT_TAG, int(table.version))
        self._forget(version)

    # --- reads -----------------------------------------------------------------------------------
    def count(self, version: str) -> int:
        return int(self._table(version).count_rows())

    def ids_by_source(self, version: str) -> dict[str, set[str]]:
        data = self._table(version).to_arrow().select(["id", "source"]).to_pylist()
        result: dict[str, set[str]] = {}
        for row in data:
            result.setdefault(row["source"], set()).add(row["id"])
        return result

    def fetch(self, version: str, ids: Sequence[str]) -> list[Chunk]:
        if not ids:
            return []
        table = self._table(version)
        rows: list[dict[str, Any]] = []
        for start in range(0, len(ids), 1000):
            batch = ids[start : start + 1000]
            where = f"id IN ({', '.join(_quote(i) for i in batch)})"
            rows.extend(table.search().where(where).limit(len(batch)).to_arrow().to_pylist())
        return [Chunk.from_record(row) for row in rows]

    def bm25(self, target: str, text: str, n: int, filters: Filters) -> list[RankedRow]:
        memory = self._in_memory(target)
        if memory is not None and memory.bm25 is not None:
            return memory.bm25_search(text, n, filters)
        table = self._table(target)
        # LanceDB reads a double-quoted query as a phrase query, which needs token positions the
        # index does not keep (an error). The tokenizer drops quotes anyway: same tokens without.
        query = (
            table.search(text.replace('"', " "), query_type="fts", fts_columns="text")
            .select([*_FIELDS, "_score"])
            .limit(n)
        )
        where = _where(filters)
        if where:
            query = query.where(where, prefilter=True)
        try:
            rows = query.to_arrow().to_pylist()
        except (ValueError, RuntimeError) as exc:
            if "index" in str(exc).lower() and table.count_rows() == 0:
                return []
            raise
        return [RankedRow(id=r["id"], score=float(r.get("_score", 0.0)), row=r) for r in rows]

    def knn(self, target: str, vector: np.ndarray, n: int, filters: Filters) -> list[RankedRow]:
        query_vector = np.asarray(vector, dtype=np.float32)
        memory = self._in_memory(target)
        if memory is not None and memory.matrix is not None:
            return memory.knn(query_vector, n, filters)
        table = self._table(target)
        query = (
            table.search(query_vector, vector_column_name="vector")
            .distance_type("cosine")
            .select([*_FIELDS, "_distance"])
            .limit(n)
        )
        if self.refine_factor:  # exact re-ranking of the quantized index's candidates
            query = query.refine_factor(self.refine_factor)
        where = _where(filters)
        if where:
            query = query.where(where, prefilter=True)
        rows = query.to_arrow().to_pylist()
        return [
            RankedRow(id=r["id"], score=1.0 - float(r.get("_distance", 1.0)), row=r) for r in rows
        ]

    # --- small tables searched in memory ------------------------------------------------------
    # A LanceDB query costs milliseconds of CPU whatever the table size (planning, its thread
    # pools), which is most of a chat request on a small CPU. A table small enough is held in
    # memory instead and searched with the same results:
    # - vectors: a normalized matrix, the exact cosine ranking LanceDB's flat search gives when
    #   there is no ANN index;
    # - BM25: LanceDB's scoring over token counts from LanceDB's own tokenizer, only while the
    #   full-text index holds exactly the table's rows (tagged by ``finalize``). Rows added or
    #   deleted since would be scored by LanceDB with the index's stale statistics, so until the
    #   next ``finalize`` LanceDB answers.
    # The copy is reloaded when the table's version moves (another process wrote), checked at
    # most once per read-consistency interval: the staleness LanceDB itself allows.
    def _in_memory(self, version: str) -> _MemoryTable | None:
        if self.memory_max_rows <= 0:
            return None
        with self._memory_lock:
            now = time.monotonic()
            held = self._memory.get(version, _UNLOADED)
            if held is None or (
                isinstance(held, _MemoryTable) and now - held.checked < self._read_consistency
            ):
                return held
            table = self._table(version)
            table_version = int(table.version)
            if isinstance(held, _MemoryTable) and held.table_version == table_version:
                held.checked = now
                return held
            fresh = None  # large: LanceDB searches it
            if table.count_rows() <= self.memory_max_rows:
                indices = table.list_indices()
                ann = any("vector" in index.columns for index in indices)
                options = _bm25_options(table, indices, table_version)
                previous = held if isinstance(held, _MemoryTable) else None
                fresh = _MemoryTable(
                    table.to_arrow(), table_version, now, not ann, options, previous
                )
            self._memory[version] = fresh
            return fresh

    def _forget(self, version: str) -> None:
        with self._memory_lock:
            self._memory.pop(version, None)

    def ping(self) -> bool:
        return self.root.exists()


_UNLOADED = object()
_BM25_EXACT_TAG = "opsassist-bm25-exact"
# the full-text index options lancedb.tokenize takes (index detail name -> argument name)
_TOKENIZER_OPTIONS = {
    "base_tokenizer": "base_tokenizer",
    "language": "language",
    "max_token_length": "max_token_length",
    "lower_case": "lower_case",
    "stem": "stem",
    "remove_stop_words": "remove_stop_words",
    "custom_stop_words": "custom_stop_words",
    "ascii_folding": "ascii_folding",
    "min_ngram_length": "ngram_min_length",
    "max_ngram_length": "ngram_max_length",
    "prefix_only": "prefix_only",
}
# index details that do not change the tokens of a plain query
_TOKEN_NEUTRAL = {"lance_tokenizer", "with_position", "block_size"}


def _tag(table: Any, name: str, version: int) -> None:
    tags = table.tags
    if name in tags.list():
        tags.update(name, version)
    else:
        tags.create(name, version)


def _bm25_options(table: Any, indices: Sequence[Any], table_version: int) -> dict[str, Any] | None:
    """``lancedb.tokenize`` arguments reproducing the table's full-text index, if its BM25 can be
    computed in memory: the index was built at this table version (no row written since) and
    every option it uses is one ``lancedb.tokenize`` takes."""
    fts = [i for i in indices if i.index_type == "FTS" and list(i.columns) == ["text"]]
    if len(fts) != 1 or table.tags.list().get(_BM25_EXACT_TAG, {}).get("version") != table_version:
        return None
    details = dict(fts[0].index_details or {})
    options = {_TOKENIZER_OPTIONS[k]: v for k, v in details.items() if k in _TOKENIZER_OPTIONS}
    unknown = {k: v for k, v in details.items() if k not in _TOKENIZER_OPTIONS}
    if any(v for k, v in unknown.items() if k not in _TOKEN_NEUTRAL):
        return None  # e.g. split_identifiers: a tokenizer stage lancedb.tokenize cannot apply
    return options


class _MemoryTable:
    """One table version's rows, searched with numpy: unit vectors (if no ANN index) and BM25
    (if the full-text index can be reproduced), under the same filters as LanceDB's SQL."""

    def __init__(
        self,
        data: pa.Table,
        table_version: int,
        checked: float,
        vectors: bool,
        bm25_options: dict[str, Any] | None,
        previous: _MemoryTable | None = None,
    ) -> None:
        self.table_version = table_version
        self.checked = checked
        self.rows = data.select(_FIELDS)
        self.matrix: np.ndarray | None = None
        if vectors:
            matrix = np.asarray(
                data.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False),
                dtype=np.float32,
            ).reshape(data.num_rows, -1)
            norms = np.linalg.norm(matrix, axis=1, keepdims=True)
            self.matrix = matrix / np.where(norms == 0, 1.0, norms)
        self.bm25: _MemoryBm25 | None = None
        # token counts by content hash, kept across reloads (also those between two finalizes,
        # without BM25): a reload tokenizes only rows it has not seen
        self.token_counts: tuple[dict[str, Any], dict[str, dict[str, int]]] = (
            previous.token_counts if previous is not None else ({}, {})
        )
        if bm25_options is not None:
            known = self.token_counts[1] if self.token_counts[0] == bm25_options else {}
            self.bm25 = _MemoryBm25(
                data.column("text").to_pylist(),
                data.column("content_hash").to_pylist(),
                bm25_options,
                known,
            )
            self.token_counts = (bm25_options, self.bm25.counts)
        self.source_type = np.asarray(data.column("source_type").to_pylist(), dtype=object)
        self.source = np.asarray(data.column("source").to_pylist(), dtype=object)
        start = _epoch_us(data.column("timestamp"))
        end = _epoch_us(data.column("end_timestamp"))
        self.start = start
        self.start_or_end = np.where(np.isnan(end), start, end)  # coalesce(end, start)

    def mask(self, filters: Filters) -> np.ndarray | None:
        """Rows the filters keep (SQL semantics: a comparison with a missing time is false)."""
        keep = np.ones(self.rows.num_rows, dtype=bool)
        if filters.source_types:
            keep &= np.isin(self.source_type, list(filters.source_types))
        if filters.sources:
            keep &= np.isin(self.source, list(filters.sources))
        if filters.since is not None:
            keep &= self.start_or_end >= _microseconds(filters.since)
        if filters.until is not None:
            keep &= self.start <= _microseconds(filters.until)
        return None if keep.all() else keep

    def knn(self, vector: np.ndarray, n: int, filters: Filters) -> list[RankedRow]:
        assert self.matrix is not None
        norm = float(np.linalg.norm(vector))
        scores = self.matrix @ (vector / norm if norm else vector)
        return self._top(scores, self.mask(filters), n)

    def bm25_search(self, text: str, n: int, filters: Filters) -> list[RankedRow]:
        assert self.bm25 is not None
        scores = self.bm25.scores(text)
        keep = scores > 0  # a row matches when it holds a query token (idf and tf are > 0)
        mask = self.mask(filters)
        return self._top(scores, keep if mask is None else keep & mask, n, "_score")

    def _top(
        self, scores: np.ndarray, keep: np.ndarray | None, n: int, score_field: str | None = None
    ) -> list[RankedRow]:
        """The ``n`` best rows, best first; equal scores in table order."""
        candidates = np.arange(len(scores))
        if keep is not None:
            candidates, scores = candidates[keep], scores[keep]
        if len(candidates) > n:
            # the n-th best score; of the rows tied at it, the first in table order make the cut
            nth = -np.partition(-scores, n - 1)[n - 1]
            tied = np.flatnonzero(scores == nth)[: n - int((scores > nth).sum())]
            top = np.concatenate([np.flatnonzero(scores > nth), tied])
            candidates, scores = candidates[top], scores[top]
        order = np.lexsort((candidates, -scores))
        rows = self.rows.take(candidates[order]).to_pylist()
        out = []
        for row, score in zip(rows, scores[order].tolist(), strict=True):
            if score_field is not None:
                row[score_field] = score
            out.append(RankedRow(id=row["id"], score=score, row=row))
        return out


class _MemoryBm25:
    """LanceDB's BM25 over one table version's ``text``: tokens from ``lancedb.tokenize`` with
    the index's options (a query token repeated counts again, as in LanceDB), k1 1.2, b 0.75,
    idf ln(1 + (N - df + 0.5) / (df + 0.5)). Scores equal LanceDB's to float32 precision; LanceDB
    leaves the order of equal scores undefined, here it is the table order."""

    K1 = 1.2
    B = 0.75

    def __init__(
        self,
        texts: Sequence[str | None],
        hashes: Sequence[str | None],
        options: dict[str, Any],
        known: dict[str, dict[str, int]],
    ) -> None:
        self.options = options
        self.counts: dict[str, dict[str, int]] = {}
        postings: dict[str, tuple[list[int], list[int]]] = {}
        lengths = np.zeros(len(texts), dtype=np.float64)
        for row, (text, digest) in enumerate(zip(texts, hashes, strict=True)):
            key = digest or ""
            counts = known.get(key) if digest else None
            if counts is None:
                counts = {}
                for token in self.tokenize(text or ""):
                    counts[token] = counts.get(token, 0) + 1
            if digest:
                self.counts[key] = counts
            lengths[row] = sum(counts.values())
            for token, tf in counts.items():
                rows, tfs = postings.setdefault(token, ([], []))
                rows.append(row)
                tfs.append(tf)
        docs = len(texts)
        average = lengths.sum() / docs if docs else 0.0
        self.docs = docs
        # per token: the rows holding it and their BM25 weight before idf
        self.postings: dict[str, tuple[np.ndarray, np.ndarray, float]] = {}
        for token, (rows, tfs) in postings.items():
            at = np.asarray(rows, dtype=np.int64)
            freq = np.asarray(tfs, dtype=np.float64)
            norm = self.K1 * (1 - self.B + self.B * lengths[at] / average)
            df = len(rows)
            idf = math.log(1 + (docs - df + 0.5) / (df + 0.5))
            self.postings[token] = (at, (self.K1 + 1) * freq / (freq + norm), idf)

    def tokenize(self, text: str) -> list[str]:
        import lancedb

        return [token.text for token in lancedb.tokenize(text, **self.options)]

    def scores(self, text: str) -> np.ndarray:
        scores = np.zeros(self.docs, dtype=np.float64)
        for token in self.tokenize(text):
            posting = self.postings.get(token)
            if posting is not None:
                rows, weights, idf = posting
                scores[rows] += idf * weights
        return scores


def _epoch_us(column: pa.ChunkedArray) -> np.ndarray:
    """Microseconds since the epoch as floats, NaN where missing (NaN compares false)."""
    values = column.cast(pa.int64()).to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=np.float64)


def _microseconds(moment: dt.datetime) -> float:
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (moment.astimezone(dt.UTC) - epoch) // dt.timedelta(microseconds=1)

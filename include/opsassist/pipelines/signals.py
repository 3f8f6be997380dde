"""The signal pipeline: poll a source -> parse -> window -> documents -> embed -> validate ->
index -> dead-letter -> save state -> commit, one batch at a time.

Versioning: one long-lived version per UTC day, upserted in place
    Signals are appended continuously, so the runbook pipeline's blue/green full builds do not
    fit. The alias ``settings.signal_index`` always points at the *current day's* version and
    every batch upserts into it (searchable as soon as ``upsert`` returns: LanceDB searches rows
    not yet in its BM25/ANN indexes by brute force, OpenSearch refreshes on write). The first
    batch of a new UTC day rolls over: it copies the current version into a new one
    (``create_version(base=...)``), deletes what is older than the retention there, finalizes
    and promotes it, then upserts. So retention and compaction happen once a day on a copy while
    readers keep the old version, the alias never points at a half-built version, and the last
    ``OPSASSIST_KEEP_VERSIONS`` days stay for rollback. Between rollovers, expired windows are
    deleted as they age out, and ``finalize`` (index rebuild) runs every
    ``OPSASSIST_SIGNALS_FINALIZE_SECONDS``. A single version with upserts alone would never be
    compacted (LanceDB accumulates fragments and deletion files); a version per batch would copy
    the whole index every few seconds.

Exactly-once effect on an at-least-once source
    A window's documents change while the window fills (counts, examples), and their ids with
    them (ids hash the text). A small SQLite state (``$OPSASSIST_DATA_DIR/signals/state.sqlite``)
    keeps, per window, the mergeable aggregate (while the window can still change) and the ids
    currently indexed for it, plus the offset applied per stream. A batch:

    1. skips records below the applied offset of their stream (a replay after a crash);
    2. parses, dead-letters bad records (reason counted) and late ones (older than the stream's
       newest event time minus ``OPSASSIST_SIGNALS_LATENESS_SECONDS``), adds the rest to their
       windows and rebuilds the documents of the touched windows (and of the next window, whose
       "vs previous window" figures depend on them);
    3. records the new ids as *pending* (write-ahead), upserts new documents, deletes the
       window's superseded ones (old and pending ids that are no longer wanted);
    4. stores the dead letters durably, then commits the state (aggregates, ids, offsets,
       watermarks) in one SQLite transaction, then commits the source's offsets.

    A crash anywhere replays the batch from the last committed offsets; the documents are a
    function of the records (see :mod:`opsassist.signals`), so the replay writes the same ids
    and deletes whatever a half-finished batch left behind: no gaps, no duplicates.

Freshness: each batch records, for its accepted records, event time -> searchable (the moment
the index write returned) as p50/p95/max, and ingest lag (source timestamp -> searchable); the
batch reports go to ``$OPSASSIST_DATA_DIR/signals/reports/batches.jsonl`` and the task log.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
import fcntl
import json
import math
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from opsassist import telemetry
from opsassist.documents import Chunk, content_hash
from opsassist.index.base import Filters, IndexStore, check_model
from opsassist.logs import get_logger
from opsassist.mining.windows import TemplateWindow
from opsassist.parsing.events import K8sEvent, parse_event
from opsassist.parsing.logs import BadRecord, LogRecord, parse_log
from opsassist.parsing.metrics import (
    MetricSample,
    Points,
    RangeSeries,
    add_point,
    merge_points,
    parse_metric,
    parse_range_result,
)
from opsassist.settings import Settings
from opsassist.signals import (
    EventWindow,
    SignalConfig,
    embedding_text,
    epoch_ms,
    event_window_documents,
    log_window_documents,
    metric_window_documents,
    point_values,
    range_series_source,
    window_start,
)
from opsassist.sources.base import DeadLetter, RawRecord, Source, end_positions
from opsassist.sources.prometheus import REASON_QUERY

log = get_logger(__name__)
PIPELINE = "signals"
SOURCE_NAMES = ("spool", "kafka", "prometheus", "kube", "opensearch_logs")
REASON_LATE = "late"
TEXT_MAX_LENGTH = 4000
# (kind, group, window start); group: the service (log), namespace (event) or series (metric)
Key = tuple[str, str, int]
Embedder = Callable[[Sequence[str]], np.ndarray]


class BatchRefusedError(RuntimeError):
    """A batch's documents failed validation or indexing: nothing was committed."""


# --- paths ---------------------------------------------------------------------------------------
def signals_dir(settings: Settings) -> Path:
    path = settings.data_dir / "signals"
    path.mkdir(parents=True, exist_ok=True)
    return path


def enabled_sources(settings: Settings) -> list[str]:
    names = [n.strip() for n in settings.signals_sources.split(",") if n.strip()]
    unknown = sorted(set(names) - set(SOURCE_NAMES))
    if unknown:
        raise ValueError(f"unknown signal sources {unknown}: use {', '.join(SOURCE_NAMES)}")
    return names


@contextlib.contextmanager
def state_lock(settings: Settings, timeout: float = 900.0) -> Iterator[None]:
    """One writer at a time (DAG tasks of several sources, a benchmark, retention)."""
    with open(signals_dir(settings) / "state.lock", "a+") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError("signal state is locked by another writer") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- state ---------------------------------------------------------------------------------------
@dataclasses.dataclass(slots=True)
class WindowRow:
    agg_json: str | None = None  # the aggregate as stored (parsed only when needed)
    doc_ids: set[str] = dataclasses.field(default_factory=set)
    pending: set[str] = dataclasses.field(default_factory=set)
    exists: bool = False


class SignalState:
    """Window aggregates, indexed ids, applied offsets and watermarks in one SQLite file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, timeout=60, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(
            """
            CREATE TABLE IF NOT EXISTS windows (
                kind TEXT NOT NULL, grp TEXT NOT NULL, start INTEGER NOT NULL,
                agg TEXT, doc_ids TEXT NOT NULL DEFAULT '[]', pending TEXT NOT NULL DEFAULT '[]',
                PRIMARY KEY (kind, grp, start));
            CREATE INDEX IF NOT EXISTS windows_by_start ON windows (start);
            CREATE TABLE IF NOT EXISTS positions (stream TEXT PRIMARY KEY, next INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS watermarks (
                kind TEXT NOT NULL, grp TEXT NOT NULL, ms INTEGER NOT NULL,
                PRIMARY KEY (kind, grp));
            CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS vectors (
                key TEXT PRIMARY KEY, vector BLOB NOT NULL, used REAL NOT NULL);
            """
        )

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # reads
    def applied(self, streams: Sequence[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for stream in streams:
            row = self.db.execute("SELECT next FROM positions WHERE stream = ?", (stream,))
            found = row.fetchone()
            if found is not None:
                out[stream] = int(found[0])
        return out

    def watermark(self, kind: str, group: str) -> int | None:
        row = self.db.execute(
            "SELECT ms FROM watermarks WHERE kind = ? AND grp = ?", (kind, group)
        ).fetchone()
        return None if row is None else int(row[0])

    def window(self, key: Key) -> WindowRow:
        row = self.db.execute(
            "SELECT agg, doc_ids, pending FROM windows WHERE kind = ? AND grp = ? AND start = ?",
            key,
        ).fetchone()
        if row is None:
            return WindowRow()
        return WindowRow(row[0] or None, set(json.loads(row[1])), set(json.loads(row[2])), True)

    def starts(self, kind: str, group: str, low: int, high: int) -> list[int]:
        """Window starts of a group in ``[low, high]`` that still hold an aggregate."""
        rows = self.db.execute(
            "SELECT start FROM windows WHERE kind = ? AND grp = ? AND start BETWEEN ? AND ? "
            "AND agg IS NOT NULL ORDER BY start",
            (kind, group, low, high),
        )
        return [int(r[0]) for r in rows]

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def expired(self, before_start: int) -> dict[Key, set[str]]:
        rows = self.db.execute(
            "SELECT kind, grp, start, doc_ids, pending FROM windows WHERE start < ?",
            (before_start,),
        )
        return {
            (str(k), str(g), int(s)): set(json.loads(ids)) | set(json.loads(pending))
            for k, g, s, ids, pending in rows
        }

    def vectors(self, keys: Sequence[str]) -> dict[str, list[float]]:
        """Vectors embedded earlier (by any process), by key; marks them used now."""
        found: dict[str, list[float]] = {}
        for start in range(0, len(keys), 500):
            part = list(keys[start : start + 500])
            marks = ", ".join("?" * len(part))
            rows = self.db.execute(f"SELECT key, vector FROM vectors WHERE key IN ({marks})", part)
            for key, blob in rows:
                found[str(key)] = np.frombuffer(blob, dtype=np.float32).tolist()
        if found:
            now = time.time()
            with self.transaction() as db:
                db.executemany(
                    "UPDATE vectors SET used = ? WHERE key = ?", [(now, k) for k in found]
                )
        return found

    def put_vectors(self, items: Mapping[str, Sequence[float]]) -> None:
        now = time.time()
        with self.transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO vectors (key, vector, used) VALUES (?, ?, ?)",
                [
                    (key, np.asarray(vector, dtype=np.float32).tobytes(), now)
                    for key, vector in items.items()
                ],
            )

    def prune_vectors(self, unused_since: float) -> int:
        with self.transaction() as db:
            return int(db.execute("DELETE FROM vectors WHERE used < ?", (unused_since,)).rowcount)

    def window_count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM windows").fetchone()[0])


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# --- reports -------------------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, math.ceil(q / 100 * len(ordered)) - 1)
    return round(ordered[rank], 3)


@dataclasses.dataclass(slots=True)
class BatchReport:
    source: str
    records: int = 0
    replayed: int = 0
    accepted: int = 0
    rejected: dict[str, int] = dataclasses.field(default_factory=dict)
    windows: int = 0
    documents: int = 0
    upserted: int = 0
    embedded: int = 0
    deleted: int = 0
    expired: int = 0
    version: str = ""
    freshness_p50_s: float | None = None
    freshness_p95_s: float | None = None
    freshness_max_s: float | None = None
    lag_p95_s: float | None = None
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    indexed_at: str = ""
    freshness: list[float] = dataclasses.field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("freshness")
        return data


def summarise(source: str, reports: Sequence[BatchReport]) -> dict[str, Any]:
    """Totals of a run's batches (what a DAG task returns and logs)."""
    rejected: collections.Counter[str] = collections.Counter()
    for report in reports:
        rejected.update(report.rejected)
    freshness = [f for r in reports for f in r.freshness]
    return {
        "source": source,
        "batches": len(reports),
        "records": sum(r.records for r in reports),
        "accepted": sum(r.accepted for r in reports),
        "replayed": sum(r.replayed for r in reports),
        "rejected": dict(sorted(rejected.items())),
        "upserted": sum(r.upserted for r in reports),
        "deleted": sum(r.deleted for r in reports),
        "embedded": sum(r.embedded for r in reports),
        "version": reports[-1].version if reports else "",
        "freshness_p50_s": percentile(freshness, 50),
        "freshness_p95_s": percentile(freshness, 95),
        "freshness_max_s": percentile(freshness, 100),
    }


# --- the ingestor --------------------------------------------------------------------------------
@dataclasses.dataclass(slots=True)
class _Parsed:
    logs: list[tuple[RawRecord, LogRecord]] = dataclasses.field(default_factory=list)
    events: list[tuple[RawRecord, K8sEvent]] = dataclasses.field(default_factory=list)
    samples: list[tuple[RawRecord, MetricSample]] = dataclasses.field(default_factory=list)
    ranges: list[tuple[RawRecord, dict[str, Any], list[RangeSeries]]] = dataclasses.field(
        default_factory=list
    )
    letters: list[DeadLetter] = dataclasses.field(default_factory=list)


class SignalIngestor:
    """Applies batches of raw records to the signal index (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        store: IndexStore,
        *,
        embed: Embedder | None = None,
        clock: Callable[[], dt.datetime] | None = None,
        validate: bool = True,
    ) -> None:
        self.settings = settings
        self.store = store
        self.config = SignalConfig.from_settings(settings)
        self.state = SignalState(signals_dir(settings) / "state.sqlite")
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.validate = validate
        self._embed = embed
        self._model_key = (
            settings.embedding_model
            if embed is None
            else "injected:" + getattr(embed, "__qualname__", type(embed).__name__)
        )
        self._vectors: collections.OrderedDict[str, list[float]] = collections.OrderedDict()
        self._dimension: int | None = None
        self.rollover_deleted = 0
        # aggregates as of this ingestor's last commit, valid while no other process has written
        self._cache: dict[Key, Any] = {}
        self._writer = uuid.uuid4().hex
        self._generation: str | None = None
        self.reports_path = signals_dir(settings) / "reports" / "batches.jsonl"

    def close(self) -> None:
        self.state.close()

    # --- embedding -----------------------------------------------------------------------------
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if self._embed is not None:
            return self._embed(texts)
        from opsassist.embedding import embed_texts

        return embed_texts(
            texts,
            self.settings.embedding_model,
            self.settings.embedding_batch_size,
            self.settings.embedding_device,
        )

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            self._dimension = int(self.embed_texts(["dimension probe"]).shape[1])
        return self._dimension

    def _with_vectors(self, chunks: Sequence[Chunk]) -> tuple[list[Chunk], int]:
        """Chunks with vectors. A text embedded before (by this process: memory; by any
        process: the state's vector table) is not embedded again; returns how many were."""
        keys = [content_hash(self._model_key + "\x1f" + embedding_text(c)) for c in chunks]
        missing: dict[str, str] = {}
        for chunk, key in zip(chunks, keys, strict=True):
            if key not in self._vectors:
                missing.setdefault(key, embedding_text(chunk))
        if missing:
            for key, vector in self.state.vectors(list(missing)).items():
                self._vectors[key] = vector
                del missing[key]
        if missing:
            vectors = self.embed_texts(list(missing.values()))
            fresh = {key: [float(x) for x in v] for key, v in zip(missing, vectors, strict=True)}
            self._vectors.update(fresh)
            self.state.put_vectors(fresh)
        out = []
        for chunk, key in zip(chunks, keys, strict=True):
            self._vectors.move_to_end(key)
            out.append(dataclasses.replace(chunk, vector=self._vectors[key]))
        while len(self._vectors) > 20_000:
            self._vectors.popitem(last=False)
        return out, len(missing)

    def prepare_vectors(self, chunks: Sequence[Chunk]) -> int:
        """Embed (and keep) the vectors these documents will need; returns how many were new.

        A long-running ingest has embedded its services' templates long ago; benchmarks and
        backfills call this to start from that state instead of from a cold cache."""
        return self._with_vectors(chunks)[1]

    # --- versions ------------------------------------------------------------------------------
    def ensure_version(self) -> str:
        """The version to write to: today's, rolling over (copy, expire, promote) on a new day."""
        alias = self.settings.signal_index
        today = self.clock().date().isoformat()
        current = self.store.current_version(alias)
        if current is not None:
            check_model(self.store, current, self.settings.embedding_model)
            day = self.state.meta(f"day:{current}")
            if day is None:  # state made before this version was known: adopt it for today
                self.state.set_meta(f"day:{current}", today)
                return current
            if day == today:
                return current
        version = self.store.create_version(
            alias, self.dimension, base=current, model=self.settings.embedding_model
        )
        expired = 0
        if current is not None:
            expired = self._expire(version, sweep=True)
            self.rollover_deleted += expired
        self.store.finalize(version)
        self.state.set_meta(f"finalized:{version}", str(time.time()))
        previous = self.store.promote(alias, version)
        self.state.set_meta(f"day:{version}", today)
        keep = max(1, self.settings.keep_versions)
        for old in self.store.list_versions(alias)[:-keep]:
            if old not in (version, previous):
                self.store.drop_version(old)
        log.info(
            "signal index version rolled over",
            extra={"version": version, "previous": previous, "expired": expired, "day": today},
        )
        return version

    def cutoff(self) -> dt.datetime:
        return self.clock() - dt.timedelta(days=self.settings.signals_retention_days)

    def _expire(self, version: str, *, sweep: bool = False) -> int:
        """Delete documents of windows older than the retention (and, with ``sweep``, any
        document older than it that the state does not know, e.g. after a state loss)."""
        cutoff = self.cutoff()
        before = window_start(cutoff, self.config.window_seconds) - self.config.window_seconds
        expired = self.state.expired(before + 1)
        ids = sorted({i for group in expired.values() for i in group})
        deleted = self.store.delete(version, ids) if ids else 0
        if expired:
            with self.state.transaction() as db:
                db.executemany(
                    "DELETE FROM windows WHERE kind = ? AND grp = ? AND start = ?", list(expired)
                )
            for key in expired:
                self._cache.pop(key, None)
        if sweep:
            deleted += sweep_expired(self.store, version, cutoff, self.dimension)
            self.state.prune_vectors(cutoff.timestamp())
        return deleted

    def _maybe_finalize(self, version: str) -> None:
        last = self.state.meta(f"finalized:{version}")
        never_with_rows = self.state.meta(f"finalized_rows:{version}") in (None, "0")
        due = last is None or time.time() - float(last) >= self.settings.signals_finalize_seconds
        if due or never_with_rows:
            self.store.finalize(version)
            self.state.set_meta(f"finalized:{version}", str(time.time()))
            self.state.set_meta(f"finalized_rows:{version}", str(self.store.count(version)))

    # --- one batch -----------------------------------------------------------------------------
    def _parse(self, records: Sequence[RawRecord]) -> _Parsed:
        parsed = _Parsed()
        limit = self.settings.signals_max_message_bytes
        for record in records:
            if record.problem is not None:  # the source already found it unusable
                parsed.letters.append(DeadLetter(record, *record.problem))
                continue
            try:
                if record.kind == "log":
                    item = parse_log(
                        record.payload,
                        service=record.hint,
                        received=record.received,
                        max_bytes=limit,
                    )
                    parsed.logs.append((record, item))
                elif record.kind == "event":
                    event = parse_event(record.payload, received=record.received, max_bytes=limit)
                    parsed.events.append((record, event))
                elif record.kind == "metric":
                    samples = parse_metric(
                        record.payload, received=record.received, max_bytes=limit
                    )
                    parsed.samples.extend((record, s) for s in samples)
                else:
                    payload = json.loads(record.payload)
                    if payload.get("error"):
                        raise BadRecord(REASON_QUERY, str(payload["error"]))
                    series = parse_range_result(payload.get("data") or {}, str(payload["name"]))
                    parsed.ranges.append((record, payload, series))
            except BadRecord as exc:
                parsed.letters.append(DeadLetter(record, exc.reason, exc.detail))
        return parsed

    def process(self, source: Source, records: Sequence[RawRecord]) -> BatchReport:
        """Apply one batch; see the module docstring for the order of writes."""
        report = BatchReport(source=source.name, records=len(records))
        timer = time.perf_counter()
        with state_lock(self.settings):
            if (self.state.meta("writer"), self.state.meta("generation")) != (
                self._writer,
                self._generation,
            ):
                self._cache.clear()  # another process wrote the state since our last batch
            try:
                self._process_locked(source, records, report, timer)
            except BaseException:
                self._cache.clear()  # aggregates were changed in place but not committed
                raise
        started = time.perf_counter()
        source.commit(end_positions(records))
        report.seconds["commit"] = round(time.perf_counter() - started, 4)
        self._write_report(report)
        telemetry.signal_batch(
            self.settings.statsd_address,
            report.source,
            report.freshness,
            report.rejected,
            {
                "indexed": report.upserted,
                "embedded": report.embedded,
                "deleted": report.deleted + report.expired,
                "rejected": sum(report.rejected.values()),
            },
            telemetry.current_dag_id("signals_ingest"),
        )
        return report

    def _process_locked(
        self, source: Source, records: Sequence[RawRecord], report: BatchReport, timer: float
    ) -> None:
        cfg = self.config
        applied = self.state.applied(sorted({r.stream for r in records}))
        fresh = [r for r in records if r.offset >= applied.get(r.stream, -1)]
        report.replayed = len(records) - len(fresh)
        parsed = self._parse(fresh)
        mark = time.perf_counter()
        report.seconds["parse"] = round(mark - timer, 4)

        windows: dict[Key, WindowRow] = {}
        aggs: dict[Key, Any] = {}
        watermarks: dict[tuple[str, str], int] = {}
        touched: set[Key] = set()
        event_times: list[tuple[int, dt.datetime]] = []  # (event ms, received) of accepted

        def row(key: Key) -> WindowRow:
            if key not in windows:
                windows[key] = self.state.window(key)
            return windows[key]

        marks_before: dict[tuple[str, str], int] = {}

        def late(kind: str, group: str, when_ms: int, start: int) -> bool:
            """Late against the watermark before this batch (not moved by the batch itself, so
            the decision does not depend on the order of records within a batch)."""
            mark_ = marks_before.get((kind, group))
            if mark_ is None:
                mark_ = marks_before[(kind, group)] = self.state.watermark(kind, group) or 0
            horizon = mark_ - self.settings.signals_lateness_seconds * 1000
            return (start + cfg.window_seconds) * 1000 <= horizon

        def accept(kind: str, group: str, when_ms: int, received: dt.datetime) -> None:
            event_times.append((when_ms, received))
            current = watermarks.get((kind, group), 0)
            watermarks[(kind, group)] = max(current, when_ms)

        for record, item in parsed.logs:
            when = epoch_ms(item.timestamp)
            start = window_start(when, cfg.window_seconds)
            if late("log", item.service, when, start):
                parsed.letters.append(DeadLetter(record, REASON_LATE, item.timestamp.isoformat()))
                continue
            key: Key = ("log", item.service, start)
            window = aggs.get(key)
            if window is None:
                window = self._load(key, row(key))
                if window is None:
                    window = TemplateWindow(cfg.max_sequences, cfg.examples)
                aggs[key] = window
            window.add(cfg.miner.tokens(item.message), when, item.level, item.line)
            touched.add(key)
            accept("log", item.service, when, record.received)
        for record, event in parsed.events:
            when = epoch_ms(event.timestamp)
            start = window_start(when, cfg.window_seconds)
            if late("event", event.namespace, when, start):
                parsed.letters.append(DeadLetter(record, REASON_LATE, event.timestamp.isoformat()))
                continue
            key = ("event", event.namespace, start)
            ewindow = aggs.get(key)
            if ewindow is None:
                ewindow = self._load(key, row(key))
                if ewindow is None:
                    ewindow = EventWindow(cfg.examples)
                aggs[key] = ewindow
            ewindow.add(event)
            touched.add(key)
            accept("event", event.namespace, when, record.received)
        rejected_samples: set[int] = set()
        for record, sample in parsed.samples:
            when = epoch_ms(sample.timestamp)
            start = window_start(when, cfg.window_seconds)
            if late("metric", sample.series, when, start):
                if id(record) not in rejected_samples:
                    rejected_samples.add(id(record))
                    detail = sample.timestamp.isoformat()
                    parsed.letters.append(DeadLetter(record, REASON_LATE, detail))
                continue
            key = ("metric", sample.series, start)
            points = aggs.get(key)
            if points is None:
                points = aggs[key] = self._load(key, row(key)) or {}
            add_point(points, when, sample.value, cfg.metric_step_seconds)
            touched.add(key)
            accept("metric", sample.series, when, record.received)

        docs: dict[Key, list[Chunk]] = {}
        self._log_documents(touched, aggs, row, docs)
        self._event_documents(touched, aggs, docs)
        self._sample_documents(touched, aggs, row, docs)
        for record, payload, series in parsed.ranges:
            range_docs = self._range_documents(payload, series)
            for key, chunks in range_docs.items():
                docs[key] = chunks
                row(key)
            end_ms = int(payload["end"]) * 1000
            event_times.append((end_ms, record.received))
        report.windows = len(docs)
        report.documents = sum(len(v) for v in docs.values())
        mark = time.perf_counter()
        report.seconds["documents"] = round(mark - timer - report.seconds["parse"], 4)

        # plan: what to write and what is superseded
        to_write: list[Chunk] = []
        stale: set[str] = set()
        wanted: dict[Key, set[str]] = {}
        for key, chunks in docs.items():
            current = row(key)
            ids = {c.id for c in chunks}
            wanted[key] = ids
            to_write.extend(c for c in chunks if c.id not in current.doc_ids)
            stale |= (current.doc_ids | current.pending) - ids
        if any(wanted[key] - row(key).doc_ids for key in docs):
            with self.state.transaction() as db:  # write-ahead: ids about to be indexed
                for key in docs:
                    current = row(key)
                    new = wanted[key] - current.doc_ids
                    if not new:
                        continue
                    current.pending |= new
                    db.execute(
                        "INSERT INTO windows (kind, grp, start, pending) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT (kind, grp, start) DO UPDATE SET pending = excluded.pending",
                        (key[0], key[1], key[2], _dump(sorted(current.pending))),
                    )

        version = self.ensure_version()
        report.version = version
        started = time.perf_counter()
        embedded, report.embedded = self._with_vectors(to_write)
        report.seconds["embed"] = round(time.perf_counter() - started, 4)
        if embedded and self.validate:
            started = time.perf_counter()
            self._validate(embedded)
            report.seconds["validate"] = round(time.perf_counter() - started, 4)
        started = time.perf_counter()
        if embedded:
            written = self.store.upsert(version, embedded)
            if written.failed:
                failed = written.failed[:3]
                raise BatchRefusedError(f"{len(written.failed)} documents not indexed: {failed}")
            report.upserted = written.written
        if stale:
            report.deleted = self.store.delete(version, sorted(stale))
        indexed_at = self.clock()
        report.seconds["index"] = round(time.perf_counter() - started, 4)
        report.indexed_at = indexed_at.isoformat()

        started = time.perf_counter()
        source.dead_letter(parsed.letters)
        rejected: collections.Counter[str] = collections.Counter(
            letter.reason for letter in parsed.letters
        )
        report.rejected = dict(sorted(rejected.items()))
        report.accepted = len(fresh) - len({id(letter.record) for letter in parsed.letters})
        report.seconds["dead_letter"] = round(time.perf_counter() - started, 4)

        started = time.perf_counter()
        self._commit_state(records, docs, wanted, aggs, watermarks, windows)
        report.expired = self._expire(version)
        self._maybe_finalize(version)
        report.seconds["state"] = round(time.perf_counter() - started, 4)

        now_ms = epoch_ms(indexed_at)
        report.freshness = [max(0.0, (now_ms - when) / 1000) for when, _ in event_times]
        lags = [max(0.0, (now_ms - epoch_ms(received)) / 1000) for _, received in event_times]
        report.freshness_p50_s = percentile(report.freshness, 50)
        report.freshness_p95_s = percentile(report.freshness, 95)
        report.freshness_max_s = percentile(report.freshness, 100)
        report.lag_p95_s = percentile(lags, 95)
        report.seconds["total"] = round(time.perf_counter() - timer, 4)

    def _validate(self, chunks: Sequence[Chunk]) -> None:
        from opsassist.validation import validate_chunks

        for chunk in chunks:
            if chunk.timestamp is None or chunk.end_timestamp is None:
                raise BatchRefusedError(f"signal document {chunk.id} has no time range")
        result = validate_chunks(
            chunks,
            "signal_documents",
            {"vector_dim": self.dimension, "text_max_length": TEXT_MAX_LENGTH},
        )
        if not result.success:
            raise BatchRefusedError(result.summary())

    def _commit_state(
        self,
        records: Sequence[RawRecord],
        docs: Mapping[Key, list[Chunk]],
        wanted: Mapping[Key, set[str]],
        aggs: Mapping[Key, Any],
        watermarks: Mapping[tuple[str, str], int],
        rows: Mapping[Key, WindowRow],
    ) -> None:
        cfg = self.config
        lateness = self.settings.signals_lateness_seconds
        evicted: set[Key] = set()
        horizons: dict[tuple[str, str], int] = {}
        with self.state.transaction() as db:
            for key in set(docs) | set(aggs):
                kind, group, start = key
                agg = aggs.get(key)
                mark = watermarks.get((kind, group), 0) // 1000 - lateness
                keep_for = _keep_for(kind, cfg)
                if agg is not None and start + keep_for <= mark:
                    agg = None  # closed: no record can change it or the windows after it
                    evicted.add(key)
                stored: str | None
                if agg is None:
                    stored = None
                    if key not in aggs:
                        stored = rows[key].agg_json  # untouched aggregate (a rebuilt successor)
                elif isinstance(agg, TemplateWindow | EventWindow):
                    stored = _dump(agg.to_dict())
                else:
                    stored = _dump(sorted([b, t, v] for b, (t, v) in agg.items()))
                ids = wanted.get(key, rows[key].doc_ids if key in rows else set())
                if stored is None and not ids:
                    db.execute("DELETE FROM windows WHERE kind = ? AND grp = ? AND start = ?", key)
                    continue
                db.execute(
                    "INSERT INTO windows (kind, grp, start, agg, doc_ids, pending) "
                    "VALUES (?, ?, ?, ?, ?, '[]') ON CONFLICT (kind, grp, start) DO UPDATE SET "
                    "agg = excluded.agg, doc_ids = excluded.doc_ids, pending = '[]'",
                    (kind, group, start, stored, _dump(sorted(ids))),
                )
            for (kind, group), ms in watermarks.items():
                db.execute(
                    "INSERT INTO watermarks (kind, grp, ms) VALUES (?, ?, ?) ON CONFLICT "
                    "(kind, grp) DO UPDATE SET ms = max(ms, excluded.ms)",
                    (kind, group, ms),
                )
                # windows no record can reach any more drop their aggregates (ids stay)
                horizon = ms // 1000 - lateness - _keep_for(kind, cfg)
                horizons[(kind, group)] = horizon
                db.execute(
                    "UPDATE windows SET agg = NULL WHERE kind = ? AND grp = ? AND start <= ? "
                    "AND agg IS NOT NULL",
                    (kind, group, horizon),
                )
            for stream, offset in end_positions(records).items():
                db.execute(
                    "INSERT INTO positions (stream, next) VALUES (?, ?) ON CONFLICT (stream) "
                    "DO UPDATE SET next = max(next, excluded.next)",
                    (stream, offset),
                )
            generation = str(int(self.state.meta("generation") or 0) + 1)
            self.state.set_meta("generation", generation)
            self.state.set_meta("writer", self._writer)
        # the cache now mirrors what was committed
        self._generation = generation
        for key, agg in aggs.items():
            if key in evicted:
                self._cache.pop(key, None)
            else:
                self._cache[key] = agg
        for key in [k for k in self._cache if k[2] <= horizons.get((k[0], k[1]), -1)]:
            del self._cache[key]

    # --- documents per kind --------------------------------------------------------------------
    def _log_documents(
        self,
        touched: set[Key],
        aggs: dict[Key, Any],
        row: Callable[[Key], WindowRow],
        docs: dict[Key, list[Chunk]],
    ) -> None:
        cfg = self.config
        step = cfg.window_seconds
        keys = {k for k in touched if k[0] == "log"}
        # the window after a touched one compares itself with it: rebuild it too
        for kind, group, start in list(keys):
            after = (kind, group, start + step)
            if after not in keys and self.state.starts(kind, group, start + step, start + step):
                keys.add(after)
        for key in sorted(keys):
            kind, service, start = key
            window = self._template_window(key, aggs, row)
            if window is None:
                continue
            previous = self._template_window((kind, service, start - step), aggs, row)
            docs[key] = log_window_documents(service, start, window, previous, cfg)

    def _template_window(
        self, key: Key, aggs: dict[Key, Any], row: Callable[[Key], WindowRow]
    ) -> TemplateWindow | None:
        window = aggs[key] if key in aggs else self._load(key, row(key))
        return window if isinstance(window, TemplateWindow) else None

    def _load(self, key: Key, row: WindowRow) -> Any:
        """A window's aggregate: from this ingestor's cache, else parsed from the state."""
        if key in self._cache:
            return self._cache[key]
        if not row.agg_json:
            return None
        data = json.loads(row.agg_json)
        agg: Any
        if key[0] == "log":
            agg = TemplateWindow.from_dict(data)
        elif key[0] == "event":
            agg = EventWindow.from_dict(data)
        else:
            agg = _points_from(data)
        self._cache[key] = agg
        return agg

    def _event_documents(
        self, touched: set[Key], aggs: dict[Key, Any], docs: dict[Key, list[Chunk]]
    ) -> None:
        for key in sorted(k for k in touched if k[0] == "event"):
            docs[key] = event_window_documents(key[1], key[2], aggs[key], self.config)

    def _sample_documents(
        self,
        touched: set[Key],
        aggs: dict[Key, Any],
        row: Callable[[Key], WindowRow],
        docs: dict[Key, list[Chunk]],
    ) -> None:
        cfg = self.config
        keys = {k for k in touched if k[0] == "metric"}
        by_series: dict[str, set[int]] = {}
        for _, series, start in keys:
            by_series.setdefault(series, set()).add(start)
        for series, starts in sorted(by_series.items()):
            low = min(starts) - cfg.baseline_seconds - cfg.window_seconds
            high = max(starts) + cfg.baseline_seconds
            known = set(self.state.starts("metric", series, low, high)) | starts
            points: Points = {}
            for start in known:
                key = ("metric", series, start)
                stored = aggs[key] if key in aggs else self._load(key, row(key))
                merge_points(points, stored or {})
            values = point_values(points)
            # a touched window changes its own summary and the baselines of the later ones
            rebuild = {s for s in known if any(t <= s <= t + cfg.baseline_seconds for t in starts)}
            for start in sorted(rebuild):
                key = ("metric", series, start)
                row(key)
                docs[key] = metric_window_documents(series, series, start, values, cfg)

    def _range_documents(
        self, payload: Mapping[str, Any], series: Sequence[RangeSeries]
    ) -> dict[Key, list[Chunk]]:
        cfg = self.config
        name = str(payload["name"])
        promql = str(payload["promql"])
        out: dict[Key, list[Chunk]] = {}
        first, end = int(payload["evaluate_from"]), int(payload["end"])
        for item in series:
            source = range_series_source(name, item)
            for start in range(first, end, cfg.window_seconds):
                docs = metric_window_documents(source, promql, start, item.values, cfg)
                out[("metric", source, start)] = docs
        return out

    # --- reports -------------------------------------------------------------------------------
    def _write_report(self, report: BatchReport) -> None:
        self.reports_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.reports_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(report.to_json(), default=str) + "\n")
        log.info(
            "signal batch indexed",
            extra={
                "source": report.source,
                "records": report.records,
                "accepted": report.accepted,
                "replayed": report.replayed,
                "rejected": report.rejected,
                "upserted": report.upserted,
                "deleted": report.deleted,
                "version": report.version,
                "freshness_p50_s": report.freshness_p50_s,
                "freshness_p95_s": report.freshness_p95_s,
                "seconds": report.seconds,
            },
        )

    # --- loops ---------------------------------------------------------------------------------
    def drain(
        self,
        source: Source,
        *,
        budget_seconds: float | None = None,
        max_batches: int | None = None,
    ) -> list[BatchReport]:
        """Batches until the source has nothing new, the time budget or ``max_batches``."""
        budget = budget_seconds
        if budget is None:
            budget = self.settings.signals_run_budget_seconds
        deadline = time.monotonic() + budget
        reports: list[BatchReport] = []
        while time.monotonic() < deadline and (max_batches is None or len(reports) < max_batches):
            records = source.poll(
                self.settings.signals_batch_max_records, self.settings.signals_poll_timeout_seconds
            )
            if not records:
                break
            reports.append(self.process(source, records))
        return reports


def _keep_for(kind: str, cfg: SignalConfig) -> int:
    """How long (seconds past its start, beyond the lateness) a window's aggregate is kept: until
    no record can reach it or any window whose documents depend on it (the next window for logs,
    the baselines of later windows for metrics)."""
    if kind == "metric":
        return 2 * cfg.window_seconds + cfg.baseline_seconds
    return 2 * cfg.window_seconds


def _points_from(stored: Any) -> Points:
    if not stored:
        return {}
    return {int(b): (int(t), float(v)) for b, t, v in stored}


def _row_time(value: object) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, str) and value:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    return None


def sweep_expired(store: IndexStore, version: str, cutoff: dt.datetime, dimension: int) -> int:
    """Delete every document whose time range ended before ``cutoff`` (state-independent)."""
    probe = np.zeros(dimension, dtype=np.float32)
    probe[0] = 1.0
    deleted = 0
    for _ in range(1000):
        rows = store.knn(version, probe, 1000, Filters(until=cutoff))
        ids = []
        for ranked in rows:
            end = _row_time(ranked.row.get("end_timestamp")) or _row_time(
                ranked.row.get("timestamp")
            )
            if end is not None and end < cutoff:
                ids.append(ranked.id)
        if not ids:
            break
        deleted += store.delete(version, ids)
        if len(rows) < 1000:
            break
    return deleted


# --- sources -------------------------------------------------------------------------------------
def open_source(settings: Settings, name: str, *, airflow: bool = False) -> Source:
    """The named source, configured from settings (Kafka from the Airflow connection if asked)."""
    folder = signals_dir(settings)
    if name == "spool":
        from opsassist.sources.spool import SpoolSource

        return SpoolSource(
            settings.signals_spool_path,
            folder / "spool-offsets.json",
            folder / "deadletter" / "spool.jsonl",
            max_bytes=settings.signals_max_message_bytes,
        )
    if name == "kafka":
        from opsassist.sources.kafka import KafkaSource, topic_kinds

        kinds = topic_kinds(settings)
        if airflow:
            return KafkaSource.from_airflow(
                settings.signals_kafka_conn_id, kinds, dlq_suffix=settings.signals_dlq_suffix
            )
        return KafkaSource.from_config(
            settings.signals_kafka_bootstrap,
            settings.signals_kafka_group,
            kinds,
            dlq_suffix=settings.signals_dlq_suffix,
        )
    if name == "prometheus":
        from opsassist.sources.prometheus import PrometheusSource

        return PrometheusSource(
            settings.signals_prometheus_url,
            settings.signals_promql,
            folder / "prometheus.json",
            folder / "deadletter" / "prometheus.jsonl",
            step_seconds=settings.signals_metric_step_seconds,
            window_seconds=settings.signals_window_seconds,
            baseline_seconds=settings.signals_metric_baseline_seconds,
        )
    if name == "kube":
        return open_kube_source(settings, airflow=airflow)
    if name == "opensearch_logs":
        return open_opensearch_logs_source(settings, airflow=airflow)
    raise ValueError(f"unknown signal source {name!r}: use {', '.join(SOURCE_NAMES)}")


def kube_namespaces(settings: Settings) -> list[str]:
    """The namespaces the kube source watches (``["*"]``: all, one cluster-wide watch)."""
    value = settings.signals_kube_namespaces or settings.agent_namespaces
    names = [n.strip() for n in value.split(",") if n.strip()]
    return ["*"] if "*" in names or not names else names


def open_kube_source(settings: Settings, *, airflow: bool = False) -> Source:
    """The Kubernetes source with the read-only identity: the Airflow connection inside a task
    (``OPSASSIST_SIGNALS_KUBE_CONN_ID``), else the agent's read client (URL and read token, or
    in-cluster config, or the kubeconfig)."""
    from opsassist.sources.kube import KubeSource

    if airflow and settings.signals_kube_conn_id:
        from opsassist.hooks import kube_api_client

        api = kube_api_client(settings.signals_kube_conn_id)
    else:
        from opsassist.agent.kube import api_client

        api = api_client(settings, "read")
    folder = signals_dir(settings)
    return KubeSource(
        api,
        kube_namespaces(settings),
        folder / "kube.json",
        folder / "deadletter" / "kube.jsonl",
        watch_seconds=settings.signals_kube_watch_seconds,
    )


def open_opensearch_logs_source(settings: Settings, *, airflow: bool = False) -> Source:
    """The OpenSearch logs source: the provider's connection inside a task, else the URL."""
    from opsassist.sources.opensearch_logs import FieldMapping, OpenSearchLogsSource

    conn_id = settings.signals_opensearch_logs_conn_id or (
        "" if settings.signals_opensearch_logs_url else settings.opensearch_conn_id
    )
    if airflow and conn_id:
        from opsassist.hooks import opensearch_client

        client = opensearch_client(conn_id)
    else:
        from opensearchpy import OpenSearch

        user, password = settings.opensearch_user, settings.opensearch_password
        client = OpenSearch(
            hosts=[settings.signals_opensearch_logs_url or settings.opensearch_url],
            http_auth=(user, password.get_secret_value()) if user else None,
            timeout=settings.opensearch_timeout_seconds,
        )
    folder = signals_dir(settings)
    patterns = [p.strip() for p in settings.signals_opensearch_logs_patterns.split(",")]
    return OpenSearchLogsSource(
        client,
        [p for p in patterns if p],
        FieldMapping.preset(
            settings.signals_opensearch_logs_mapping, settings.signals_opensearch_logs_fields
        ),
        folder / "opensearch-logs.sqlite",
        folder / "deadletter" / "opensearch_logs.jsonl",
        lag_seconds=settings.signals_opensearch_logs_lag_seconds,
        lookback_seconds=settings.signals_opensearch_logs_lookback_seconds,
        page_size=settings.signals_opensearch_logs_page_size,
    )


# --- stages (DAG tasks) --------------------------------------------------------------------------
def stage_ingest(
    settings: Settings,
    run_id: str,
    source_name: str,
    store: IndexStore,
    *,
    airflow: bool = False,
) -> dict[str, Any]:
    """Drain one source into the signal index (one DAG task); returns the run's totals."""
    source = open_source(settings, source_name, airflow=airflow)
    ingestor = SignalIngestor(settings, store)
    try:
        reports = ingestor.drain(source)
    finally:
        source.close()
        ingestor.close()
    summary = summarise(source_name, reports) | {"run_id": run_id}
    log.info("signal ingest finished", extra=summary)
    return summary


def stage_retention(
    settings: Settings, store: IndexStore, clock: Callable[[], dt.datetime] | None = None
) -> dict[str, Any]:
    """Roll the day's version over if due, delete expired documents, finalize (hourly DAG)."""
    ingestor = SignalIngestor(settings, store, clock=clock)
    try:
        with state_lock(settings):
            version = ingestor.ensure_version()
            deleted = ingestor.rollover_deleted + ingestor._expire(version, sweep=True)
            ingestor.store.finalize(version)
            ingestor.state.set_meta(f"finalized:{version}", str(time.time()))
            rows = store.count(version)
            ingestor.state.set_meta(f"finalized_rows:{version}", str(rows))
    finally:
        ingestor.close()
    result = {
        "version": version,
        "deleted": deleted,
        "rows": rows,
        "cutoff": ingestor.cutoff().isoformat(),
    }
    log.info("signal retention", extra=result)
    return result


def run_sources(
    settings: Settings, store: IndexStore, names: Sequence[str] | None = None
) -> dict[str, Any]:
    """Every enabled source once, in one process (what the DAG's tasks do, for scripts)."""
    results: dict[str, Any] = {}
    for name in names or enabled_sources(settings):
        results[name] = stage_ingest(settings, f"local-{os.getpid()}", name, store)
    return results

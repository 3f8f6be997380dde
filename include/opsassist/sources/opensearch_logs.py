"""OpenSearch logs source: log lines a team already ships to OpenSearch (Logstash, Data Prepper,
Fluent Bit, the OpenTelemetry Collector), read incrementally from indices or data streams.

Reading
    Per index pattern (``OPSASSIST_SIGNALS_OPENSEARCH_LOGS_PATTERNS``, e.g. ``logs-*``) a scan
    opens a point in time (PIT) on the pattern and pages through it sorted by the timestamp field
    and ``_id`` with ``search_after`` (OpenSearch 2.19 has no ``_shard_doc`` tiebreaker; ``_id``
    needs ``indices.id_field_data.enabled``, on by default in 2.x). A scan starts at the pattern's
    watermark (the newest timestamp committed) minus the lag
    (``OPSASSIST_SIGNALS_OPENSEARCH_LOGS_LAG_SECONDS``), or at now minus the look-back on the
    first run. The sort values are the document's own, so a scan whose PIT expired between polls
    goes on from the same place on a new PIT.

Late documents and exactly once
    A document indexed late (shipper buffering, refresh) with a timestamp inside the lag is found
    by the next scan, which re-reads the lag window: documents seen before are recognised by
    ``<index>/<_id>`` in the checkpoint's *seen* table and skipped, so a re-run adds nothing.
    A document older than watermark minus lag when it becomes visible is not read (the lag is
    the tolerance). Each record's offset is a sequence number per pattern; the checkpoint
    (SQLite: watermark, next sequence number, seen keys inside the lag) is written in one
    transaction when the pipeline commits a batch, after the index write.

Field mapping (``OPSASSIST_SIGNALS_OPENSEARCH_LOGS_MAPPING`` preset, per-field overrides in
``OPSASSIST_SIGNALS_OPENSEARCH_LOGS_FIELDS``; dotted paths match nested objects and flattened
keys alike, the first path with a value wins; the first timestamp path is the one sorted on)
    ``ecs``: Logstash / Data Prepper / Elastic Common Schema: ``@timestamp``, ``message``
    (``event.original``), ``log.level``, ``service.name`` (``host.name``), ``log.logger``.
    ``otel``: the Collector's OpenSearch exporter (Simple Schema for Observability) and Data
    Prepper's OTel logs: ``@timestamp`` (``time``), ``body``, ``severity.text``
    (``severityText``), ``resource.service.name`` (``serviceName``), ``instrumentationScope.name``.
    ``fluentbit``: Fluent Bit's ``opensearch`` output (``Logstash_Format``): ``@timestamp``,
    ``log`` (``message``), ``level``, the ``kubernetes`` metadata (namespace/app label, as the
    parser names Kubernetes services everywhere), ``logger``.

    A mapped document becomes the same JSON record a Kafka message carries (``@timestamp``,
    ``message``, ``level``, ``service``, ``logger``), so it goes through the same parse ->
    template mining -> window -> embed -> validate -> index path and yields the same documents
    (ids included) as the same line sent through Kafka. A document whose mapped timestamp is
    missing or unreadable, or whose message is missing or not text, is dead-lettered with reason
    ``mapping mismatch`` (the detail names the field and the paths tried) to a JSONL file.

Errors: an unreachable node or a failed search raises :class:`OpenSearchLogsError` from
:meth:`OpenSearchLogsSource.poll` (the DAG task fails and is retried); the checkpoint is only
written on commit, so nothing is lost.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from opsassist.logs import get_logger
from opsassist.parsing.logs import _kubernetes_service, parse_time_value
from opsassist.sources.base import DeadLetter, RawRecord, append_dead_letters

log = get_logger(__name__)

REASON_MAPPING = "mapping mismatch"
FIELDS = ("timestamp", "message", "level", "service", "component")
PRESETS: dict[str, dict[str, tuple[str, ...]]] = {
    "ecs": {
        "timestamp": ("@timestamp",),
        "message": ("message", "event.original"),
        "level": ("log.level", "level"),
        "service": ("service.name", "host.name", "host.hostname"),
        "component": ("log.logger", "logger"),
    },
    "otel": {
        "timestamp": ("@timestamp", "time", "observedTimestamp"),
        "message": ("body",),
        "level": ("severity.text", "severityText"),
        "service": ("resource.service.name", "serviceName", "resource.attributes.service@name"),
        "component": ("instrumentationScope.name",),
    },
    "fluentbit": {
        "timestamp": ("@timestamp",),
        "message": ("log", "message"),
        "level": ("level", "log.level", "severity"),
        "service": ("kubernetes", "service.name", "host.name"),
        "component": ("logger",),
    },
}


class OpenSearchLogsError(RuntimeError):
    """OpenSearch could not be read (unreachable, a refused search, a missing sort field)."""


# --- mapping --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class FieldMapping:
    """Candidate paths per field (see the module docstring)."""

    name: str
    timestamp: tuple[str, ...]
    message: tuple[str, ...]
    level: tuple[str, ...] = ()
    service: tuple[str, ...] = ()
    component: tuple[str, ...] = ()

    @classmethod
    def preset(cls, name: str, overrides: Mapping[str, str] | None = None) -> FieldMapping:
        """A preset (``ecs``, ``otel``, ``fluentbit``) with fields replaced by comma-separated
        path lists from ``overrides`` (e.g. ``{"message": "msg,log"}``)."""
        if name not in PRESETS:
            raise ValueError(f"unknown field mapping {name!r}: use {', '.join(PRESETS)}")
        fields = dict(PRESETS[name])
        for key, value in (overrides or {}).items():
            if key not in FIELDS:
                raise ValueError(f"unknown mapped field {key!r}: use {', '.join(FIELDS)}")
            fields[key] = tuple(p.strip() for p in str(value).split(",") if p.strip())
        if not fields["timestamp"] or not fields["message"]:
            raise ValueError("the field mapping needs at least one timestamp and message path")
        return cls(name=name, **fields)

    @property
    def sort_field(self) -> str:
        return self.timestamp[0]


def lookup(obj: Any, path: str) -> Any:
    """The value at a dotted path, through nested objects and flattened dotted keys alike."""
    if not isinstance(obj, Mapping):
        return None
    if path in obj:
        return obj[path]
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        head = ".".join(parts[:cut])
        if head in obj:
            found = lookup(obj[head], ".".join(parts[cut:]))
            if found is not None:
                return found
    return None


def _first(obj: Mapping[str, Any], paths: Sequence[str]) -> tuple[str, Any]:
    for path in paths:
        value = lookup(obj, path)
        if value is not None and value != "":
            return path, value
    return "", None


class MappingMismatch(ValueError):
    pass


def map_document(source: Mapping[str, Any], mapping: FieldMapping) -> dict[str, Any]:
    """The JSON record (Kafka's shape) of one ``_source``; :class:`MappingMismatch` if the
    timestamp or message cannot be read with the mapping."""
    path, when = _first(source, mapping.timestamp)
    if when is None or isinstance(when, bool) or not isinstance(when, str | int | float):
        raise MappingMismatch(
            f"no timestamp at {', '.join(mapping.timestamp)} (mapping {mapping.name})"
        )
    if parse_time_value(when) is None:
        raise MappingMismatch(f"timestamp at {path} unreadable: {str(when)[:80]!r}")
    mpath, message = _first(source, mapping.message)
    if not isinstance(message, str) or not message.strip():
        found = f"a {type(message).__name__} at {mpath}" if message is not None else "nothing"
        raise MappingMismatch(
            f"no text message at {', '.join(mapping.message)} ({found}; mapping {mapping.name})"
        )
    record: dict[str, Any] = {"@timestamp": when, "message": message}
    _, level = _first(source, mapping.level)
    if isinstance(level, str | int) and not isinstance(level, bool):
        record["level"] = level
    spath, service = _first(source, mapping.service)
    if isinstance(service, Mapping):
        service = _kubernetes_service(service) if spath.endswith("kubernetes") else None
    if isinstance(service, str) and service:
        record["service"] = service
    _, component = _first(source, mapping.component)
    if isinstance(component, str) and component:
        record["logger"] = component
    return record


_BACKING = re.compile(r"^\.ds-(?P<stream>.+)-\d{6}$")


def stream_name(index: str) -> str:
    """A data stream's name from its backing index (``.ds-logs-app-000001`` -> ``logs-app``)."""
    match = _BACKING.match(index)
    return match.group("stream") if match else index


# --- checkpoint -----------------------------------------------------------------------------------
class Checkpoint:
    """Per pattern: watermark (newest committed timestamp, ms), next sequence number, and the
    keys of documents seen inside the lag window."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, timeout=60, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(
            """
            CREATE TABLE IF NOT EXISTS checkpoint (
                pattern TEXT PRIMARY KEY, watermark_ms INTEGER NOT NULL, next_seq INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS seen (
                pattern TEXT NOT NULL, key TEXT NOT NULL, ts_ms INTEGER NOT NULL,
                PRIMARY KEY (pattern, key));
            """
        )

    def get(self, pattern: str) -> tuple[int | None, int]:
        row = self.db.execute(
            "SELECT watermark_ms, next_seq FROM checkpoint WHERE pattern = ?", (pattern,)
        ).fetchone()
        return (None, 0) if row is None else (int(row[0]), int(row[1]))

    def seen(self, pattern: str, keys: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(keys), 500):
            part = list(keys[start : start + 500])
            marks = ", ".join("?" * len(part))
            rows = self.db.execute(
                f"SELECT key FROM seen WHERE pattern = ? AND key IN ({marks})", [pattern, *part]
            )
            found.update(str(r[0]) for r in rows)
        return found

    def advance(
        self, pattern: str, watermark_ms: int, next_seq: int, keys: Sequence[tuple[str, int]]
    ) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany(
                "INSERT OR IGNORE INTO seen (pattern, key, ts_ms) VALUES (?, ?, ?)",
                [(pattern, key, ts) for key, ts in keys],
            )
            self.db.execute(
                "INSERT INTO checkpoint (pattern, watermark_ms, next_seq) VALUES (?, ?, ?) "
                "ON CONFLICT (pattern) DO UPDATE SET "
                "watermark_ms = max(watermark_ms, excluded.watermark_ms), "
                "next_seq = max(next_seq, excluded.next_seq)",
                (pattern, watermark_ms, next_seq),
            )
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def prune(self, pattern: str, before_ms: int) -> None:
        self.db.execute("DELETE FROM seen WHERE pattern = ? AND ts_ms < ?", (pattern, before_ms))

    def close(self) -> None:
        self.db.close()


# --- the source -----------------------------------------------------------------------------------
@dataclasses.dataclass(slots=True)
class _Scan:
    pit: str
    start_ms: int
    after: list[Any] | None = None


@dataclasses.dataclass(slots=True)
class _Emitted:
    seq: int
    key: str
    ts_ms: int


class OpenSearchLogsSource:
    """Log documents of index patterns as log records; see the module docstring."""

    name = "opensearch_logs"

    def __init__(
        self,
        client: Any,
        patterns: Sequence[str],
        mapping: FieldMapping,
        checkpoint_path: Path,
        deadletter_path: Path,
        *,
        lag_seconds: float = 300.0,
        lookback_seconds: float = 3600.0,
        page_size: int = 1000,
        keep_alive: str = "2m",
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        if not patterns:
            raise ValueError("no OpenSearch index pattern to read")
        self.client = client
        self.patterns = list(patterns)
        self.mapping = mapping
        self.checkpoint = Checkpoint(checkpoint_path)
        self.deadletter_path = deadletter_path
        self.lag_ms = int(lag_seconds * 1000)
        self.lookback_ms = int(lookback_seconds * 1000)
        self.page_size = max(1, min(page_size, 10_000))
        self.keep_alive = keep_alive
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._scans: dict[str, _Scan] = {}
        self._next: dict[str, int] = {}
        self._emitted: dict[str, list[_Emitted]] = {p: [] for p in self.patterns}
        self._handed: dict[str, set[str]] = {p: set() for p in self.patterns}

    @staticmethod
    def stream(pattern: str) -> str:
        return f"opensearch:{pattern}"

    def _host(self) -> str:
        try:
            hosts = self.client.transport.hosts
            return ",".join(f"{h.get('host')}:{h.get('port')}" for h in hosts)
        except Exception:  # pragma: no cover - another client shape
            return "?"

    def _call(self, what: str, call: Callable[[], Any]) -> Any:
        from opensearchpy.exceptions import ConnectionError as OSConnectionError
        from opensearchpy.exceptions import TransportError

        try:
            return call()
        except OSConnectionError as exc:
            raise OpenSearchLogsError(
                f"OpenSearch {self._host()} unreachable ({what}): {exc.error}"
            ) from exc
        except TransportError as exc:
            raise OpenSearchLogsError(
                f"OpenSearch {self._host()} refused {what}: HTTP {exc.status_code} {exc.error} "
                f"{str(exc.info)[:300]}"
            ) from exc

    # --- scans ---------------------------------------------------------------------------------
    def _matches(self, pattern: str) -> bool:
        """Whether the pattern names any index, alias or data stream yet (a point in time on
        nothing is refused: a pattern whose shipper has not written yet is simply empty)."""
        found = self._call(
            f"resolving {pattern}", lambda: self.client.indices.resolve_index(name=pattern)
        )
        return any(found.get(k) for k in ("indices", "aliases", "data_streams"))

    def _open(self, pattern: str) -> _Scan:
        watermark, next_seq = self.checkpoint.get(pattern)
        self._next.setdefault(pattern, next_seq)
        if watermark is None:
            start = int(self.clock().timestamp() * 1000) - self.lookback_ms
        else:
            start = watermark - self.lag_ms
        answer = self._call(
            f"a point in time on {pattern}",
            lambda: self.client.create_pit(
                index=pattern,
                params={"keep_alive": self.keep_alive, "allow_partial_pit_creation": "false"},
            ),
        )
        return _Scan(pit=str(answer["pit_id"]), start_ms=start)

    def _close_scan(self, pattern: str) -> None:
        scan = self._scans.pop(pattern, None)
        if scan is None:
            return
        try:
            self.client.delete_pit(body={"pit_id": [scan.pit]})
        except Exception as exc:  # it expires by itself
            log.warning("could not delete a point in time", extra={"error": str(exc)})

    def _page(self, pattern: str, scan: _Scan, size: int) -> list[dict[str, Any]]:
        field = self.mapping.sort_field
        body: dict[str, Any] = {
            "size": size,
            "pit": {"id": scan.pit, "keep_alive": self.keep_alive},
            "query": {
                "range": {field: {"gte": scan.start_ms, "format": "epoch_millis"}},
            },
            "sort": [
                {field: {"order": "asc", "numeric_type": "date", "unmapped_type": "date"}},
                {"_id": "asc"},
            ],
            "track_total_hits": False,
        }
        if scan.after is not None:
            body["search_after"] = scan.after
        from opensearchpy.exceptions import NotFoundError

        try:
            answer = self._call(f"a search of {pattern}", lambda: self.client.search(body=body))
        except OpenSearchLogsError as exc:
            if not isinstance(exc.__cause__, NotFoundError):
                raise
            # the PIT expired (a long pause between polls): go on from the same sort values
            log.info("point in time expired, reopening", extra={"pattern": pattern})
            fresh = self._open(pattern)
            scan.pit = fresh.pit
            body["pit"]["id"] = scan.pit
            answer = self._call(f"a search of {pattern}", lambda: self.client.search(body=body))
        scan.pit = str(answer.get("pit_id") or scan.pit)
        hits: list[dict[str, Any]] = answer["hits"]["hits"]
        return hits

    # --- Source --------------------------------------------------------------------------------
    def poll(self, max_records: int, timeout: float = 0.0) -> list[RawRecord]:
        """Up to ``max_records`` new documents; a pattern whose scan ends in this poll is not
        scanned again before the next poll (which re-reads its lag window)."""
        out: list[RawRecord] = []
        deadline = time.monotonic() + max(timeout, 30.0)
        for pattern in self.patterns:
            if len(out) >= max_records:
                break
            scan = self._scans.get(pattern)
            if scan is None:
                if not self._matches(pattern):
                    continue
                scan = self._scans[pattern] = self._open(pattern)
            while len(out) < max_records and time.monotonic() < deadline:
                hits = self._page(pattern, scan, min(self.page_size, max_records - len(out)))
                if not hits:
                    self._close_scan(pattern)
                    break
                scan.after = list(hits[-1]["sort"])
                self._records(pattern, hits, out)
        return out

    def _records(self, pattern: str, hits: Sequence[dict[str, Any]], out: list[RawRecord]) -> None:
        keys = [f"{h['_index']}/{h['_id']}" for h in hits]
        handed = self._handed[pattern]
        known = self.checkpoint.seen(pattern, [k for k in keys if k not in handed]) | handed
        received = self.clock()
        stream = self.stream(pattern)
        for hit, key in zip(hits, keys, strict=True):
            if key in known:
                continue
            source = hit.get("_source") or {}
            ts_ms = int(hit["sort"][0]) if hit.get("sort") else 0
            seq = self._next[pattern]
            self._next[pattern] = seq + 1
            index = str(hit["_index"])
            problem: tuple[str, str] | None = None
            try:
                payload = json.dumps(
                    map_document(source, self.mapping), ensure_ascii=False, separators=(",", ":")
                ).encode()
            except MappingMismatch as exc:
                problem = (REASON_MAPPING, f"{key}: {exc}")
                payload = json.dumps(source, ensure_ascii=False).encode()
            out.append(
                RawRecord(
                    kind="log",
                    payload=payload,
                    stream=stream,
                    offset=seq,
                    next_offset=seq + 1,
                    received=received,
                    origin=key,
                    hint=stream_name(index),
                    key=key.encode(),
                    problem=problem,
                )
            )
            self._emitted[pattern].append(_Emitted(seq, key, ts_ms))
            handed.add(key)

    def dead_letter(self, letters: Sequence[DeadLetter]) -> None:
        append_dead_letters(
            self.deadletter_path,
            letters,
            lambda letter: {
                "document": letter.record.origin,
                "stream": letter.record.stream,
                "offset": letter.record.offset,
                "payload": letter.record.payload.decode("utf-8", "replace"),
            },
        )

    def commit(self, positions: Mapping[str, int]) -> None:
        for pattern in self.patterns:
            position = positions.get(self.stream(pattern))
            if position is None:
                continue
            done = [e for e in self._emitted[pattern] if e.seq < position]
            if not done:
                continue
            self._emitted[pattern] = [e for e in self._emitted[pattern] if e.seq >= position]
            watermark = max(e.ts_ms for e in done)
            self.checkpoint.advance(pattern, watermark, position, [(e.key, e.ts_ms) for e in done])
            current, _ = self.checkpoint.get(pattern)
            self.checkpoint.prune(pattern, (current or watermark) - self.lag_ms)
            self._handed[pattern] -= {e.key for e in done}

    def close(self) -> None:
        for pattern in list(self._scans):
            self._close_scan(pattern)
        self.checkpoint.close()

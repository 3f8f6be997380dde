"""The Chunk type every path shares (runbooks, signals, Spark history) and the id rules.

Ids live here and only here. A chunk id is a hash of what identifies it (source type, source,
section) and of its content, so re-running a task re-creates the same ids: an unchanged chunk is
recognised and not embedded again, a changed one gets a new id and its old id becomes stale.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from typing import Any, Literal

SourceType = Literal["runbook", "log", "metric", "event"]
SOURCE_TYPES: tuple[str, ...] = ("runbook", "log", "metric", "event")


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def chunk_id(source_type: str, source: str, section: str, text: str, occurrence: int = 0) -> str:
    """Deterministic id: source identity + content hash (+ occurrence of repeated text)."""
    key = "\x1f".join([source_type, source, section, content_hash(text), str(occurrence)])
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


@dataclasses.dataclass(slots=True)
class Chunk:
    """One searchable unit. ``text`` is what is shown and indexed (title and section included)."""

    id: str
    source_type: str
    source: str
    title: str
    section: str
    text: str
    content_hash: str
    timestamp: dt.datetime | None = None
    end_timestamp: dt.datetime | None = None
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    vector: list[float] | None = None

    def to_record(self) -> dict[str, Any]:
        """A flat row for Arrow/Parquet/OpenSearch (metadata as a JSON string)."""
        row = dataclasses.asdict(self)
        row["metadata"] = json.dumps(self.metadata, sort_keys=True, ensure_ascii=False)
        return row

    @classmethod
    def from_record(cls, row: dict[str, Any]) -> Chunk:
        values: dict[str, Any] = {f.name: row.get(f.name) for f in dataclasses.fields(cls)}
        meta = values.get("metadata")
        values["metadata"] = json.loads(meta) if isinstance(meta, str) and meta else (meta or {})
        vector = values.get("vector")
        values["vector"] = None if vector is None else [float(x) for x in vector]
        for key in ("timestamp", "end_timestamp"):
            value = values.get(key)
            if value is not None and not isinstance(value, dt.datetime):
                values[key] = dt.datetime.fromisoformat(str(value))
        return cls(**values)


def make_chunk(
    *,
    source_type: str,
    source: str,
    title: str,
    section: str,
    text: str,
    occurrence: int = 0,
    timestamp: dt.datetime | None = None,
    end_timestamp: dt.datetime | None = None,
    metadata: dict[str, Any] | None = None,
) -> Chunk:
    return Chunk(
        id=chunk_id(source_type, source, section, text, occurrence),
        source_type=source_type,
        source=source,
        title=title,
        section=section,
        text=text,
        content_hash=content_hash(text),
        timestamp=timestamp,
        end_timestamp=end_timestamp,
        metadata=metadata or {},
    )


@dataclasses.dataclass(slots=True)
class SearchHit:
    """One result, in the JSON shape shared by ``opsassist search --json`` and ``/v1/search``."""

    id: str
    source: str
    source_type: str
    title: str
    section: str
    score: float
    text: str
    timestamp: str | None = None
    end_timestamp: str | None = None
    bm25_rank: int | None = None
    vector_rank: int | None = None
    vector_score: float | None = None  # cosine similarity to the question (when vector-ranked)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(slots=True)
class Rejected:
    """A record that could not be processed: kept with its reason (quarantine / dead letter)."""

    source: str
    reason: str
    detail: str = ""

    def to_json(self) -> dict[str, str]:
        return dataclasses.asdict(self)

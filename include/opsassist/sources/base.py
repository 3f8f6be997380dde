"""The one interface every signal source implements: poll raw records, dead-letter, commit.

A source hands out :class:`RawRecord` objects. Each carries its *stream* (a Kafka partition, a
spool file, a Prometheus expression) and its offset in that stream, so the pipeline can

* skip records it has already applied (a replay after a crash between indexing and commit),
* commit, after the batch is indexed, the position just past the last record of each stream
  (:meth:`Source.commit`): at-least-once delivery, made idempotent by deterministic ids;
* dead-letter records it cannot use (:meth:`Source.dead_letter`), with their reason, before
  committing past them: bad input is never silently dropped and never blocks good records.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

RecordKind = Literal["log", "metric", "event", "metric_range"]
KINDS: tuple[str, ...] = ("log", "metric", "event", "metric_range")


@dataclasses.dataclass(frozen=True, slots=True)
class RawRecord:
    """One message, line or query result as it came from a source, not yet parsed.

    ``received``: the source's own timestamp (Kafka message time, file modification time, query
    time), used when the record carries none. ``hint``: a fallback service name (Kafka key,
    spool folder). ``origin``: where it came from, for people (topic, file path, expression).
    ``problem``: (reason, detail) when the source itself already knows the record cannot be used
    (an OpenSearch document its field mapping does not fit): the pipeline dead-letters it with
    that reason instead of parsing it.
    """

    kind: RecordKind
    payload: bytes
    stream: str
    offset: int
    next_offset: int
    received: dt.datetime
    origin: str
    hint: str = ""
    key: bytes | None = None
    problem: tuple[str, str] | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetter:
    record: RawRecord
    reason: str
    detail: str = ""


@runtime_checkable
class Source(Protocol):
    """A signal source. Not thread-safe; one pipeline owns it at a time."""

    name: str

    def poll(self, max_records: int, timeout: float) -> list[RawRecord]:
        """Up to ``max_records`` records, waiting at most ``timeout`` seconds for the first."""
        ...

    def dead_letter(self, letters: Sequence[DeadLetter]) -> None:
        """Store rejected records durably (returns only once they are safe)."""
        ...

    def commit(self, positions: Mapping[str, int]) -> None:
        """Mark each stream consumed up to (excluding) the given offset."""
        ...

    def close(self) -> None: ...


def end_positions(records: Sequence[RawRecord]) -> dict[str, int]:
    """Per stream, the offset just past the last record (what to commit after the batch)."""
    positions: dict[str, int] = {}
    for record in records:
        positions[record.stream] = max(positions.get(record.stream, 0), record.next_offset)
    return positions


def append_dead_letters(
    path: Path,
    letters: Sequence[DeadLetter],
    fields: Callable[[DeadLetter], dict[str, Any]],
    *,
    ensure_ascii: bool = False,
) -> None:
    """Append one JSON line per letter to ``path`` and fsync before returning.

    Each line is ``{"at", "reason", "detail"}`` (one timestamp for the whole batch) merged with
    the source's own ``fields(letter)``. Nothing is written, not even the folder, for no letters.
    """
    if not letters:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).isoformat()
    with open(path, "a", encoding="utf-8") as handle:
        for letter in letters:
            entry = {"at": stamp, "reason": letter.reason, "detail": letter.detail} | fields(letter)
            handle.write(json.dumps(entry, ensure_ascii=ensure_ascii) + "\n")
        handle.flush()
        os.fsync(handle.fileno())

"""Numbered sources: the [n] the prompt shows the model and the "Sources:" block of the answer.

A runbook is cited by its path and section; a signal (log, metric, event) by its source and the
time range it covers. Hits with the same source and section share one number.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Any

from opsassist.documents import SearchHit


@dataclasses.dataclass(frozen=True, slots=True)
class Citation:
    number: int
    source: str
    source_type: str
    section: str
    title: str = ""
    timestamp: str | None = None
    end_timestamp: str | None = None

    @property
    def is_runbook(self) -> bool:
        return self.source_type == "runbook"

    def label(self) -> str:
        """``kubernetes/KubePodCrashLooping.md § Diagnosis`` or ``app.log (log, 12:00 → 12:30)``."""
        if self.is_runbook:
            return f"{self.source} § {self.section}" if self.section else self.source
        span = time_range(self.timestamp, self.end_timestamp)
        kind = f"{self.source_type}, {span}" if span else self.source_type
        where = f"{self.source} § {self.section}" if self.section else self.source
        return f"{where} ({kind})"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _short(value: str) -> str:
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def time_range(start: str | None, end: str | None) -> str:
    if start and end and end != start:
        return f"{_short(start)} → {_short(end)}"
    return _short(start or end or "") if (start or end) else ""


def number_hits(hits: Sequence[SearchHit]) -> tuple[list[Citation], list[int]]:
    """Citations in first-seen order, and the citation number of each hit."""
    citations: list[Citation] = []
    by_key: dict[tuple[str, str, str], int] = {}
    numbers: list[int] = []
    for hit in hits:
        key = (hit.source_type, hit.source, hit.section)
        if key not in by_key:
            by_key[key] = len(citations) + 1
            citations.append(
                Citation(
                    number=by_key[key],
                    source=hit.source,
                    source_type=hit.source_type,
                    section=hit.section,
                    title=hit.title,
                    timestamp=hit.timestamp,
                    end_timestamp=hit.end_timestamp,
                )
            )
        numbers.append(by_key[key])
    return citations, numbers


def sources_block(citations: Sequence[Citation]) -> str:
    """The block appended to every answer that used sources (Markdown list, one per source)."""
    if not citations:
        return ""
    lines = ["Sources:"] + [f"- [{c.number}] {c.label()}" for c in citations]
    return "\n".join(lines)


def runbook_sources(citations: Sequence[Citation]) -> list[str]:
    """Distinct runbook paths, in citation order (what the answer cache invalidates on)."""
    out: list[str] = []
    for citation in citations:
        if citation.is_runbook and citation.source not in out:
            out.append(citation.source)
    return out

"""Numbered sources: the [n] the prompt shows the model and the "Sources:" block of the answer.

A runbook is cited by its path and section; a signal (log, metric, event) by its source and the
time range it covers. Hits with the same source and section share one number.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from opsassist.chat.language import Language, labels
from opsassist.documents import SearchHit

if TYPE_CHECKING:
    from opsassist.chat.links import SourceLinks


@dataclasses.dataclass(frozen=True, slots=True)
class Citation:
    number: int
    source: str
    source_type: str
    section: str
    title: str = ""
    timestamp: str | None = None
    end_timestamp: str | None = None
    document_id: str = ""  # a signal's document (runbooks are linked by path and section)

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
                    document_id=hit.id,
                )
            )
        numbers.append(by_key[key])
    return citations, numbers


def sources_block(
    citations: Sequence[Citation], links: SourceLinks | None = None, language: Language = "en"
) -> str:
    """The block that ends every answer that used sources: one Markdown list item per source,
    a link where ``links`` can make one."""
    if not citations:
        return ""
    lines = [f"**{labels(language)['sources']}**", ""]
    for c in citations:
        url = None
        if links is not None:
            url = (
                links.runbook(c.source, c.section)
                if c.is_runbook
                else (links.document(c.document_id) if c.document_id else None)
            )
        lines.append(
            f"- [{c.number}] [{c.label()}]({url})" if url else f"- [{c.number}] {c.label()}"
        )
    return "\n".join(lines)


_SOURCES_HEADING = re.compile(r"^\s*(?:\*\*)?(?:Sources|Источники)(?:\*\*)?:?\s*$")


def without_sources(answer: str) -> str:
    """An answer without its sources block (the last line that heads one, and what follows)."""
    lines = answer.splitlines()
    for index in range(len(lines) - 1, -1, -1):
        if _SOURCES_HEADING.match(lines[index]):
            return "\n".join(lines[:index]).rstrip()
    return answer


def runbook_sources(citations: Sequence[Citation]) -> list[str]:
    """Distinct runbook paths, in citation order (what the answer cache invalidates on)."""
    out: list[str] = []
    for citation in citations:
        if citation.is_runbook and citation.source not in out:
            out.append(citation.source)
    return out

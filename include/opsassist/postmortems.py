"""Postmortems ("have we seen this before"): incident write-ups in Markdown, indexed by the runbook
pipeline into their own alias (``OPSASSIST_POSTMORTEM_INDEX``) and cited by the chat beside the
runbook when a question matches a past incident.

A write-up is parsed like a runbook (front matter, heading tree; the same quarantine reasons),
plus the metadata worth filtering on: ``date`` (front matter, a ``Date:`` line at the top of the
body, or a ``YYYY-MM-DD`` file-name prefix), ``severity``, ``services`` and ``alerts`` (front
matter or ``**Key:** value`` lines; alert names also from backticks in a Detection section).
Chunks are made per section (Summary, Impact, Timeline, Root cause, ...) with source type
``postmortem``; every chunk's header names the incident's date, services and alerts, so a
question naming one finds the write-up in the keyword search. Every parser here scans lines and
strings (no backtracking pattern on untrusted text).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from opsassist.chunking import chunk_runbook
from opsassist.documents import Chunk, SearchHit, make_chunk
from opsassist.knowledge import PACK_FORMAT
from opsassist.parsing.blocks import markdown_blocks
from opsassist.parsing.markdown import Runbook, RunbookError, Section, parse_runbook, read_text

SOURCE_TYPE = "postmortem"
SKIPPED_NAMES = frozenset({"readme.md", "template.md", "_template.md", "_index.md", "index.md"})
_META_KEYS: dict[str, str] = {
    "date": "date",
    "incident date": "date",
    "дата": "date",
    "severity": "severity",
    "sev": "severity",
    "критичность": "severity",
    "services": "services",
    "service": "services",
    "services affected": "services",
    "affected services": "services",
    "сервисы": "services",
    "alerts": "alerts",
    "alert": "alerts",
    "алерты": "alerts",
}
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")  # anchored with match() on short strings only
_ROLES: dict[str, tuple[str, ...]] = {
    "summary": ("summary", "overview", "описание", "кратк"),
    "root_cause": ("root cause", "cause", "причин"),
    "resolution": ("resolution", "mitigation", "fix", "remediation", "устранен", "решени"),
    "detection": ("detection", "alert", "обнаружен"),
}
SUMMARY_CHARS = 240


@dataclasses.dataclass(frozen=True, slots=True)
class IncidentMeta:
    """What a write-up says about its incident, beyond its text."""

    date: dt.date | None = None
    severity: str = ""
    services: tuple[str, ...] = ()
    alerts: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "date": self.date.isoformat() if self.date else "",
            "severity": self.severity,
            "services": list(self.services),
            "alerts": list(self.alerts),
        }


def skip_file(path: Path) -> bool:
    """Files of a postmortem folder or repository that are not write-ups."""
    return path.name.lower() in SKIPPED_NAMES


def _words(value: object) -> tuple[str, ...]:
    """A front-matter list or a comma-separated line as clean, distinct items."""
    items = value if isinstance(value, list | tuple) else str(value or "").split(",")
    out: list[str] = []
    for item in items:
        word = str(item).strip().strip("`*_ ")
        if word and word not in out:
            out.append(word)
    return tuple(out)


def _date(value: object, source: str) -> dt.date | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    text = str(value).strip()
    if _DATE.match(text[:10]):
        try:
            return dt.date.fromisoformat(text[:10])
        except ValueError:
            pass
    raise RunbookError("bad metadata", f"date {text[:40]!r} is not YYYY-MM-DD ({source})")


def _meta_line(line: str) -> tuple[str, str] | None:
    """``**Date:** 2025-06-21`` / ``Severity: SEV2`` / ``| Services | a, b |`` -> (field, value)."""
    text = line.strip().strip("|").strip()
    if not text or len(text) > 400:
        return None
    if "|" in text:  # a table row: | key | value |
        key, _, value = text.partition("|")
    else:
        key, _, value = text.partition(":")
    field = _META_KEYS.get(key.strip().strip("*_ ").rstrip(":").strip().lower())
    if field is None:
        return None
    return field, value.strip().strip("*_|").strip()


def _body_metadata(section: Section) -> tuple[dict[str, str], str]:
    """Metadata lines of the write-up's first (untitled) section, and what is left of it."""
    found: dict[str, str] = {}
    rest: list[str] = []
    for line in section.body.splitlines():
        parsed = _meta_line(line)
        if parsed is not None and parsed[0] not in found:
            found[parsed[0]] = parsed[1]
        elif line.strip().strip("|-: ") or rest:  # table rules and leading blanks go too
            rest.append(line)
    return found, "\n".join(rest).strip()


def _role(section: Section) -> str:
    heading = (section.path[0] if section.path else "").lower()
    for role, stems in _ROLES.items():
        if any(stem in heading for stem in stems):
            return role
    return "other"


def _detected_alerts(sections: Iterable[Section]) -> list[str]:
    """Alert names in backticks in the Detection section (``KubePodCrashLooping``)."""
    names: list[str] = []
    for section in sections:
        if _role(section) != "detection":
            continue
        for index, piece in enumerate(section.body.split("`")):
            word = piece.strip()
            if (
                index % 2 == 1
                and 6 <= len(word) <= 80
                and word.isalnum()
                and word[0].isalpha()
                and word[0].isupper()
                and sum(c.isupper() for c in word) >= 2
                and any(c.islower() for c in word)
            ):
                names.append(word)
    return names


def parse_postmortem(text: str, source: str) -> tuple[Runbook, IncidentMeta]:
    """The write-up as a :class:`Runbook` (title, sections) and its incident metadata; a bad
    file raises ``RunbookError`` (quarantined by the pipeline)."""
    doc = parse_runbook(text, source)
    front = doc.front_matter
    sections = list(doc.sections)
    body_meta: dict[str, str] = {}
    if sections and sections[0].path == ("Overview",):
        body_meta, rest = _body_metadata(sections[0])
        if body_meta:
            if rest:
                sections[0] = dataclasses.replace(sections[0], body=rest)
            else:
                sections.pop(0)
    if not sections:
        raise RunbookError("no text", "metadata only, no section text")
    date = _date(front.get("date", body_meta.get("date")), source)
    if date is None and _DATE.match(Path(source).name[:10]):
        date = _date(Path(source).name[:10], source)
    alerts = list(_words(front.get("alerts", body_meta.get("alerts"))))
    alerts += [a for a in _detected_alerts(sections) if a not in alerts]
    meta = IncidentMeta(
        date=date,
        severity=str(front.get("severity", body_meta.get("severity", ""))).strip().upper(),
        services=tuple(s.lower() for s in _words(front.get("services", body_meta.get("services")))),
        alerts=tuple(alerts),
    )
    return dataclasses.replace(doc, alert="", sections=sections), meta


def load_postmortem(path: Path, root: Path) -> tuple[Runbook, IncidentMeta]:
    return parse_postmortem(read_text(path), path.relative_to(root).as_posix())


def _heading(doc: Runbook, meta: IncidentMeta) -> str:
    """The title every chunk's header carries: date, title, then what it is about."""
    facts = [meta.severity] if meta.severity else []
    if meta.services:
        facts.append("services: " + ", ".join(meta.services))
    if meta.alerts:
        facts.append("alerts: " + ", ".join(meta.alerts))
    dated = f"Postmortem {meta.date.isoformat()}: " if meta.date else "Postmortem: "
    return dated + doc.title + (f" ({'; '.join(facts)})" if facts else "")


def chunk_postmortem(
    doc: Runbook,
    meta: IncidentMeta,
    max_chars: int = 1200,
    overlap_chars: int = 150,
    min_chars: int = 20,
) -> list[Chunk]:
    """Section chunks (the runbook chunker's rules) of source type ``postmortem``, dated by the
    incident (``timestamp``: a time filter finds incidents of a period) with the metadata."""
    decorated = dataclasses.replace(doc, title=_heading(doc, meta), alert="")
    stamp = (
        dt.datetime.combine(meta.date, dt.time(), tzinfo=dt.UTC) if meta.date is not None else None
    )
    chunks: list[Chunk] = []
    seen: dict[tuple[str, str], int] = {}
    for piece in chunk_runbook(decorated, max_chars, overlap_chars, min_chars):
        occurrence = seen.get((piece.section, piece.text), 0)
        seen[(piece.section, piece.text)] = occurrence + 1
        metadata = {k: v for k, v in piece.metadata.items() if k != "alert"}
        chunks.append(
            make_chunk(
                source_type=SOURCE_TYPE,
                source=doc.source,
                title=doc.title,
                section=piece.section,
                text=piece.text,
                occurrence=occurrence,
                timestamp=stamp,
                metadata=metadata | meta.to_json(),
            )
        )
    return chunks


def _lead(doc: Runbook, role: str, limit: int = SUMMARY_CHARS) -> tuple[str, str]:
    """(section label, its first sentences) of the first section in ``role``."""
    from opsassist.chat.compose import lead_text  # the answer's own rule for "first sentences"

    for section in doc.sections:
        if _role(section) == role:
            return section.label, lead_text(markdown_blocks(section.body), limit)
    return "", ""


def pack_entry(doc: Runbook, meta: IncidentMeta) -> dict[str, Any]:
    """The write-up's digest, kept beside the index version (what the chat quotes)."""
    from opsassist.chat.compose import lead_text

    root_label, root_cause = _lead(doc, "root_cause")
    _, summary = _lead(doc, "summary")
    _, resolution = _lead(doc, "resolution")
    return {
        "format": PACK_FORMAT,
        "source": doc.source,
        "title": doc.title,
        **meta.to_json(),
        "summary": summary or lead_text(markdown_blocks(doc.sections[0].body), SUMMARY_CHARS),
        "root_cause_section": root_label,
        "root_cause": root_cause,
        "resolution": resolution,
        "sections": [
            {"path": list(s.path), "blocks": [b.to_json() for b in markdown_blocks(s.body)]}
            for s in doc.sections
        ],
    }


# --- the chat's "Seen before" ---------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class PastIncident:
    """A past incident close enough to the question to cite."""

    hit: SearchHit
    title: str
    date: str
    root_cause: str
    section: str  # the section cited (its root cause when the pack names one)

    def line(self, number: int, language: str) -> str:
        """``**Seen before**: <title> (<date>) — root cause: ... [n]``."""
        label, cause = (
            ("Уже случалось", "первопричина") if language == "ru" else ("Seen before", "root cause")
        )
        when = f" ({self.date})" if self.date else ""
        because = f" — {cause}: {self.root_cause}" if self.root_cause else ""
        return f"**{label}**: {self.title}{when}{because} [{number}]"


AGREEMENT_RANK = 2  # chosen on the dev questions with the threshold (benchmarks/postmortem_...)


def shows_incident(hit: SearchHit, min_similarity: float) -> bool:
    """Is the best postmortem hit a past incident worth citing? Both searches must put it near
    the top (keyword and meaning agree) and its cosine must reach ``min_similarity``: fused
    ranks alone say which write-up is nearest, not whether it is near, and cosine alone misses
    short or Russian questions (the default pair's English half scores them low)."""
    return (
        (hit.vector_score or 0.0) >= min_similarity
        and hit.bm25_rank is not None
        and hit.bm25_rank <= AGREEMENT_RANK
        and hit.vector_rank is not None
        and hit.vector_rank <= AGREEMENT_RANK
    )


def match_incident(
    hits: Sequence[SearchHit], pack: dict[str, dict[str, Any]], min_similarity: float
) -> PastIncident | None:
    """The best-ranked postmortem hit when :func:`shows_incident` says it matches."""
    from opsassist.chat.compose import lead_text

    best = next((h for h in hits if h.source_type == SOURCE_TYPE), None)
    if best is None or not shows_incident(best, min_similarity):
        return None
    entry = pack.get(best.source) or {}
    body = best.text.partition("\n")[2] or best.text
    return PastIncident(
        hit=best,
        title=str(entry.get("title") or best.title or best.source),
        date=str(entry.get("date") or (best.timestamp or "")[:10]),
        root_cause=str(entry.get("root_cause") or lead_text(markdown_blocks(body), SUMMARY_CHARS)),
        section=str(entry.get("root_cause_section") or best.section),
    )

"""Section-aware chunking: every chunk keeps its runbook title and section path.

A section becomes one chunk when it fits ``max_chars``; a longer one is split on paragraph
boundaries (never inside a fenced code block) with ``overlap_chars`` of the previous piece carried
over. A section smaller than ``min_chars`` joins the chunk before it, so tiny headings do not turn
into near-empty search results.
"""

from __future__ import annotations

import re

from opsassist.documents import Chunk, make_chunk
from opsassist.parsing.markdown import Runbook, Section

_FENCE = re.compile(r"^\s*(```|~~~)")


def _paragraphs(body: str) -> list[str]:
    """Split on blank lines outside fenced code blocks."""
    parts: list[str] = []
    current: list[str] = []
    in_fence = False
    for line in body.splitlines():
        if _FENCE.match(line, 0, 64):
            in_fence = not in_fence
        if not line.strip() and not in_fence:
            if current:
                parts.append("\n".join(current))
                current = []
            continue
        current.append(line)
    if current:
        parts.append("\n".join(current))
    return parts


def _tail(text: str, limit: int) -> str:
    """The last whole lines of ``text`` that fit in ``limit`` characters."""
    if limit <= 0:
        return ""
    kept: list[str] = []
    size = 0
    for line in reversed(text.splitlines()):
        if size + len(line) + 1 > limit:
            break
        kept.append(line)
        size += len(line) + 1
    return "\n".join(reversed(kept))


def split_body(body: str, max_chars: int, overlap_chars: int) -> list[str]:
    """Pack paragraphs into pieces of at most ``max_chars`` (a single longer paragraph stays whole
    unless it is not code, in which case it is cut on line boundaries)."""
    if len(body) <= max_chars:
        return [body]
    pieces: list[str] = []
    current = ""
    for paragraph in _paragraphs(body):
        candidate = f"{current}\n\n{paragraph}" if current else paragraph
        if len(candidate) <= max_chars:
            current = candidate
            continue
        if current:
            pieces.append(current)
            overlap = _tail(current, overlap_chars)
            current = f"{overlap}\n\n{paragraph}" if overlap else paragraph
        else:
            current = paragraph
        # (the fence test looks at the start only: on a long line of spaces it would rescan it)
        while len(current) > max_chars and not _FENCE.match(current, 0, 64):
            cut = current.rfind("\n", 0, max_chars)
            cut = cut if cut > max_chars // 2 else max_chars
            pieces.append(current[:cut].rstrip())
            current = current[cut:].lstrip("\n")
    if current.strip():
        pieces.append(current)
    return pieces


_IDENTIFIER_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")


def identifier_words(identifier: str) -> list[str]:
    """The words of a CamelCase identifier: ``KubeletPlegDurationHigh`` -> Kubelet, Pleg,
    Duration, High; ``etcdGRPCRequestsSlow`` -> etcd, GRPC, Requests, Slow."""
    return _IDENTIFIER_WORD.findall(identifier)


def _header(runbook: Runbook, section_label: str) -> str:
    """``Title (AlertName) > Section``; when the alert's name holds words the title does not
    (an abbreviation such as PLEG, or a title that is the CamelCase name itself), they are
    spelled out after it, so a keyword search for them finds every chunk of the runbook."""
    name = runbook.title
    alert = runbook.alert or ""
    # the title's words as a keyword search sees them: a CamelCase word is one token there
    title_words = {w.lower() for w in re.findall(r"\w+", runbook.title)}
    spelled = identifier_words(alert)
    new_words = [w for w in spelled if w.lower() not in title_words]
    if alert and alert != runbook.title:
        name = f"{name} ({alert}: {' '.join(spelled)})" if new_words else f"{name} ({alert})"
    elif alert and len(spelled) > 1:
        name = f"{name} ({' '.join(spelled)})"
    return f"{name} > {section_label}"


def chunk_runbook(
    runbook: Runbook, max_chars: int = 1200, overlap_chars: int = 150, min_chars: int = 20
) -> list[Chunk]:
    """Chunks of one runbook, in document order, with deterministic ids."""
    merged: list[Section] = []
    for section in runbook.sections:
        if merged and len(section.body) < min_chars:
            previous = merged[-1]
            heading = section.path[-1]
            merged[-1] = Section(
                path=previous.path,
                body=f"{previous.body}\n\n{heading}: {section.body}",
                commands=previous.commands + section.commands,
                steps=previous.steps + section.steps,
            )
        else:
            merged.append(section)

    chunks: list[Chunk] = []
    seen: dict[tuple[str, str], int] = {}
    for section_index, section in enumerate(merged):
        for piece_number, piece in enumerate(split_body(section.body, max_chars, overlap_chars)):
            text = f"{_header(runbook, section.label)}\n{piece}"
            occurrence = seen.get((section.label, text), 0)
            seen[(section.label, text)] = occurrence + 1
            chunks.append(
                make_chunk(
                    source_type="runbook",
                    source=runbook.source,
                    title=runbook.title,
                    section=section.label,
                    text=text,
                    occurrence=occurrence,
                    metadata={
                        "alert": runbook.alert,
                        "section_index": section_index,
                        "part": piece_number,
                        "commands": [c for c in section.commands if c in piece],
                        "steps": [s for s in section.steps if s in piece],
                    },
                )
            )
    return chunks

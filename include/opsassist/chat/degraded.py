"""Answers without the model: runbook steps straight from the knowledge pack and the chunks.

Used when the model server is down, times out, refuses the prompt or its breaker is open. The
notice comes first so a reader (or a client showing the first line) sees it at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opsassist.chat.citations import Citation
from opsassist.chat.prompt import clip
from opsassist.documents import SearchHit

MODEL_NOTICE = "⚠ Model unavailable — showing runbook steps directly"
INTERRUPTED_NOTICE = "⚠ The model stopped answering — runbook steps follow"
EMPTY_NOTICE = "⚠ The model returned no answer — showing runbook steps directly"
INDEX_NOTICE = "⚠ Knowledge index unavailable — I cannot look up runbooks right now"
_EXCERPTS = 3


def model_notice(reason: str, notice: str = MODEL_NOTICE) -> str:
    return f"{notice} ({reason})."


def runbook_steps(
    hits: Sequence[SearchHit],
    numbers: Sequence[int],
    citations: Sequence[Citation],
    pack: dict[str, dict[str, Any]],
) -> str:
    """What the retrieved runbooks say to do: pack entries of the cited runbooks, then excerpts."""
    by_source = {c.source: c.number for c in reversed(citations) if c.is_runbook}
    blocks: list[str] = []
    for source, entry in pack.items():
        lines = [f"**{entry.get('title') or source}** — `{source}` [{by_source.get(source, '?')}]"]
        if entry.get("meaning"):
            lines.append(f"Meaning: {entry['meaning']}")
        if entry.get("impact"):
            lines.append(f"Impact: {entry['impact']}")
        steps = entry.get("steps") or []
        if steps:
            lines.append("Steps:")
            lines.extend(f"{i}. {step}" for i, step in enumerate(steps, start=1))
        commands = entry.get("commands") or []
        if commands:
            lines.append("Commands:")
            lines.extend(f"    {command}" for command in commands)
        blocks.append("\n".join(lines))
    shown: set[int] = set()
    excerpts: list[str] = []
    for hit, number in zip(hits, numbers, strict=True):
        if number in shown or len(excerpts) >= _EXCERPTS:
            continue
        shown.add(number)
        body = hit.text.partition("\n")[2] or hit.text
        excerpts.append(f"[{number}] {clip(body, 400)}")
    if excerpts:
        blocks.append("Matching sections:\n" + "\n\n".join(excerpts))
    return "\n\n".join(blocks) or "No runbook matched the question."


def index_unavailable(reason: str) -> str:
    return (
        f"{INDEX_NOTICE} ({reason}).\n\n"
        "No answer was generated: without the runbooks it would be a guess. Check that the "
        "runbook index is built and promoted (`opsassist versions`, the runbooks_index DAG) "
        "and ask again."
    )

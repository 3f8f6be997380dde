"""The messages sent to the model: system prompt, recent history, and a user message holding the
numbered sources, the knowledge-pack entries of the cited runbooks and the standalone question.

The retrieved text is bounded (``chat_context_chars``): a 135M-parameter model on a CPU pays for
every prompt token before its first answer token.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from opsassist.chat.citations import Citation, without_sources
from opsassist.documents import SearchHit
from opsassist.knowledge import render_pack
from opsassist.llm.prompts import render_prompt

Message = dict[str, str]
_MIN_PIECE = 160


def clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 1)].rsplit(" ", 1)[0] + "…"


def _body(hit: SearchHit) -> str:
    """A chunk's text without its first line (title > section, already in the label)."""
    head, _, rest = hit.text.partition("\n")
    return rest if rest.strip() else head


def render_sources(
    hits: Sequence[SearchHit], numbers: Sequence[int], citations: Sequence[Citation], budget: int
) -> str:
    """``[n] label`` + text for each hit, best first, within ``budget`` characters in total."""
    by_number = {c.number: c for c in citations}
    blocks: list[str] = []
    remaining = budget
    for hit, number in zip(hits, numbers, strict=True):
        if remaining < _MIN_PIECE:
            break
        label = f"[{number}] {by_number[number].label()}"
        text = clip(_body(hit), max(_MIN_PIECE, remaining - len(label) - 1))
        blocks.append(f"{label}\n{text}")
        remaining -= len(label) + len(text) + 2
    return "\n\n".join(blocks) or "(no sources found)"


def build_messages(
    question: str,
    hits: Sequence[SearchHit],
    numbers: Sequence[int],
    citations: Sequence[Citation],
    pack: dict[str, dict[str, Any]],
    history: Sequence[Message],
    context_chars: int,
) -> list[Message]:
    """System prompt, the last turns of history, and the grounded question."""
    # render_pack's line breaks carry structure: keep whole lines up to the budget.
    pack_text = _clip_lines(render_pack(pack), context_chars // 2) if pack else "(none)"
    user = render_prompt(
        "answer",
        sources=render_sources(hits, numbers, citations, context_chars),
        pack=pack_text,
        question=question,
    )
    return [
        {"role": "system", "content": render_prompt("system")},
        *history,
        {"role": "user", "content": user},
    ]


def _clip_lines(text: str, limit: int) -> str:
    out: list[str] = []
    used = 0
    for line in text.splitlines():
        if used + len(line) + 1 > limit:
            break
        out.append(line)
        used += len(line) + 1
    return "\n".join(out)


def history_for_model(
    messages: Sequence[Message], turns: int, per_turn_chars: int = 400
) -> list[Message]:
    """The last ``turns`` user/assistant messages before the current question, clipped.

    Earlier answers are clipped and their sources block dropped (the model gets fresh sources).
    """
    earlier = [m for m in messages[:-1] if m["role"] in ("user", "assistant")]
    picked = earlier[-turns:] if turns > 0 else []
    out: list[Message] = []
    for message in picked:
        content = without_sources(message["content"])
        out.append({"role": message["role"], "content": clip(content, per_turn_chars)})
    return out


LANGUAGE_NAMES = {"en": "English", "ru": "Russian"}
_SUMMARY_EXCERPT_CHARS = 1200
_FENCED = re.compile(r"^\s*(?:>\s*)*(```|~~~)")
_QUOTE = re.compile(r"^\s*(?:>\s?)+")


def summary_messages(question: str, composed: str, language: str) -> list[Message]:
    """The model's messages for a short summary of a composed answer: its prose only (code is
    left out: the summary must not restate commands, and every prompt token costs on a CPU)."""
    lines: list[str] = []
    in_fence = False
    for line in composed.splitlines():
        if _FENCED.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            lines.append(_QUOTE.sub("", line))
    excerpt = _clip_lines("\n".join(lines), _SUMMARY_EXCERPT_CHARS)
    user = render_prompt(
        "summary",
        excerpt=excerpt,
        question=question,
        language=LANGUAGE_NAMES.get(language, "English"),
    )
    return [
        {"role": "system", "content": render_prompt("summary_system")},
        {"role": "user", "content": user},
    ]

"""Checkable claims in answer text: what can be looked up in the sources word for word.

Inline code spans, each line of a code block (a leading ``$ `` prompt dropped) and numbers in
the prose. Quoted lines (``> ``) count like the rest; the sources block does not. Used by the
guard on model text as it streams and by the answer-quality evaluation.
"""

from __future__ import annotations

import re

from opsassist.chat.citations import without_sources

_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE_CODE = re.compile(r"`([^`\n]+)`")
_CITATION = re.compile(r"\[(\d{1,3})\]")
_NUMBER = re.compile(r"(?<![\w.$-])\d+(?:[.,]\d+)?(?:%|ms|s|m|h|d|Mi|Gi|MB|GB)?(?![\w.])")
_QUOTE_PREFIX = re.compile(r"^\s*(?:>\s?)*")


def normalise(text: str) -> str:
    return " ".join(text.split()).casefold()


def contains(haystack: str, needle: str) -> bool:
    return normalise(needle) in normalise(haystack)


def claims(answer: str) -> list[str]:
    """Checkable claims: inline code spans, the lines of code blocks, numbers in prose."""
    found: list[str] = []
    in_fence = False
    for raw in without_sources(answer).splitlines():
        line = _QUOTE_PREFIX.sub("", raw)  # quoted blocks count like the rest
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            if line.strip():
                found.append(line.strip().removeprefix("$ "))
            continue
        found.extend(span.strip() for span in _INLINE_CODE.findall(line) if span.strip())
        prose = _CITATION.sub(" ", _INLINE_CODE.sub(" ", line))
        found.extend(_NUMBER.findall(prose))
    return found

"""Checkable claims in answer text: what can be looked up in the sources word for word.

Inline code spans, each line of a code block (a leading ``$ `` prompt dropped), and in the prose
numbers and identifiers: words that hold ``_``, ``/``, ``.``, ``:`` or ``=`` between letters or
digits (``node_filesystem_files_free``, ``kubernetes/KubePodCrashLooping.md``, ``app=etcd``,
``10.0.0.1:9090``, a URL) or a capital after a small letter (``KubePodCrashLooping``,
``StatefulSet``): alert, resource, metric and file names a reader would act on or search for.
Quoted lines (``> ``) count like the rest; the sources block does not. Used by the guard on model
text as it streams and by the answer-quality evaluation.
"""

from __future__ import annotations

import re

from opsassist.chat.citations import without_sources

_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE_CODE = re.compile(r"`([^`\n]+)`")
_CITATION = re.compile(r"\[(\d{1,3})\]")
_NUMBER = re.compile(r"(?<![\w.$-])\d+(?:[.,]\d+)?(?:%|ms|s|m|h|d|Mi|Gi|MB|GB)?(?![\w.])")
_QUOTE_PREFIX = re.compile(r"^\s*(?:>\s?)*")
_LINK = re.compile(r"\]\(([^()\s]*)\)")  # a Markdown link's target
_JOINERS = "_/.:="
_EDGE = "\"'()[]{}<>,;!?*.:_~"
_NOT_IDENTIFIERS = frozenset({"e.g", "i.e", "etc", "vs"})
_CAMEL_CASE = re.compile(r"^[A-Za-z][A-Za-z0-9]*[a-z0-9][A-Z][A-Za-z0-9]*$")
_POSSESSIVE = re.compile(r"['’]s$")


def identifiers(text: str) -> list[str]:
    """Identifier-like words of prose (see the module docstring), by splitting on whitespace."""
    found: list[str] = []
    for raw in text.split():
        word = raw.strip(_EDGE)
        if len(word) < 3 or word.lower() in _NOT_IDENTIFIERS:
            continue
        inner = word[1:-1]
        if any(j in inner for j in _JOINERS) and any(c.isalnum() for c in word):
            found.append(word)
        elif _CAMEL_CASE.match(bare := _POSSESSIVE.sub("", word)):
            found.append(bare)
    return found


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
        found.extend(_LINK.findall(prose))
        prose = _LINK.sub("]", prose)
        found.extend(_NUMBER.findall(prose))
        found.extend(identifiers(prose))
    return found

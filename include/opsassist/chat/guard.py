"""Checks on model text before an engineer reads it.

A small model on a CPU loops ("The answer to your question is:" thirty times) and invents
commands or file names. The guard sees the model's text line by line as it streams and lets a
line through only when it is complete and checked:
- a line whose code spans or code-block lines, or whose numbers, appear neither in the sources
  nor in the question is dropped (counted, with the unsupported claim);
- a line that repeats an earlier one, or text whose word 4-grams repeat too much, stops the
  stream: what was already shown stays, the rest is not generated.
Holding a line back until it ends costs a line's worth of latency, never a wrong command.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter

from opsassist.chat.claims import claims, contains, normalise

_WORD = re.compile(r"\w+", re.UNICODE)
_FENCE = re.compile(r"^\s*(```|~~~)")
MIN_REPEAT_CHARS = 12  # shorter lines (a blank, "```", "- ") may well repeat
NGRAM = 4
MAX_REPEATED_SHARE = 1 / 3


@dataclasses.dataclass(slots=True)
class GuardReport:
    dropped: list[str] = dataclasses.field(default_factory=list)  # unsupported claims
    stopped: str | None = None  # why the stream was stopped ("degenerate")


class StreamGuard:
    """Feed model text pieces; get back the text that may be shown now."""

    def __init__(self, support: str) -> None:
        self._support = support
        self._pending = ""
        self._in_fence = False
        self._seen: Counter[str] = Counter()
        self._grams: Counter[tuple[str, ...]] = Counter()
        self._words: list[str] = []
        self.report = GuardReport()

    @property
    def stopped(self) -> bool:
        return self.report.stopped is not None

    def feed(self, piece: str) -> str:
        """The complete, checked lines that ``piece`` finishes ("" while a line is open)."""
        if self.stopped:
            return ""
        self._pending += piece
        out: list[str] = []
        while "\n" in self._pending and not self.stopped:
            line, self._pending = self._pending.split("\n", 1)
            checked = self._check(line)
            if checked is not None:
                out.append(checked + "\n")
        return "".join(out)

    def finish(self) -> str:
        """The last, unterminated line, checked."""
        if self.stopped or not self._pending:
            return ""
        line, self._pending = self._pending, ""
        return self._check(line) or ""

    def _check(self, line: str) -> str | None:
        if _FENCE.match(line):
            self._in_fence = not self._in_fence
            return line
        key = normalise(line)
        if len(key) >= MIN_REPEAT_CHARS:
            self._seen[key] += 1
            if self._seen[key] > 1:
                self.report.stopped = "degenerate"
                return None
        if self._repeats_too_much(line):
            self.report.stopped = "degenerate"
            return None
        candidates = [line.strip()] if self._in_fence and line.strip() else claims(line)
        unsupported = [c for c in candidates if not contains(self._support, c)]
        if unsupported:
            self.report.dropped.extend(unsupported)
            return None
        return line

    def _repeats_too_much(self, line: str) -> bool:
        words = _WORD.findall(line.casefold())
        start = max(0, len(self._words) - NGRAM + 1)
        self._words.extend(words)
        for i in range(start, len(self._words) - NGRAM + 1):
            self._grams[tuple(self._words[i : i + NGRAM])] += 1
        total = max(0, len(self._words) - NGRAM + 1)
        if total < 12:
            return False
        repeated = sum(count - 1 for count in self._grams.values() if count > 1)
        return repeated / total > MAX_REPEATED_SHARE

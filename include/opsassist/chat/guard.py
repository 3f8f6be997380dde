"""Checks on model text before an engineer reads it.

A small model on a CPU loops ("The answer to your question is:" thirty times), invents commands
and file names, and opens code blocks it never fills. The guard sees the model's text line by
line as it streams and lets a line through only when it is complete and checked:
- a prose line holding a claim (a code span, a number, an identifier such as a metric, file or
  resource name; see ``opsassist.chat.claims``) found neither in the sources nor in the question
  is dropped, and the claim recorded;
- a code block is held until it closes and shown whole only when every line of it is in the
  sources; an empty or unterminated block is dropped;
- a line that repeats an earlier one, or prose whose word 4-grams repeat too much (code is left
  out of that count: queries repeat themselves), stops the stream: what was already shown
  stays, the rest is not generated.
For a summary (``prose_only``) lists and code are dropped, every line must be in the question's
language, and the text ends after ``max_lines`` lines.
Holding a line back until it ends costs a line's worth of latency, never a wrong command.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter

from opsassist.chat.claims import claims, contains, normalise
from opsassist.chat.language import Language, detect_language

_WORD = re.compile(r"\w+", re.UNICODE)
_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE = re.compile(r"`[^`\n]*`")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s")
MIN_REPEAT_CHARS = 12  # shorter lines (a blank, "```", "- ") may well repeat
NGRAM = 4
MAX_REPEATED_SHARE = 1 / 3


@dataclasses.dataclass(slots=True)
class GuardReport:
    dropped: list[str] = dataclasses.field(default_factory=list)  # unsupported claims, or why
    stopped: str | None = None  # why the stream was stopped ("degenerate", "enough")
    shown_lines: int = 0


class StreamGuard:
    """Feed model text pieces; get back the text that may be shown now."""

    def __init__(
        self,
        support: str,
        *,
        prose_only: bool = False,
        language: Language | None = None,
        max_lines: int | None = None,
    ) -> None:
        self._support = support
        self._prose_only = prose_only
        self._language = language
        self._max_lines = max_lines
        self._pending = ""
        self._block: list[str] | None = None  # lines of an open code block
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
            checked = self._line(line)
            if checked is not None:
                out.append(checked + "\n")
        return "".join(out)

    def finish(self) -> str:
        """The last, unterminated line, checked (an unterminated code block is dropped)."""
        if self.stopped:
            return ""
        line, self._pending = self._pending, ""
        shown = self._line(line) if line else None
        if self._block is not None:
            self.report.dropped.append("unterminated code block")
            self._block = None
        return shown or ""

    def _line(self, line: str) -> str | None:
        if _FENCE.match(line):
            if self._block is None:
                self._block = [line]
                return None
            block, self._block = [*self._block, line], None
            return self._code_block(block)
        if self._block is not None:
            self._block.append(line)
            return None
        return self._prose(line)

    def _code_block(self, block: list[str]) -> str | None:
        body = [line.strip() for line in block[1:-1] if line.strip()]
        if self._prose_only or not body:
            self.report.dropped.append("code in a summary" if body else "empty code block")
            return None
        unsupported = [c for c in body if not contains(self._support, c.removeprefix("$ "))]
        if unsupported:
            self.report.dropped.extend(unsupported)
            return None
        return self._shown("\n".join(block))

    def _prose(self, line: str) -> str | None:
        key = normalise(line)
        if len(key) >= MIN_REPEAT_CHARS:
            self._seen[key] += 1
            if self._seen[key] > 1:
                self.report.stopped = "degenerate"
                return None
        if self._repeats_too_much(_INLINE.sub(" ", line)):
            self.report.stopped = "degenerate"
            return None
        if self._prose_only and line.strip():
            if _LIST_ITEM.match(line) or "`" in line:
                self.report.dropped.append("list or code in a summary")
                return None
            if self._language is not None and detect_language(line) != self._language:
                self.report.dropped.append(f"not in {self._language}")
                return None
        unsupported = [c for c in claims(line) if not contains(self._support, c)]
        if unsupported:
            self.report.dropped.extend(unsupported)
            return None
        return self._shown(line)

    def _shown(self, text: str) -> str:
        if text.strip():
            self.report.shown_lines += 1
            if self._max_lines is not None and self.report.shown_lines >= self._max_lines:
                self.report.stopped = "enough"
        return text

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

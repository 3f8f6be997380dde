"""Template windows: one service's log lines in one time window, as a mergeable aggregate.

A window keeps, per distinct masked token sequence, its count, first and last time, level counts
and the ``examples`` earliest lines (by time, then text). Every part merges by sums, minimums,
maximums and "k smallest", so adding lines one by one, in batches, in any order, or merging
partial windows from Spark partitions gives the same aggregate.

Mining a window replays its sequences into a fresh :class:`~.templates.TemplateMiner` in
frequency order (:func:`~.templates.mine_sequences` with ``order="frequency"``), so the templates
and their ids depend only on the multiset of lines in the window, never on arrival order or batch
boundaries. That is what lets the streaming ingest and a batch (Spark) job produce identical
signal documents.

High-cardinality input (a value no mask catches makes every line distinct) is bounded by
``max_sequences``: the window keeps the sequences with the smallest hash ranks (a bottom-k
sketch) and counts the rest as overflow. The kept set is the k smallest ranks of all sequences
seen, whatever the order or partitioning, so overflow is deterministic too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from .templates import MinerConfig, TemplateMiner, Tokens, mine_sequences

Example = tuple[int, str]  # (event time in epoch milliseconds, line as shown)


def sequence_rank(tokens: Tokens) -> int:
    """A stable pseudo-random rank of a sequence (bottom-k eviction order)."""
    return int.from_bytes(hashlib.sha1(" ".join(tokens).encode("utf-8")).digest()[:8], "big")


def smallest(a: Iterable[Example], b: Iterable[Example], k: int) -> list[Example]:
    """The k smallest distinct examples of both lists, in order."""
    return sorted(set(a) | set(b))[:k]


@dataclasses.dataclass(slots=True)
class SequenceStats:
    """What a window knows of one distinct masked sequence (or of its overflow)."""

    count: int = 0
    first_ms: int = 0
    last_ms: int = 0
    levels: dict[str, int] = dataclasses.field(default_factory=dict)
    examples: list[Example] = dataclasses.field(default_factory=list)

    def add(self, when_ms: int, level: str, line: str, k: int) -> None:
        if self.count == 0:
            self.first_ms = self.last_ms = when_ms
        else:
            self.first_ms = min(self.first_ms, when_ms)
            self.last_ms = max(self.last_ms, when_ms)
        self.count += 1
        if level:
            self.levels[level] = self.levels.get(level, 0) + 1
        if len(self.examples) < k or (when_ms, line) < self.examples[-1]:
            self.examples = smallest(self.examples, [(when_ms, line)], k)

    def merge(self, other: SequenceStats, k: int) -> None:
        if other.count == 0:
            return
        if self.count == 0:
            self.first_ms, self.last_ms = other.first_ms, other.last_ms
        else:
            self.first_ms = min(self.first_ms, other.first_ms)
            self.last_ms = max(self.last_ms, other.last_ms)
        self.count += other.count
        for level, n in other.levels.items():
            self.levels[level] = self.levels.get(level, 0) + n
        self.examples = smallest(self.examples, other.examples, k)

    def to_list(self) -> list[Any]:
        return [
            self.count,
            self.first_ms,
            self.last_ms,
            dict(sorted(self.levels.items())),
            [list(e) for e in self.examples],
        ]

    @classmethod
    def from_list(cls, data: list[Any]) -> SequenceStats:
        count, first, last, levels, examples = data
        return cls(
            int(count),
            int(first),
            int(last),
            {str(k): int(v) for k, v in levels.items()},
            [(int(t), str(line)) for t, line in examples],
        )


@dataclasses.dataclass(frozen=True, slots=True)
class WindowTemplate:
    """A template mined in one window, with the window's statistics for its lines."""

    template_id: str
    text: str
    count: int
    first_ms: int
    last_ms: int
    levels: dict[str, int]
    examples: list[Example]
    sequences: int


class TemplateWindow:
    """Mergeable aggregate of one service's lines in one window (see the module docstring)."""

    def __init__(self, max_sequences: int = 2000, examples: int = 3) -> None:
        if max_sequences < 1:
            raise ValueError("max_sequences must be at least 1")
        self.max_sequences = max_sequences
        self.k = examples
        self.sequences: dict[Tokens, SequenceStats] = {}
        self.overflow = SequenceStats()
        self._heap: list[tuple[int, Tokens]] = []  # (-rank, tokens): largest rank on top

    @property
    def total(self) -> int:
        return sum(s.count for s in self.sequences.values()) + self.overflow.count

    def _admit(self, tokens: Tokens) -> bool:
        """Make room for a new sequence if its rank belongs in the bottom k; False if not."""
        rank = sequence_rank(tokens)
        if len(self.sequences) >= self.max_sequences:
            top_rank = -self._heap[0][0]
            if rank >= top_rank:
                return False
            _, evicted = heapq.heappop(self._heap)
            self.overflow.merge(self.sequences.pop(evicted), self.k)
        heapq.heappush(self._heap, (-rank, tokens))
        return True

    def add(self, tokens: Tokens, when_ms: int, level: str, line: str) -> None:
        stats = self.sequences.get(tokens)
        if stats is None:
            if not self._admit(tokens):
                self.overflow.add(when_ms, level, line, self.k)
                return
            stats = self.sequences[tokens] = SequenceStats()
        stats.add(when_ms, level, line, self.k)

    def add_stats(self, tokens: Tokens, other: SequenceStats) -> None:
        stats = self.sequences.get(tokens)
        if stats is None:
            if not self._admit(tokens):
                self.overflow.merge(other, self.k)
                return
            stats = self.sequences[tokens] = SequenceStats()
        stats.merge(other, self.k)

    def merge(self, other: TemplateWindow) -> None:
        for tokens, stats in other.sequences.items():
            self.add_stats(tokens, stats)
        self.overflow.merge(other.overflow, self.k)

    # -- mining ------------------------------------------------------------------------------
    def miner(self, config: MinerConfig) -> TemplateMiner:
        """A fresh miner fed with this window's sequences, most frequent first."""
        sequences = {t: (s.count, (0, 0)) for t, s in self.sequences.items()}
        return mine_sequences(sequences, config, order="frequency")

    def mine(self, config: MinerConfig) -> tuple[list[WindowTemplate], TemplateMiner]:
        """Templates of the window (most frequent first, ties by id) and the miner behind them."""
        miner = self.miner(config)
        texts = {t.template_id: t.text for t in miner.templates().values()}
        grouped: dict[str, SequenceStats] = {}
        members: Counter[str] = Counter()
        for tokens, stats in self.sequences.items():
            template = miner.template_of(tokens)
            assert template is not None  # every sequence was learned
            grouped.setdefault(template, SequenceStats()).merge(stats, self.k)
            members[template] += 1
        result = [
            WindowTemplate(
                template_id=tid,
                text=texts[tid],
                count=stats.count,
                first_ms=stats.first_ms,
                last_ms=stats.last_ms,
                levels=dict(sorted(stats.levels.items())),
                examples=list(stats.examples),
                sequences=members[tid],
            )
            for tid, stats in grouped.items()
        ]
        result.sort(key=lambda t: (-t.count, t.template_id))
        return result, miner

    # -- state -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "max_sequences": self.max_sequences,
            "examples": self.k,
            "sequences": {" ".join(t): s.to_list() for t, s in sorted(self.sequences.items())},
            "overflow": self.overflow.to_list(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TemplateWindow:
        window = cls(int(data["max_sequences"]), int(data["examples"]))
        for key, value in data["sequences"].items():
            window.add_stats(tuple(key.split(" ")) if key else (), SequenceStats.from_list(value))
        window.overflow = SequenceStats.from_list(data["overflow"])
        return window


def previous_counts(miner: TemplateMiner, previous: TemplateWindow | None) -> dict[str, int]:
    """Lines of the previous window per template of the current window's miner.

    Each distinct sequence of the previous window is matched against the current templates
    (:meth:`~.templates.TemplateMiner.match_tokens`), so "x20 vs previous window" compares the
    same event even if the previous window mined it into a slightly different template.
    """
    counts: Counter[str] = Counter()
    if previous is None:
        return {}
    for tokens, stats in previous.sequences.items():
        found = miner.match_tokens(tokens)
        if found is not None:
            counts[found[0]] += stats.count
    return dict(counts)

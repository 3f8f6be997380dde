"""The knowledge-cache interface (Redis in production, in-process memory as the embedded default).

Three things live here:
- the **knowledge pack**: one compact entry per runbook (title, alert, meaning, first steps,
  commands), versioned with the index version it was built from, for the model's context;
- the **answer cache**: keyed by the normalised question and the index version. When a new index
  version is promoted, entries of the previous version are carried over unless they cite a runbook
  that changed (those are invalidated), so an edit to one runbook does not empty the whole cache;
- **retrieval warm-up**: search results for popular questions, computed after a build.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

_SPACES = re.compile(r"\s+")
_TRAILING_PUNCT = re.compile(r"[\s?!.。…]+$")


def normalise_question(question: str) -> str:
    """Case-, whitespace- and trailing-punctuation-insensitive form (Unicode NFKC)."""
    text = unicodedata.normalize("NFKC", question).casefold()
    text = _SPACES.sub(" ", text).strip()
    return _TRAILING_PUNCT.sub("", text)


def question_key(question: str) -> str:
    return hashlib.sha256(normalise_question(question).encode("utf-8")).hexdigest()[:40]


@dataclasses.dataclass(slots=True)
class CachedAnswer:
    question: str
    answer: str
    sources: list[str]
    index_version: str
    payload: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CachedAnswer:
        return cls(**data)


@runtime_checkable
class KnowledgeCache(Protocol):
    def put_pack(self, version: str, entries: dict[str, dict[str, Any]]) -> None: ...

    def pack_version(self) -> str | None: ...

    def get_pack(self, sources: Sequence[str] | None = None) -> dict[str, dict[str, Any]]: ...

    def get_answer(self, question: str, index_version: str) -> CachedAnswer | None: ...

    def put_answer(self, entry: CachedAnswer, ttl_seconds: int) -> None: ...

    def carry_over(
        self, old_version: str, new_version: str, changed_sources: Iterable[str]
    ) -> tuple[int, int]: ...

    def invalidate_sources(self, index_version: str, sources: Iterable[str]) -> int: ...

    def record_question(self, question: str) -> None: ...

    def popular_questions(self, n: int) -> list[tuple[str, float]]: ...

    def put_retrieval(
        self, question: str, index_version: str, hits: list[dict[str, Any]], ttl_seconds: int
    ) -> None: ...

    def get_retrieval(self, question: str, index_version: str) -> list[dict[str, Any]] | None: ...

    def ping(self) -> bool: ...

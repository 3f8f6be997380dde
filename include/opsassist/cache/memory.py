"""In-process knowledge cache with the same behaviour as the Redis one (TTL included)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from opsassist.cache.base import CachedAnswer, normalise_question, question_key


class MemoryKnowledgeCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pack: tuple[str | None, dict[str, dict[str, Any]]] = (None, {})
        self._answers: dict[tuple[str, str], tuple[float, CachedAnswer]] = {}
        self._retrieval: dict[tuple[str, str], tuple[float, list[dict[str, Any]]]] = {}
        self._popularity: dict[str, float] = {}
        self._originals: dict[str, str] = {}

    def put_pack(self, version: str, entries: dict[str, dict[str, Any]]) -> None:
        with self._lock:
            self._pack = (version, dict(entries))

    def pack_version(self) -> str | None:
        return self._pack[0]

    def get_pack(self, sources: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        entries = self._pack[1]
        if sources is None:
            return dict(entries)
        return {s: entries[s] for s in sources if s in entries}

    def get_answer(self, question: str, index_version: str) -> CachedAnswer | None:
        key = (index_version, question_key(question))
        item = self._answers.get(key)
        if item is None or item[0] < time.time():
            return None
        return item[1]

    def put_answer(self, entry: CachedAnswer, ttl_seconds: int) -> None:
        key = (entry.index_version, question_key(entry.question))
        with self._lock:
            self._answers[key] = (time.time() + ttl_seconds, entry)

    def carry_over(
        self, old_version: str, new_version: str, changed_sources: Iterable[str]
    ) -> tuple[int, int]:
        changed = set(changed_sources)
        kept = dropped = 0
        with self._lock:
            for (version, qkey), (expires, entry) in list(self._answers.items()):
                if version != old_version:
                    continue
                del self._answers[(version, qkey)]
                if changed.intersection(entry.sources):
                    dropped += 1
                    continue
                moved = CachedAnswer(**{**entry.to_json(), "index_version": new_version})
                self._answers[(new_version, qkey)] = (expires, moved)
                kept += 1
        return kept, dropped

    def invalidate_sources(self, index_version: str, sources: Iterable[str]) -> int:
        wanted = set(sources)
        with self._lock:
            doomed = [
                key
                for key, (_, entry) in self._answers.items()
                if key[0] == index_version and wanted.intersection(entry.sources)
            ]
            for key in doomed:
                del self._answers[key]
        return len(doomed)

    def record_question(self, question: str) -> None:
        norm = normalise_question(question)
        with self._lock:
            self._popularity[norm] = self._popularity.get(norm, 0.0) + 1.0
            self._originals.setdefault(norm, question)

    def popular_questions(self, n: int) -> list[tuple[str, float]]:
        ranked = sorted(self._popularity.items(), key=lambda item: (-item[1], item[0]))[:n]
        return [(self._originals.get(q, q), score) for q, score in ranked]

    def put_retrieval(
        self, question: str, index_version: str, hits: list[dict[str, Any]], ttl_seconds: int
    ) -> None:
        with self._lock:
            key = (index_version, question_key(question))
            self._retrieval[key] = (time.time() + ttl_seconds, hits)

    def get_retrieval(self, question: str, index_version: str) -> list[dict[str, Any]] | None:
        item = self._retrieval.get((index_version, question_key(question)))
        if item is None or item[0] < time.time():
            return None
        return item[1]

    def ping(self) -> bool:
        return True

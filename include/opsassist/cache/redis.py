"""Redis knowledge cache.

Keys (prefix ``opsassist`` by default):
- ``{p}:pack:current`` -> version; ``{p}:pack:{version}`` hash: source -> JSON entry;
- ``{p}:answer:{index_version}:{question_key}`` -> JSON answer, with TTL;
- ``{p}:cites:{index_version}:{source}`` set of answer keys citing a source (for invalidation);
- ``{p}:retrieval:{index_version}:{question_key}`` -> JSON hits, with TTL;
- ``{p}:popular`` sorted set of normalised questions, ``{p}:popular:text`` hash: original text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import redis

from opsassist.cache.base import CachedAnswer, normalise_question, question_key


class RedisKnowledgeCache:
    def __init__(self, url: str, prefix: str = "opsassist") -> None:
        self._redis = redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=2.0, socket_connect_timeout=2.0
        )
        self.prefix = prefix

    def _k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # --- knowledge pack --------------------------------------------------------------------------
    def put_pack(self, version: str, entries: dict[str, dict[str, Any]]) -> None:
        key = self._k("pack", version)
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(key)
        if entries:
            pipe.hset(
                key, mapping={s: json.dumps(e, ensure_ascii=False) for s, e in entries.items()}
            )
        previous = self.pack_version()
        pipe.set(self._k("pack", "current"), version)
        if previous and previous != version:
            pipe.expire(self._k("pack", previous), 24 * 3600)  # readers mid-request still find it
        pipe.execute()

    def pack_version(self) -> str | None:
        value = self._redis.get(self._k("pack", "current"))
        return str(value) if value else None

    def get_pack(self, sources: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        version = self.pack_version()
        if version is None:
            return {}
        key = self._k("pack", version)
        if sources is None:
            raw: dict[str, str] = self._redis.hgetall(key)  # type: ignore[assignment]
            return {s: json.loads(v) for s, v in raw.items()}
        if not sources:
            return {}
        values: list[str | None] = self._redis.hmget(key, list(sources))  # type: ignore[assignment]
        return {s: json.loads(v) for s, v in zip(sources, values, strict=True) if v is not None}

    # --- answers ---------------------------------------------------------------------------------
    def _answer_key(self, index_version: str, question: str) -> str:
        return self._k("answer", index_version, question_key(question))

    def get_answer(self, question: str, index_version: str) -> CachedAnswer | None:
        raw = self._redis.get(self._answer_key(index_version, question))
        return CachedAnswer.from_json(json.loads(str(raw))) if raw else None

    def put_answer(self, entry: CachedAnswer, ttl_seconds: int) -> None:
        key = self._answer_key(entry.index_version, entry.question)
        pipe = self._redis.pipeline(transaction=True)
        pipe.set(key, json.dumps(entry.to_json(), ensure_ascii=False), ex=ttl_seconds)
        for source in set(entry.sources):
            cites = self._k("cites", entry.index_version, source)
            pipe.sadd(cites, key)
            pipe.expire(cites, ttl_seconds, gt=True)
            pipe.expire(cites, ttl_seconds, nx=True)
        pipe.execute()

    def carry_over(
        self, old_version: str, new_version: str, changed_sources: Iterable[str]
    ) -> tuple[int, int]:
        """Move answers of ``old_version`` to ``new_version``, dropping those citing a change."""
        dropped = self.invalidate_sources(old_version, changed_sources)
        kept = 0
        pattern = self._k("answer", old_version, "*")
        for key in self._redis.scan_iter(match=pattern, count=500):
            raw = self._redis.get(key)
            ttl = int(self._redis.ttl(key))
            if not raw or ttl == -2:
                continue
            entry = CachedAnswer.from_json(json.loads(str(raw)))
            entry.index_version = new_version
            self.put_answer(entry, ttl if ttl > 0 else 3600)
            self._redis.delete(key)
            kept += 1
        for key in self._redis.scan_iter(match=self._k("cites", old_version, "*"), count=500):
            self._redis.delete(key)
        return kept, dropped

    def invalidate_sources(self, index_version: str, sources: Iterable[str]) -> int:
        removed = 0
        for source in set(sources):
            cites = self._k("cites", index_version, source)
            keys: set[str] = self._redis.smembers(cites)  # type: ignore[assignment]
            if keys:
                removed += int(self._redis.delete(*keys))
            self._redis.delete(cites)
        return removed

    # --- popularity and warm-up ------------------------------------------------------------------
    def record_question(self, question: str) -> None:
        norm = normalise_question(question)
        pipe = self._redis.pipeline(transaction=False)
        pipe.zincrby(self._k("popular"), 1.0, norm)
        pipe.hsetnx(self._k("popular", "text"), norm, question)
        pipe.execute()

    def popular_questions(self, n: int) -> list[tuple[str, float]]:
        ranked: list[tuple[str, float]] = self._redis.zrevrange(  # type: ignore[assignment]
            self._k("popular"), 0, n - 1, withscores=True
        )
        if not ranked:
            return []
        originals: list[str | None] = self._redis.hmget(  # type: ignore[assignment]
            self._k("popular", "text"), [q for q, _ in ranked]
        )
        return [(orig or q, float(s)) for (q, s), orig in zip(ranked, originals, strict=True)]

    def put_retrieval(
        self, question: str, index_version: str, hits: list[dict[str, Any]], ttl_seconds: int
    ) -> None:
        key = self._k("retrieval", index_version, question_key(question))
        self._redis.set(key, json.dumps(hits, ensure_ascii=False), ex=ttl_seconds)

    def get_retrieval(self, question: str, index_version: str) -> list[dict[str, Any]] | None:
        raw = self._redis.get(self._k("retrieval", index_version, question_key(question)))
        return json.loads(str(raw)) if raw else None

    def ping(self) -> bool:
        try:
            return bool(self._redis.ping())
        except redis.RedisError:
            return False

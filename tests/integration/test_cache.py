"""Knowledge-cache behaviour, run against the in-process cache and a real Redis server."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from opsassist.cache.base import CachedAnswer, KnowledgeCache


@pytest.fixture(params=["memory", "redis"])
def cache(request: pytest.FixtureRequest) -> Iterator[KnowledgeCache]:
    if request.param == "memory":
        from opsassist.cache.memory import MemoryKnowledgeCache

        yield MemoryKnowledgeCache()
        return
    from opsassist.cache.redis import RedisKnowledgeCache

    url = request.getfixturevalue("redis_url")
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    redis_cache = RedisKnowledgeCache(url, prefix)
    assert redis_cache.ping()
    yield redis_cache
    client = redis_cache._redis
    for key in client.scan_iter(match=f"{prefix}:*"):
        client.delete(key)


def _answer(question: str, version: str, sources: list[str]) -> CachedAnswer:
    return CachedAnswer(
        question=question, answer=f"answer to {question}", sources=sources, index_version=version
    )


def test_answer_hit_is_keyed_by_normalised_question_and_version(cache: KnowledgeCache) -> None:
    cache.put_answer(_answer("Pod keeps restarting?", "runbooks-v0001", ["k/A.md"]), 60)
    hit = cache.get_answer("pod keeps   restarting", "runbooks-v0001")
    assert hit is not None and hit.answer == "answer to Pod keeps restarting?"
    assert cache.get_answer("pod keeps restarting", "runbooks-v0002") is None
    assert cache.get_answer("etcd has no leader", "runbooks-v0001") is None


def test_ttl_expires_answers(cache: KnowledgeCache) -> None:
    cache.put_answer(_answer("short lived", "v-v0001", ["a.md"]), 1)
    assert cache.get_answer("short lived", "v-v0001") is not None
    time.sleep(2.1)
    assert cache.get_answer("short lived", "v-v0001") is None


def test_carry_over_keeps_unrelated_and_invalidates_changed(cache: KnowledgeCache) -> None:
    cache.put_answer(_answer("q1", "r-v0001", ["k/A.md"]), 300)
    cache.put_answer(_answer("q2", "r-v0001", ["k/B.md", "k/C.md"]), 300)
    cache.put_answer(_answer("q3", "r-v0001", ["k/C.md"]), 300)
    kept, dropped = cache.carry_over("r-v0001", "r-v0002", ["k/C.md"])
    assert (kept, dropped) == (1, 2)
    assert cache.get_answer("q1", "r-v0002") is not None
    assert cache.get_answer("q2", "r-v0002") is None
    assert cache.get_answer("q3", "r-v0002") is None
    assert cache.get_answer("q1", "r-v0001") is None  # moved, not copied


def test_invalidate_sources(cache: KnowledgeCache) -> None:
    cache.put_answer(_answer("q1", "r-v0001", ["k/A.md"]), 300)
    cache.put_answer(_answer("q2", "r-v0001", ["k/B.md"]), 300)
    assert cache.invalidate_sources("r-v0001", ["k/A.md"]) == 1
    assert cache.get_answer("q1", "r-v0001") is None
    assert cache.get_answer("q2", "r-v0001") is not None


def test_knowledge_pack_is_versioned(cache: KnowledgeCache) -> None:
    cache.put_pack("r-v0001", {"a.md": {"title": "A"}, "b.md": {"title": "B"}})
    cache.put_pack("r-v0002", {"a.md": {"title": "A2"}})
    assert cache.pack_version() == "r-v0002"
    assert cache.get_pack() == {"a.md": {"title": "A2"}}
    assert cache.get_pack(["a.md", "missing.md"]) == {"a.md": {"title": "A2"}}


def test_popular_questions_and_retrieval_warmup(cache: KnowledgeCache) -> None:
    for question in ["etcd no leader", "Etcd no leader?", "disk full", "etcd no leader"]:
        cache.record_question(question)
    popular = cache.popular_questions(5)
    assert popular[0][1] == 3.0 and popular[0][0].lower().startswith("etcd no leader")
    assert popular[1] == ("disk full", 1.0)
    cache.put_retrieval("disk full", "r-v0001", [{"source": "node/Disk.md"}], 60)
    assert cache.get_retrieval("Disk full!", "r-v0001") == [{"source": "node/Disk.md"}]
    assert cache.get_retrieval("disk full", "r-v0002") is None

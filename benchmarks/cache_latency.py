"""CAG cache-hit latency: ``KnowledgeCache.get_answer`` on a real Redis (and in-process), with a
raw ``redis GET`` of the same key in the same run as the baseline. Target: hit p95 <= 5 ms.

Needs Redis from ``scripts/services up redis`` (port from OPSASSIST_REDIS_PORT, default 16379).

    .venv/bin/python -m benchmarks.cache_latency [--n 5000] [--json]
"""

from __future__ import annotations

import argparse
import os
import uuid

from benchmarks._common import emit, machine, summary, time_calls
from opsassist.cache.base import CachedAnswer, question_key
from opsassist.cache.memory import MemoryKnowledgeCache
from opsassist.cache.redis import RedisKnowledgeCache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    url = f"redis://127.0.0.1:{os.environ.get('OPSASSIST_REDIS_PORT', '16379')}/14"
    prefix = f"bench-{uuid.uuid4().hex[:6]}"
    redis_cache = RedisKnowledgeCache(url, prefix)
    memory_cache = MemoryKnowledgeCache()
    questions = [f"why is payments pod {i} crash looping?" for i in range(200)]
    answer = "Check the pod events and logs. " * 40  # ~1.2 kB, a realistic cached answer
    for cache in (redis_cache, memory_cache):
        for q in questions:
            cache.put_answer(
                CachedAnswer(q, answer, ["kubernetes/KubePodCrashLooping.md"], "runbooks-v0001"),
                600,
            )
    raw = redis_cache._redis
    keys = [f"{prefix}:answer:runbooks-v0001:{question_key(q)}" for q in questions]

    def redis_hit(i: int) -> None:
        assert redis_cache.get_answer(questions[i % 200].upper(), "runbooks-v0001") is not None

    def memory_hit(i: int) -> None:
        assert memory_cache.get_answer(questions[i % 200], "runbooks-v0001") is not None

    def raw_get(i: int) -> None:
        assert raw.get(keys[i % 200]) is not None

    results = [
        summary("redis get_answer (hit)", time_calls(redis_hit, args.n, 200)),
        summary("baseline: raw redis GET", time_calls(raw_get, args.n, 200)),
        summary("memory get_answer (hit)", time_calls(memory_hit, args.n, 200)),
    ]
    for key in raw.scan_iter(match=f"{prefix}:*"):
        raw.delete(key)
    report = {
        "benchmark": "cache_latency",
        "machine": machine(),
        "results": results,
        "ratio_get_answer_vs_raw_get_p50": round(results[0]["p50_ms"] / results[1]["p50_ms"], 2),
    }
    if args.json:
        emit(report, True)
        return
    print(f"{'measure':28} {'p50 ms':>8} {'p95 ms':>8} {'mean ms':>8}")
    for row in results:
        print(f"{row['name']:28} {row['p50_ms']:8.3f} {row['p95_ms']:8.3f} {row['mean_ms']:8.3f}")
    print(
        f"ratio get_answer / raw GET, p50: {report['ratio_get_answer_vs_raw_get_p50']} "
        "(target: hit p95 <= 5 ms)"
    )


if __name__ == "__main__":
    main()

"""Small helpers shared by the benchmark scripts (timing and percentile printing)."""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def time_calls(fn: Callable[[int], Any], n: int, warmup: int = 10) -> list[float]:
    """Milliseconds per call of fn(i) for i in range(n), after a warm-up."""
    for i in range(warmup):
        fn(i)
    out = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - start) * 1000)
    return out


def summary(name: str, millis: Sequence[float]) -> dict[str, Any]:
    return {
        "name": name,
        "n": len(millis),
        "p50_ms": round(percentile(millis, 50), 3),
        "p95_ms": round(percentile(millis, 95), 3),
        "mean_ms": round(statistics.fmean(millis), 3),
    }


def machine() -> dict[str, Any]:
    """Where the figures were taken, with the speed of one core right now (shared virtual
    machines vary from day to day: compare figures across runs against this)."""
    import os

    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "host": platform.node(),
        "load_average": load_average(),
        "core_speed_ms": core_speed_ms(),
    }


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages: other work sharing the cores."""
    import os

    return [round(x, 2) for x in os.getloadavg()]


def core_speed_ms(n: int = 2_000_000) -> float:
    """Milliseconds for a fixed pure-Python loop (best of three): lower is a faster core."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for i in range(n):
            total += i
        best = min(best, time.perf_counter() - started)
    return round(best * 1000, 1)


def _spin(n: int) -> float:
    started = time.perf_counter()
    total = 0
    for i in range(n):
        total += i
    return time.perf_counter() - started


def two_core_ceiling(n: int = 20_000_000, repeats: int = 3) -> dict[str, Any]:
    """How much faster two processes finish two equal pure-Python loops than one process does,
    best of ``repeats``: the scaling this machine itself allows from one core to two (below 2.0
    when its virtual cores share a physical core, caches or memory bandwidth)."""
    import multiprocessing

    ratios = []
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.map(_spin, [1000, 1000])  # workers started before timing
        for _ in range(repeats):
            one = _spin(n)
            started = time.perf_counter()
            pool.map(_spin, [n, n])
            two = time.perf_counter() - started
            ratios.append(2 * one / two)
    return {"ratio": round(max(ratios), 2), "runs": [round(r, 2) for r in ratios]}


def emit(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2))

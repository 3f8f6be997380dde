"""Prometheus metrics of the chat server, in a registry per app (``GET /metrics``).

- ``opsassist_http_request_duration_seconds{route,method,status}``: whole request (streams: to
  the last byte);
- ``opsassist_retrieval_duration_seconds``, ``opsassist_generation_duration_seconds{protocol}``;
- ``opsassist_time_to_first_token_seconds{stage}``: ``server`` from request arrival to the first
  answer text sent, ``model`` from the model call to its first token;
- ``opsassist_answer_cache_total{result}`` (hit, miss, bypass) and
  ``opsassist_answer_cache_hit_ratio``;
- ``opsassist_errors_total{kind}``, ``opsassist_degraded_answers_total{reason}``;
- ``opsassist_model_circuit_state`` (0 closed, 1 half-open, 2 open).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# fused scores: RRF tops out near 2 / (rrf_k + 1), weighted fusion at 1.0
_SCORES = (0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0)
_SLOW = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Histogram(
            "opsassist_http_request_duration_seconds",
            "HTTP request latency by route (streams: until the last byte).",
            ["route", "method", "status"],
            buckets=(*_FAST, 30.0, 60.0, 120.0),
            registry=r,
        )
        self.retrieval = Histogram(
            "opsassist_retrieval_duration_seconds",
            "Hybrid retrieval latency (runbooks and signals) per question.",
            buckets=_FAST,
            registry=r,
        )
        self.generation = Histogram(
            "opsassist_generation_duration_seconds",
            "Model call latency, whole answer.",
            ["protocol"],
            buckets=_SLOW,
            registry=r,
        )
        self.ttft = Histogram(
            "opsassist_time_to_first_token_seconds",
            "Time to first answer text: server (from request arrival) and model (from its call).",
            ["stage"],
            buckets=(*_FAST, 20.0, 30.0, 60.0),
            registry=r,
        )
        self.cache = Counter(
            "opsassist_answer_cache",
            "Answer-cache lookups by result (hit, miss, bypass).",
            ["result"],
            registry=r,
        )
        self.errors = Counter(
            "opsassist_errors", "Errors by kind (model, index, cache, ...).", ["kind"], registry=r
        )
        self.degraded = Counter(
            "opsassist_degraded_answers",
            "Answers given without the model (reason: model, index).",
            ["reason"],
            registry=r,
        )
        self.circuit = Gauge(
            "opsassist_model_circuit_state",
            "Model circuit breaker: 0 closed, 1 half-open, 2 open.",
            registry=r,
        )
        self.hit_ratio = Gauge(
            "opsassist_answer_cache_hit_ratio",
            "Answer-cache hits / (hits + misses) since start.",
            registry=r,
        )
        self.cached_answer = Histogram(
            "opsassist_cached_answer_duration_seconds",
            "Request arrival to a cached answer sent (answer-cache hits only).",
            buckets=_FAST,
            registry=r,
        )
        self.top_score = Histogram(
            "opsassist_retrieval_top_score",
            "Fused score of the best hit per question and source type.",
            ["source_type"],
            buckets=_SCORES,
            registry=r,
        )
        self.tokens = Counter(
            "opsassist_generation_tokens",
            "Tokens the model reported in its usage (kind: prompt, completion).",
            ["kind"],
            registry=r,
        )
        self._lookups = {"hit": 0, "miss": 0, "bypass": 0}
        self.hit_ratio.set_function(self._hit_ratio)
        for result in self._lookups:
            self.cache.labels(result)

    def record_cache(self, result: str) -> None:
        self.cache.labels(result).inc()
        self._lookups[result] = self._lookups.get(result, 0) + 1

    def _hit_ratio(self) -> float:
        hits, misses = self._lookups["hit"], self._lookups["miss"]
        return hits / (hits + misses) if hits + misses else 0.0

    def track_circuit(self, state: Callable[[], int]) -> None:
        self.circuit.set_function(lambda: float(state()))

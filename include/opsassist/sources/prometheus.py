"""Prometheus source: range queries of a configured set of PromQL expressions on a fixed step.

Each poll asks ``/api/v1/query_range`` for every expression (``OPSASSIST_SIGNALS_PROMQL``, name
-> PromQL) from the start of the window holding the last evaluated time, minus the anomaly
baseline, to now (both aligned to the step, so every run sees the same grid). One record per
expression carries the whole result; its stream is ``prometheus:<name>`` and its offset the
evaluated end time (epoch seconds), committed after the documents are indexed, so a re-run
re-evaluates the still-open window and continues where the last committed run stopped. After a
downtime it catches up at most ``max_windows`` windows per poll (Prometheus refuses more than
11,000 points per series), so a long gap is filled over several polls, not skipped.

A query Prometheus rejects (HTTP 400/422: bad PromQL, too many points) is dead-lettered with the
error and the expression's position moves on; an unreachable server raises (the task retries).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from opsassist.logs import get_logger
from opsassist.sources.base import DeadLetter, RawRecord, append_dead_letters

log = get_logger(__name__)
REASON_QUERY = "query failed"


class PrometheusSource:
    """Range queries on a step grid; see the module docstring."""

    name = "prometheus"

    def __init__(
        self,
        url: str,
        queries: Mapping[str, str],
        state_path: Path,
        deadletter_path: Path,
        *,
        step_seconds: int = 15,
        window_seconds: int = 300,
        baseline_seconds: int = 3600,
        max_windows: int = 24,
        timeout: float = 30.0,
        clock: Callable[[], dt.datetime] | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        self.queries = dict(sorted(queries.items()))
        self.state_path = state_path
        self.deadletter_path = deadletter_path
        self.step = step_seconds
        self.window = window_seconds
        self.baseline = baseline_seconds
        self.max_windows = max_windows
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.client = client or httpx.Client(base_url=url.rstrip("/"), timeout=timeout)
        self._committed: dict[str, int] = self._load()
        self._cursor = dict(self._committed)

    def _load(self) -> dict[str, int]:
        try:
            return {k: int(v) for k, v in json.loads(self.state_path.read_text()).items()}
        except FileNotFoundError:
            return {}

    def _save(self) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._committed, indent=1, sort_keys=True))
        os.replace(tmp, self.state_path)

    def query_range(self, promql: str, start: int, end: int) -> dict[str, Any]:
        """The ``data`` of a range query; :class:`ValueError` if Prometheus rejects the query."""
        response = self.client.get(
            "/api/v1/query_range",
            params={"query": promql, "start": start, "end": end, "step": self.step},
        )
        if response.status_code in (400, 422):
            try:
                error = response.json().get("error", response.text)
            except ValueError:
                error = response.text
            raise ValueError(str(error)[:500])
        response.raise_for_status()
        body = response.json()
        if body.get("status") != "success":
            raise ValueError(str(body.get("error", body))[:500])
        data: dict[str, Any] = body["data"]
        return data

    def poll(self, max_records: int, timeout: float = 0.0) -> list[RawRecord]:
        """One record per expression with new steps since its last position (none: up to date)."""
        now = self.clock()
        aligned = int(now.timestamp()) // self.step * self.step
        out: list[RawRecord] = []
        for name, promql in self.queries.items():
            if len(out) >= max_records:
                break
            last = self._cursor.get(name)
            if last is not None and aligned <= last:
                continue
            first = last if last is not None else aligned - self.window
            evaluate_from = first // self.window * self.window
            end = min(aligned, evaluate_from + self.max_windows * self.window)
            payload: dict[str, Any] = {
                "name": name,
                "promql": promql,
                "step": self.step,
                "evaluate_from": evaluate_from,
                "end": end,
            }
            try:
                payload["data"] = self.query_range(promql, evaluate_from - self.baseline, end)
            except ValueError as exc:
                payload["error"] = str(exc)
            out.append(
                RawRecord(
                    kind="metric_range",
                    payload=json.dumps(payload).encode(),
                    stream=f"prometheus:{name}",
                    offset=last or 0,
                    next_offset=end,
                    received=now,
                    origin=name,
                    hint=name,
                )
            )
            self._cursor[name] = end
        return out

    def dead_letter(self, letters: Sequence[DeadLetter]) -> None:
        append_dead_letters(self.deadletter_path, letters, _dead_letter_fields, ensure_ascii=True)

    def commit(self, positions: Mapping[str, int]) -> None:
        for stream, offset in positions.items():
            prefix, _, name = stream.partition(":")
            if prefix == "prometheus":
                self._committed[name] = max(self._committed.get(name, 0), int(offset))
        self._save()

    def close(self) -> None:
        self.client.close()


def _dead_letter_fields(letter: DeadLetter) -> dict[str, Any]:
    """The query record without its (possibly large) result data."""
    payload: dict[str, Any] = json.loads(letter.record.payload)
    payload.pop("data", None)
    return payload

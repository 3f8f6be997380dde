"""Metric samples and series, normalised to a fixed step.

Samples arrive as JSON messages in one of three shapes:

* prometheus-kafka-adapter: ``{"name": "up", "labels": {"__name__": "up", ...}, "value": "1",
  "timestamp": "2024-01-01T10:00:00Z"}``;
* a Prometheus instant-vector element: ``{"metric": {"__name__": "up", ...}, "value": [1704103200,
  "1"]}``;
* Telegraf's JSON serializer: ``{"name": "cpu", "tags": {...}, "fields": {"usage_idle": 98.1},
  "timestamp": 1704103200}`` (one sample per numeric field, named ``cpu_usage_idle``).

Series from the Prometheus HTTP API (``query_range``) are already on a step grid. A *series* is
identified by its selector text, ``name{label="value",...}`` with labels sorted, which is also the
PromQL that selects it. Normalising to a step keeps, per step bucket ``[t, t + step)``, the
latest sample (ties: the larger value), so the result does not depend on arrival order.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Iterable, Mapping
from typing import Any

from opsassist.parsing.logs import (
    REASON_NOT_OBJECT,
    BadRecord,
    decode_payload,
    load_json_object,
    parse_time_value,
)

REASON_NOT_METRIC = "not a metric sample"
REASON_NOT_FINITE = "non-finite value"

Labels = tuple[tuple[str, str], ...]
Points = dict[int, tuple[int, float]]  # step start (epoch s) -> (sample time in ms, value)


def selector(name: str, labels: Labels) -> str:
    """``name{a="x",b="y"}`` with labels sorted and quotes escaped (``name`` alone if none)."""
    body = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in labels
    )
    return f"{name}{{{body}}}" if body else name


@dataclasses.dataclass(frozen=True, slots=True)
class MetricSample:
    name: str
    labels: Labels
    timestamp: dt.datetime
    value: float

    @property
    def series(self) -> str:
        return selector(self.name, self.labels)


def _labels(raw: Any, drop: tuple[str, ...] = ("__name__",)) -> Labels:
    if not isinstance(raw, Mapping):
        return ()
    return tuple(sorted((str(k), str(v)) for k, v in raw.items() if k not in drop))


def _number(value: Any) -> float:
    if isinstance(value, bool):
        return float(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BadRecord(REASON_NOT_METRIC, f"value {value!r} is not a number") from None
    if not math.isfinite(number):
        raise BadRecord(REASON_NOT_FINITE, str(value))
    return number


def parse_metric_object(obj: Mapping[str, Any], *, received: dt.datetime) -> list[MetricSample]:
    """The samples of one decoded JSON message (see the module docstring for the shapes)."""
    fallback = received.astimezone(dt.UTC)
    if isinstance(obj.get("fields"), Mapping):  # Telegraf
        name = str(obj.get("name") or "")
        if not name:
            raise BadRecord(REASON_NOT_METRIC, "Telegraf metric without a name")
        when = parse_time_value(obj.get("timestamp")) or fallback
        labels = _labels(obj.get("tags"))
        samples = [
            MetricSample(f"{name}_{field}", labels, when, _number(value))
            for field, value in sorted(obj["fields"].items())
            if isinstance(value, int | float) and not isinstance(value, bool)
        ]
        if not samples:
            raise BadRecord(REASON_NOT_METRIC, "Telegraf metric without numeric fields")
        return samples
    if isinstance(obj.get("metric"), Mapping) and isinstance(obj.get("value"), list):
        metric = obj["metric"]
        name = str(metric.get("__name__") or obj.get("name") or "")
        pair = obj["value"]
        if not name or len(pair) != 2:
            raise BadRecord(REASON_NOT_METRIC, "instant-vector element without name or value")
        when = parse_time_value(pair[0]) or fallback
        return [MetricSample(name, _labels(metric), when, _number(pair[1]))]
    labels_raw = obj.get("labels") if isinstance(obj.get("labels"), Mapping) else {}
    assert isinstance(labels_raw, Mapping)
    name = str(obj.get("name") or obj.get("__name__") or labels_raw.get("__name__") or "")
    if not name or "value" not in obj:
        raise BadRecord(REASON_NOT_METRIC, "no name or value")
    when = parse_time_value(obj.get("timestamp")) or fallback
    return [MetricSample(name, _labels(labels_raw), when, _number(obj["value"]))]


def parse_metric(
    payload: bytes | str, *, received: dt.datetime, max_bytes: int = 65536
) -> list[MetricSample]:
    """The samples of one message or JSONL line; :class:`BadRecord` if there are none."""
    text = decode_payload(payload, max_bytes)
    obj = load_json_object(text)
    if obj is None:
        raise BadRecord(REASON_NOT_OBJECT, "a metric sample must be a JSON object")
    return parse_metric_object(obj, received=received)


def step_start(timestamp: dt.datetime | float, step: int) -> int:
    """Start (epoch seconds) of the step bucket holding ``timestamp``."""
    seconds = timestamp.timestamp() if isinstance(timestamp, dt.datetime) else float(timestamp)
    return int(seconds // step) * step


def add_point(points: Points, when_ms: int, value: float, step: int) -> None:
    """Put one sample into its step bucket, keeping the latest (ties: larger value)."""
    bucket = (when_ms // 1000) // step * step
    current = points.get(bucket)
    if current is None or (when_ms, value) > current:
        points[bucket] = (when_ms, value)


def merge_points(into: Points, other: Mapping[int, tuple[int, float]]) -> None:
    for bucket, candidate in other.items():
        current = into.get(bucket)
        if current is None or candidate > current:
            into[bucket] = candidate


def normalise(samples: Iterable[MetricSample], step: int) -> dict[str, Points]:
    """Samples grouped by series and put on the step grid (order of the input does not matter)."""
    series: dict[str, Points] = {}
    for sample in samples:
        points = series.setdefault(sample.series, {})
        add_point(points, round(sample.timestamp.timestamp() * 1000), sample.value, step)
    return series


@dataclasses.dataclass(frozen=True, slots=True)
class RangeSeries:
    """One series of a Prometheus range query: labels and values on the query's step grid."""

    name: str
    labels: Labels
    values: dict[int, float]

    @property
    def series(self) -> str:
        return selector(self.name, self.labels)


def parse_range_result(data: Mapping[str, Any], fallback_name: str) -> list[RangeSeries]:
    """Series of a ``/api/v1/query_range`` ``data`` object (matrix; NaN and Inf points dropped:
    Prometheus returns them for ``0/0`` and they carry no level to compare)."""
    if data.get("resultType") not in ("matrix", None):
        raise BadRecord(REASON_NOT_METRIC, f"result type {data.get('resultType')!r}")
    out: list[RangeSeries] = []
    for item in data.get("result") or []:
        metric = item.get("metric") or {}
        values: dict[int, float] = {}
        for when, raw in item.get("values") or []:
            try:
                number = float(raw)
            except (TypeError, ValueError):
                continue
            if math.isfinite(number):
                values[int(float(when))] = number
        name = str(metric.get("__name__") or fallback_name)
        out.append(RangeSeries(name, _labels(metric), values))
    return sorted(out, key=lambda s: s.series)

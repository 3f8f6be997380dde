"""Signal documents: log-template windows, metric anomaly summaries and Kubernetes event digests.

Pure functions from parsed records (:mod:`opsassist.parsing`) to :class:`~opsassist.documents.Chunk`
objects, independent of where the records came from. The streaming ingest
(:mod:`opsassist.pipelines.signals`) keeps the window aggregates between batches and calls the
``*_window_documents`` functions; a batch job (Spark) can call the ``build_*_documents`` functions
on all records at once. Both give the same documents and ids for the same records, because:

* windows are fixed, epoch-aligned intervals of ``window_seconds`` in event time;
* every aggregate merges exactly (sums, min/max, k smallest examples; see
  :mod:`opsassist.mining.windows`) and templates are mined in frequency order;
* the text is a function of the aggregate only (no wall-clock time, no source names), and ids
  come from :func:`opsassist.documents.make_chunk`.

Documents
    ``log``: one per (service, window, template): "template T occurred 412 times (x20.6 vs
    previous window), first at ..., last at ..., examples ...". Source ``<service>/<template id>``.
    ``metric``: one per (series, window) with at least one point whose robust z-score (median
    and MAD of the baseline before the window) reaches the threshold: the numbers, the PromQL and
    the time range. Source: the series selector (``<name>{labels}``).
    ``event``: one per (namespace, object, reason, type, window): how often it was reported, the
    count Kubernetes gives, first/last time, messages. Source ``<namespace>/<kind>/<name>``.

Every document has ``timestamp`` (first occurrence / first anomalous point) and
``end_timestamp`` (last one) and the window as its ``section``
(``2026-01-01T10:05:00Z/2026-01-01T10:10:00Z``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opsassist.documents import Chunk, make_chunk
from opsassist.mining.templates import MinerConfig
from opsassist.mining.windows import (
    Example,
    TemplateWindow,
    previous_counts,
    smallest,
)
from opsassist.parsing.events import K8sEvent
from opsassist.parsing.logs import LogRecord
from opsassist.parsing.metrics import MetricSample, Points, RangeSeries, add_point, selector

EXAMPLE_CHARS = 300
HEADLINE_CHARS = 600
TITLE_CHARS = 120


@dataclasses.dataclass(frozen=True)
class SignalConfig:
    """Everything the documents depend on (the same values must be used to reproduce them)."""

    window_seconds: int = 300
    examples: int = 3
    max_sequences: int = 2000
    metric_step_seconds: int = 15
    baseline_seconds: int = 3600
    anomaly_z: float = 3.5
    min_baseline_points: int = 10
    miner: MinerConfig = dataclasses.field(default_factory=MinerConfig)

    @property
    def baseline_points_required(self) -> int:
        """Points a baseline needs before a window is judged: half the baseline's steps."""
        steps = self.baseline_seconds // max(1, self.metric_step_seconds)
        return max(self.min_baseline_points, steps // 2)

    @classmethod
    def from_settings(cls, settings: Any) -> SignalConfig:
        return cls(
            window_seconds=settings.signals_window_seconds,
            examples=settings.signals_examples,
            max_sequences=settings.signals_max_sequences,
            metric_step_seconds=settings.signals_metric_step_seconds,
            baseline_seconds=settings.signals_metric_baseline_seconds,
            anomaly_z=settings.signals_anomaly_z,
        )


# --- time helpers --------------------------------------------------------------------------------
def epoch_ms(when: dt.datetime) -> int:
    return round(when.timestamp() * 1000)


def from_ms(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


def window_start(when: dt.datetime | int, window_seconds: int) -> int:
    """Start (epoch seconds) of the window holding ``when`` (a datetime or epoch milliseconds)."""
    ms = epoch_ms(when) if isinstance(when, dt.datetime) else int(when)
    return (ms // 1000) // window_seconds * window_seconds


def _iso(seconds: int | float) -> str:
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def window_section(start: int, window_seconds: int) -> str:
    return f"{_iso(start)}/{_iso(start + window_seconds)}"


def _clock(ms: int) -> str:
    when = from_ms(ms)
    return when.strftime("%H:%M:%S.") + f"{when.microsecond // 1000:03d}"


def _span(start: int, window_seconds: int) -> str:
    begin = dt.datetime.fromtimestamp(start, tz=dt.UTC)
    end = dt.datetime.fromtimestamp(start + window_seconds, tz=dt.UTC)
    return f"between {begin:%H:%M:%S} and {end:%H:%M:%S} UTC on {begin:%Y-%m-%d}"


def _num(value: float) -> str:
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.4g}"


def _times(count: int) -> str:
    return "once" if count == 1 else f"{count} times"


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _examples(examples: Sequence[Example]) -> list[str]:
    return [f"- {_clip(line, EXAMPLE_CHARS)}" for _, line in examples]


# --- logs ----------------------------------------------------------------------------------------
def aggregate_logs(
    records: Iterable[LogRecord], config: SignalConfig
) -> dict[tuple[str, int], TemplateWindow]:
    """Records into template windows keyed by (service, window start)."""
    windows: dict[tuple[str, int], TemplateWindow] = {}
    for record in records:
        add_log(windows, record, config)
    return windows


def add_log(
    windows: dict[tuple[str, int], TemplateWindow], record: LogRecord, config: SignalConfig
) -> tuple[str, int]:
    """Add one record to its window (created if needed); returns the window key."""
    when = epoch_ms(record.timestamp)
    key = (record.service, window_start(when, config.window_seconds))
    window = windows.get(key)
    if window is None:
        window = windows[key] = TemplateWindow(config.max_sequences, config.examples)
    window.add(config.miner.tokens(record.message), when, record.level, record.line)
    return key


def _levels(levels: Mapping[str, int]) -> str:
    order = {"FATAL": 0, "ERROR": 1, "WARN": 2, "INFO": 3, "DEBUG": 4}
    ranked = sorted(levels.items(), key=lambda kv: (order.get(kv[0], 9), kv[0]))
    return ", ".join(f"{level} {n}" for level, n in ranked)


def _worst_level(levels: Mapping[str, int]) -> str:
    for level in ("FATAL", "ERROR", "WARN", "INFO", "DEBUG"):
        if levels.get(level):
            return level
    return ""


def log_window_documents(
    service: str,
    start: int,
    window: TemplateWindow,
    previous: TemplateWindow | None,
    config: SignalConfig,
) -> list[Chunk]:
    """One document per template of one service's window (``previous``: the window before)."""
    templates, miner = window.mine(config.miner)
    before = previous_counts(miner, previous)
    section = window_section(start, config.window_seconds)
    span = _span(start, config.window_seconds)
    docs: list[Chunk] = []
    for template in templates:
        level = _worst_level(template.levels)
        prior = before.get(template.template_id, 0)
        if previous is None:
            trend = "no lines from this service in the previous window"
        elif prior == 0:
            trend = "new: not seen in the previous window"
        else:
            trend = f"x{template.count / prior:.3g} vs previous window: {prior}"
        shown = _clip(template.text, HEADLINE_CHARS)
        headline = f"[{service}] {level + ' ' if level else ''}log template: {shown}"
        lines = [
            headline,
            f"Occurred {_times(template.count)} {span} ({trend}); "
            f"first at {_clock(template.first_ms)}, last at {_clock(template.last_ms)}.",
        ]
        if template.levels:
            lines.append(f"Levels: {_levels(template.levels)}.")
        lines.append("Examples:")
        lines.extend(_examples(template.examples))
        docs.append(
            make_chunk(
                source_type="log",
                source=f"{service}/{template.template_id}",
                title=_clip(f"{service}: {template.text}", TITLE_CHARS),
                section=section,
                text="\n".join(lines),
                timestamp=from_ms(template.first_ms),
                end_timestamp=from_ms(template.last_ms),
                metadata={
                    "service": service,
                    "template_id": template.template_id,
                    "template": _clip(template.text, 2 * HEADLINE_CHARS),
                    "count": template.count,
                    "previous_count": None if previous is None else prior,
                    "levels": template.levels,
                    "window_start": _iso(start),
                    "window_seconds": config.window_seconds,
                },
            )
        )
    if window.overflow.count:
        overflow = window.overflow
        docs.append(
            make_chunk(
                source_type="log",
                source=f"{service}/overflow",
                title=_clip(f"{service}: lines beyond the template budget", TITLE_CHARS),
                section=section,
                text="\n".join(
                    [
                        f"[{service}] log lines not templated (over {config.max_sequences} "
                        "distinct messages in the window)",
                        f"{overflow.count} lines {span}; first at {_clock(overflow.first_ms)}, "
                        f"last at {_clock(overflow.last_ms)}."
                        + (f" Levels: {_levels(overflow.levels)}." if overflow.levels else ""),
                        "Examples:",
                        *_examples(overflow.examples),
                    ]
                ),
                timestamp=from_ms(overflow.first_ms),
                end_timestamp=from_ms(overflow.last_ms),
                metadata={
                    "service": service,
                    "count": overflow.count,
                    "overflow": True,
                    "window_start": _iso(start),
                    "window_seconds": config.window_seconds,
                },
            )
        )
    return docs


def build_log_documents(records: Iterable[LogRecord], config: SignalConfig) -> list[Chunk]:
    """All log documents of a set of records (the batch path; same result as streaming)."""
    windows = aggregate_logs(records, config)
    docs: list[Chunk] = []
    for service, start in sorted(windows):
        previous = windows.get((service, start - config.window_seconds))
        docs.extend(log_window_documents(service, start, windows[service, start], previous, config))
    return docs


# --- Kubernetes events ---------------------------------------------------------------------------
EventKey = tuple[str, str, str, str]  # kind, name, reason, type


@dataclasses.dataclass(slots=True)
class EventStats:
    reports: int = 0
    max_count: int = 0
    first_ms: int = 0
    last_ms: int = 0
    messages: list[Example] = dataclasses.field(default_factory=list)
    reporters: list[str] = dataclasses.field(default_factory=list)

    def merge(self, other: EventStats, k: int) -> None:
        if other.reports == 0:
            return
        if self.reports == 0:
            self.first_ms, self.last_ms = other.first_ms, other.last_ms
        else:
            self.first_ms = min(self.first_ms, other.first_ms)
            self.last_ms = max(self.last_ms, other.last_ms)
        self.reports += other.reports
        self.max_count = max(self.max_count, other.max_count)
        self.messages = smallest(self.messages, other.messages, k)
        self.reporters = sorted(set(self.reporters) | set(other.reporters))[:5]

    def to_list(self) -> list[Any]:
        return [
            self.reports,
            self.max_count,
            self.first_ms,
            self.last_ms,
            [list(m) for m in self.messages],
            self.reporters,
        ]

    @classmethod
    def from_list(cls, data: list[Any]) -> EventStats:
        reports, max_count, first, last, messages, reporters = data
        return cls(
            int(reports),
            int(max_count),
            int(first),
            int(last),
            [(int(t), str(m)) for t, m in messages],
            [str(r) for r in reporters],
        )


class EventWindow:
    """Mergeable digest of one namespace's events in one window."""

    def __init__(self, examples: int = 3) -> None:
        self.k = examples
        self.groups: dict[EventKey, EventStats] = {}

    def add(self, event: K8sEvent) -> None:
        when = epoch_ms(event.timestamp)
        single = EventStats(
            1, event.count, when, when, [(when, event.message)] if event.message else [], []
        )
        if event.reporter:
            single.reporters = [event.reporter]
        key = (event.kind, event.name, event.reason, event.type)
        self.groups.setdefault(key, EventStats()).merge(single, self.k)

    def merge(self, other: EventWindow) -> None:
        for key, stats in other.groups.items():
            self.groups.setdefault(key, EventStats()).merge(stats, self.k)

    def to_dict(self) -> dict[str, Any]:
        return {
            "examples": self.k,
            "groups": [[list(k), v.to_list()] for k, v in sorted(self.groups.items())],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EventWindow:
        window = cls(int(data["examples"]))
        for key, value in data["groups"]:
            kind, name, reason, type_ = (str(x) for x in key)
            window.groups[(kind, name, reason, type_)] = EventStats.from_list(value)
        return window


def add_event(
    windows: dict[tuple[str, int], EventWindow], event: K8sEvent, config: SignalConfig
) -> tuple[str, int]:
    key = (event.namespace, window_start(event.timestamp, config.window_seconds))
    window = windows.get(key)
    if window is None:
        window = windows[key] = EventWindow(config.examples)
    window.add(event)
    return key


def event_window_documents(
    namespace: str, start: int, window: EventWindow, config: SignalConfig
) -> list[Chunk]:
    """One digest per (object, reason, type) of one namespace's window."""
    section = window_section(start, config.window_seconds)
    span = _span(start, config.window_seconds)
    docs: list[Chunk] = []
    for (kind, name, reason, type_), stats in sorted(window.groups.items()):
        reporters = f" Reported by {', '.join(stats.reporters)}." if stats.reporters else ""
        lines = [
            f"[k8s event] {type_} {reason} on {kind} {namespace}/{name}",
            f"Reported {_times(stats.reports)} {span} (Kubernetes count {stats.max_count}); "
            f"first at {_clock(stats.first_ms)}, last at {_clock(stats.last_ms)}.{reporters}",
            "Messages:",
            *_examples(stats.messages),
        ]
        docs.append(
            make_chunk(
                source_type="event",
                source=f"{namespace}/{kind}/{name}",
                title=_clip(f"{type_} {reason}: {kind} {namespace}/{name}", TITLE_CHARS),
                section=section,
                text="\n".join(lines),
                timestamp=from_ms(stats.first_ms),
                end_timestamp=from_ms(stats.last_ms),
                metadata={
                    "namespace": namespace,
                    "kind": kind,
                    "name": name,
                    "reason": reason,
                    "type": type_,
                    "reports": stats.reports,
                    "count": stats.max_count,
                    "window_start": _iso(start),
                    "window_seconds": config.window_seconds,
                },
            )
        )
    return docs


def build_event_documents(events: Iterable[K8sEvent], config: SignalConfig) -> list[Chunk]:
    windows: dict[tuple[str, int], EventWindow] = {}
    for event in events:
        add_event(windows, event, config)
    docs: list[Chunk] = []
    for namespace, start in sorted(windows):
        docs.extend(event_window_documents(namespace, start, windows[namespace, start], config))
    return docs


# --- metrics -------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class Anomaly:
    """The anomalous points of one series in one window, against the baseline before it."""

    points: int
    anomalous: int
    above: int
    below: int
    peak_time: int  # epoch seconds
    peak_value: float
    peak_z: float
    first_time: int
    last_time: int
    median: float
    mad: float
    baseline_points: int


def robust_z(value: float, median: float, mad: float, mean_ad: float) -> float:
    """Iglewicz-Hoaglin modified z-score ``0.6745 (x - median) / MAD``.

    If the MAD is 0 (more than half the baseline is one value) the mean absolute deviation is
    used instead (``(x - median) / (1.2533 * meanAD)``); if that is 0 too the baseline is flat and
    any other value is infinitely far from it.
    """
    deviation = value - median
    if mad > 0:
        return 0.6745 * deviation / mad
    if mean_ad > 0:
        return deviation / (1.253314 * mean_ad)
    if deviation == 0:
        return 0.0
    return math.inf if deviation > 0 else -math.inf


def detect_anomaly(
    values: Mapping[int, float],
    start: int,
    end: int,
    *,
    baseline_seconds: int,
    threshold: float,
    min_baseline_points: int = 10,
) -> Anomaly | None:
    """Points in ``[start, end)`` whose robust z-score against ``[start - baseline, start)``
    reaches ``threshold`` (None: no such point, or too little baseline to judge)."""
    baseline = [v for t, v in values.items() if start - baseline_seconds <= t < start]
    current = sorted((t, v) for t, v in values.items() if start <= t < end)
    if len(baseline) < min_baseline_points or not current:
        return None
    median = statistics.median(baseline)
    mad = statistics.median(abs(v - median) for v in baseline)
    mean_ad = statistics.fmean(abs(v - median) for v in baseline)
    scored = [(t, v, robust_z(v, median, mad, mean_ad)) for t, v in current]
    flagged = [(t, v, z) for t, v, z in scored if abs(z) >= threshold]
    if not flagged:
        return None
    peak = max(flagged, key=lambda item: (abs(item[2]), item[0]))
    return Anomaly(
        points=len(current),
        anomalous=len(flagged),
        above=sum(1 for _, _, z in flagged if z > 0),
        below=sum(1 for _, _, z in flagged if z < 0),
        peak_time=peak[0],
        peak_value=peak[1],
        peak_z=peak[2],
        first_time=flagged[0][0],
        last_time=flagged[-1][0],
        median=median,
        mad=mad,
        baseline_points=len(baseline),
    )


def metric_window_documents(
    source: str,
    promql: str,
    start: int,
    values: Mapping[int, float],
    config: SignalConfig,
) -> list[Chunk]:
    """The anomaly summary of one series in one window ([] if nothing is anomalous).

    ``values`` maps step times (epoch seconds) to values and must cover the baseline before
    ``start``; ``source`` is the series selector, ``promql`` the query that produced it.
    """
    end = start + config.window_seconds
    anomaly = detect_anomaly(
        values,
        start,
        end,
        baseline_seconds=config.baseline_seconds,
        threshold=config.anomaly_z,
        min_baseline_points=config.baseline_points_required,
    )
    if anomaly is None:
        return []
    if anomaly.above and anomaly.below:
        direction = "above and below"
    else:
        direction = "above" if anomaly.above else "below"
    flat = anomaly.mad == 0 and math.isinf(anomaly.peak_z)
    baseline = (
        f"the baseline was flat at {_num(anomaly.median)}"
        if flat
        else f"baseline median {_num(anomaly.median)}, MAD {_num(anomaly.mad)}"
    )
    minutes = config.baseline_seconds / 60
    lines = [
        f"[metric] anomaly in {_clip(source, HEADLINE_CHARS)}",
        f"{anomaly.anomalous} of {anomaly.points} points {direction} the baseline "
        f"{_span(start, config.window_seconds)} "
        f"(robust z-score threshold {_num(config.anomaly_z)}).",
        f"Peak {_num(anomaly.peak_value)} at {_clock(anomaly.peak_time * 1000)} "
        f"(robust z-score {_num(anomaly.peak_z)}); {baseline} over the previous "
        f"{minutes:.0f} min ({anomaly.baseline_points} points, "
        f"step {config.metric_step_seconds}s).",
        f"PromQL: {promql}",
    ]
    return [
        make_chunk(
            source_type="metric",
            source=source,
            title=_clip(f"Metric anomaly: {source}", TITLE_CHARS),
            section=window_section(start, config.window_seconds),
            text="\n".join(lines),
            timestamp=dt.datetime.fromtimestamp(anomaly.first_time, tz=dt.UTC),
            end_timestamp=dt.datetime.fromtimestamp(anomaly.last_time, tz=dt.UTC),
            metadata={
                "promql": promql,
                "points": anomaly.points,
                "anomalous": anomaly.anomalous,
                "peak_value": anomaly.peak_value,
                "peak_z": None if math.isinf(anomaly.peak_z) else round(anomaly.peak_z, 4),
                "median": anomaly.median,
                "mad": anomaly.mad,
                "step_seconds": config.metric_step_seconds,
                "baseline_seconds": config.baseline_seconds,
                "window_start": _iso(start),
                "window_seconds": config.window_seconds,
            },
        )
    ]


def point_values(points: Mapping[int, tuple[int, float]]) -> dict[int, float]:
    return {bucket: value for bucket, (_, value) in points.items()}


def build_metric_documents(samples: Iterable[MetricSample], config: SignalConfig) -> list[Chunk]:
    """Anomaly summaries of samples (from Kafka or files) for every window they touch."""
    series: dict[str, Points] = {}
    for sample in samples:
        add_point(
            series.setdefault(sample.series, {}),
            epoch_ms(sample.timestamp),
            sample.value,
            config.metric_step_seconds,
        )
    docs: list[Chunk] = []
    for name in sorted(series):
        values = point_values(series[name])
        starts = sorted({window_start(t * 1000, config.window_seconds) for t in values})
        for start in starts:
            docs.extend(metric_window_documents(name, name, start, values, config))
    return docs


def range_series_source(expression: str, series: RangeSeries) -> str:
    """Source of a Prometheus range series: the expression's name with the series' labels."""
    return selector(expression, series.labels)


# --- embedding text ------------------------------------------------------------------------------
def embedding_text(chunk: Chunk) -> str:
    """What a signal document's vector encodes: its headline (service and template, series, or
    event), plus the PromQL of a metric and the first message of an event.

    Counts, times and example lines are left out: they change with every batch while the meaning
    does not, so an updated window document keeps its vector (the ingest caches vectors by this
    text), and a short text embeds several times faster. BM25 still sees the full text.
    """
    lines = chunk.text.split("\n")
    kept = [lines[0]]
    if chunk.source_type == "metric":
        kept += [line for line in lines if line.startswith("PromQL: ")]
    elif chunk.source_type == "event":
        kept += [line for line in lines if line.startswith("- ")][:1]
    return "\n".join(kept)

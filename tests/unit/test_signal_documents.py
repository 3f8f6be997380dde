"""Signal documents are a function of the records: same records -> same documents and ids,
whatever the order, batching or partitioning; and they say what happened, with the numbers."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random
import re
from pathlib import Path

import pytest

from opsassist.documents import Chunk
from opsassist.mining.windows import TemplateWindow
from opsassist.parsing.events import K8sEvent
from opsassist.parsing.logs import LogRecord, parse_log, retime_line
from opsassist.parsing.metrics import MetricSample
from opsassist.signals import (
    EventWindow,
    SignalConfig,
    aggregate_logs,
    build_event_documents,
    build_log_documents,
    build_metric_documents,
    detect_anomaly,
    embedding_text,
    log_window_documents,
    metric_window_documents,
    robust_z,
    window_start,
)

LOGHUB = Path(__file__).resolve().parents[2].parent / "shared" / "corpora" / "loghub"
UTC = dt.UTC
T0 = dt.datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
CONFIG = SignalConfig(window_seconds=300, examples=3)
SECTION = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def loghub_records(system: str, n: int = 600, span_s: int = 900) -> list[LogRecord]:
    path = LOGHUB / system / f"{system}_2k.log"
    if not path.exists():
        pytest.skip(f"loghub sample not found at {path}")
    lines = path.read_text(encoding="utf-8").splitlines()[:n]
    records = []
    for i, line in enumerate(lines):
        when = T0 + dt.timedelta(seconds=span_s * i / len(lines))
        records.append(parse_log(retime_line(line, when), service=system, received=when))
    return records


def signature(docs: list[Chunk]) -> list[tuple[str, str, str]]:
    return sorted((d.id, d.source, d.text) for d in docs)


def stream_documents(records: list[LogRecord], batches: int, seed: int) -> list[Chunk]:
    """What the streaming ingest does: windows built batch by batch, saved and reloaded as JSON
    between batches, documents rebuilt from the final windows."""
    shuffled = records[:]
    random.Random(seed).shuffle(shuffled)
    state: dict[tuple[str, int], dict[str, object]] = {}
    size = max(1, len(shuffled) // batches)
    for start in range(0, len(shuffled), size):
        partial = aggregate_logs(shuffled[start : start + size], CONFIG)
        for key, window in partial.items():
            if key in state:
                stored = TemplateWindow.from_dict(state[key])
                stored.merge(window)
                window = stored
            state[key] = json.loads(json.dumps(window.to_dict()))
    windows = {k: TemplateWindow.from_dict(v) for k, v in state.items()}
    docs: list[Chunk] = []
    for service, start in sorted(windows):
        previous = windows.get((service, start - CONFIG.window_seconds))
        docs += log_window_documents(service, start, windows[service, start], previous, CONFIG)
    return docs


# --- log template windows ------------------------------------------------------------------------
@pytest.mark.parametrize("system", ["HDFS", "OpenSSH", "Zookeeper", "Apache"])
def test_streaming_in_any_order_and_batching_equals_the_batch_path(system: str) -> None:
    records = loghub_records(system)
    expected = signature(build_log_documents(records, CONFIG))
    assert expected
    for seed, batches in ((1, 1), (2, 7), (3, 60)):
        assert signature(stream_documents(records, batches, seed)) == expected


def test_documents_count_every_line_once_with_times_and_windows() -> None:
    records = loghub_records("HDFS", n=600, span_s=900)  # 3 windows of 5 minutes
    docs = build_log_documents(records, CONFIG)
    assert sum(d.metadata["count"] for d in docs) == len(records)
    assert {d.section for d in docs} == {
        "2026-01-01T10:00:00Z/2026-01-01T10:05:00Z",
        "2026-01-01T10:05:00Z/2026-01-01T10:10:00Z",
        "2026-01-01T10:10:00Z/2026-01-01T10:15:00Z",
    }
    for doc in docs:
        assert doc.source_type == "log"
        assert doc.source == f"HDFS/{doc.metadata['template_id']}"
        assert SECTION.match(doc.section)
        start = dt.datetime.fromisoformat(doc.section.split("/")[0].replace("Z", "+00:00"))
        assert doc.timestamp is not None and doc.end_timestamp is not None
        assert start <= doc.timestamp <= doc.end_timestamp < start + dt.timedelta(minutes=5)
        assert doc.text.startswith("[HDFS] ")
        assert len(doc.id) == 32


def test_trend_against_the_previous_window() -> None:
    def record(minute: float, user: str) -> LogRecord:
        when = T0 + dt.timedelta(minutes=minute)
        line = f"Failed password for invalid user {user} from 10.0.0.{int(minute)} port 22 ssh2"
        return LogRecord(when, "sshd", line, "WARN", "sshd", line)

    records = [record(0.5, "a"), record(1, "b")]  # 2 in the first window
    records += [record(5 + i / 10, f"u{i}") for i in range(41)]  # 41 in the second
    records += [record(6, "x").__class__(T0 + dt.timedelta(minutes=6), "sshd", "Accepted key")]
    docs = {
        d.section[11:16] + d.metadata["template"]: d for d in build_log_documents(records, CONFIG)
    }
    first = docs["10:00Failed password for invalid user <*> from <*> port <*> ssh2"]
    second = docs["10:05Failed password for invalid user <*> from <*> port <*> ssh2"]
    assert "Occurred 2 times" in first.text
    assert "no lines from this service in the previous window" in first.text
    assert "Occurred 41 times" in second.text and "(x20.5 vs previous window: 2)" in second.text
    assert "first at 10:05:00.000, last at 10:09:00.000" in second.text
    assert second.metadata["previous_count"] == 2
    assert "new: not seen in the previous window" in docs["10:05Accepted key"].text
    assert "Levels: WARN 41." in second.text
    assert second.text.count("\n- ") == 3  # the three earliest examples
    assert "Failed password for invalid user u0 from" in second.text


def test_same_window_from_partitions_merges_exactly() -> None:
    records = loghub_records("Spark", n=400, span_s=200)
    halves = [records[0::2], records[1::2]]
    merged = TemplateWindow(CONFIG.max_sequences, CONFIG.examples)
    for half in halves:
        for window in aggregate_logs(half, CONFIG).values():
            merged.merge(window)
    (key, whole), *_ = aggregate_logs(records, CONFIG).items()
    assert merged.to_dict() == whole.to_dict()
    assert signature(log_window_documents("Spark", key[1], merged, None, CONFIG)) == signature(
        log_window_documents("Spark", key[1], whole, None, CONFIG)
    )


def test_template_budget_overflow_is_counted_and_order_independent() -> None:
    config = dataclasses.replace(CONFIG, max_sequences=5)
    records = [
        LogRecord(T0 + dt.timedelta(seconds=i), "svc", f"weird token{chr(97 + i % 26)}{i // 26}x")
        for i in range(120)
    ] + [LogRecord(T0, "svc", "steady message")] * 30
    expected = signature(build_log_documents(records, config))
    for seed in range(3):
        shuffled = records[:]
        random.Random(seed).shuffle(shuffled)
        assert signature(build_log_documents(shuffled, config)) == expected
    docs = build_log_documents(records, config)
    overflow = [d for d in docs if d.source == "svc/overflow"]
    assert len(overflow) == 1
    assert sum(d.metadata["count"] for d in docs) == 150
    assert "log lines not templated (over 5 distinct messages in the window)" in overflow[0].text


def test_ids_depend_on_content_only() -> None:
    records = loghub_records("OpenSSH", n=200, span_s=100)
    first = build_log_documents(records, CONFIG)
    again = build_log_documents(list(reversed(records)), CONFIG)
    assert [d.id for d in first] == [d.id for d in again]
    more = build_log_documents([*records, records[0]], CONFIG)
    assert {d.id for d in more} != {d.id for d in first}  # a changed count is a new document


def test_embedding_text_leaves_out_what_changes_with_every_batch() -> None:
    records = loghub_records("HDFS", n=200, span_s=100)
    before = {d.source: d for d in build_log_documents(records, CONFIG)}
    after = {d.source: d for d in build_log_documents([*records, records[0]], CONFIG)}
    (changed,) = [s for s in before if before[s].id != after[s].id]
    doc, grown = before[changed], after[changed]
    assert doc.text != grown.text and embedding_text(doc) == embedding_text(grown)
    text = embedding_text(doc)
    assert text == doc.text.split("\n")[0] and text.startswith("[HDFS] INFO log template: ")


# --- Kubernetes events ---------------------------------------------------------------------------
def event(minute: float, count: int, reason: str = "BackOff", name: str = "api-0") -> K8sEvent:
    return K8sEvent(
        timestamp=T0 + dt.timedelta(minutes=minute),
        namespace="payments",
        kind="Pod",
        name=name,
        reason=reason,
        type="Warning",
        message=f"Back-off restarting failed container (try {count})",
        count=count,
        uid="u1",
        reporter="kubelet",
    )


def test_event_digest() -> None:
    events = [event(1, 3), event(2, 5), event(4, 9), event(3, 1, "Unhealthy"), event(7, 12)]
    docs = build_event_documents(events, CONFIG)
    assert build_event_documents(list(reversed(events)), CONFIG) == docs
    by_key = {(d.section[11:16], d.metadata["reason"]): d for d in docs}
    backoff = by_key[("10:00", "BackOff")]
    assert backoff.source == "payments/Pod/api-0" and backoff.source_type == "event"
    assert "[k8s event] Warning BackOff on Pod payments/api-0" in backoff.text
    assert "Reported 3 times" in backoff.text and "(Kubernetes count 9)" in backoff.text
    assert "first at 10:01:00.000, last at 10:04:00.000" in backoff.text
    assert "Reported by kubelet." in backoff.text
    assert by_key[("10:05", "BackOff")].metadata["count"] == 12
    window = EventWindow(3)
    for item in events:
        window.add(item)
    assert EventWindow.from_dict(json.loads(json.dumps(window.to_dict()))).to_dict() == (
        window.to_dict()
    )


# --- metric anomalies ----------------------------------------------------------------------------
def test_robust_z() -> None:
    assert robust_z(10.0, 4.0, 2.0, 3.0) == pytest.approx(0.6745 * 3)
    assert robust_z(10.0, 4.0, 0.0, 2.0) == pytest.approx(6 / (1.253314 * 2))
    assert robust_z(5.0, 5.0, 0.0, 0.0) == 0.0
    assert robust_z(6.0, 5.0, 0.0, 0.0) == float("inf")


def series(baseline: list[float], window: list[float], step: int = 15) -> dict[int, float]:
    start = int(T0.timestamp())
    values = {start - step * (len(baseline) - i): v for i, v in enumerate(baseline)}
    values.update({start + step * i: v for i, v in enumerate(window)})
    return values


def test_detect_anomaly_numbers() -> None:
    baseline = [10.0, 11.0, 9.0, 10.0, 12.0, 8.0, 10.0, 11.0, 9.0, 10.0] * 24  # median 10, MAD 1
    values = series(baseline, [10.0, 10.5, 20.0, 9.0, 1.0])
    start = int(T0.timestamp())
    anomaly = detect_anomaly(
        values, start, start + 300, baseline_seconds=3600, threshold=3.5, min_baseline_points=10
    )
    assert anomaly is not None
    assert (anomaly.median, anomaly.mad, anomaly.baseline_points) == (10.0, 1.0, 240)
    assert (anomaly.points, anomaly.anomalous, anomaly.above, anomaly.below) == (5, 2, 1, 1)
    assert anomaly.peak_value == 20.0 and anomaly.peak_z == pytest.approx(6.745)
    assert anomaly.first_time == start + 30 and anomaly.last_time == start + 60
    quiet = series(baseline, [10.0, 11.0, 9.5])
    assert detect_anomaly(quiet, start, start + 300, baseline_seconds=3600, threshold=3.5) is None
    short = series(baseline[:5], [50.0])
    assert detect_anomaly(short, start, start + 300, baseline_seconds=3600, threshold=3.5) is None


def test_metric_document_says_what_when_and_how_much() -> None:
    start = int(T0.timestamp())
    values = series([0.0] * 240, [0.0, 0.0, 100.0, 100.0])
    docs = metric_window_documents(
        'error_rate{job="api"}', "sum(rate(x[1m]))", start, values, CONFIG
    )
    (doc,) = docs
    assert doc.source_type == "metric" and doc.source == 'error_rate{job="api"}'
    assert doc.section == "2026-01-01T10:00:00Z/2026-01-01T10:05:00Z"
    assert "2 of 4 points above the baseline between 10:00:00 and 10:05:00 UTC" in doc.text
    assert "Peak 100 at 10:00:45.000 (robust z-score inf); the baseline was flat at 0" in doc.text
    assert "PromQL: sum(rate(x[1m]))" in doc.text
    assert doc.timestamp == T0 + dt.timedelta(seconds=30)
    assert doc.end_timestamp == T0 + dt.timedelta(seconds=45)
    assert metric_window_documents("s", "q", start, series([0.0] * 240, [0.0]), CONFIG) == []


def test_metric_documents_from_samples_are_order_independent() -> None:
    samples = []
    for i in range(300):
        when = T0 - dt.timedelta(minutes=60) + dt.timedelta(seconds=15 * i)
        value = 0.5 + (i % 7) / 100 + (5.0 if i >= 290 else 0.0)
        samples.append(MetricSample("node_load1", (("instance", "a"),), when, value))
    docs = build_metric_documents(samples, CONFIG)
    assert docs and build_metric_documents(list(reversed(samples)), CONFIG) == docs
    last = docs[-1]
    assert last.source == 'node_load1{instance="a"}' and "above the baseline" in last.text
    assert window_start(last.timestamp or T0, 300) == window_start(
        T0 - dt.timedelta(minutes=60) + dt.timedelta(seconds=15 * 290), 300
    )

"""Signal freshness (event time -> searchable) at a steady rate through the real Kafka broker.

A producer thread sends loghub lines (the eight systems in turn, header time rewritten to the
moment of sending, the rest of the line kept) to a fresh topic at ``--rate`` lines/s for
``--duration`` seconds (default 1,000 lines/s for 120 s) over loopback. The main thread runs the
production path as a consumer/indexer loop: ``KafkaSource`` (manual commits) ->
``SignalIngestor`` (parse, template windows, documents, embed with the real model, Great
Expectations suite, upsert into the embedded LanceDB store, state, commit). A line's freshness
is the moment its batch's index write returned minus its event time; a warm-up batch (model and
suite loading) is left out.

Vectors: a signal document's vector encodes its headline (service + template), cached by text in
memory and in the ingest state, so a running ingest embeds a template once. By default the run
starts from that state: the templates of one cycle of the corpus are embedded before the
producer starts (time printed). ``--cold`` starts with no vectors: the first batches then embed
the ~400 templates of the eight systems, which on a busy 2-core machine takes minutes.

Baseline in the same run: the consumer lag, Kafka append time -> the record is returned by the
consumer's poll (transport plus the time it waited in the consumer while the previous batch was
being indexed), over the same records; the ratio says what the batch's own processing (parse,
documents, embed, validate, index) adds on top. Five of the eight loghub formats have
whole-second timestamps, so event times are rounded down by up to 1 s.

    .venv/bin/python -m benchmarks.signals_freshness [--rate 1000] [--duration 120] [--cold]
        [--json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

SYSTEMS = ("HDFS", "Hadoop", "Spark", "Zookeeper", "OpenSSH", "Linux", "Apache", "OpenStack")
LOGHUB = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "loghub"


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def loghub_lines(per_system: int = 2000) -> list[tuple[str, str]]:
    """(system, line) pairs, the systems interleaved."""
    columns = []
    for system in SYSTEMS:
        path = LOGHUB / system / f"{system}_2k.log"
        lines = path.read_text(encoding="utf-8").splitlines()[:per_system]
        columns.append([(system, line) for line in lines])
    return [pair for row in zip(*columns, strict=False) for pair in row]


class Producer(threading.Thread):
    """Sends lines at a bounded rate, in 10 ms ticks, with event time = send time."""

    def __init__(self, bootstrap: str, topic: str, rate: int, duration: float) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.rate, self.duration = bootstrap, topic, rate, duration
        self.sent = 0
        self.behind_s = 0.0

    def run(self) -> None:
        from confluent_kafka import Producer as KafkaProducer

        from opsassist.parsing.logs import retime_line

        producer = KafkaProducer({"bootstrap.servers": self.bootstrap, "linger.ms": 5})
        lines = loghub_lines()
        tick = 0.01
        per_tick = self.rate * tick
        start = time.monotonic()
        due = 0.0
        while time.monotonic() - start < self.duration:
            due += per_tick
            now = dt.datetime.now(dt.UTC)
            while self.sent < int(due):
                system, line = lines[self.sent % len(lines)]
                value = retime_line(line, now).encode()
                producer.produce(self.topic, key=system.encode(), value=value)
                self.sent += 1
            producer.poll(0)
            next_tick = start + (self.sent / self.rate)
            delay = next_tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                self.behind_s = max(self.behind_s, -delay)
        producer.flush(30)


class TimedSource:
    """Wraps a source to note when each polled record reached the consumer."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.transport: list[float] = []

    def poll(self, max_records: int, timeout: float) -> list[Any]:
        records = self.inner.poll(max_records, timeout)
        now = dt.datetime.now(dt.UTC)
        self.transport.extend((now - r.received).total_seconds() for r in records)
        return list(records)

    def dead_letter(self, letters: Sequence[Any]) -> None:
        self.inner.dead_letter(letters)

    def commit(self, positions: Mapping[str, int]) -> None:
        self.inner.commit(positions)

    def close(self) -> None:
        self.inner.close()


def prewarm(ingestor: Any) -> tuple[int, float]:
    """Embed the templates of one full cycle of the corpus, as a service that has been running
    for a while has; returns (vectors embedded, seconds)."""
    from opsassist.parsing.logs import parse_log, retime_line
    from opsassist.signals import build_log_documents

    started = time.perf_counter()
    now = dt.datetime.now(dt.UTC)
    records = [
        parse_log(retime_line(line, now), service=system, received=now)
        for system, line in loghub_lines()
    ]
    embedded = ingestor.prepare_vectors(build_log_documents(records, ingestor.config))
    return embedded, time.perf_counter() - started


def run(rate: int, duration: float, bootstrap: str, cold: bool = False) -> dict[str, Any]:
    from confluent_kafka import Producer as KafkaProducer

    from opsassist.pipelines.signals import SignalIngestor
    from opsassist.settings import Settings
    from opsassist.sources.kafka import KafkaSource
    from opsassist.stores import get_index_store

    tag = uuid.uuid4().hex[:8]
    topic = f"bench-freshness-{tag}"
    data = Path(tempfile.mkdtemp(prefix="opsassist-freshness-"))
    settings = Settings(data_dir=data, signals_log_topics=topic, signals_kafka_group=f"b-{tag}")
    store = get_index_store(settings)
    ingestor = SignalIngestor(settings, store)
    source = TimedSource(
        KafkaSource.from_config(bootstrap, settings.signals_kafka_group, {topic: "log"})
    )

    # warm-up: one message through the whole path (model, suite, first version, group join)
    warm = KafkaProducer({"bootstrap.servers": bootstrap})
    line = loghub_lines(1)[0][1]
    warm.produce(topic, key=b"warmup", value=line.encode())
    warm.flush(10)
    ingestor.drain(source, budget_seconds=120)
    source.transport.clear()
    prewarmed, prewarm_s = (0, 0.0) if cold else prewarm(ingestor)

    producer = Producer(bootstrap, topic, rate, duration)
    started = time.monotonic()
    producer.start()
    reports = []
    consumed = 0
    while producer.is_alive() or consumed < producer.sent:
        records = source.poll(settings.signals_batch_max_records, 1.0)
        if not records:
            if not producer.is_alive() and time.monotonic() - started > duration + 120:
                break
            continue
        reports.append(ingestor.process(source, records))
        consumed += len(records)
    elapsed = time.monotonic() - started
    producer.join()
    source.close()
    ingestor.close()

    freshness = [f for r in reports for f in r.freshness]
    phases: dict[str, list[float]] = {}
    for report in reports:
        for phase, seconds in report.seconds.items():
            phases.setdefault(phase, []).append(seconds)
    transport_p95 = percentile(source.transport, 95)
    fresh_p95 = percentile(freshness, 95)
    return {
        "benchmark": "signals_freshness",
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "rate_lines_per_s": rate,
        "duration_s": duration,
        "vector_cache": "cold" if cold else f"prewarmed ({prewarmed} vectors, {prewarm_s:.1f} s)",
        "produced": producer.sent,
        "consumed": consumed,
        "producer_max_behind_s": round(producer.behind_s, 3),
        "consume_rate_lines_per_s": round(consumed / elapsed, 1),
        "batches": len(reports),
        "lines_per_batch_mean": round(consumed / max(1, len(reports)), 1),
        "freshness_p50_s": round(percentile(freshness, 50), 3),
        "freshness_p95_s": round(fresh_p95, 3),
        "freshness_p99_s": round(percentile(freshness, 99), 3),
        "freshness_max_s": round(max(freshness, default=float("nan")), 3),
        "target_p95_s": 10.0,
        "baseline_transport_p50_s": round(percentile(source.transport, 50), 3),
        "baseline_transport_p95_s": round(transport_p95, 3),
        "ratio_freshness_vs_transport_p95": round(fresh_p95 / max(transport_p95, 1e-3), 1),
        "batch_phase_mean_s": {k: round(statistics.fmean(v), 4) for k, v in phases.items()},
        "batch_total_p95_s": round(percentile(phases.get("total", [0.0]), 95), 3),
        "documents_upserted": sum(r.upserted for r in reports),
        "per_batch": [
            {
                "lines": r.records,
                "embedded": r.embedded,
                "upserted": r.upserted,
                "seconds": r.seconds.get("total"),
                "freshness_p95_s": r.freshness_p95_s,
            }
            for r in reports
        ],
        "index_rows": store.count(store.current_version(settings.signal_index) or ""),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=1000, help="lines per second")
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of producing")
    parser.add_argument(
        "--bootstrap",
        default=f"127.0.0.1:{os.environ.get('OPSASSIST_KAFKA_PORT', '19092')}",
    )
    parser.add_argument(
        "--cold", action="store_true", help="start with no template vectors embedded yet"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.rate, args.duration, args.bootstrap, args.cold)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"signals freshness: {result['consumed']} lines at {args.rate}/s for {args.duration:.0f} s "
        f"({result['batches']} batches, {result['cpus']} CPUs, load {result['load_average_1m']}, "
        f"vector cache {result['vector_cache']})"
    )
    print(
        f"  event time -> searchable  p50 {result['freshness_p50_s']:.2f} s  "
        f"p95 {result['freshness_p95_s']:.2f} s  p99 {result['freshness_p99_s']:.2f} s  "
        f"max {result['freshness_max_s']:.2f} s  (target p95 <= 10 s)"
    )
    print(
        f"  baseline, consumer lag     p50 {result['baseline_transport_p50_s']:.3f} s  "
        f"p95 {result['baseline_transport_p95_s']:.3f} s  -> ratio p95 "
        f"{result['ratio_freshness_vs_transport_p95']}x"
    )
    print(f"  mean seconds per batch phase: {result['batch_phase_mean_s']}")
    for i, batch in enumerate(result["per_batch"]):
        print(f"  batch {i:3d}: {batch}")


if __name__ == "__main__":
    main()

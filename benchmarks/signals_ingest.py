"""Signal ingest throughput (lines/s) from the real Kafka broker into the signal index.

``--lines`` loghub lines (default 100,000: the eight systems in turn, header times spread over
the last 10 minutes, text kept) are produced to a fresh topic first (not timed). Then the
production path drains the topic from the start, timed: ``KafkaSource`` -> ``SignalIngestor``
(parse, template windows, documents, embed with the real model, Great Expectations suite, upsert
into the embedded LanceDB store, state, dead letters, commit), in batches of
``OPSASSIST_SIGNALS_BATCH_MAX_RECORDS``.

Baseline in the same run, on the same lines: parse + template windows + documents only, in one
process without Kafka, embedding or index (what a Spark job maps over partitions before
writing). The ratio full / baseline shows what transport, embedding, validation and indexing
cost on top of the log processing itself.

As in ``signals_freshness``, the template vectors of one cycle of the corpus are embedded before
the timed part (a running ingest has them); ``--cold`` times a first start instead.

    .venv/bin/python -m benchmarks.signals_ingest [--lines 100000] [--cold] [--json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.signals_freshness import loghub_lines, prewarm


def produce(bootstrap: str, topic: str, lines: int, now: dt.datetime) -> list[tuple[str, bytes]]:
    from confluent_kafka import Producer

    from opsassist.parsing.logs import retime_line

    source = loghub_lines()
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    sent: list[tuple[str, bytes]] = []
    for i in range(lines):
        system, line = source[i % len(source)]
        when = now - dt.timedelta(seconds=600 * (lines - i) / lines)
        value = retime_line(line, when).encode()
        while True:
            try:
                producer.produce(topic, key=system.encode(), value=value)
                break
            except BufferError:
                producer.poll(0.1)
        sent.append((system, value))
    producer.flush(60)
    return sent


def baseline(sent: list[tuple[str, bytes]], now: dt.datetime) -> tuple[float, int]:
    """Seconds for parse + windows + documents over the lines, and the documents made."""
    from opsassist.parsing.logs import parse_log
    from opsassist.signals import SignalConfig, build_log_documents

    config = SignalConfig()
    started = time.perf_counter()
    records = [parse_log(value, service=system, received=now) for system, value in sent]
    docs = build_log_documents(records, config)
    return time.perf_counter() - started, len(docs)


def run(lines: int, bootstrap: str, cold: bool = False) -> dict[str, Any]:
    from opsassist.pipelines.signals import SignalIngestor, summarise
    from opsassist.settings import Settings
    from opsassist.sources.kafka import KafkaSource
    from opsassist.stores import get_index_store

    tag = uuid.uuid4().hex[:8]
    topic = f"bench-ingest-{tag}"
    now = dt.datetime.now(dt.UTC)
    sent = produce(bootstrap, topic, lines, now)

    base_seconds, base_docs = baseline(sent, now)

    data = Path(tempfile.mkdtemp(prefix="opsassist-ingest-"))
    settings = Settings(data_dir=data, signals_log_topics=topic, signals_kafka_group=f"b-{tag}")
    store = get_index_store(settings)
    ingestor = SignalIngestor(settings, store)
    ingestor.dimension  # noqa: B018 - load the model before timing, as a running service has it
    prewarmed, prewarm_s = (0, 0.0) if cold else prewarm(ingestor)
    source = KafkaSource.from_config(bootstrap, settings.signals_kafka_group, {topic: "log"})
    started = time.perf_counter()
    reports = ingestor.drain(source, budget_seconds=3600)
    full_seconds = time.perf_counter() - started
    source.close()
    ingestor.close()
    summary = summarise("kafka", reports)
    phases: dict[str, float] = {}
    for report in reports:
        for phase, seconds in report.seconds.items():
            phases[phase] = phases.get(phase, 0.0) + seconds
    full_rate = summary["accepted"] / full_seconds
    base_rate = lines / base_seconds
    return {
        "benchmark": "signals_ingest",
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "lines": lines,
        "vector_cache": "cold" if cold else f"prewarmed ({prewarmed} vectors, {prewarm_s:.1f} s)",
        "accepted": summary["accepted"],
        "rejected": summary["rejected"],
        "batches": summary["batches"],
        "documents_upserted": summary["upserted"],
        "documents_embedded": summary["embedded"],
        "full_seconds": round(full_seconds, 2),
        "full_lines_per_s": round(full_rate, 1),
        "baseline_parse_mine_documents_seconds": round(base_seconds, 2),
        "baseline_lines_per_s": round(base_rate, 1),
        "baseline_documents": base_docs,
        "ratio_full_vs_baseline": round(full_rate / base_rate, 3),
        "phase_seconds_total": {k: round(v, 2) for k, v in phases.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument(
        "--bootstrap",
        default=f"127.0.0.1:{os.environ.get('OPSASSIST_KAFKA_PORT', '19092')}",
    )
    parser.add_argument(
        "--cold", action="store_true", help="start with no template vectors embedded yet"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.lines, args.bootstrap, args.cold)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"signals ingest: {result['accepted']} of {result['lines']} lines in "
        f"{result['full_seconds']} s, {result['batches']} batches "
        f"({result['cpus']} CPUs, load {result['load_average_1m']}, "
        f"vector cache {result['vector_cache']})"
    )
    print(f"  full path (Kafka -> index)        {result['full_lines_per_s']:>10.1f} lines/s")
    print(f"  baseline (parse + mine + docs)    {result['baseline_lines_per_s']:>10.1f} lines/s")
    print(f"  ratio full / baseline             {result['ratio_full_vs_baseline']:>10.3f}")
    print(f"  seconds per phase (all batches): {result['phase_seconds_total']}")


if __name__ == "__main__":
    main()

"""OpenSearch logs source throughput (lines/s) against the Kafka path, in the same run.

``--lines`` ECS documents (default 100,000: loghub lines of the eight systems in turn as
``message``, ``@timestamp`` spread over the last 30 minutes, ``service.name``, ``host.name``,
``log.level`` on a fifth) are bulk-loaded into a fresh index ``bench-oslogs-<tag>-logs-app`` on
the real OpenSearch node and produced, as the same JSON, to a fresh Kafka topic (neither timed).
Then, timed, each path drains its copy into its own signal index with the production pipeline
(parse, template windows, documents, embed with the real model, Great Expectations suite,
upsert into the embedded LanceDB store, state, commit): the OpenSearch logs source (PIT +
``search_after``, ``OPSASSIST_SIGNALS_OPENSEARCH_LOGS_PAGE_SIZE`` documents a page) and the
baseline ``KafkaSource``. Both start with the template vectors of one cycle of the corpus
embedded (as in ``signals_ingest``).

Then the OpenSearch path runs again on its checkpoint (a re-run must add 0 documents) and the
document ids of both indexes are compared (the same lines must give the same documents).

    .venv/bin/python -m benchmarks.opensearch_logs_ingest [--lines 100000] [--json]
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


def documents(lines: int, now: dt.datetime) -> list[dict[str, Any]]:
    from opsassist.parsing.logs import retime_line

    source = loghub_lines()
    docs = []
    for i in range(lines):
        system, line = source[i % len(source)]
        when = now - dt.timedelta(seconds=1800 * (lines - i) / lines)
        doc: dict[str, Any] = {
            "@timestamp": when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "message": retime_line(line, when),
            "service": {"name": system},
            "host": {"name": f"node-{i % 3}"},
        }
        if i % 5 == 0:
            doc["log"] = {"level": "info"}
        docs.append(doc)
    return docs


def load_opensearch(client: Any, index: str, docs: list[dict[str, Any]]) -> float:
    from opensearchpy import helpers

    started = time.perf_counter()
    client.indices.create(
        index=index,
        body={
            "settings": {"refresh_interval": "-1"},
            "mappings": {
                "properties": {
                    "@timestamp": {"type": "date"},
                    "message": {"type": "text"},
                    "service": {"properties": {"name": {"type": "keyword"}}},
                }
            },
        },
    )
    actions = ({"_index": index, "_source": doc} for doc in docs)
    ok, errors = helpers.bulk(client, actions, chunk_size=5000, request_timeout=300)
    assert ok == len(docs) and not errors, errors
    client.indices.refresh(index=index)
    return time.perf_counter() - started


def produce_kafka(bootstrap: str, topic: str, docs: list[dict[str, Any]]) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for doc in docs:
        value = json.dumps(doc).encode()
        while True:
            try:
                producer.produce(topic, key=b"logs-app", value=value)
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(120) == 0


def timed_drain(settings: Any, source: Any, name: str) -> tuple[dict[str, Any], float, Any]:
    from opsassist.pipelines.signals import SignalIngestor, summarise
    from opsassist.stores import get_index_store

    store = get_index_store(settings)
    ingestor = SignalIngestor(settings, store)
    ingestor.dimension  # noqa: B018 - load the model before timing, as a running service has it
    prewarm(ingestor)
    started = time.perf_counter()
    try:
        reports = ingestor.drain(source, budget_seconds=7200)
    finally:
        seconds = time.perf_counter() - started
        source.close()
        ingestor.close()
    return summarise(name, reports), seconds, store


def document_ids(store: Any) -> set[str]:
    version = store.current_version("signals")
    return {i for ids in store.ids_by_source(version).values() for i in ids} if version else set()


def run(lines: int, bootstrap: str, opensearch: str) -> dict[str, Any]:
    from opensearchpy import OpenSearch

    from opsassist.pipelines.signals import open_source
    from opsassist.settings import Settings
    from opsassist.sources.kafka import KafkaSource

    tag = uuid.uuid4().hex[:8]
    prefix = f"bench-oslogs-{tag}-"
    topic = f"bench-oslogs-{tag}"
    now = dt.datetime.now(dt.UTC)
    docs = documents(lines, now)
    client = OpenSearch(hosts=[opensearch], timeout=300)
    try:
        load_seconds = load_opensearch(client, f"{prefix}logs-app", docs)
        produce_kafka(bootstrap, topic, docs)
        del docs

        root = Path(tempfile.mkdtemp(prefix="opsassist-oslogs-"))
        kafka_settings = Settings(
            data_dir=root / "kafka", signals_log_topics=topic, signals_kafka_group=f"b-{tag}"
        )
        kafka_source = KafkaSource.from_config(bootstrap, f"b-{tag}", {topic: "log"})
        kafka, kafka_s, kafka_store = timed_drain(kafka_settings, kafka_source, "kafka")

        os_settings = Settings(
            data_dir=root / "opensearch",
            signals_opensearch_logs_url=opensearch,
            signals_opensearch_logs_patterns=f"{prefix}logs-*",
            signals_opensearch_logs_lookback_seconds=7200,
        )
        first, os_s, os_store = timed_drain(
            os_settings, open_source(os_settings, "opensearch_logs"), "opensearch_logs"
        )
        rerun, rerun_s, _ = timed_drain(
            os_settings, open_source(os_settings, "opensearch_logs"), "opensearch_logs"
        )
        same = document_ids(kafka_store) == document_ids(os_store)
    finally:
        client.indices.delete(index=f"{prefix}*", ignore_unavailable=True)
        client.close()
    os_rate, kafka_rate = first["accepted"] / os_s, kafka["accepted"] / kafka_s
    return {
        "benchmark": "opensearch_logs_ingest",
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "lines": lines,
        "bulk_load_seconds": round(load_seconds, 1),
        "opensearch": {
            "accepted": first["accepted"],
            "rejected": first["rejected"],
            "batches": first["batches"],
            "upserted": first["upserted"],
            "seconds": round(os_s, 2),
            "lines_per_s": round(os_rate, 1),
        },
        "opensearch_rerun": {
            "accepted": rerun["accepted"],
            "upserted": rerun["upserted"],
            "seconds": round(rerun_s, 2),
        },
        "kafka_baseline": {
            "accepted": kafka["accepted"],
            "batches": kafka["batches"],
            "upserted": kafka["upserted"],
            "seconds": round(kafka_s, 2),
            "lines_per_s": round(kafka_rate, 1),
        },
        "ratio_opensearch_vs_kafka": round(os_rate / kafka_rate, 3),
        "same_document_ids": same,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument(
        "--bootstrap", default=f"127.0.0.1:{os.environ.get('OPSASSIST_KAFKA_PORT', '19092')}"
    )
    parser.add_argument(
        "--opensearch",
        default=f"http://127.0.0.1:{os.environ.get('OPSASSIST_OPENSEARCH_PORT', '19200')}",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.lines, args.bootstrap, args.opensearch)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    os_, kafka, rerun = result["opensearch"], result["kafka_baseline"], result["opensearch_rerun"]
    print(
        f"opensearch logs ingest: {result['lines']} ECS documents ({result['cpus']} CPUs, "
        f"load {result['load_average_1m']}; bulk load {result['bulk_load_seconds']} s, not timed)"
    )
    print(
        f"  OpenSearch source -> index   {os_['lines_per_s']:>10.1f} lines/s "
        f"({os_['accepted']} accepted, rejected {os_['rejected']}, {os_['seconds']} s)"
    )
    print(
        f"  Kafka source -> index        {kafka['lines_per_s']:>10.1f} lines/s "
        f"({kafka['accepted']} accepted, {kafka['seconds']} s)"
    )
    print(f"  ratio OpenSearch / Kafka     {result['ratio_opensearch_vs_kafka']:>10.3f}")
    print(
        f"  re-run on the checkpoint: {rerun['accepted']} accepted, {rerun['upserted']} "
        f"upserted in {rerun['seconds']} s; same document ids as Kafka: "
        f"{result['same_document_ids']}"
    )


if __name__ == "__main__":
    main()

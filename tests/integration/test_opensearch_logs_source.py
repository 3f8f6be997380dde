"""The OpenSearch logs source on the real OpenSearch node: ECS-shaped log indices (loghub lines,
times rewritten to now) read once by ``@timestamp`` with a point in time and ``search_after``;
a restart adds nothing; late documents inside the lag are picked up and older ones are not; a
document the field mapping does not fit is dead-lettered with its reason; the same JSON lines
through Kafka give the same documents (ids included); an unreachable node is a clear error that
leaves the checkpoint as it was. The field-mapping presets (ECS, OpenTelemetry, Fluent Bit) are
checked against the parser's own reading of the original documents.

The 100,000-document run (ingested once, a re-run adds 0) is the slow test at the end and the
benchmark ``benchmarks/opensearch_logs_ingest.py``.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from opsassist.index.embedded import EmbeddedIndexStore
from opsassist.parsing.logs import parse_log, retime_line
from opsassist.pipelines import signals as pipeline
from opsassist.settings import Settings
from opsassist.sources.opensearch_logs import (
    REASON_MAPPING,
    FieldMapping,
    OpenSearchLogsError,
    map_document,
)
from tests.conftest import free_port, require_service, service_port
from tests.integration.test_signals_pipeline import SYSTEMS, fake_embed, indexed, loghub_lines

UTC = dt.UTC
LAG = 120


# --- documents ------------------------------------------------------------------------------------
def ecs_documents(n: int, now: dt.datetime, span_s: float) -> list[dict[str, Any]]:
    """``n`` ECS documents as Logstash writes them: loghub lines (eight systems in turn) as
    ``message``, ``@timestamp`` spread evenly over the ``span_s`` seconds before ``now``."""
    lines = [(s, line) for s in SYSTEMS for line in loghub_lines(s, 200)]
    docs = []
    for i in range(n):
        system, line = lines[i % len(lines)]
        when = now - dt.timedelta(seconds=span_s * (n - i) / n)
        doc: dict[str, Any] = {
            "@timestamp": when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "message": retime_line(line, when),
            "service": {"name": system},
            "host": {"name": f"node-{i % 3}"},
            "event": {"dataset": system.lower()},
        }
        if i % 5 == 0:
            doc["log"] = {"level": "info", "logger": f"{system.lower()}.main"}
        docs.append(doc)
    return docs


def bulk(client: Any, index: str, docs: Sequence[dict[str, Any]], refresh: bool = True) -> None:
    from opensearchpy import helpers

    actions = ({"_index": index, "_source": doc} for doc in docs)
    ok, errors = helpers.bulk(client, actions, chunk_size=5000, request_timeout=120)
    assert ok == len(docs) and not errors
    if refresh:
        client.indices.refresh(index=index)


ECS_MAPPING = {
    "properties": {
        "@timestamp": {"type": "date"},
        "message": {"type": "text"},
        "service": {"properties": {"name": {"type": "keyword"}}},
        "host": {"properties": {"name": {"type": "keyword"}}},
        "log": {"properties": {"level": {"type": "keyword"}, "logger": {"type": "keyword"}}},
    }
}


@pytest.fixture
def os_client() -> Iterator[Any]:
    from opensearchpy import OpenSearch

    port = service_port("opensearch", 19200)
    require_service("opensearch", port)
    client = OpenSearch(hosts=[f"http://127.0.0.1:{port}"], timeout=120)
    yield client
    client.close()


@pytest.fixture
def logs_prefix(os_client: Any) -> Iterator[str]:
    """A unique name prefix for this test's log indices (deleted afterwards)."""
    prefix = f"test-oslogs-{uuid.uuid4().hex[:10]}-"
    yield prefix
    os_client.indices.delete(index=f"{prefix}*", ignore_unavailable=True)


@pytest.fixture
def log_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logs_prefix: str) -> Settings:
    from opsassist.settings import get_settings

    port = service_port("opensearch", 19200)
    monkeypatch.setenv("OPSASSIST_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("OPSASSIST_INDEX_BACKEND", "embedded")
    monkeypatch.setenv("OPSASSIST_SIGNALS_SOURCES", "opensearch_logs")
    monkeypatch.setenv("OPSASSIST_SIGNALS_OPENSEARCH_LOGS_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OPSASSIST_SIGNALS_OPENSEARCH_LOGS_PATTERNS", f"{logs_prefix}logs-*")
    monkeypatch.setenv("OPSASSIST_SIGNALS_OPENSEARCH_LOGS_LAG_SECONDS", str(LAG))
    monkeypatch.setenv("OPSASSIST_SIGNALS_OPENSEARCH_LOGS_PAGE_SIZE", "700")
    get_settings.cache_clear()
    return Settings()


def drain(settings: Settings, store: EmbeddedIndexStore) -> dict[str, Any]:
    ingest = pipeline.SignalIngestor(settings, store, embed=fake_embed)
    source = pipeline.open_source(settings, "opensearch_logs")
    try:
        return pipeline.summarise("opensearch_logs", ingest.drain(source, budget_seconds=600))
    finally:
        source.close()
        ingest.close()


def checkpoint_rows(settings: Settings) -> list[tuple[Any, ...]]:
    path = settings.data_dir / "signals" / "opensearch-logs.sqlite"
    with sqlite3.connect(path) as db:
        return list(db.execute("SELECT pattern, watermark_ms, next_seq FROM checkpoint"))


# --- the source on the real node ------------------------------------------------------------------
@pytest.mark.services
def test_ecs_index_read_once_late_documents_and_mapping_mismatch(
    os_client: Any, logs_prefix: str, log_settings: Settings
) -> None:
    now = dt.datetime.now(UTC).replace(microsecond=0)
    index = f"{logs_prefix}logs-app-1"
    os_client.indices.create(index=index, body={"mappings": ECS_MAPPING})
    docs = ecs_documents(3000, now - dt.timedelta(seconds=30), span_s=900)
    # 15 documents the ECS mapping does not fit: no message, or a message that is not text
    broken = [
        {"@timestamp": docs[i]["@timestamp"], "msg": "a message under another name"}
        for i in range(0, 3000, 300)
    ] + [
        {"@timestamp": docs[i]["@timestamp"], "message": {"text": "an object, not text"}}
        for i in range(150, 3000, 600)
    ]
    bulk(os_client, index, docs)
    other = f"{logs_prefix}logs-broken-1"  # the object-typed message needs its own mapping
    bulk(os_client, other, broken)

    store = EmbeddedIndexStore(log_settings.embedded_index_dir)
    first = drain(log_settings, store)
    assert first["accepted"] == 3000, first
    assert first["rejected"] == {REASON_MAPPING: 15}
    letters = [
        json.loads(line)
        for line in (log_settings.data_dir / "signals" / "deadletter" / "opensearch_logs.jsonl")
        .read_text()
        .splitlines()
    ]
    assert len(letters) == 15 and {x["reason"] for x in letters} == {REASON_MAPPING}
    assert (
        sum("no text message at message, event.original (nothing" in x["detail"] for x in letters)
        == 10
    )
    assert sum("(a dict at message" in x["detail"] for x in letters) == 5
    assert all(x["document"].startswith(other + "/") for x in letters)
    docs_before = {c.id: c.text for c in indexed(store)}
    services = {c.source.split("/", 1)[0] for c in indexed(store)}
    assert services == set(SYSTEMS)
    ssh = [c for c in indexed(store) if c.source.startswith("OpenSSH/")]
    want = sum(1 for d in docs if d["service"]["name"] == "OpenSSH")
    assert sum(c.metadata["count"] for c in ssh) == want > 300

    # a restart (a new source on the same checkpoint) reads nothing new and changes nothing
    again = drain(log_settings, store)
    assert again["accepted"] == 0 and again["rejected"] == {}
    assert {c.id: c.text for c in indexed(store)} == docs_before
    ((pattern, watermark, next_seq),) = checkpoint_rows(log_settings)
    assert pattern == f"{logs_prefix}logs-*" and next_seq == 3015

    # late documents: inside the lag they are read, older ones are not (the lag is the limit)
    newest = dt.datetime.fromtimestamp(watermark / 1000, UTC)
    inside = ecs_documents(40, newest - dt.timedelta(seconds=LAG // 2), span_s=20)
    for doc in inside:
        doc["service"]["name"] = "late-inside"
    outside = ecs_documents(10, newest - dt.timedelta(seconds=LAG + 60), span_s=20)
    for doc in outside:
        doc["service"]["name"] = "late-outside"
    bulk(os_client, f"{logs_prefix}logs-app-2", inside + outside)
    late = drain(log_settings, store)
    assert late["accepted"] == 40 and late["rejected"] == {}, late
    sources = {c.source.split("/", 1)[0] for c in indexed(store)}
    assert "late-inside" in sources and "late-outside" not in sources
    assert drain(log_settings, store)["accepted"] == 0


@pytest.mark.services
def test_unreachable_node_is_a_clear_error_and_keeps_the_checkpoint(
    os_client: Any, logs_prefix: str, log_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = dt.datetime.now(UTC)
    index = f"{logs_prefix}logs-app-1"
    bulk(os_client, index, ecs_documents(400, now - dt.timedelta(seconds=20), span_s=300))
    store = EmbeddedIndexStore(log_settings.embedded_index_dir)
    assert drain(log_settings, store)["accepted"] == 400
    before = checkpoint_rows(log_settings)
    bulk(os_client, index, ecs_documents(50, now - dt.timedelta(seconds=5), span_s=5))

    down = log_settings.model_copy(
        update={"signals_opensearch_logs_url": f"http://127.0.0.1:{free_port()}"}
    )
    with pytest.raises(OpenSearchLogsError, match=r"OpenSearch 127\.0\.0\.1:\d+ unreachable"):
        drain(down, store)
    assert checkpoint_rows(log_settings) == before  # nothing lost, nothing moved
    after = drain(log_settings, store)  # the retry, with the node back
    assert after["accepted"] == 50


@pytest.mark.services
def test_a_pattern_that_names_no_index_yet_reads_nothing(
    os_client: Any, logs_prefix: str, log_settings: Settings
) -> None:
    store = EmbeddedIndexStore(log_settings.embedded_index_dir)
    assert drain(log_settings, store)["accepted"] == 0  # no index yet: not an error
    assert checkpoint_rows(log_settings) == []
    bulk(os_client, f"{logs_prefix}logs-app-1", ecs_documents(10, dt.datetime.now(UTC), 5))
    assert drain(log_settings, store)["accepted"] == 10


# --- the same lines through Kafka -----------------------------------------------------------------
@pytest.mark.services
def test_same_lines_through_kafka_give_the_same_documents(
    os_client: Any, logs_prefix: str, log_settings: Settings, tmp_path: Path
) -> None:
    from confluent_kafka import Producer

    from opsassist.sources.kafka import KafkaSource

    port = service_port("kafka", 19092)
    require_service("kafka", port)
    bootstrap = f"127.0.0.1:{port}"
    now = dt.datetime.now(UTC)
    docs = ecs_documents(800, now - dt.timedelta(seconds=10), span_s=600)
    bulk(os_client, f"{logs_prefix}logs-app-1", docs)
    from_opensearch = EmbeddedIndexStore(log_settings.embedded_index_dir)
    assert drain(log_settings, from_opensearch)["accepted"] == 800

    topic = f"oslogs-parity-{uuid.uuid4().hex[:8]}"
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for doc in docs:
        producer.produce(topic, key=b"logs-app-1", value=json.dumps(doc).encode())
    assert producer.flush(30) == 0
    kafka_settings = log_settings.model_copy(update={"data_dir": tmp_path / "kafka-data"})
    from_kafka = EmbeddedIndexStore(kafka_settings.embedded_index_dir)
    ingest = pipeline.SignalIngestor(kafka_settings, from_kafka, embed=fake_embed)
    source = KafkaSource.from_config(bootstrap, f"g-{uuid.uuid4().hex[:8]}", {topic: "log"})
    try:
        kafka = pipeline.summarise("kafka", ingest.drain(source, budget_seconds=300))
    finally:
        source.close()
        ingest.close()
    assert kafka["accepted"] == 800
    by_opensearch = {c.id: c.text for c in indexed(from_opensearch)}
    by_kafka = {c.id: c.text for c in indexed(from_kafka)}
    assert by_opensearch == by_kafka and len(by_kafka) > 8


# --- the presets ----------------------------------------------------------------------------------
def _same_record(original: dict[str, Any], mapping: FieldMapping) -> None:
    received = dt.datetime(2026, 12, 6, tzinfo=UTC)
    want = parse_log(json.dumps(original), service="fallback", received=received)
    got = parse_log(
        json.dumps(map_document(original, mapping)), service="fallback", received=received
    )
    assert got == want


def test_presets_read_what_the_shippers_write() -> None:
    ecs = {
        "@timestamp": "2026-12-06T10:00:01.250Z",
        "message": "connection pool exhausted after 30s",
        "log": {"level": "error", "logger": "db.pool"},
        "service": {"name": "checkout"},
        "host": {"name": "node-1"},
    }
    mapped = map_document(ecs, FieldMapping.preset("ecs"))
    assert mapped == {
        "@timestamp": "2026-12-06T10:00:01.250Z",
        "message": "connection pool exhausted after 30s",
        "level": "error",
        "service": "checkout",
        "logger": "db.pool",
    }
    _same_record(ecs, FieldMapping.preset("ecs"))
    flattened = {
        "@timestamp": 1765015201250,
        "message": "x failed",
        "log.level": "WARN",
        "host.name": "node-2",
    }  # Data Prepper flattens keys
    assert map_document(flattened, FieldMapping.preset("ecs"))["service"] == "node-2"
    _same_record(flattened, FieldMapping.preset("ecs"))

    # OpenTelemetry Collector's OpenSearch exporter (SS4O): resource attributes as flat keys
    otel = {
        "@timestamp": "2026-12-06T10:00:02Z",
        "body": "payment declined: card expired",
        "severity": {"text": "WARN", "number": 13},
        "resource": {"service.name": "payments", "host.name": "node-3"},
        "instrumentationScope": {"name": "io.payments.Gateway"},
    }
    assert map_document(otel, FieldMapping.preset("otel")) == {
        "@timestamp": "2026-12-06T10:00:02Z",
        "message": "payment declined: card expired",
        "level": "WARN",
        "service": "payments",
        "logger": "io.payments.Gateway",
    }
    prepper = {
        "time": "2026-12-06T10:00:03Z",
        "body": "GC pause 800ms",
        "severityText": "INFO",
        "serviceName": "cart",
    }  # Data Prepper's OTel logs
    mapping = FieldMapping.preset("otel", {"timestamp": "time"})
    assert map_document(prepper, mapping)["service"] == "cart"

    # Fluent Bit's opensearch output with the kubernetes filter
    fluent = {
        "@timestamp": "2026-12-06T10:00:04.000Z",
        "log": "2026-12-06T10:00:04Z ERROR could not connect to postgres\n",
        "stream": "stderr",
        "kubernetes": {
            "namespace_name": "payments",
            "pod_name": "payments-api-7f9c6d5b8-x2lqk",
            "container_name": "api",
            "labels": {"app": "payments-api"},
        },
    }
    assert map_document(fluent, FieldMapping.preset("fluentbit"))["service"] == (
        "payments/payments-api"
    )
    _same_record(fluent, FieldMapping.preset("fluentbit"))

    with pytest.raises(ValueError, match="unknown mapped field"):
        FieldMapping.preset("ecs", {"msg": "message"})
    with pytest.raises(ValueError, match="unknown field mapping"):
        FieldMapping.preset("gelf")


# --- 100,000 documents ----------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.services
def test_one_hundred_thousand_documents_once(
    os_client: Any, logs_prefix: str, log_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPSASSIST_SIGNALS_OPENSEARCH_LOGS_PAGE_SIZE", "5000")
    settings = log_settings.model_copy(update={"signals_opensearch_logs_page_size": 5000})
    now = dt.datetime.now(UTC)
    index = f"{logs_prefix}logs-app-1"
    os_client.indices.create(
        index=index, body={"mappings": ECS_MAPPING, "settings": {"refresh_interval": "-1"}}
    )
    docs = ecs_documents(100_000, now - dt.timedelta(seconds=10), span_s=1800)
    bulk(os_client, index, docs)
    store = EmbeddedIndexStore(settings.embedded_index_dir)
    started = time.monotonic()
    first = drain(settings, store)
    assert first["accepted"] == 100_000 and first["rejected"] == {}, first
    ids = {c.id for c in indexed(store)}
    again = drain(settings, store)
    assert again["accepted"] == 0 and again["upserted"] == 0
    assert {c.id for c in indexed(store)} == ids
    assert time.monotonic() - started < 1800

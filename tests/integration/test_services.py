"""Real round trips against the local servers that ``scripts/services up`` starts.

Each test skips with the reason when its server is not up, unless OPSASSIST_REQUIRE_SERVICES=1
(CI), where it fails instead. Ports come from the same environment variables, with the same
defaults, as scripts/services.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.services

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"

PORTS = {
    "redis": ("OPSASSIST_REDIS_PORT", 16379),
    "postgres": ("OPSASSIST_POSTGRES_PORT", 15432),
    "prometheus": ("OPSASSIST_PROMETHEUS_PORT", 19090),
    "node-exporter": ("OPSASSIST_NODE_EXPORTER_PORT", 19100),
    "kafka": ("OPSASSIST_KAFKA_PORT", 19092),
    "opensearch": ("OPSASSIST_OPENSEARCH_PORT", 19200),
    "etcd": ("OPSASSIST_ETCD_PORT", 12379),
    "kube-apiserver": ("OPSASSIST_KUBE_APISERVER_PORT", 16443),
}


def port(service: str) -> int:
    env, default = PORTS[service]
    return int(os.environ.get(env, default))


def _port_open(number: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((HOST, number)) == 0


def require(service: str) -> int:
    """The service's port; skips (or fails in CI) when nothing listens there."""
    number = port(service)
    if not _port_open(number):
        message = (
            f"{service} is not up on {HOST}:{number} (start it with: scripts/services up {service})"
        )
        if os.environ.get("OPSASSIST_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return number


def eventually(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.5) -> Any:
    """Calls ``check`` until it returns a truthy value or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# Redis ------------------------------------------------------------------------------------------


def test_redis_set_get() -> None:
    import redis

    client = redis.Redis(host=HOST, port=require("redis"), db=15, socket_timeout=5)
    key = unique("opsassist-test")
    try:
        assert client.set(key, "hello", ex=60)
        assert client.get(key) == b"hello"
        assert 0 < client.ttl(key) <= 60
    finally:
        client.delete(key)
        client.close()


# PostgreSQL -------------------------------------------------------------------------------------


def test_postgres_connect_as_opsassist() -> None:
    import psycopg

    number = require("postgres")
    for dbname in ("opsassist", "mlflow"):
        with psycopg.connect(
            host=HOST,
            port=number,
            user="opsassist",
            password="opsassist",
            dbname=dbname,
            connect_timeout=5,
        ) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            owner = conn.execute(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (dbname,)
            ).fetchone()
            assert owner == ("opsassist",)
            conn.execute("CREATE TEMP TABLE t (id int PRIMARY KEY, note text)")
            conn.execute("INSERT INTO t VALUES (1, 'round trip')")
            assert conn.execute("SELECT note FROM t WHERE id = 1").fetchone() == ("round trip",)


def test_postgres_rejects_a_wrong_password() -> None:
    import psycopg

    number = require("postgres")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(
            host=HOST,
            port=number,
            user="opsassist",
            password="not-the-password",
            dbname="opsassist",
            connect_timeout=5,
        )


# Prometheus and node-exporter -------------------------------------------------------------------


def test_node_exporter_metrics() -> None:
    import httpx

    response = httpx.get(f"http://{HOST}:{require('node-exporter')}/metrics", timeout=10)
    response.raise_for_status()
    assert "node_exporter_build_info" in response.text
    assert "node_cpu_seconds_total" in response.text


def test_prometheus_scrapes_node_exporter() -> None:
    import httpx

    base = f"http://{HOST}:{require('prometheus')}"
    assert httpx.get(f"{base}/-/ready", timeout=10).status_code == 200

    def node_up() -> list[dict[str, Any]]:
        body = httpx.get(f"{base}/api/v1/query", params={"query": 'up{job="node"}'}, timeout=10)
        body.raise_for_status()
        payload = body.json()
        assert payload["status"] == "success"
        result: list[dict[str, Any]] = payload["data"]["result"]
        return result

    # a freshly started Prometheus scrapes within one 5 s interval
    result = eventually(node_up, timeout=20)
    assert result, 'no sample for up{job="node"}'
    assert result[0]["metric"]["job"] == "node"
    assert result[0]["value"][1] == "1"


# Kafka ------------------------------------------------------------------------------------------


def test_kafka_produce_consume_on_a_fresh_topic() -> None:
    from confluent_kafka import Consumer, KafkaError, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    bootstrap = f"{HOST}:{require('kafka')}"
    topic = unique("opsassist-test")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    futures[topic].result(timeout=30)
    try:
        delivered: list[Any] = []
        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
        producer.produce(
            topic,
            key=b"k1",
            value=b"hello kafka",
            on_delivery=lambda error, message: delivered.append((error, message)),
        )
        assert producer.flush(30) == 0
        assert len(delivered) == 1 and delivered[0][0] is None, delivered

        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": unique("opsassist-test-group"),
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        try:
            consumer.subscribe([topic])
            deadline = time.monotonic() + 60
            received = None
            while received is None and time.monotonic() < deadline:
                message = consumer.poll(1.0)
                if message is None:
                    continue
                error = message.error()
                if error is not None:
                    assert error.code() == KafkaError._PARTITION_EOF, error
                    continue
                received = message
            assert received is not None, f"no message consumed from {topic} within 60 s"
            assert received.key() == b"k1"
            assert received.value() == b"hello kafka"
            consumer.commit(message=received, asynchronous=False)
        finally:
            consumer.close()
    finally:
        admin.delete_topics([topic])[topic].result(timeout=30)


# OpenSearch -------------------------------------------------------------------------------------

DOCS = [
    ("1", "disk full on node alpha", [1.0, 0.0, 0.0, 0.0]),
    ("2", "memory pressure on node beta", [0.0, 1.0, 0.0, 0.0]),
    ("3", "disk latency high on node gamma", [0.9, 0.1, 0.0, 0.0]),
]


@pytest.fixture
def opensearch() -> Iterator[Any]:
    from opensearchpy import OpenSearch

    client = OpenSearch(
        hosts=[{"host": HOST, "port": require("opensearch")}],
        use_ssl=False,
        timeout=60,
    )
    yield client
    client.close()


@pytest.fixture
def knn_index(opensearch: Any) -> Iterator[str]:
    """An index with a lucene-engine knn_vector field (faiss/nmslib are not available)."""
    name = unique("opsassist-test-knn")
    opensearch.indices.create(
        index=name,
        body={
            "settings": {"index.knn": True, "number_of_shards": 1, "number_of_replicas": 0},
            "mappings": {
                "properties": {
                    "text": {"type": "text"},
                    "embedding": {
                        "type": "knn_vector",
                        "dimension": 4,
                        "method": {
                            "name": "hnsw",
                            "engine": "lucene",
                            "space_type": "cosinesimil",
                        },
                    },
                }
            },
        },
    )
    for doc_id, text, vector in DOCS:
        opensearch.index(index=name, id=doc_id, body={"text": text, "embedding": vector})
    opensearch.indices.refresh(index=name)
    yield name
    opensearch.indices.delete(index=name, ignore_unavailable=True)


def _ids(response: dict[str, Any]) -> list[str]:
    return [hit["_id"] for hit in response["hits"]["hits"]]


def test_opensearch_knn_and_bm25(opensearch: Any, knn_index: str) -> None:
    health = opensearch.cluster.health()
    assert health["status"] in ("green", "yellow")

    knn = opensearch.search(
        index=knn_index,
        body={"size": 2, "query": {"knn": {"embedding": {"vector": [1, 0, 0, 0], "k": 2}}}},
    )
    assert _ids(knn) == ["1", "3"]

    bm25 = opensearch.search(index=knn_index, body={"query": {"match": {"text": "disk"}}})
    assert sorted(_ids(bm25)) == ["1", "3"]

    filtered = opensearch.search(
        index=knn_index,
        body={
            "query": {
                "knn": {
                    "embedding": {
                        "vector": [1, 0, 0, 0],
                        "k": 2,
                        "filter": {"match": {"text": "latency"}},
                    }
                }
            }
        },
    )
    assert _ids(filtered) == ["3"]


def test_opensearch_hybrid_query_with_normalization_pipeline(
    opensearch: Any, knn_index: str
) -> None:
    """neural-search's hybrid query, combined by a normalization-processor search pipeline."""
    pipeline = unique("opsassist-test-hybrid")
    opensearch.transport.perform_request(
        "PUT",
        f"/_search/pipeline/{pipeline}",
        body={
            "phase_results_processors": [
                {
                    "normalization-processor": {
                        "normalization": {"technique": "min_max"},
                        "combination": {
                            "technique": "arithmetic_mean",
                            "parameters": {"weights": [0.3, 0.7]},
                        },
                    }
                }
            ]
        },
    )
    try:
        response = opensearch.search(
            index=knn_index,
            params={"search_pipeline": pipeline},
            body={
                "query": {
                    "hybrid": {
                        "queries": [
                            {"match": {"text": "disk"}},
                            {"knn": {"embedding": {"vector": [0, 1, 0, 0], "k": 3}}},
                        ]
                    }
                }
            },
        )
        ids = _ids(response)
        # the vector side (weight 0.7) ranks "memory pressure" first; BM25 brings the disk docs
        assert ids[0] == "2"
        assert sorted(ids) == ["1", "2", "3"]
    finally:
        opensearch.transport.perform_request("DELETE", f"/_search/pipeline/{pipeline}")


def test_opensearch_knn_painless_functions(opensearch: Any, knn_index: str) -> None:
    """k-NN's painless extension (cosineSimilarity) is loaded by the OpsAssistNode launcher."""
    response = opensearch.search(
        index=knn_index,
        body={
            "query": {
                "script_score": {
                    "query": {"match_all": {}},
                    "script": {
                        "source": "1.0 + cosineSimilarity(params.q, doc['embedding'])",
                        "params": {"q": [0, 1, 0, 0]},
                    },
                }
            }
        },
    )
    assert _ids(response)[0] == "2"


# The script itself ------------------------------------------------------------------------------


def test_services_status_reports_healthy() -> None:
    for service in PORTS:
        require(service)
    result = subprocess.run(
        [str(ROOT / "scripts" / "services"), "status"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == len(PORTS)
    for line in lines:
        name, number, state = line.split()[:3]
        assert state == "healthy", line
        assert int(number) == port(name)

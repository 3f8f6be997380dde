"""Kafka round trip on the real broker: produce with confluent-kafka, consume through the Airflow
Kafka provider's ``KafkaConsumerHook`` (connection from ``AIRFLOW_CONN_<ID>``), commit, and check
that the same consumer group gets nothing again, and only what is new after that."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import require_service, service_port

pytestmark = pytest.mark.services

MESSAGES = 60
PARTITIONS = 3


@pytest.fixture
def bootstrap() -> str:
    port = service_port("kafka", 19092)
    require_service("kafka", port)
    return f"127.0.0.1:{port}"


@pytest.fixture
def topic(bootstrap: str) -> Iterator[str]:
    from confluent_kafka.admin import AdminClient, NewTopic

    name = f"opsassist-roundtrip-{uuid.uuid4().hex[:12]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, num_partitions=PARTITIONS, replication_factor=1)])
    futures[name].result(timeout=30)
    yield name
    admin.delete_topics([name])[name].result(timeout=30)


@pytest.fixture
def conn_id(bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """An Airflow Kafka connection given through the environment, with a fresh consumer group."""
    conn = f"opsassist_kafka_{uuid.uuid4().hex[:8]}"
    extra = {
        "bootstrap.servers": bootstrap,
        "group.id": f"opsassist-roundtrip-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    }
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn.upper()}", json.dumps({"conn_type": "kafka", "extra": extra})
    )
    return conn


def _produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    from confluent_kafka import Producer

    delivered: list[tuple[Any, Any]] = []
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    for key, value in messages:
        producer.produce(
            topic, key=key, value=value, on_delivery=lambda e, m: delivered.append((e, m))
        )
    assert producer.flush(30) == 0
    errors = [e for e, _ in delivered if e is not None]
    assert len(delivered) == len(messages) and not errors, errors


def _consume(consumer: Any, expected: int, timeout: float) -> list[Any]:
    """Poll until ``expected`` messages arrived, then keep polling 3 s more to catch duplicates
    (and, with expected=0, to give the group time to be assigned and to deliver anything)."""
    from confluent_kafka import KafkaError

    received: list[Any] = []
    deadline = time.monotonic() + timeout
    quiet_until: float | None = None
    while time.monotonic() < (quiet_until or deadline):
        message = consumer.poll(0.5)
        if message is None:
            if expected == 0 and quiet_until is None and consumer.assignment():
                quiet_until = time.monotonic() + 3.0
            continue
        error = message.error()
        if error is not None:
            assert error.code() == KafkaError._PARTITION_EOF, error
            continue
        received.append(message)
        if len(received) >= expected and quiet_until is None:
            quiet_until = time.monotonic() + 3.0
    return received


def _hook_consumer(conn_id: str, topic: str) -> Any:
    from airflow.providers.apache.kafka.hooks.consume import KafkaConsumerHook

    return KafkaConsumerHook(topics=[topic], kafka_config_id=conn_id).get_consumer()


def test_every_message_once_then_nothing_after_commit(
    bootstrap: str, topic: str, conn_id: str
) -> None:
    from confluent_kafka import TopicPartition

    sent = [(f"key-{i}".encode(), f"value {i} \u00e9".encode()) for i in range(MESSAGES)]
    _produce(bootstrap, topic, sent)

    consumer = _hook_consumer(conn_id, topic)
    try:
        received = _consume(consumer, MESSAGES, timeout=60)
        pairs = [(m.key(), m.value()) for m in received]
        assert len(pairs) == MESSAGES, f"got {len(pairs)} of {MESSAGES}"
        assert sorted(pairs) == sorted(sent)  # each exactly once, key with its value
        assert {m.partition() for m in received} == set(range(PARTITIONS))
        committed = consumer.commit(asynchronous=False)
        assert committed is not None and all(tp.error is None for tp in committed)
        # the group's committed offsets are the partitions' ends
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        for tp in consumer.committed(partitions, timeout=10):
            _, high = consumer.get_watermark_offsets(tp, timeout=10)
            assert tp.offset == high
    finally:
        consumer.close()

    again = _hook_consumer(conn_id, topic)
    try:
        assert _consume(again, 0, timeout=30) == []
        # the group still consumes: a new message, and only it, arrives
        _produce(bootstrap, topic, [(b"key-new", b"only this one")])
        fresh = _consume(again, 1, timeout=30)
        assert [(m.key(), m.value()) for m in fresh] == [(b"key-new", b"only this one")]
        again.commit(asynchronous=False)
    finally:
        again.close()


@pytest.fixture
def busy_group(bootstrap: str) -> Iterator[str]:
    """A consumer group with a live member on another topic, polling in a thread: a new member
    joining it waits for a rebalance (a heartbeat round, seconds), like a slow first join."""
    import threading

    from confluent_kafka import Consumer
    from confluent_kafka.admin import AdminClient, NewTopic

    group, other = f"busy-{uuid.uuid4().hex[:8]}", f"opsassist-other-{uuid.uuid4().hex[:12]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(other, num_partitions=1, replication_factor=1)])[other].result(
        timeout=30
    )
    member = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "heartbeat.interval.ms": 2500}
    )
    joined = threading.Event()
    # assignment() from this thread would block while the other one polls: use the callback
    member.subscribe([other], on_assign=lambda _consumer, _partitions: joined.set())
    stop = threading.Event()

    def keep_polling() -> None:
        while not stop.is_set():
            member.poll(0.2)

    thread = threading.Thread(target=keep_polling, daemon=True)
    thread.start()
    assert joined.wait(30), "the busy member never joined"
    yield group
    stop.set()
    thread.join(10)
    member.close()
    admin.delete_topics([other])[other].result(timeout=30)


@pytest.mark.parametrize("missing_topic", [False, True])
def test_first_poll_of_a_new_member_waits_for_the_records(
    bootstrap: str, topic: str, busy_group: str, missing_topic: bool
) -> None:
    """A new consumer group's first poll must not come back empty while records are on the topic,
    however short the poll timeout: the join and the first fetch take longer than the timeout, and
    the DAG ends the drain on an empty poll (CI once lost a whole Kafka batch that way). A
    subscribed topic that does not exist yet must not hold the poll up either."""
    from opsassist.sources.kafka import KafkaSource

    _produce(bootstrap, topic, [(b"k%d" % i, b"line %d" % i) for i in range(MESSAGES)])
    kinds: dict[str, Any] = {topic: "log"}
    if missing_topic:
        kinds[f"{topic}-absent.metrics"] = "metric"
    source = KafkaSource.from_config(bootstrap, busy_group, kinds)
    try:
        got: list[Any] = []
        while True:
            batch = source.poll(1000, 0.01)
            if not batch:
                break
            got.extend(batch)
        assert sorted(r.payload for r in got) == sorted(b"line %d" % i for i in range(MESSAGES))
        assert {r.kind for r in got} == {"log"}
        assert source.poll(1000, 0.01) == []  # every partition at its end: nothing more
    finally:
        source.close()

"""Kafka source: log, metric and Kubernetes-event topics, consumed in batches, committed by hand.

The consumer must not auto-commit (``enable.auto.commit=false``): offsets are committed only
after a batch is indexed (:meth:`KafkaSource.commit`), so a crash replays the batch, and the
pipeline's deterministic ids and applied-offset check make the replay a no-op (at-least-once
delivery, exactly-once effect). ``auto.offset.reset=earliest`` makes a new group start at the
beginning of the topics, and ``enable.partition.eof=true`` lets a poll return as soon as every
partition is drained instead of waiting for its timeout (both recommended).

Inside Airflow the consumer and the dead-letter producer come from the Kafka provider's hooks
(:meth:`KafkaSource.from_airflow`, an Airflow connection such as
``{"conn_type": "kafka", "extra": {"bootstrap.servers": "...", "group.id": "...",
"enable.auto.commit": "false", "auto.offset.reset": "earliest", "enable.partition.eof": "true"}}``);
elsewhere (benchmarks, tests) plain confluent-kafka clients are built from settings
(:meth:`KafkaSource.from_config`).

Dead letters go to ``<topic><dlq_suffix>`` (``opsassist.logs.dlq``) with the original key and
value and headers ``reason``, ``detail`` and ``origin`` (``topic:partition:offset``); the producer
is flushed and every delivery checked before the batch's offsets are committed.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping, Sequence
from typing import Any

from opsassist.logs import get_logger
from opsassist.sources.base import DeadLetter, RawRecord, RecordKind

log = get_logger(__name__)

REQUIRED_CONSUMER_CONFIG = {"enable.auto.commit": False}
RECOMMENDED_CONSUMER_CONFIG = {"auto.offset.reset": "earliest", "enable.partition.eof": True}


def split_topics(value: str) -> list[str]:
    return [t.strip() for t in value.split(",") if t.strip()]


def topic_kinds(settings: Any) -> dict[str, RecordKind]:
    """Topic -> record kind, from the ``signals_*_topics`` settings."""
    kinds: dict[str, RecordKind] = {}
    for topic in split_topics(settings.signals_log_topics):
        kinds[topic] = "log"
    for topic in split_topics(settings.signals_metric_topics):
        kinds[topic] = "metric"
    for topic in split_topics(settings.signals_event_topics):
        kinds[topic] = "event"
    return kinds


def wake_up(message: Any) -> dict[str, Any] | None:
    """``apply_function`` of the ingest DAG's AssetWatcher: any message rings the doorbell.

    The trigger only wakes the DAG up; the DAG reads the topics with its own consumer group and
    commits after indexing, so the event carries only where the message was.
    """
    if message is None or message.error():
        return None
    return {"topic": message.topic(), "partition": message.partition(), "offset": message.offset()}


def _is_false(value: object) -> bool:
    return str(value).strip().lower() in ("false", "0", "no")


class KafkaSource:
    """Batches of records from Kafka topics; see the module docstring."""

    name = "kafka"

    def __init__(
        self,
        consumer: Any,
        producer: Any,
        kinds: Mapping[str, RecordKind],
        *,
        dlq_suffix: str = ".dlq",
        assignment_timeout: float = 20.0,
    ) -> None:
        self.consumer = consumer
        self.producer = producer
        self.kinds = dict(kinds)
        self.dlq_suffix = dlq_suffix
        self.assignment_timeout = assignment_timeout
        self._eof: set[tuple[str, int]] = set()
        # partitions that have delivered a message or reached their end since assignment
        self._heard: set[tuple[str, int]] = set()

    # --- construction --------------------------------------------------------------------------
    @classmethod
    def from_config(
        cls,
        bootstrap: str,
        group: str,
        kinds: Mapping[str, RecordKind],
        *,
        dlq_suffix: str = ".dlq",
        extra: Mapping[str, Any] | None = None,
    ) -> KafkaSource:
        """Plain confluent-kafka clients (outside Airflow)."""
        from confluent_kafka import Consumer, Producer

        config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            **REQUIRED_CONSUMER_CONFIG,
            **RECOMMENDED_CONSUMER_CONFIG,
            **dict(extra or {}),
        }
        consumer = Consumer(config)
        consumer.subscribe(sorted(kinds))
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all"})
        return cls(consumer, producer, kinds, dlq_suffix=dlq_suffix)

    @classmethod
    def from_airflow(
        cls, conn_id: str, kinds: Mapping[str, RecordKind], *, dlq_suffix: str = ".dlq"
    ) -> KafkaSource:
        """Consumer and dead-letter producer from the Airflow Kafka provider's hooks."""
        from airflow.providers.apache.kafka.hooks.consume import KafkaConsumerHook
        from airflow.providers.apache.kafka.hooks.produce import KafkaProducerHook

        consumer_hook = KafkaConsumerHook(topics=sorted(kinds), kafka_config_id=conn_id)
        extra = consumer_hook.get_connection(conn_id).extra_dejson
        if not _is_false(extra.get("enable.auto.commit", True)):
            raise ValueError(
                f"Kafka connection {conn_id!r} must set enable.auto.commit=false: offsets are "
                "committed only after a batch is indexed"
            )
        for key, value in RECOMMENDED_CONSUMER_CONFIG.items():
            if str(extra.get(key, "")).lower() != str(value).lower():
                log.warning(
                    "Kafka connection setting recommended",
                    extra={"conn_id": conn_id, "key": key, "recommended": value},
                )
        consumer = consumer_hook.get_consumer()
        producer = KafkaProducerHook(kafka_config_id=conn_id).get_producer()
        return cls(consumer, producer, kinds, dlq_suffix=dlq_suffix)

    # --- Source --------------------------------------------------------------------------------
    def _assignment(self) -> set[tuple[str, int]]:
        try:
            return {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
        except Exception:  # pragma: no cover - closed consumer
            return set()

    def _settled(self, assigned: set[tuple[str, int]]) -> bool:
        """True once the group has assigned partitions and each has answered (data or EOF).

        Until then an empty poll proves nothing: joining the group and the first fetch can take
        seconds, and ending the drain then would skip records that are already on the topic.
        """
        return bool(assigned) and assigned <= self._heard

    def poll(self, max_records: int, timeout: float) -> list[RawRecord]:
        """Records until ``max_records``, ``timeout`` seconds, a pause in the stream, or every
        partition at its end. Until the group has assigned partitions and each has answered, the
        wait is extended up to ``assignment_timeout`` (the first poll of a new consumer)."""
        from confluent_kafka import KafkaError, KafkaException

        out: list[RawRecord] = []
        started = time.monotonic()
        last_message = started
        assigned = self._assignment()  # read once per round: after each consume (rebalances)
        while len(out) < max_records:
            budget = timeout if self._settled(assigned) else max(timeout, self.assignment_timeout)
            now = time.monotonic()
            if now >= started + budget or (out and now - last_message >= 0.05):
                break  # time is up, or the stream paused after some records
            wait = min(started + budget - now, 0.05 if out else 0.25)
            messages = self.consumer.consume(
                num_messages=min(max_records - len(out), 1000), timeout=max(wait, 0.001)
            )
            assigned = self._assignment()
            if not messages:
                if assigned and assigned <= self._eof:
                    break  # every assigned partition is at its end
                continue
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        self._eof.add((message.topic(), message.partition()))
                        self._heard.add((message.topic(), message.partition()))
                        continue
                    if error.fatal():
                        raise KafkaException(error)
                    log.warning("kafka consumer error: %s", error, extra={"error": str(error)})
                    continue
                self._eof.discard((message.topic(), message.partition()))
                self._heard.add((message.topic(), message.partition()))
                out.append(self._record(message))
                last_message = time.monotonic()
        return out

    def _record(self, message: Any) -> RawRecord:
        from confluent_kafka import TIMESTAMP_NOT_AVAILABLE

        topic = str(message.topic())
        partition = int(message.partition())
        offset = int(message.offset())
        kind, millis = message.timestamp()
        if kind == TIMESTAMP_NOT_AVAILABLE:
            received = dt.datetime.now(dt.UTC)
        else:
            received = dt.datetime.fromtimestamp(millis / 1000, tz=dt.UTC)
        key = message.key()
        hint = key.decode("utf-8", "replace") if isinstance(key, bytes) else ""
        for name, value in message.headers() or []:
            if name == "service" and value:
                hint = value.decode("utf-8", "replace")
        return RawRecord(
            kind=self.kinds.get(topic, "log"),
            payload=message.value() or b"",
            stream=f"kafka:{topic}:{partition}",
            offset=offset,
            next_offset=offset + 1,
            received=received,
            origin=topic,
            hint=hint or topic,
            key=key if isinstance(key, bytes) else None,
        )

    def dead_letter(self, letters: Sequence[DeadLetter]) -> None:
        if not letters:
            return
        failures: list[str] = []

        def delivered(error: Any, _message: Any) -> None:
            if error is not None:
                failures.append(str(error))

        for letter in letters:
            record = letter.record
            _, topic, partition = record.stream.split(":", 2)
            headers = [
                ("reason", letter.reason.encode()),
                ("detail", letter.detail[:500].encode("utf-8", "replace")),
                ("origin", f"{topic}:{partition}:{record.offset}".encode()),
            ]
            while True:
                try:
                    self.producer.produce(
                        topic + self.dlq_suffix,
                        value=record.payload,
                        key=record.key,
                        headers=headers,
                        on_delivery=delivered,
                    )
                    break
                except BufferError:  # local queue full: let it drain
                    self.producer.poll(0.5)
        remaining = self.producer.flush(30)
        if remaining or failures:
            raise RuntimeError(
                f"dead-letter delivery failed ({remaining} undelivered, errors {failures[:3]}): "
                "the batch is not committed and will be retried"
            )

    def commit(self, positions: Mapping[str, int]) -> None:
        from confluent_kafka import TopicPartition

        offsets = []
        for stream, offset in sorted(positions.items()):
            prefix, topic, partition = stream.split(":", 2)
            if prefix == "kafka":
                offsets.append(TopicPartition(topic, int(partition), int(offset)))
        if offsets:
            self.consumer.commit(offsets=offsets, asynchronous=False)

    def close(self) -> None:
        try:
            self.consumer.close()
        finally:
            self.producer.flush(10)

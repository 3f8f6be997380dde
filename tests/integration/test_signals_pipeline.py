"""The signal pipeline end to end: the spool (resume, rotation, bad lines), crash and replay
without duplicates, lateness, retention and the daily rollover, and the real services: Kafka
(loghub samples, 5% malformed messages dead-lettered, replays), Prometheus (a real anomaly) and
the Kafka AssetWatcher trigger."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from opsassist.documents import Chunk
from opsassist.index.base import Filters, IndexStore, Query, hybrid_search
from opsassist.index.embedded import EmbeddedIndexStore
from opsassist.parsing.logs import parse_log, retime_line
from opsassist.pipelines import signals as pipeline
from opsassist.settings import Settings
from opsassist.signals import SignalConfig, build_log_documents
from opsassist.sources.base import DeadLetter, RawRecord
from opsassist.sources.prometheus import PrometheusSource
from opsassist.sources.spool import SpoolSource, sample_spool, seed_spool
from tests.conftest import require_service, service_port
from tests.integration.opensearch_fixtures import opensearch_store

LOGHUB = Path(__file__).resolve().parents[2].parent / "shared" / "corpora" / "loghub"
SYSTEMS = ("HDFS", "Hadoop", "Spark", "Zookeeper", "OpenSSH", "Linux", "Apache", "OpenStack")
UTC = dt.UTC
DIM = 384


def fake_embed(texts: Sequence[str]) -> np.ndarray:
    """Deterministic unit vectors (the pipeline, not the model, is under test here)."""
    rows = []
    for text in texts:
        raw = np.frombuffer(hashlib.sha512(text.encode()).digest() * 6, dtype=np.uint8)[:DIM]
        vector = raw.astype(np.float32) - 127.5
        rows.append(vector / np.linalg.norm(vector))
    return np.asarray(rows, dtype=np.float32)


@pytest.fixture
def signal_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    from opsassist.settings import get_settings

    monkeypatch.setenv("OPSASSIST_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("OPSASSIST_SIGNALS_SPOOL_PATH", str(tmp_path / "spool"))
    monkeypatch.setenv("OPSASSIST_INDEX_BACKEND", "embedded")
    get_settings.cache_clear()
    yield Settings()
    get_settings.cache_clear()


def ingestor(
    settings: Settings, store: IndexStore, clock: Callable[[], dt.datetime] | None = None
) -> pipeline.SignalIngestor:
    return pipeline.SignalIngestor(settings, store, embed=fake_embed, clock=clock)


def indexed(store: IndexStore, alias: str = "signals") -> list[Chunk]:
    version = store.current_version(alias)
    assert version is not None
    ids = sorted(i for group in store.ids_by_source(version).values() for i in group)
    return store.fetch(version, ids)


def loghub_lines(system: str, n: int) -> list[str]:
    """The shared loghub sample, else the 120-line excerpt shipped in the sample spool."""
    path = LOGHUB / system / f"{system}_2k.log"
    if not path.exists():
        path = sample_spool() / "logs" / system / f"{system}.log"
    return path.read_text(encoding="utf-8").splitlines()[:n]


@pytest.fixture(params=["embedded", pytest.param("opensearch", marks=pytest.mark.services)])
def any_store(request: pytest.FixtureRequest, signal_settings: Settings) -> Iterator[IndexStore]:
    """The embedded store, and the real OpenSearch node (a unique prefix per test)."""
    if request.param == "opensearch":
        yield from opensearch_store()
        return
    yield EmbeddedIndexStore(signal_settings.embedded_index_dir)


# --- spool ---------------------------------------------------------------------------------------
def test_spool_sample_end_to_end_is_searchable(
    signal_settings: Settings, any_store: IndexStore
) -> None:
    now = dt.datetime.now(UTC)
    seed_spool(signal_settings.signals_spool_path, now)
    store = any_store
    ingest = ingestor(signal_settings, store)
    source = pipeline.open_source(signal_settings, "spool")
    reports = ingest.drain(source)
    assert reports and sum(r.rejected.get("late", 0) for r in reports) == 0
    summary = pipeline.summarise("spool", reports)
    assert summary["accepted"] == summary["records"] > 1000 and summary["rejected"] == {}
    docs = indexed(store)
    kinds = {d.source_type for d in docs}
    assert kinds == {"log", "event", "metric"}
    assert len({d.id for d in docs}) == len(docs)

    def top(text: str, kind: str) -> Chunk | Any:
        filters = Filters(source_types=(kind,), since=now - dt.timedelta(hours=1))
        hits = hybrid_search(store, "signals", Query(text, mode="bm25", k=3, filters=filters))
        return hits[0]

    db = top("could not connect to postgres connection refused", "log")
    assert db.source.startswith("payments/payments-api/") and "ERROR" in db.text
    # 20 such lines in the sample (in one or two 5-minute windows, depending on the clock)
    assert sum(d.metadata["count"] for d in docs if d.source == db.source) == 20
    backoff = top("BackOff restarting failed container", "event")
    assert backoff.source == "payments/Pod/payments-api-7f9c6d5b8-x2lqk"
    load = top("node_load1 anomaly", "metric")
    assert "above the baseline" in load.text and "PromQL: node_load1" in load.text
    # nothing new: a second run writes nothing
    again = ingest.drain(pipeline.open_source(signal_settings, "spool"))
    assert again == []
    ingest.close()


def test_spool_resumes_rotates_and_dead_letters(signal_settings: Settings) -> None:
    spool = signal_settings.signals_spool_path
    folder = spool / "logs" / "sshd"
    folder.mkdir(parents=True)
    now = dt.datetime.now(UTC).replace(microsecond=0)
    lines = [retime_line(line, now) for line in loghub_lines("OpenSSH", 30)]
    app = folder / "app.log"
    app.write_text("\n".join(lines[:10]) + "\n" + lines[10])  # the last line is not finished
    (spool / "logs" / "ignored.log.gz").write_bytes(b"\x1f\x8b compressed")
    (spool / ".hidden.log").write_text(lines[0] + "\n")
    store = EmbeddedIndexStore(signal_settings.embedded_index_dir)
    ingest = ingestor(signal_settings, store)

    def run() -> dict[str, Any]:
        source = pipeline.open_source(signal_settings, "spool")
        assert isinstance(source, SpoolSource)
        source.settle_seconds = 3600.0  # an unfinished last line stays unread
        return pipeline.summarise("spool", ingest.drain(source))

    def total() -> int:
        return sum(d.metadata["count"] for d in indexed(store))

    assert run()["accepted"] == 10 and total() == 10
    with app.open("a") as handle:  # finish the line, add bad ones and an oversized one
        handle.write("\n" + "\n".join(lines[11:15]) + "\n")
        handle.write('{"broken json\n[1, 2]\n' + "x" * 70_000 + "\n\n")
    with app.open("ab") as binary:
        binary.write(b"\xff\xfe not utf-8\n")
    summary = run()
    assert summary["accepted"] == 5 and total() == 15
    assert summary["rejected"] == {
        "bad encoding": 1,
        "invalid json": 1,
        "json not an object": 1,
        "oversized": 1,
    }
    letters = [
        json.loads(line)
        for line in (signal_settings.data_dir / "signals/deadletter/spool.jsonl").open()
    ]
    assert [entry["reason"] for entry in letters] == [
        "invalid json",
        "json not an object",
        "oversized",
        "bad encoding",
    ]
    assert letters[0]["payload"] == '{"broken json' and letters[0]["file"] == "logs/sshd/app.log"
    assert "payload_base64" in letters[3]
    assert run()["records"] == 0  # resumed at the committed offsets: nothing new

    # rotation: app.log is renamed and continues to grow under its new name; a new app.log starts
    app.rename(folder / "app.log.1")
    with (folder / "app.log.1").open("a") as handle:
        handle.write(lines[15] + "\n")
    (folder / "app.log").write_text("\n".join(lines[16:20]) + "\n")
    assert run()["accepted"] == 5 and total() == 20
    # copytruncate: the file is emptied and rewritten from the start
    (folder / "app.log").write_text(lines[20] + "\n")
    assert run()["accepted"] == 1 and total() == 21
    assert {d.source.split("/")[0] for d in indexed(store)} == {"sshd"}
    ingest.close()


# --- exactly-once effect -------------------------------------------------------------------------
class ListSource:
    """A source over a fixed list of records, with commits that can be made to fail."""

    name = "list"

    def __init__(self, records: list[RawRecord], batch: int) -> None:
        self.records = records
        self.batch = batch
        self.position = 0
        self.fail_commits = 0
        self.letters: list[DeadLetter] = []

    def poll(self, max_records: int, timeout: float) -> list[RawRecord]:
        out = self.records[self.position : self.position + min(self.batch, max_records)]
        self.position += len(out)
        return out

    def dead_letter(self, letters: Sequence[DeadLetter]) -> None:
        self.letters.extend(letters)

    def commit(self, positions: Mapping[str, int]) -> None:
        if self.fail_commits:
            self.fail_commits -= 1
            raise ConnectionError("broker went away")

    def close(self) -> None:
        return None


def raw_records(system: str, n: int, now: dt.datetime, spread_s: float) -> list[RawRecord]:
    out = []
    for i, line in enumerate(loghub_lines(system, n)):
        when = now - dt.timedelta(seconds=spread_s * (n - i) / n)
        payload = retime_line(line, when).encode()
        out.append(RawRecord("log", payload, f"list:{system}", i, i + 1, when, system, system))
    return out


def test_crashes_and_replays_leave_exactly_the_documents_of_the_records(
    signal_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = dt.datetime.now(UTC)
    records = raw_records("Zookeeper", 400, now, 600) + raw_records("HDFS", 300, now, 600)
    records.sort(key=lambda r: r.received)
    store = EmbeddedIndexStore(signal_settings.embedded_index_dir)
    expected = {
        d.id
        for d in build_log_documents(
            (parse_log(r.payload, service=r.hint, received=r.received) for r in records),
            SignalConfig.from_settings(signal_settings),
        )
    }

    # 1. the source's commit fails after a batch is indexed and the state saved
    source = ListSource(records, batch=90)
    source.fail_commits = 1
    first = ingestor(signal_settings, store)
    with pytest.raises(ConnectionError):
        first.drain(source)
    first.close()

    # 2. a crash after the index write but before the state commit (a new process replays)
    original = pipeline.SignalIngestor._commit_state
    crashes = {"left": 1}

    def crashing(self: pipeline.SignalIngestor, *args: Any, **kwargs: Any) -> None:
        if crashes["left"]:
            crashes["left"] -= 1
            raise RuntimeError("killed")
        original(self, *args, **kwargs)

    monkeypatch.setattr(pipeline.SignalIngestor, "_commit_state", crashing)
    replay = ListSource(records, batch=130)  # other batch boundaries than the first attempt
    second = ingestor(signal_settings, store)
    with pytest.raises(RuntimeError, match="killed"):
        second.drain(replay)
    second.close()
    monkeypatch.setattr(pipeline.SignalIngestor, "_commit_state", original)

    # 3. the whole stream replayed from the start, as after a reset of the offsets
    third = ingestor(signal_settings, store)
    reports = third.drain(ListSource(records, batch=70))
    assert sum(r.replayed for r in reports) > 0
    docs = indexed(store)
    assert {d.id for d in docs} == expected and len(docs) == len(expected)
    assert sum(d.metadata["count"] for d in docs) == len(records)

    # 4. the state is lost too: the same ids come back, nothing is duplicated
    third.close()
    (signal_settings.data_dir / "signals" / "state.sqlite").unlink()
    fourth = ingestor(signal_settings, store)
    fourth.drain(ListSource(records, batch=500))
    docs = indexed(store)
    assert {d.id for d in docs} == expected and len(docs) == len(expected)
    fourth.close()


def test_two_writers_taking_turns_see_each_others_state(signal_settings: Settings) -> None:
    """Each ingestor caches the aggregates it committed; a batch by another writer in between
    must make it reload them (the DAG's tasks and a manual run may take turns)."""
    now = dt.datetime.now(UTC)
    records = raw_records("OpenSSH", 300, now, 240)
    store = EmbeddedIndexStore(signal_settings.embedded_index_dir)
    expected = {
        d.id
        for d in build_log_documents(
            (parse_log(r.payload, service=r.hint, received=r.received) for r in records),
            SignalConfig.from_settings(signal_settings),
        )
    }
    first, second = ingestor(signal_settings, store), ingestor(signal_settings, store)
    source = ListSource(records, batch=50)
    turn = 0
    while batch := source.poll(50, 0):
        (first if turn % 2 == 0 else second).process(source, batch)
        turn += 1
    docs = indexed(store)
    assert {d.id for d in docs} == expected and len(docs) == len(expected)
    first.close()
    second.close()


def test_late_records_retention_and_daily_rollover(
    signal_settings: Settings, any_store: IndexStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPSASSIST_SIGNALS_RETENTION_DAYS", "1")
    monkeypatch.setenv("OPSASSIST_SIGNALS_LATENESS_SECONDS", "600")
    monkeypatch.setenv("OPSASSIST_KEEP_VERSIONS", "2")
    settings = Settings()
    clock = {"now": dt.datetime(2026, 3, 1, 12, 0, tzinfo=UTC)}
    store = any_store
    ingest = ingestor(settings, store, clock=lambda: clock["now"])

    def records(at: dt.datetime, n: int, stream: str, start: int = 0) -> list[RawRecord]:
        out = []
        for i in range(n):
            payload = f"{at:%Y-%m-%d %H:%M:%S},000 ERROR [main] app.Db: timeout after {i} ms"
            offset = start + i
            out.append(
                RawRecord("log", payload.encode(), stream, offset, offset + 1, at, "t", "db")
            )
        return out

    day1 = clock["now"]
    ingest.drain(ListSource(records(day1, 5, "s1"), 10))
    assert store.current_version("signals") == "signals-v0001"
    # an hour later in event time; then a record from the first window is too late
    ingest.drain(ListSource(records(day1 + dt.timedelta(hours=1), 5, "s1", 5), 10))
    late = ListSource(records(day1 + dt.timedelta(minutes=1), 2, "s1", 10), 10)
    (report,) = ingest.drain(late)
    assert report.rejected == {"late": 2} and [x.reason for x in late.letters] == ["late"] * 2
    assert sum(d.metadata["count"] for d in indexed(store)) == 10

    # next day: the first batch rolls over to a new version, without what is a day old (12:00)
    clock["now"] = day1 + dt.timedelta(days=1, minutes=30)
    ingest.drain(ListSource(records(clock["now"], 3, "s2"), 10))
    assert store.current_version("signals") == "signals-v0002"
    assert sum(d.metadata["count"] for d in indexed(store)) == 5 + 3
    clock["now"] = day1 + dt.timedelta(days=2, minutes=30)
    ingest.drain(ListSource(records(clock["now"], 1, "s3"), 10))
    assert store.current_version("signals") == "signals-v0003"
    assert store.list_versions("signals") == ["signals-v0002", "signals-v0003"]
    remaining = indexed(store)
    cutoff = clock["now"] - dt.timedelta(days=1)
    assert all((d.end_timestamp or cutoff) >= cutoff for d in remaining)
    assert sum(d.metadata["count"] for d in remaining) == 4
    ingest.close()

    # the retention stage sweeps what the state does not know (e.g. after a state loss)
    old = dataclasses.replace(
        remaining[0],
        id="f" * 32,
        timestamp=day1 - dt.timedelta(days=5),
        end_timestamp=day1 - dt.timedelta(days=5),
    )
    store.upsert("signals-v0003", [old])
    monkeypatch.setattr(pipeline.SignalIngestor, "dimension", DIM)
    result = pipeline.stage_retention(settings, store, clock=lambda: clock["now"])
    assert result["deleted"] == 1 and "f" * 32 not in {d.id for d in indexed(store)}


# --- Kafka (real broker) -------------------------------------------------------------------------
def kafka_bootstrap() -> str:
    port = service_port("kafka", 19092)
    require_service("kafka", port)
    return f"127.0.0.1:{port}"


MALFORMED: list[tuple[bytes, str]] = [
    (b'{"log": "truncated', "invalid json"),
    (b"[1, 2, 3]", "json not an object"),
    (b"\xff\xfe\x00 not utf-8", "bad encoding"),
    (b"x" * 70_000, "oversized"),
    (b'{"time": "2026-01-01T00:00:00Z", "level": "info"}', "no message"),
]


def produce_loghub(
    bootstrap: str, topic: str, per_system: int, now: dt.datetime
) -> tuple[int, dict[str, int]]:
    """The loghub samples with header times rewritten to the last 10 minutes (text kept), keyed by
    system, with one malformed message after every 19 good ones (5%)."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    good = 0
    bad: dict[str, int] = {}
    for system in SYSTEMS:
        lines = loghub_lines(system, per_system)
        for i, line in enumerate(lines):
            when = now - dt.timedelta(seconds=600 * (len(lines) - i) / len(lines))
            producer.produce(topic, key=system.encode(), value=retime_line(line, when).encode())
            good += 1
            if good % 19 == 0:
                payload, reason = MALFORMED[(good // 19) % len(MALFORMED)]
                producer.produce(topic, key=system.encode(), value=payload)
                bad[reason] = bad.get(reason, 0) + 1
    producer.flush(30)
    return good, bad


def reset_offsets(bootstrap: str, group: str, topics: Sequence[str]) -> None:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    consumer.commit(offsets=[TopicPartition(t, 0, 0) for t in topics], asynchronous=False)
    consumer.close()


def read_dlq(bootstrap: str, topic: str, expected: int) -> list[dict[str, bytes]]:
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"dlq-reader-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    headers: list[dict[str, bytes]] = []
    deadline = time.monotonic() + 30
    while len(headers) < expected and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and not message.error():
            raw: Any = message.headers() or []
            headers.append({str(k): bytes(v or b"") for k, v in raw})
    consumer.close()
    return headers


@pytest.fixture
def kafka_topics(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    topics = {
        "logs": f"test-{tag}.logs",
        "events": f"test-{tag}.events",
        "metrics": f"test-{tag}.metrics",
        "group": f"test-{tag}",
    }
    monkeypatch.setenv("OPSASSIST_SIGNALS_LOG_TOPICS", topics["logs"])
    monkeypatch.setenv("OPSASSIST_SIGNALS_EVENT_TOPICS", topics["events"])
    monkeypatch.setenv("OPSASSIST_SIGNALS_METRIC_TOPICS", topics["metrics"])
    monkeypatch.setenv("OPSASSIST_SIGNALS_KAFKA_GROUP", topics["group"])
    monkeypatch.setenv("OPSASSIST_SIGNALS_KAFKA_BOOTSTRAP", kafka_bootstrap())
    return topics


@pytest.mark.services
def test_kafka_loghub_with_malformed_messages_and_replays(
    signal_settings: Settings, kafka_topics: dict[str, str]
) -> None:
    from confluent_kafka import Producer

    bootstrap = kafka_bootstrap()
    now = dt.datetime.now(UTC)
    good, bad = produce_loghub(bootstrap, kafka_topics["logs"], 120, now)
    producer = Producer({"bootstrap.servers": bootstrap})
    event = {
        "metadata": {"namespace": "shop", "uid": "e-1"},
        "involvedObject": {"kind": "Pod", "name": "cart-0", "namespace": "shop"},
        "reason": "OOMKilled",
        "message": "Container cart was OOM killed",
        "type": "Warning",
        "count": 2,
        "lastTimestamp": now.isoformat(),
    }
    producer.produce(kafka_topics["events"], value=json.dumps(event).encode())
    producer.produce(kafka_topics["metrics"], value=b'{"name": "up", "value": 1}')
    producer.produce(kafka_topics["metrics"], value=b'{"name": "up", "value": "NaN"}')
    producer.flush(30)
    bad["non-finite value"] = 1
    settings = Settings()
    store = EmbeddedIndexStore(settings.embedded_index_dir)
    ingest = ingestor(settings, store)

    source = pipeline.open_source(settings, "kafka")
    summary = pipeline.summarise("kafka", ingest.drain(source, budget_seconds=120))
    source.close()
    assert summary["accepted"] == good + 2
    assert summary["rejected"] == dict(sorted(bad.items()))
    docs = indexed(store)
    logs = [d for d in docs if d.source_type == "log"]
    assert sum(d.metadata["count"] for d in logs) == good  # every good line, once
    assert {d.source.split("/")[0] for d in logs} == set(SYSTEMS)
    assert any(d.source == "shop/Pod/cart-0" for d in docs)
    letters = read_dlq(bootstrap, kafka_topics["logs"] + ".dlq", sum(bad.values()) - 1)
    reasons: dict[str, int] = {}
    for headers in letters:
        reasons[headers["reason"].decode()] = reasons.get(headers["reason"].decode(), 0) + 1
        assert headers["origin"].decode().startswith(kafka_topics["logs"] + ":0:")
    assert reasons == {k: v for k, v in bad.items() if k != "non-finite value"}
    filters = Filters(source_types=("log",), since=now - dt.timedelta(hours=1))
    hits = hybrid_search(
        store, "signals", Query("Failed password for invalid user", mode="bm25", filters=filters)
    )
    assert hits[0].source.startswith("OpenSSH/")

    # replay the same offsets: everything is recognised as applied, nothing is written
    before = sorted(d.id for d in docs)
    reset_offsets(bootstrap, kafka_topics["group"], [kafka_topics["logs"]])
    source = pipeline.open_source(settings, "kafka")
    replay = pipeline.summarise("kafka", ingest.drain(source, budget_seconds=60))
    source.close()
    assert replay["replayed"] == good + sum(bad.values()) - 1  # the logs topic only
    assert replay["upserted"] == 0 and sorted(d.id for d in indexed(store)) == before

    # replay with the state lost as well: same documents, same ids, no duplicates
    ingest.close()
    (settings.data_dir / "signals" / "state.sqlite").unlink()
    reset_offsets(bootstrap, kafka_topics["group"], [kafka_topics[k] for k in ("logs", "events")])
    ingest = ingestor(settings, store)
    source = pipeline.open_source(settings, "kafka")
    ingest.drain(source, budget_seconds=60)
    source.close()
    ingest.close()
    assert sorted(d.id for d in indexed(store)) == before


@pytest.mark.services
def test_kafka_asset_watcher_trigger_fires_on_a_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The DAG's MessageQueueTrigger (common-messaging, Kafka provider) against the real broker."""
    bootstrap = kafka_bootstrap()
    topic = f"test-watch-{uuid.uuid4().hex[:8]}"
    connection = {
        "conn_type": "kafka",
        "extra": {
            "bootstrap.servers": bootstrap,
            "group.id": f"watch-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
        },
    }
    monkeypatch.setenv("AIRFLOW_CONN_OPSASSIST_KAFKA_WATCH", json.dumps(connection))
    from airflow.providers.common.messaging.triggers.msg_queue import MessageQueueTrigger
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, value=b"2026-01-01 00:00:00 ERROR x: y")
    producer.flush(10)
    trigger = MessageQueueTrigger(
        scheme="kafka",
        topics=[topic],
        apply_function="opsassist.sources.kafka.wake_up",
        kafka_config_id="opsassist_kafka_watch",
        poll_timeout=1,
        poll_interval=1,
    )

    async def first_event() -> Any:
        async for event in trigger.run():
            return event.payload
        return None

    payload = asyncio.run(asyncio.wait_for(first_event(), 60))
    assert payload == {"topic": topic, "partition": 0, "offset": 0}


# --- Prometheus (real server) --------------------------------------------------------------------
@pytest.mark.services
def test_prometheus_range_queries_find_a_real_anomaly(
    signal_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = service_port("prometheus", 19090)
    require_service("prometheus", port)
    into = time.time() % 30
    if into < 12:  # leave a few points between the jump and now, in the current window
        time.sleep(12 - into)
    now = dt.datetime.now(UTC)
    jump = int(now.timestamp()) // 30 * 30 + 3
    queries = {
        "jump": f"vector(100 * (time() > bool {jump}))",
        "load": "node_load1",
        "broken": "rate(",
    }
    monkeypatch.setenv("OPSASSIST_SIGNALS_PROMETHEUS_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OPSASSIST_SIGNALS_PROMQL", json.dumps(queries))
    monkeypatch.setenv("OPSASSIST_SIGNALS_WINDOW_SECONDS", "30")
    monkeypatch.setenv("OPSASSIST_SIGNALS_METRIC_STEP_SECONDS", "2")
    monkeypatch.setenv("OPSASSIST_SIGNALS_METRIC_BASELINE_SECONDS", "120")
    settings = Settings()
    store = EmbeddedIndexStore(settings.embedded_index_dir)
    ingest = ingestor(settings, store)
    source = pipeline.open_source(settings, "prometheus")
    assert isinstance(source, PrometheusSource)
    source.clock = lambda: now
    summary = pipeline.summarise("prometheus", ingest.drain(source))
    assert summary["records"] == 3 and summary["rejected"] == {"query failed": 1}
    docs = [d for d in indexed(store) if d.source == "jump"]
    assert len(docs) == 1
    text = docs[0].text
    assert "points above the baseline" in text and "the baseline was flat at 0" in text
    assert "Peak 100 at" in text and f"PromQL: {queries['jump']}" in text
    letters = (settings.data_dir / "signals/deadletter/prometheus.jsonl").read_text()
    assert '"name": "broken"' in letters and "parse error" in letters
    # the positions are committed: a second run at the same time has nothing new to evaluate
    again = pipeline.open_source(settings, "prometheus")
    assert isinstance(again, PrometheusSource)
    again.clock = lambda: now
    assert again.poll(10, 0) == []
    again.clock = lambda: now + dt.timedelta(seconds=30)
    assert [json.loads(r.payload)["evaluate_from"] for r in again.poll(10, 0)] == [
        int(now.timestamp()) // 30 * 30
    ] * 3
    ingest.close()


def test_state_lock_serialises_writers(signal_settings: Settings) -> None:
    with (
        pipeline.state_lock(signal_settings),
        pytest.raises(TimeoutError),
        pipeline.state_lock(signal_settings, timeout=0.2),
    ):
        pass  # pragma: no cover
    with pipeline.state_lock(signal_settings, timeout=0.2):
        pass


def test_unknown_source_names_are_refused(signal_settings: Settings) -> None:
    bad = signal_settings.model_copy(update={"signals_sources": "spool,ftp"})
    with pytest.raises(ValueError, match="ftp"):
        pipeline.enabled_sources(bad)
    assert pipeline.enabled_sources(signal_settings) == ["spool"]

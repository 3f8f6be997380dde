"""What only the OpenSearch store has, on the real node: the mapping it creates, per-item bulk
errors and bounded retries, the native hybrid query against the client-side fusion, time filters
agreeing with the embedded store, and the client from an Airflow connection inside a task."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from opensearchpy.exceptions import TransportError

from opsassist.documents import Chunk, make_chunk
from opsassist.index.base import Filters, FusionConfig, IndexStore, Query, hybrid_search
from opsassist.index.embedded import EmbeddedIndexStore
from opsassist.index.opensearch import OpenSearchIndexStore
from opsassist.settings import Settings
from tests.conftest import runbook_corpus
from tests.integration.opensearch_fixtures import opensearch_store, opensearch_url

pytestmark = pytest.mark.services

DIM = 8


def _unit(seed: int) -> list[float]:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return (v / np.linalg.norm(v)).tolist()


def _chunk(source: str, text: str, vector: list[float] | None, **times: Any) -> Chunk:
    chunk = make_chunk(
        source_type=times.pop("source_type", "runbook"),
        source=source,
        title=source,
        section="Meaning",
        text=text,
        **times,
    )
    chunk.vector = vector
    return chunk


@pytest.fixture
def store() -> Iterator[OpenSearchIndexStore]:
    yield from opensearch_store()


def test_version_mapping_and_alias(store: OpenSearchIndexStore) -> None:
    version = store.create_version("idx", DIM)
    assert version == "idx-v0001"
    index = f"{store.prefix}{version}"
    mapping = store.client.indices.get_mapping(index=index)[index]["mappings"]["properties"]
    assert mapping["vector"]["dimension"] == DIM
    assert mapping["vector"]["method"]["engine"] == "lucene"
    assert mapping["vector"]["method"]["space_type"] == "cosinesimil"
    assert mapping["text"]["analyzer"] == "english"
    assert mapping["timestamp"]["type"] == mapping["end_timestamp"]["type"] == "date"
    assert mapping["metadata"]["index"] is False
    assert {mapping[f]["type"] for f in ("id", "source", "source_type", "content_hash")} == {
        "keyword"
    }
    store.upsert(version, [_chunk("a.md", "alpha", _unit(1))])
    store.finalize(version)
    assert store.promote("idx", version) is None
    # a real OpenSearch alias, searchable by its (prefixed) name
    aliases = store.client.indices.get_alias(name=f"{store.prefix}idx")
    assert list(aliases) == [index]
    assert [r.row["source"] for r in store.bm25("idx", "alpha", 5, Filters())] == ["a.md"]
    v2 = store.create_version("idx", DIM, base=version)
    assert store.count(v2) == 1
    assert store.promote("idx", v2) == version
    assert list(store.client.indices.get_alias(name=f"{store.prefix}idx")) == [f"{index[:-1]}2"]
    store.drop_version(version)
    assert store.list_versions("idx") == [v2]


def test_bulk_reports_each_rejected_document_and_writes_the_rest(
    store: OpenSearchIndexStore,
) -> None:
    version = store.create_version("idx", DIM)
    good = _chunk("good.md", "good text", _unit(1))
    short = _chunk("short.md", "wrong dimension", [0.5, 0.5])
    long = _chunk("long.md", "another wrong dimension", [*_unit(2), 0.1])
    zero = _chunk("zero.md", "zero vector", [0.0] * DIM)
    missing = _chunk("none.md", "no vector", None)
    report = store.upsert(version, [short, good, long, zero, missing])
    assert report.written == 1
    reasons = dict(report.failed)
    assert set(reasons) == {short.id, long.id, zero.id, missing.id}
    # the dimension is checked by the node, per item, in the bulk response
    assert "dimension" in reasons[short.id].lower() and "dimension" in reasons[long.id].lower()
    assert reasons[zero.id].startswith("vector_norm")
    assert store.count(version) == 1 and store.ids_by_source(version) == {"good.md": {good.id}}


def test_bulk_retries_back_pressure_and_gives_up_after_bounded_retries(
    store: OpenSearchIndexStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.retry_backoff = 0.0
    version = store.create_version("idx", DIM)
    chunks = [_chunk(f"{i}.md", f"text {i}", _unit(i)) for i in range(5)]
    real_bulk = store.client.bulk
    calls: list[int] = []

    def rejecting_first(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise TransportError(429, "es_rejected_execution_exception", {})
        return real_bulk(*args, **kwargs)

    monkeypatch.setattr(store.client, "bulk", rejecting_first)
    report = store.upsert(version, chunks)
    assert report.written == 5 and report.failed == [] and len(calls) == 2

    calls.clear()

    def always_unavailable(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        raise TransportError(503, "unavailable", {})

    monkeypatch.setattr(store.client, "bulk", always_unavailable)
    report = store.upsert(version, [_chunk("x.md", "never written", _unit(9))])
    assert report.written == 0 and len(report.failed) == 1 and "503" in report.failed[0][1]
    assert len(calls) == store.bulk_retries + 1


def test_native_hybrid_and_client_fusion_agree_on_the_obvious_winner(
    store: OpenSearchIndexStore,
) -> None:
    target = _unit(7)
    chunks = [
        _chunk("etcd/NoLeader.md", "etcd cluster has no leader, elections keep failing", target),
        _chunk("k8s/CrashLoop.md", "pod is crash looping and restarting", _unit(1)),
        _chunk("node/Disk.md", "filesystem on the node is almost out of space", _unit(2)),
        _chunk("etcd/Fsync.md", "etcd fsync durations are high on slow disks", _unit(3)),
        _chunk("am/Notify.md", "alertmanager failed to send notifications", _unit(4)),
    ]
    version = store.create_version("idx", DIM)
    store.upsert(version, chunks)
    store.finalize(version)
    store.promote("idx", version)
    vector = np.array(target, dtype=np.float32)

    native = store.native_hybrid("idx", "etcd leader election", vector, 5, weights=(0.5, 0.5))
    client = hybrid_search(
        store,
        "idx",
        Query(text="etcd leader election", vector=vector, k=5),
        FusionConfig(method="weighted", vector_weight=0.5),
    )
    assert native[0].row["source"] == client[0].source == "etcd/NoLeader.md"
    assert native[0].score == pytest.approx(1.0, abs=1e-3)  # best in both lists after min-max
    assert all(0.0 <= r.score <= 1.0 for r in native)
    # both return the union of the two candidate lists, best first
    assert {r.id for r in native} == {h.id for h in client} == {c.id for c in chunks}
    assert [r.score for r in native] == sorted((r.score for r in native), reverse=True)
    # filters apply to both sub-queries
    only_k8s = Filters(sources=("k8s/CrashLoop.md",))
    filtered = store.native_hybrid("idx", "etcd leader", vector, 5, only_k8s, weights=(0.3, 0.7))
    assert [r.row["source"] for r in filtered] == ["k8s/CrashLoop.md"]


@pytest.fixture
def both(tmp_path: Path) -> Iterator[tuple[IndexStore, IndexStore]]:
    for opensearch in opensearch_store():
        yield EmbeddedIndexStore(tmp_path / "index"), opensearch


def test_time_filters_match_the_embedded_store(both: tuple[IndexStore, IndexStore]) -> None:
    now = dt.datetime(2026, 11, 25, 12, tzinfo=dt.UTC)
    hour = dt.timedelta(hours=1)
    chunks = [
        _chunk("w/old", "window errors closed long ago", _unit(1), timestamp=now - 48 * hour),
        _chunk(
            "w/long",
            "window errors started long ago still open recently",
            _unit(2),
            timestamp=now - 48 * hour,
            end_timestamp=now - hour / 2,
        ),
        _chunk("w/recent", "window errors recent point", _unit(3), timestamp=now - hour / 4),
        _chunk(
            "w/ended",
            "window errors recent start ended before since",
            _unit(4),
            source_type="log",
            timestamp=now - 3 * hour,
            end_timestamp=now - 2 * hour,
        ),
        _chunk("w/none", "window errors without any time", _unit(5)),
    ]
    for store in both:
        version = store.create_version("idx", DIM)
        store.upsert(version, chunks)
        store.finalize(version)
        store.promote("idx", version)
    cases = {
        "since": (Filters(since=now - hour), {"w/long", "w/recent"}),
        "until": (Filters(until=now - 2 * hour), {"w/old", "w/long", "w/ended"}),
        "window": (Filters(since=now - 4 * hour, until=now - hour), {"w/long", "w/ended"}),
        "log only": (Filters(source_types=("log",)), {"w/ended"}),
        "naive since": (Filters(since=(now - hour).replace(tzinfo=None)), None),
    }
    vector = np.array(_unit(3), dtype=np.float32)
    for name, (filters, expected) in cases.items():
        found = []
        for store in both:
            version = store.current_version("idx") or ""
            lexical = {r.row["source"] for r in store.bm25(version, "window errors", 10, filters)}
            semantic = {r.row["source"] for r in store.knn(version, vector, 10, filters)}
            assert lexical == semantic, (name, type(store).__name__)
            found.append(lexical)
        assert found[0] == found[1], name
        if expected is not None:
            assert found[0] == expected, name


@pytest.mark.slow
def test_runbook_dag_on_opensearch_through_the_airflow_connection(
    airflow_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runbook DAG (``dag.test()``) with OPSASSIST_INDEX_BACKEND=opensearch: inside its tasks
    ``get_index_store`` takes the client from the provider's hook (the URL setting is wrong on
    purpose), and the promoted version is then searchable from outside Airflow by URL."""
    from urllib.parse import urlparse

    from airflow.dag_processing.dagbag import DagBag

    from opsassist.hooks import in_airflow_task
    from opsassist.search import search
    from opsassist.settings import get_settings

    url = opensearch_url()
    parsed = urlparse(url)
    corpus = tmp_path / "runbooks"
    for relative in ("etcd/etcdNoLeader.md", "kubernetes/KubePodCrashLooping.md"):
        (corpus / relative).parent.mkdir(parents=True, exist_ok=True)
        (corpus / relative).write_bytes((runbook_corpus() / relative).read_bytes())
    conn_id = f"opsassist_os_{uuid.uuid4().hex[:8]}"
    prefix = f"test-{uuid.uuid4().hex[:10]}-"
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}",
        json.dumps({"conn_type": "opensearch", "host": parsed.hostname, "port": parsed.port}),
    )
    monkeypatch.setenv("OPSASSIST_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("OPSASSIST_CACHE_BACKEND", "memory")
    monkeypatch.setenv("OPSASSIST_INDEX_BACKEND", "opensearch")
    monkeypatch.setenv("OPSASSIST_OPENSEARCH_CONN_ID", conn_id)
    monkeypatch.setenv("OPSASSIST_OPENSEARCH_INDEX_PREFIX", prefix)
    monkeypatch.setenv("OPSASSIST_OPENSEARCH_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("OPSASSIST_GATE_ALLOW_UNJUDGED_FIRST_BUILD", "true")  # two runbooks
    get_settings.cache_clear()
    outside = OpenSearchIndexStore.from_settings(
        Settings(opensearch_url=url, opensearch_index_prefix=prefix)
    )
    try:
        dag = DagBag(str(Path(__file__).resolve().parents[2] / "dags")).get_dag("runbooks_index")
        run = dag.test(run_conf={"runbooks_path": str(corpus)})
        states = {ti.task_id: ti.state for ti in run.get_task_instances()}
        assert run.state == "success", states
        assert states["promote"] == "success" and states["validate"] == "success"
        assert in_airflow_task() is False  # outside the task the URL setting is what counts
        assert outside.current_version("runbooks") == "runbooks-v0001"
        assert set(outside.ids_by_source("runbooks-v0001")) == {
            "etcd/etcdNoLeader.md",
            "kubernetes/KubePodCrashLooping.md",
        }
        settings = get_settings().model_copy(update={"opensearch_url": url})
        hits = search("etcd cluster has no leader", settings=settings, store=outside, k=3)
        assert hits[0].source == "etcd/etcdNoLeader.md"
    finally:
        get_settings.cache_clear()
        outside.purge_prefix()

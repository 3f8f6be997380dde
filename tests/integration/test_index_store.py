"""Index-store contract: indexing, search, alias promotion and stale deletion.

Parametrised over backends so they cannot drift; the OpenSearch case runs against the real node
started by ``scripts/services``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from opsassist.documents import Chunk, make_chunk
from opsassist.index.base import (
    Filters,
    IndexStore,
    IndexUnavailableError,
    Query,
    RankedRow,
    hybrid_search,
)
from tests.integration.opensearch_fixtures import opensearch_store

DIM = 8


def _vector(seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(DIM).astype(np.float32)
    return (v / np.linalg.norm(v)).tolist()


def _chunk(
    source: str,
    text: str,
    seed: int,
    source_type: str = "runbook",
    timestamp: dt.datetime | None = None,
) -> Chunk:
    chunk = make_chunk(
        source_type=source_type,
        source=source,
        title=source,
        section="Meaning",
        text=text,
        timestamp=timestamp,
    )
    chunk.vector = _vector(seed)
    return chunk


@pytest.fixture(
    params=[
        "embedded",
        "embedded-lancedb",  # searched by LanceDB itself, not the in-memory copy
        pytest.param("opensearch", marks=pytest.mark.services),
    ]
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[IndexStore]:
    if request.param == "opensearch":
        yield from opensearch_store()
        return
    from opsassist.index.embedded import EmbeddedIndexStore

    memory_max_rows = 0 if request.param == "embedded-lancedb" else 20_000
    yield EmbeddedIndexStore(tmp_path / "index", memory_max_rows=memory_max_rows)


def test_build_promote_and_search(store: IndexStore) -> None:
    chunks = [
        _chunk("k/CrashLoop.md", "pod is crash looping and restarting", 1),
        _chunk("e/NoLeader.md", "etcd cluster has no leader", 2),
        _chunk("n/Disk.md", "filesystem almost out of space on node", 3),
    ]
    version = store.create_version("idx", DIM)
    assert store.upsert(version, chunks).written == 3
    store.finalize(version)
    with pytest.raises(IndexUnavailableError):
        hybrid_search(store, "idx", Query(text="etcd", vector=np.array(_vector(2))))
    assert store.promote("idx", version) is None
    hits = hybrid_search(store, "idx", Query(text="etcd leader", vector=np.array(_vector(2)), k=3))
    assert hits[0].source == "e/NoLeader.md"
    assert hits[0].bm25_rank == 1 and hits[0].vector_rank == 1
    bm25 = hybrid_search(store, "idx", Query(text="filesystem space", k=2, mode="bm25"))
    assert [h.source for h in bm25] == ["n/Disk.md"]
    vector = hybrid_search(
        store, "idx", Query(text="", vector=np.array(_vector(1)), k=1, mode="vector")
    )
    assert vector[0].source == "k/CrashLoop.md"
    assert vector[0].score == pytest.approx(1.0, abs=1e-4)


def test_new_version_is_invisible_until_promoted_and_stale_chunks_deleted(
    store: IndexStore,
) -> None:
    old = _chunk("a.md", "alpha runbook old text", 1)
    keep = _chunk("b.md", "bravo runbook stays", 2)
    v1 = store.create_version("idx", DIM)
    store.upsert(v1, [old, keep])
    store.finalize(v1)
    store.promote("idx", v1)

    new = _chunk("a.md", "alpha runbook new text", 3)
    v2 = store.create_version("idx", DIM, base=v1)
    assert store.delete(v2, [old.id]) == 1
    store.upsert(v2, [new])
    store.finalize(v2)
    assert store.count(v2) == 2 and store.count(v1) == 2
    # readers still see v1
    hits = hybrid_search(store, "idx", Query(text="alpha", k=5, mode="bm25"))
    assert [h.id for h in hits] == [old.id]
    assert store.promote("idx", v2) == v1
    hits = hybrid_search(store, "idx", Query(text="alpha", k=5, mode="bm25"))
    assert [h.id for h in hits] == [new.id]
    assert store.ids_by_source(v2) == {"a.md": {new.id}, "b.md": {keep.id}}
    assert store.list_versions("idx") == [v1, v2]
    with pytest.raises(ValueError, match="alias points"):
        store.drop_version(v2)


def test_a_version_records_its_embedding_model_and_refuses_another(store: IndexStore) -> None:
    """The model a version's vectors come from is kept with the version (a copy inherits it);
    searching it with another model's vectors is refused with a message that says what to do.
    Versions that record nothing were built with the old default model."""
    from opsassist.index.base import EmbeddingModelMismatch, check_model

    legacy = store.create_version("idx", DIM)
    assert store.version_model(legacy) is None
    check_model(store, legacy, "all-MiniLM-L6-v2")
    v1 = store.create_version("idx", DIM, model="multilingual-e5-small")
    store.upsert(v1, [_chunk("a.md", "alpha", 1)])
    store.finalize(v1)
    v2 = store.create_version("idx", DIM, base=v1)
    assert store.version_model(v1) == store.version_model(v2) == "multilingual-e5-small"
    check_model(store, v2, "multilingual-e5-small")
    with pytest.raises(EmbeddingModelMismatch, match="OPSASSIST_EMBEDDING_MODEL=multilingual-e5"):
        check_model(store, v2, "all-MiniLM-L6-v2")


def test_upsert_is_idempotent_and_reports_bad_vectors(store: IndexStore) -> None:
    version = store.create_version("idx", DIM)
    chunk = _chunk("a.md", "some text here", 1)
    store.upsert(version, [chunk])
    store.upsert(version, [chunk])
    assert store.count(version) == 1
    bad = make_chunk(source_type="runbook", source="b.md", title="b", section="s", text="bad one")
    bad.vector = [0.1, 0.2]
    report = store.upsert(version, [bad])
    assert report.written == 0 and report.failed[0][0] == bad.id
    fetched = store.fetch(version, [chunk.id])
    assert fetched[0].text == chunk.text
    assert fetched[0].vector == pytest.approx(chunk.vector)


def test_filters_on_source_type_and_time(store: IndexStore) -> None:
    now = dt.datetime(2026, 11, 25, 12, tzinfo=dt.UTC)
    chunks = [
        _chunk("k/A.md", "payments service errors", 1),
        _chunk(
            "svc/payments", "payments errors spiked x20", 2, "log", now - dt.timedelta(minutes=5)
        ),
        _chunk("svc/payments", "payments errors old window", 3, "log", now - dt.timedelta(days=2)),
    ]
    version = store.create_version("idx", DIM)
    store.upsert(version, chunks)
    store.finalize(version)
    store.promote("idx", version)
    recent = Filters(source_types=("log",), since=now - dt.timedelta(hours=1))
    hits = hybrid_search(
        store,
        "idx",
        Query(text="payments errors", vector=np.array(_vector(2)), k=5, filters=recent),
    )
    assert [h.text for h in hits] == ["payments errors spiked x20"]
    assert hits[0].timestamp is not None and hits[0].timestamp.startswith("2026-11-25T11:55")


def test_in_memory_vector_search_ranks_as_lancedb_does(tmp_path: Path) -> None:
    """Small tables are vector-searched in memory: same ids, order and scores as LanceDB's own
    exact search on the same table, with every filter (including missing end times and
    sub-second bounds), and a write is seen at once."""
    from opsassist.index.embedded import EmbeddedIndexStore

    root = tmp_path / "index"
    lancedb_only = EmbeddedIndexStore(root, memory_max_rows=0)
    in_memory = EmbeddedIndexStore(root)
    base = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
    chunks = []
    for i in range(300):
        kind = ("runbook", "log", "metric")[i % 3]
        when = None if kind == "runbook" else base + dt.timedelta(seconds=7.25 * i)
        chunk = _chunk(f"s{i % 7}", f"text {i}", 1000 + i, kind, when)
        if i % 2 and when is not None:
            chunk.end_timestamp = when + dt.timedelta(seconds=30)
        chunks.append(chunk)
    version = lancedb_only.create_version("idx", DIM)
    lancedb_only.upsert(version, chunks)
    lancedb_only.finalize(version)
    rng = np.random.default_rng(7)
    since = base + dt.timedelta(seconds=400.5)
    filter_sets = [
        Filters(),
        Filters(source_types=("log", "metric")),
        Filters(sources=("s1", "s3")),
        Filters(since=since),
        Filters(until=since + dt.timedelta(seconds=600)),
        Filters(source_types=("log",), since=since, until=since + dt.timedelta(minutes=20)),
    ]
    for filters in filter_sets:
        for _ in range(5):
            query = rng.standard_normal(DIM).astype(np.float32)
            want = lancedb_only.knn(version, query, 20, filters)
            got = in_memory.knn(version, query, 20, filters)
            assert want, filters
            assert [r.id for r in got] == [r.id for r in want], filters
            assert [r.score for r in got] == pytest.approx([r.score for r in want], abs=1e-5)
            fields = [{k: v for k, v in r.row.items() if k != "_distance"} for r in want]
            assert [r.row for r in got] == fields
    assert in_memory._memory.get(version) is not None  # the matrix was used, not LanceDB

    newest = _chunk("s9", "a new signal", 5000, "log", base)
    in_memory.upsert(version, [newest])
    hit = in_memory.knn(version, np.array(newest.vector), 1, Filters())
    assert [r.id for r in hit] == [newest.id]


def _runbook_paragraphs(limit: int) -> list[str]:
    """Real prose with real vocabulary: paragraphs of the shipped runbooks."""
    root = Path(__file__).resolve().parents[2] / "include/opsassist/corpora/runbooks"
    paragraphs: list[str] = []
    for path in sorted(root.rglob("*.md")):
        paragraphs += [p.strip() for p in path.read_text().split("\n\n") if len(p.strip()) > 40]
    return paragraphs[:limit]


def _same_ranking(got: list[RankedRow], want: list[RankedRow]) -> None:
    """Same ids and scores (float32 precision), in the same order except within groups of equal
    scores, whose order LanceDB leaves undefined."""
    assert [r.score for r in got] == pytest.approx([r.score for r in want], rel=1e-5)
    start = 0
    for end in range(1, len(want) + 1):
        if end == len(want) or want[end].score < want[start].score * (1 - 1e-5):
            assert {r.id for r in got[start:end]} == {r.id for r in want[start:end]}
            start = end


def test_in_memory_bm25_scores_as_lancedb_does(tmp_path: Path) -> None:
    """A finalized small table is BM25-searched in memory: the same matches and scores as
    LanceDB's full-text index on real runbook prose, for natural, random, odd (quotes, case,
    accents, repeated words, stop words only) queries under every filter. A write makes LanceDB
    answer again (its index no longer holds the table's rows) until the next finalize."""
    import random

    from opsassist.index.embedded import EmbeddedIndexStore

    root = tmp_path / "index"
    lancedb_only = EmbeddedIndexStore(root, memory_max_rows=0, read_consistency_seconds=0)
    in_memory = EmbeddedIndexStore(root)
    base = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
    paragraphs = _runbook_paragraphs(240)
    chunks = []
    for i, text in enumerate(paragraphs):
        kind = ("runbook", "log", "metric")[i % 3]
        when = None if kind == "runbook" else base + dt.timedelta(seconds=7.25 * i)
        chunks.append(_chunk(f"s{i % 7}", text, i, kind, when))
    version = lancedb_only.create_version("idx", DIM)
    lancedb_only.upsert(version, chunks)
    lancedb_only.finalize(version)

    words = " ".join(paragraphs).split()
    rng = random.Random(3)
    queries = [
        "why does my pod keep crash looping?",
        "etcd has no leader",
        "node node disk full pressure",
        "Alertmanager FAILS to send notifications!!",
        '"crash loop" in the kube-apiserver',
        "kube_pod_container_status_restarts_total > 0",
        "ÉTCD Leader élection über",
        "the of and",
        "zzzz-not-a-word",
    ] + [" ".join(rng.sample(words, rng.randint(1, 7))) for _ in range(40)]
    since = base + dt.timedelta(seconds=400.5)
    filter_sets = [
        Filters(),
        Filters(source_types=("log", "metric")),
        Filters(sources=("s1", "s3")),
        Filters(since=since, until=since + dt.timedelta(minutes=10)),
    ]
    matched = 0
    for filters in filter_sets:
        for text in queries:
            want = lancedb_only.bm25(version, text, 1000, filters)
            got = in_memory.bm25(version, text, 1000, filters)
            _same_ranking(got, want)
            fields = {r.id: {k: v for k, v in r.row.items() if k != "_score"} for r in want}
            assert {r.id: {k: v for k, v in r.row.items() if k != "_score"} for r in got} == fields
            top = in_memory.bm25(version, text, 5, filters)
            assert [r.id for r in top] == [r.id for r in got[:5]]
            matched += len(want)
    assert matched > 1000
    held = in_memory._memory.get(version)
    assert held is not None and held.bm25 is not None  # the in-memory index answered

    newest = _chunk("s9", "quasar flux capacitor overheating", 5000, "log", base)
    in_memory.upsert(version, [newest, chunks[0]])  # a new row and a rewritten one (deleted)
    assert [r.id for r in in_memory.bm25(version, "quasar flux", 5, Filters())] == [newest.id]
    held = in_memory._memory.get(version)
    assert held is not None and held.bm25 is None  # not finalized since: LanceDB answered
    in_memory.finalize(version)
    for text in [*queries[:5], "quasar flux"]:
        got = in_memory.bm25(version, text, 1000, Filters())
        _same_ranking(got, lancedb_only.bm25(version, text, 1000, Filters()))
    held = in_memory._memory.get(version)
    assert held is not None and held.bm25 is not None
    assert got[0].id == newest.id


def test_long_lived_embedded_reader_sees_rows_written_by_another_process(tmp_path: Path) -> None:
    """The chat server keeps one store open for hours while the signal DAG appends rows from
    another process: its searches must catch up within the read-consistency interval."""
    import subprocess
    import sys
    import time

    from opsassist.index.embedded import EmbeddedIndexStore

    root = tmp_path / "index"
    writer = EmbeddedIndexStore(root)
    version = writer.create_version("signals", DIM)
    writer.upsert(version, [_chunk("a.log", "disk pressure on node one", 1, "log")])
    writer.promote("signals", version)
    reader = EmbeddedIndexStore(root, read_consistency_seconds=0.5)
    query = Query(text="kernel panic", k=5, mode="bm25")
    assert hybrid_search(reader, "signals", query) == []  # opens and caches the table

    script = f"""
import sys
sys.path[:0] = {sys.path!r}
from pathlib import Path
from opsassist.index.embedded import EmbeddedIndexStore
from tests.integration.test_index_store import _chunk
store = EmbeddedIndexStore(Path({str(root)!r}))
store.upsert({version!r}, [_chunk("b.log", "kernel panic on node two", 2, "log")])
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    deadline = time.monotonic() + 10
    hits = hybrid_search(reader, "signals", query)
    while not hits and time.monotonic() < deadline:
        time.sleep(0.2)
        hits = hybrid_search(reader, "signals", query)
    assert [h.source for h in hits] == ["b.log"]
    # and its vector search (in memory for a table this small) sees the new row too
    new_vector = np.array(_chunk("b.log", "kernel panic on node two", 2, "log").vector)
    by_vector = Query(text="", vector=new_vector, k=1, mode="vector")
    nearest = hybrid_search(reader, "signals", by_vector)
    assert [h.source for h in nearest] == ["b.log"]


def test_embedded_ann_index_keeps_exact_recall_on_near_duplicates(tmp_path: Path) -> None:
    """Above ``ann_min_rows`` the embedded store searches a scalar-quantized HNSW index. Near-
    duplicate vectors (windows of one log template, edits of one runbook) collapse in its
    quantized space, so alone it returns about half of the true 10 nearest here; the exact
    re-ranking of ``refine_factor`` x as many candidates brings recall back."""
    from opsassist.index.embedded import EmbeddedIndexStore

    rng = np.random.default_rng(1)
    dim, n = 384, 3000
    base = rng.standard_normal((n // 2, dim)).astype(np.float32)
    vectors = np.concatenate([base, base + 0.02 * rng.standard_normal(base.shape)])
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    chunks = []
    for i, vector in enumerate(vectors):
        chunk = make_chunk(
            source_type="runbook", source=f"r/{i}.md", title=str(i), section="s", text=f"doc {i}"
        )
        chunk.vector = vector.tolist()
        chunks.append(chunk)
    ids = [c.id for c in chunks]
    picks = rng.integers(0, n, 60)
    queries = vectors[picks] + 0.3 * rng.standard_normal((60, dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exact = [{ids[j] for j in np.argsort(-(vectors @ q))[:10]} for q in queries]

    def recall(refine_factor: int) -> float:
        store = EmbeddedIndexStore(
            tmp_path / "index", ann_min_rows=1000, refine_factor=refine_factor
        )
        version = store.current_version("r") or store.create_version("r", dim)
        if store.count(version) == 0:
            store.upsert(version, chunks)
            store.finalize(version)  # builds the HNSW index: n >= ann_min_rows
            store.promote("r", version)
        found = [{r.id for r in store.knn(version, q, 10, Filters())} for q in queries]
        return float(np.mean([len(f & e) / 10 for f, e in zip(found, exact, strict=True)]))

    assert recall(10) >= 0.95
    assert recall(0) < 0.8  # the quantized index alone: what the refinement is for

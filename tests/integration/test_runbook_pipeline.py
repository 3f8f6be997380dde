"""The runbook pipeline end to end in one process (the same stage functions the DAG runs):
incremental re-runs, quarantine of bad files, validation refusing a bad build, and answer-cache
invalidation in a real Redis."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from opsassist.cache.base import CachedAnswer
from opsassist.cache.redis import RedisKnowledgeCache
from opsassist.embedding import model_dimension
from opsassist.index.base import IndexStore
from opsassist.index.embedded import EmbeddedIndexStore
from opsassist.pipelines import runbooks as pipeline
from opsassist.settings import Settings
from tests.conftest import runbook_corpus
from tests.integration.opensearch_fixtures import opensearch_store

SUBSET = [
    "kubernetes/KubePodCrashLooping.md",
    "kubernetes/KubePodNotReady.md",
    "kubernetes/KubeNodeNotReady.md",
    "etcd/etcdNoLeader.md",
    "etcd/etcdMembersDown.md",
    "node/NodeFilesystemAlmostOutOfSpace.md",
    "alertmanager/AlertmanagerFailedToSendAlerts.md",
    "kubernetes/_index.md",
]
TARGET = "kubernetes/KubePodCrashLooping.md"


@pytest.fixture
def small_corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    for relative in SUBSET:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(runbook_corpus() / relative, root / relative)
    return root


@pytest.fixture(params=["embedded", pytest.param("opensearch", marks=pytest.mark.services)])
def store(request: pytest.FixtureRequest, settings: Settings) -> Iterator[IndexStore]:
    """The same pipeline tests on both backends (OpenSearch: a unique prefix per test)."""
    if request.param == "opensearch":
        yield from opensearch_store()
        return
    yield EmbeddedIndexStore(settings.embedded_index_dir)


@pytest.fixture
def redis_cache(redis_url: str) -> Iterator[RedisKnowledgeCache]:
    cache = RedisKnowledgeCache(redis_url, f"test-{uuid.uuid4().hex[:8]}")
    yield cache
    for key in cache._redis.scan_iter(match=f"{cache.prefix}:*"):
        cache._redis.delete(key)


def _run(
    settings: Settings, root: Path, store: IndexStore, cache: RedisKnowledgeCache, run: str
) -> dict:  # type: ignore[type-arg]
    return pipeline.run_pipeline(settings, root, store, cache, run_id=run)


def test_incremental_runs_embed_only_what_changed(
    settings: Settings, small_corpus: Path, redis_cache: RedisKnowledgeCache, store: IndexStore
) -> None:
    first = _run(settings, small_corpus, store, redis_cache, "r1")
    v1 = first["version"]
    assert first["promoted"] and first["embed"]["embedded"] == first["collect"]["chunks"] > 10
    assert first["collect"]["skipped"] == ["kubernetes/_index.md"]
    assert redis_cache.pack_version() == v1
    assert TARGET in redis_cache.get_pack([TARGET])

    redis_cache.put_answer(
        CachedAnswer("why is my pod restarting", "see runbook", [TARGET], v1), 600
    )
    redis_cache.put_answer(
        CachedAnswer("etcd no leader", "see etcd runbook", ["etcd/etcdNoLeader.md"], v1), 600
    )

    second = _run(settings, small_corpus, store, redis_cache, "r2")
    assert second["embed"]["embedded"] == 0
    assert second["promoted"] is False and second["version"] == v1
    assert store.list_versions(settings.runbook_index) == [v1]

    before = store.ids_by_source(v1)
    path = small_corpus / TARGET
    path.write_text(
        path.read_text().replace(
            "Talk with developers or read documentation about the app",
            "Roll back the last deployment, then talk with the developers",
        )
    )
    third = _run(settings, small_corpus, store, redis_cache, "r3")
    v2 = third["version"]
    assert third["promoted"] and v2 != v1
    assert third["embed"]["embedded"] == 1
    assert third["plan"]["stale"] == 1 and third["plan"]["changed_sources"] == [TARGET]
    after = store.ids_by_source(v2)
    assert len(after[TARGET] - before[TARGET]) == 1  # the rewritten chunk
    assert len(before[TARGET] - after[TARGET]) == 1  # its stale predecessor is gone
    assert {s: i for s, i in after.items() if s != TARGET} == {
        s: i for s, i in before.items() if s != TARGET
    }
    assert store.count(v2) == store.count(v1)
    # cache: the answer citing the changed runbook is invalidated, the other one carried over
    assert third["cache"] == {"pack_entries": 7, "answers_kept": 1, "answers_invalidated": 1}
    assert redis_cache.get_answer("why is my pod restarting", v2) is None
    assert redis_cache.get_answer("etcd no leader", v2) is not None


def test_malformed_runbooks_are_quarantined_and_nothing_is_lost(
    settings: Settings, small_corpus: Path, redis_cache: RedisKnowledgeCache, store: IndexStore
) -> None:
    first = _run(settings, small_corpus, store, redis_cache, "q1")
    good_before = store.ids_by_source(first["version"])

    bad = small_corpus / "bad"
    bad.mkdir()
    (bad / "BrokenFrontMatter.md").write_text("---\ntitle: [oops\n---\n# X\n\nbody text here\n")
    (bad / "Empty.md").write_text("---\ntitle: Empty\n---\n\n")
    (bad / "Binary.md").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00binary")
    (bad / "Latin1.md").write_bytes("# Caf\u00e9\n\nd\u00e9j\u00e0 vu".encode("latin-1"))
    # a runbook that was indexed before now breaks: its chunks must survive
    (small_corpus / "etcd/etcdNoLeader.md").write_bytes(b"\xff\xfe broken \x00")

    second = _run(settings, small_corpus, store, redis_cache, "q2")
    reasons = {q["source"]: q["reason"] for q in second["collect"]["quarantined"]}
    assert reasons == {
        "bad/BrokenFrontMatter.md": "broken front matter",
        "bad/Empty.md": "no text",
        "bad/Binary.md": "binary content",
        "bad/Latin1.md": "unreadable encoding",
        "etcd/etcdNoLeader.md": "binary content",
    }
    quarantine_file = settings.quarantine_dir / "runbooks.json"
    assert quarantine_file.exists() and "bad/Latin1.md" in quarantine_file.read_text()
    assert second["plan"]["has_changes"] is False  # nothing good changed, nothing lost
    assert store.ids_by_source(store.current_version(settings.runbook_index) or "") == good_before


def test_failed_validation_refuses_promotion(
    settings: Settings,
    small_corpus: Path,
    redis_cache: RedisKnowledgeCache,
    monkeypatch: pytest.MonkeyPatch,
    store: IndexStore,
) -> None:
    good = _run(settings, small_corpus, store, redis_cache, "g1")["version"]
    (small_corpus / "node" / "NewRunbook.md").write_text(
        "---\ntitle: New Runbook\n---\n# NewRunbook\n\n## Meaning\n\nSomething new happened.\n"
    )

    def zero_vectors(texts, *args, **kwargs):  # type: ignore[no-untyped-def]
        dimension = model_dimension(settings.embedding_model)
        return np.zeros((len(texts), dimension), dtype=np.float32)  # "empty embeddings"

    monkeypatch.setattr(pipeline, "embed_texts", zero_vectors)
    with pytest.raises(pipeline.BuildRefusedError, match="vector_norm"):
        _run(settings, small_corpus, store, redis_cache, "g2")
    assert store.current_version(settings.runbook_index) == good
    assert redis_cache.pack_version() == good
    assert store.list_versions(settings.runbook_index) == [good]  # the refused build is not kept


def test_an_unchanged_corpus_still_publishes_its_pack_to_a_cache_that_lacks_it(
    settings: Settings, small_corpus: Path, redis_url: str
) -> None:
    """Switching the cache (memory to Redis, a flushed Redis) and re-running on an unchanged
    corpus builds nothing, yet the new cache gets the promoted version's knowledge pack; the
    pack is also kept beside the index for readers in other processes."""
    from opsassist.cache.memory import MemoryKnowledgeCache
    from opsassist.knowledge import PACK_FORMAT, load_pack

    store = EmbeddedIndexStore(settings.embedded_index_dir)
    first = pipeline.run_pipeline(settings, small_corpus, store, MemoryKnowledgeCache(), "p1")
    version = first["version"]
    kept = load_pack(settings.data_dir, version)
    assert kept is not None and kept[TARGET]["format"] == PACK_FORMAT
    assert kept[TARGET]["sections"][0]["blocks"]

    fresh = RedisKnowledgeCache(redis_url, f"test-{uuid.uuid4().hex[:8]}")
    try:
        again = pipeline.run_pipeline(settings, small_corpus, store, fresh, "p2")
        assert not again["promoted"] and again["embed"]["embedded"] == 0
        assert again["plan"]["pack_published"] is True
        assert fresh.pack_version() == version and TARGET in fresh.get_pack([TARGET])
        third = pipeline.run_pipeline(settings, small_corpus, store, fresh, "p3")
        assert third["plan"]["pack_published"] is False  # already there: not written again
    finally:
        for key in fresh._redis.scan_iter(match=f"{fresh.prefix}:*"):
            fresh._redis.delete(key)


def test_a_pack_of_an_older_format_is_rebuilt_although_no_runbook_changed(
    settings: Settings, small_corpus: Path, redis_url: str
) -> None:
    """After an upgrade that parses runbooks differently (a new PACK_FORMAT), re-running on an
    unchanged corpus embeds nothing, but the pack kept beside the index and the one in Redis are
    both replaced by this version's entries instead of serving the old blocks."""
    from opsassist.knowledge import PACK_FORMAT, load_pack, save_pack

    store = EmbeddedIndexStore(settings.embedded_index_dir)
    cache = RedisKnowledgeCache(redis_url, f"test-{uuid.uuid4().hex[:8]}")
    try:
        version = pipeline.run_pipeline(settings, small_corpus, store, cache, "f1")["version"]
        old = {
            s: {**e, "format": PACK_FORMAT - 1, "sections": []}
            for s, e in (load_pack(settings.data_dir, version) or {}).items()
        }
        save_pack(settings.data_dir, version, old)
        cache.put_pack(version, old)

        again = pipeline.run_pipeline(settings, small_corpus, store, cache, "f2")
        assert again["embed"]["embedded"] == 0 and again["plan"]["pack_published"] is True
        kept = load_pack(settings.data_dir, version)
        assert kept is not None and kept[TARGET]["format"] == PACK_FORMAT
        assert kept[TARGET]["sections"]
        cached = cache.get_pack([TARGET])[TARGET]
        assert cached["format"] == PACK_FORMAT and cached["sections"]
    finally:
        for key in cache._redis.scan_iter(match=f"{cache.prefix}:*"):
            cache._redis.delete(key)


def test_a_new_embedding_model_rebuilds_the_index_and_the_old_model_is_refused(
    settings: Settings, small_corpus: Path
) -> None:
    """Changing OPSASSIST_EMBEDDING_MODEL embeds every chunk again into a version of its own
    (never vectors of two models in one index); a reader still configured with the old model
    gets a clear error instead of meaningless similarities."""
    from opsassist.cache.memory import MemoryKnowledgeCache
    from opsassist.index.base import EmbeddingModelMismatch
    from opsassist.search import search

    store = EmbeddedIndexStore(settings.embedded_index_dir)
    english = settings.model_copy(update={"embedding_model": "all-MiniLM-L6-v2"})
    first = pipeline.run_pipeline(english, small_corpus, store, MemoryKnowledgeCache(), "m1")
    assert store.version_model(first["version"]) == "all-MiniLM-L6-v2"
    multilingual = settings.model_copy(update={"embedding_model": "use-multilingual-v3"})
    second = pipeline.run_pipeline(multilingual, small_corpus, store, MemoryKnowledgeCache(), "m2")
    assert second["promoted"] and second["plan"]["base_version"] is None
    assert second["embed"]["embedded"] == second["collect"]["chunks"]  # nothing reused
    assert store.version_model(second["version"]) == "use-multilingual-v3"
    hits = search("под постоянно перезапускается", settings=multilingual, store=store, k=3)
    assert hits and hits[0].vector_score is not None
    with pytest.raises(EmbeddingModelMismatch, match="built with the embedding model"):
        search("pod keeps restarting", settings=english, store=store, k=3)
    assert search("pod restart", settings=english, store=store, k=3, mode="bm25")  # no vectors


# --- hardening: a wrong folder, rollback, an empty folder, concurrent builds, a killed build -----
def test_a_wrong_folder_is_refused_instead_of_wiping_the_index_and_rollback_goes_back(
    settings: Settings, small_corpus: Path, redis_cache: RedisKnowledgeCache, store: IndexStore
) -> None:
    from opsassist.index.base import IndexNotFoundError
    from opsassist.index.lifecycle import RollbackError, rollback

    alias = settings.runbook_index
    v1 = _run(settings, small_corpus, store, redis_cache, "w1")["version"]
    path = small_corpus / TARGET
    path.write_text(path.read_text() + "\n\n## Escalation\n\nPage the owning team.\n")
    v2 = _run(settings, small_corpus, store, redis_cache, "w2")["version"]
    full = store.count(v2)

    wrong = small_corpus.parent / "wrong"
    (wrong / "etcd").mkdir(parents=True)
    shutil.copy(small_corpus / "etcd/etcdNoLeader.md", wrong / "etcd/etcdNoLeader.md")
    with pytest.raises(pipeline.BuildRefusedError, match=r"would shrink .* --allow-shrink"):
        _run(settings, wrong, store, redis_cache, "w3")
    assert store.current_version(alias) == v2 and store.count(v2) == full
    assert store.list_versions(alias) == [v1, v2]

    allowed = settings.model_copy(update={"index_allow_shrink": True})
    v3 = _run(allowed, wrong, store, redis_cache, "w4")["version"]
    assert store.current_version(alias) == v3 and store.count(v3) < full / 4

    record = rollback(store, alias, settings.data_dir, actor="oncall", reason="wrong folder")
    assert (record["from"], record["to"]) == (v3, v2)
    assert store.current_version(alias) == v2
    audit = (settings.data_dir / "audit" / "index.jsonl").read_text().splitlines()
    assert '"actor": "oncall"' in audit[-1] and '"reason": "wrong folder"' in audit[-1]
    assert rollback(store, alias, settings.data_dir, to=v1)["to"] == v1
    with pytest.raises(IndexNotFoundError):
        rollback(store, alias, settings.data_dir, to=f"{alias}-v9999")
    with pytest.raises(RollbackError, match="already points"):
        rollback(store, alias, settings.data_dir, to=v1)


def test_an_empty_folder_is_an_error_unless_allowed(
    settings: Settings, tmp_path: Path, redis_cache: RedisKnowledgeCache, store: IndexStore
) -> None:
    empty = tmp_path / "empty"
    (empty / "notes").mkdir(parents=True)
    (empty / "notes" / "README.txt").write_text("not a runbook")
    with pytest.raises(pipeline.BuildRefusedError, match=r"no runbook found under .*allow-empty"):
        _run(settings, empty, store, redis_cache, "e1")
    allowed = settings.model_copy(update={"index_allow_empty": True})
    summary = _run(allowed, empty, store, redis_cache, "e2")
    assert summary["collect"]["runbooks"] == 0 and summary["promoted"] is False


def test_a_second_build_of_the_same_alias_fails_clearly_while_the_first_runs(
    settings: Settings, small_corpus: Path, redis_cache: RedisKnowledgeCache
) -> None:
    from opsassist.index.lifecycle import BuildLockedError, build_lock

    store = EmbeddedIndexStore(settings.embedded_index_dir)
    held = build_lock(settings.data_dir, settings.runbook_index)
    with held, pytest.raises(BuildLockedError, match=r"another build of 'runbooks' is running"):
        _run(settings, small_corpus, store, redis_cache, "l1")
    assert store.list_versions(settings.runbook_index) == []
    assert _run(settings, small_corpus, store, redis_cache, "l2")["promoted"]  # lock released


def test_a_build_killed_half_way_is_listed_as_incomplete_and_dropped_by_the_next_promotion(
    settings: Settings, small_corpus: Path, redis_cache: RedisKnowledgeCache
) -> None:
    """A kill -9 between creating a version and writing it leaves a table folder without a
    manifest (made here directly: the state LanceDB leaves)."""
    from typer.testing import CliRunner

    from opsassist.cli import app

    store = EmbeddedIndexStore(settings.embedded_index_dir)
    v1 = _run(settings, small_corpus, store, redis_cache, "k1")["version"]
    (settings.embedded_index_dir / "lancedb" / "runbooks-v0002.lance" / "data").mkdir(parents=True)
    assert store.list_versions(settings.runbook_index) == [v1, "runbooks-v0002"]

    listed = CliRunner().invoke(app, ["versions"])
    assert listed.exit_code == 0, listed.output
    assert f"* {v1}" in listed.output
    assert "runbooks-v0002  incomplete" in listed.output

    path = small_corpus / TARGET
    path.write_text(path.read_text() + "\n\n## Escalation\n\nPage the owning team.\n")
    v3 = _run(settings, small_corpus, store, redis_cache, "k2")["version"]
    assert v3 == "runbooks-v0003"
    assert store.list_versions(settings.runbook_index) == [v1, v3]

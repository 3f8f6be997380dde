"""Postmortems: write-up parsing and metadata, section chunks, the corpus through the shared
pipeline's collect (README skipped, bad files quarantined), the frozen evaluation splits, the
"Seen before" rule, and the chat citing a past incident from a real embedded (LanceDB) index.

Vectors here are a deterministic bag of words (the sentence model is not what is under test);
the store, the parser, the chunker and the chat pipeline are the real ones.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from opsassist.cache.memory import MemoryKnowledgeCache
from opsassist.chat.pipeline import ChatPipeline, ChatRequest
from opsassist.documents import Chunk, SearchHit, make_chunk
from opsassist.evaluation.evalset import check_frozen, load_evalset
from opsassist.index.embedded import EmbeddedIndexStore
from opsassist.knowledge import save_pack
from opsassist.llm.client import KServeClient
from opsassist.parsing.markdown import RunbookError
from opsassist.pipelines.runbooks import POSTMORTEMS, collect
from opsassist.postmortems import (
    SOURCE_TYPE,
    chunk_postmortem,
    match_incident,
    pack_entry,
    parse_postmortem,
    shows_incident,
)
from opsassist.settings import Settings
from tests.conftest import free_port

CORPUS = Path(__file__).resolve().parents[2] / "include/opsassist/corpora/postmortems"
ETCD = "2025-02-11-etcd-database-space-exceeded.md"
PROMETHEUS = "2025-06-21-prometheus-disk-full-cardinality.md"
_TOKEN = re.compile(r"[a-zа-яё0-9]+")


def embed(text: str) -> np.ndarray:
    """A deterministic bag-of-words vector (stands in for the sentence model)."""
    vector = np.zeros(256, dtype=np.float32)
    for token in _TOKEN.findall(text.lower()):
        vector[int(hashlib.md5(token.encode()).hexdigest(), 16) % 256] += 1.0
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm else vector


def test_front_matter_metadata_and_section_chunks() -> None:
    doc, meta = parse_postmortem((CORPUS / ETCD).read_text(), ETCD)
    assert meta.date == dt.date(2025, 2, 11) and meta.severity == "SEV1"
    assert meta.services == ("etcd", "kube-apiserver", "prod-eu-1")
    assert meta.alerts[:2] == ("etcdBackendQuotaLowSpace", "KubeAPIErrorBudgetBurn")
    assert [s.label for s in doc.sections] == [
        "Summary",
        "Impact",
        "Detection",
        "Timeline",
        "Root cause",
        "Resolution",
        "Action items",
    ]
    chunks = chunk_postmortem(doc, meta)
    assert {c.source_type for c in chunks} == {SOURCE_TYPE}
    assert {c.section for c in chunks} == {s.label for s in doc.sections}
    assert all(c.timestamp == dt.datetime(2025, 2, 11, tzinfo=dt.UTC) for c in chunks)
    header = chunks[0].text.splitlines()[0]
    assert header.startswith("Postmortem 2025-02-11: Kubernetes API writes failing")
    assert "services: etcd, kube-apiserver" in header and "etcdBackendQuotaLowSpace" in header
    assert chunks[0].metadata["severity"] == "SEV1"
    assert chunks[0].metadata["alerts"][0] == "etcdBackendQuotaLowSpace"
    # re-parsing gives the same ids (re-runs never duplicate); an edit changes only its section
    again = chunk_postmortem(*parse_postmortem((CORPUS / ETCD).read_text(), ETCD))
    assert [c.id for c in again] == [c.id for c in chunks]
    edited = (CORPUS / ETCD).read_text().replace("47 minutes", "48 minutes", 1)
    changed = {c.section for c in chunk_postmortem(*parse_postmortem(edited, ETCD))} - {
        c.section for c in chunks if c.id in {x.id for x in again}
    }
    assert changed == set()
    new_ids = {c.id for c in chunk_postmortem(*parse_postmortem(edited, ETCD))} - {
        c.id for c in chunks
    }
    assert len(new_ids) == 1


def test_metadata_lines_in_the_body_and_file_name_date() -> None:
    doc, meta = parse_postmortem((CORPUS / PROMETHEUS).read_text(), PROMETHEUS)
    assert meta.date == dt.date(2025, 6, 21) and meta.severity == "SEV2"
    assert meta.services == ("prometheus", "monitoring")
    assert "KubePersistentVolumeFillingUp" in meta.alerts
    assert doc.sections[0].label == "Summary"  # the metadata lines are not a section of text
    text = (
        "# Disk full\n\nSeverity: sev3\n\n## Detection\n\n`NodeFilesystemAlmostOutOfSpace` paged.\n"
    )
    _, dated = parse_postmortem(text, "2024-12-01-disk.md")
    assert dated.date == dt.date(2024, 12, 1) and dated.severity == "SEV3"
    assert dated.alerts == ("NodeFilesystemAlmostOutOfSpace",)  # from the Detection section


def test_bad_write_ups_raise_a_reason() -> None:
    with pytest.raises(RunbookError) as bad_date:
        parse_postmortem("---\ndate: last tuesday\n---\n# T\n\n## Summary\n\nText here.\n", "x.md")
    assert bad_date.value.reason == "bad metadata"
    with pytest.raises(RunbookError) as only_meta:
        parse_postmortem("# T\n\n**Date:** 2025-01-01\n**Severity:** SEV1\n", "y.md")
    assert only_meta.value.reason == "no text"


def test_collect_skips_readme_and_quarantines_bad_files(tmp_path: Path) -> None:
    root = tmp_path / "postmortems"
    root.mkdir()
    shutil.copy(CORPUS / ETCD, root / ETCD)
    shutil.copy(CORPUS / "README.md", root / "README.md")
    (root / "TEMPLATE.md").write_text("# Title\n\n## Summary\n\nWhat happened.\n")
    (root / "broken.md").write_text("---\ntitle: [unclosed\n---\n# X\n\n## Summary\n\nText.\n")
    (root / "binary.md").write_bytes(b"\x00\x01")
    result = collect(root, Settings(data_dir=tmp_path / "data"), POSTMORTEMS)
    assert [d.source for d in result.runbooks] == [ETCD]
    assert sorted(result.skipped) == ["README.md", "TEMPLATE.md"]
    assert {(q.source, q.reason) for q in result.quarantined} == {
        ("broken.md", "broken front matter"),
        ("binary.md", "binary content"),
    }
    assert {c.source for c in result.chunks} == {ETCD}
    entry = result.packs[ETCD]
    assert entry["date"] == "2025-02-11" and entry["root_cause_section"] == "Root cause"
    assert entry["root_cause"].startswith("A new version of our in-house certificate operator")


def test_evaluation_sets_are_frozen_and_cover_the_corpus() -> None:
    evalsets = Path(__file__).resolve().parents[2] / "include/opsassist/evalsets"
    evalset = load_evalset(evalsets, "postmortems")
    sources = {p.name for p in CORPUS.glob("*.md") if p.name != "README.md"}
    assert {r.source for i in evalset.items for r in i.relevant} == sources
    assert sum(i.split == "test" for i in evalset.items) == 30
    assert {i.language for i in evalset.items} == {"en", "ru"}
    assert any(i.notes == "recurrence" and i.split == "test" for i in evalset.items)
    import yaml

    raw = yaml.safe_load((evalsets / "postmortems_unseen.yaml").read_text())
    check_frozen(evalsets / "postmortems_unseen.yaml", raw["items"])  # raises if edited
    edited = [dict(i) for i in raw["items"]]
    edited[-1]["question"] = "something else"
    with pytest.raises(ValueError, match="frozen"):
        check_frozen(evalsets / "postmortems_unseen.yaml", edited)


def _hit(source: str, cosine: float, bm25: int | None, vector: int | None) -> SearchHit:
    return SearchHit(
        id=f"id-{source}",
        source=source,
        source_type=SOURCE_TYPE,
        title="T",
        section="Summary",
        score=0.03,
        text="Postmortem: T > Summary\nThe database filled up. Then it recovered.",
        bm25_rank=bm25,
        vector_rank=vector,
        vector_score=cosine,
    )


def test_seen_before_needs_both_lists_and_the_cosine() -> None:
    assert shows_incident(_hit("a.md", 0.31, 1, 2), 0.3)
    assert not shows_incident(_hit("a.md", 0.29, 1, 1), 0.3)  # not close enough
    assert not shows_incident(_hit("a.md", 0.9, 3, 1), 0.3)  # keyword search disagrees
    assert not shows_incident(_hit("a.md", 0.9, None, 1), 0.3)  # no shared word at all
    assert not shows_incident(_hit("a.md", 0.9, 1, None), 0.3)
    pack = {"a.md": {"title": "Disk full", "date": "2025-06-21", "root_cause": "A label."}}
    found = match_incident([_hit("a.md", 0.5, 1, 1)], pack, 0.3)
    assert found is not None
    assert (
        found.line(4, "en") == "**Seen before**: Disk full (2025-06-21) — root cause: A label. [4]"
    )
    assert found.line(4, "ru").startswith(
        "**Уже случалось**: Disk full (2025-06-21) — первопричина"
    )
    no_pack = match_incident([_hit("a.md", 0.5, 1, 1)], {}, 0.3)  # digest missing: the hit's text
    assert no_pack is not None and no_pack.root_cause.startswith("The database filled up.")
    assert match_incident([_hit("a.md", 0.5, 2, 3)], pack, 0.3) is None


def _chunks_with_vectors(chunks: list[Chunk]) -> list[Chunk]:
    for chunk in chunks:
        chunk.vector = embed(chunk.text).tolist()
    return chunks


@pytest.fixture
def chat(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A chat pipeline over a real embedded store: one runbook, and (when asked) the
    postmortem index of two shipped write-ups with their digests kept beside the version."""
    settings = Settings(
        data_dir=tmp_path / "data", chat_answer_mode="composed", chat_min_similarity=0.0
    )
    store = EmbeddedIndexStore(settings.embedded_index_dir)
    runbook = make_chunk(
        source_type="runbook",
        source="etcd/etcdBackendQuotaLowSpace.md",
        title="etcdBackendQuotaLowSpace",
        section="Meaning",
        text="etcdBackendQuotaLowSpace > Meaning\netcd database space is close to its quota; "
        "compact and defragment etcd before writes fail.",
    )
    quota = make_chunk(
        source_type="runbook",
        source="kubernetes/KubeQuotaExceeded.md",
        title="KubeQuotaExceeded",
        section="Meaning",
        text="KubeQuotaExceeded > Meaning\nA namespace uses more than its ResourceQuota allows; "
        "new pods in it are refused until the quota is raised or usage drops.",
    )
    version = store.create_version("runbooks", 256, model=settings.embedding_model)
    store.upsert(version, _chunks_with_vectors([runbook, quota]))
    store.finalize(version)
    store.promote("runbooks", version)
    client = KServeClient(f"http://127.0.0.1:{free_port()}", "tiny", retries=0)

    def index_postmortems() -> None:
        chunks: list[Chunk] = []
        pack = {}
        for name in (ETCD, PROMETHEUS):
            doc, meta = parse_postmortem((CORPUS / name).read_text(), name)
            chunks.extend(chunk_postmortem(doc, meta))
            pack[name] = pack_entry(doc, meta)
        pm = store.create_version("postmortems", 256, model=settings.embedding_model)
        store.upsert(pm, _chunks_with_vectors(chunks))
        store.finalize(pm)
        store.promote("postmortems", pm)
        save_pack(settings.data_dir, pm, pack)

    def ask(question: str) -> tuple[str, list[str]]:
        pipeline = ChatPipeline(settings, store, MemoryKnowledgeCache(), client, embed=embed)
        request = ChatRequest(messages=[{"role": "user", "content": question}], use_cache=False)
        prepared = pipeline.prepare(request)
        outcome = asyncio.run(pipeline.complete(prepared, request))
        return outcome.text, prepared.errors

    yield ask, index_postmortems
    asyncio.run(client.aclose())


def test_chat_cites_a_matching_past_incident_beside_the_runbook(chat) -> None:  # type: ignore[no-untyped-def]
    ask, index_postmortems = chat
    question = "etcd database space exceeded, writes fail: have we seen this before?"
    before, errors = ask(question)
    assert "Seen before" not in before and "postmortem_index" not in errors  # no alias: no line
    index_postmortems()
    after, errors = ask(question)
    assert errors == []
    assert after.startswith(before.split("\n\n**Sources**")[0])  # the runbook answer stays
    line = next(x for x in after.splitlines() if x.startswith("**Seen before**"))
    assert "Kubernetes API writes failing after etcd ran out of database space (2025-02-11)" in line
    assert "root cause: A new version of our in-house certificate operator" in line
    number = re.findall(r"\[(\d+)\]$", line)[0]
    source = f"- [{number}] [{ETCD} § Root cause (postmortem)](/v1/sources/documents/"
    assert source in after  # in the sources list, linked to the write-up's page


def test_chat_answer_without_a_matching_incident_is_unchanged(chat) -> None:  # type: ignore[no-untyped-def]
    ask, index_postmortems = chat
    question = "namespace ResourceQuota exceeded, new pods refused"
    before, _ = ask(question)
    index_postmortems()
    after, errors = ask(question)
    assert errors == [] and after == before

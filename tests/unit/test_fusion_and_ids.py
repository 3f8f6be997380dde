from __future__ import annotations

import datetime as dt

import pytest

from opsassist.cache.base import normalise_question, question_key
from opsassist.documents import Chunk, chunk_id, make_chunk
from opsassist.index.fusion import fuse, reciprocal_rank_fusion, weighted_score_fusion
from opsassist.timeparse import parse_since


def test_rrf_rewards_documents_in_both_lists() -> None:
    bm25 = [("a", 9.0), ("b", 5.0), ("c", 1.0)]
    vector = [("c", 0.9), ("a", 0.8), ("d", 0.7)]
    ranked = reciprocal_rank_fusion([bm25, vector], [0.5, 0.5], k=60)
    assert [doc for doc, _ in ranked][:2] == ["a", "c"]
    assert ranked[0][1] == pytest.approx(0.5 / 61 + 0.5 / 62)


def test_weighted_fusion_normalises_scores() -> None:
    ranked = weighted_score_fusion(
        [[("a", 10.0), ("b", 0.0)], [("b", 1.0), ("a", 0.0)]], [0.8, 0.2]
    )
    assert ranked[0] == ("a", pytest.approx(0.8))
    assert fuse([[("x", 1.0)]], [1.0], method="weighted") == [("x", 1.0)]


def test_chunk_ids_are_stable_and_sensitive_to_identity_and_content() -> None:
    base = chunk_id("runbook", "a.md", "Meaning", "text")
    assert base == chunk_id("runbook", "a.md", "Meaning", "text")
    assert base != chunk_id("runbook", "b.md", "Meaning", "text")
    assert base != chunk_id("runbook", "a.md", "Meaning", "text!")
    assert base != chunk_id("runbook", "a.md", "Meaning", "text", occurrence=1)


def test_chunk_record_round_trip() -> None:
    chunk = make_chunk(
        source_type="log",
        source="svc",
        title="t",
        section="s",
        text="hello",
        timestamp=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        metadata={"n": 1},
    )
    chunk.vector = [0.5, 0.25]
    again = Chunk.from_record(chunk.to_record())
    assert again == chunk


def test_question_normalisation() -> None:
    assert normalise_question("  Pod   keeps RESTARTING?? ") == "pod keeps restarting"
    assert question_key("Pod keeps restarting") == question_key("pod keeps restarting?")
    assert question_key("Под перезапускается") == question_key("под перезапускается!")


def test_parse_since() -> None:
    now = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
    assert parse_since("1h", now) == now - dt.timedelta(hours=1)
    assert parse_since("2026-01-01T10:00:00", now).tzinfo is not None
    with pytest.raises(ValueError, match="try 1h"):
        parse_since("yesterday-ish", now)

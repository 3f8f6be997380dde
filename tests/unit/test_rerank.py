"""The learned re-ranker: its features, its ordering, its weights file and its fitting."""

from __future__ import annotations

import json

import numpy as np
import pytest

from opsassist.evaluation.evalset import ApplicableItem, EvalItem, Rule
from opsassist.evaluation.rerank_training import (
    Group,
    fit_pairwise,
    leave_one_folder_out,
    mean_scores,
    rankings,
)
from opsassist.index.base import Candidates, RankedRow
from opsassist.index.fusion import reciprocal_rank_fusion
from opsassist.index.rerank import (
    FEATURES,
    WEIGHTS_FILE,
    RerankModel,
    document_features,
    load_models,
    parse_models,
    rerank,
    stems,
)


def row(
    chunk_id: str, score: float, source: str, title: str, section: str = "Meaning"
) -> RankedRow:
    fields: dict[str, object] = {
        "source": source,
        "title": title,
        "section": section,
        "source_type": "runbook",
    }
    return RankedRow(chunk_id, score, fields)


CRASH = "kubernetes/KubePodCrashLooping.md"
NOT_READY = "kubernetes/KubePodNotReady.md"
ETCD = "etcd/etcdNoLeader.md"


def lists() -> tuple[Candidates, dict[str, RankedRow]]:
    lexical = [
        row("c1", 9.0, CRASH, "Kube Pod Crash Looping", "Diagnosis"),
        row("n1", 8.5, NOT_READY, "Kube Pod Not Ready"),
        row("c2", 3.0, CRASH, "Kube Pod Crash Looping", "Mitigation"),
    ]
    semantic = [
        row("c2", 0.62, CRASH, "Kube Pod Crash Looping", "Mitigation"),
        row("e1", 0.61, ETCD, "etcd No Leader"),
        row("n1", 0.40, NOT_READY, "Kube Pod Not Ready"),
    ]
    fused = reciprocal_rank_fusion(
        [[(r.id, r.score) for r in lexical], [(r.id, r.score) for r in semantic]], [0.5, 0.5]
    )
    found = Candidates(lexical, semantic, fused)
    return found, found.rows


def test_stems_split_alert_names_and_keep_five_letters() -> None:
    assert stems("KubePodCrashLooping") == {"kube", "pod", "crash", "loopi"}
    assert stems("etcdHighNumberOfFailedGRPCRequests") >= {"etcd", "numbe", "faile", "grpcr"}


def test_features_per_document_in_fused_order() -> None:
    found, _ = lists()
    fused = found.fused
    documents, chunks, matrix = document_features("the pod is crash looping", found)
    assert documents[0] == CRASH and set(documents) == {CRASH, NOT_READY, ETCD}
    assert chunks[CRASH] == [i for i, _ in fused if i in ("c1", "c2")]  # fused order kept
    f = {doc: dict(zip(FEATURES, matrix[i], strict=True)) for i, doc in enumerate(documents)}
    assert f[CRASH]["fused_reciprocal_rank"] == 1.0 and f[CRASH]["fused_relative"] == 1.0
    assert f[CRASH]["bm25_reciprocal_rank"] == 1.0 and f[CRASH]["bm25_relative"] == 1.0
    assert f[NOT_READY]["bm25_reciprocal_rank"] == 0.5
    assert f[NOT_READY]["bm25_relative"] == pytest.approx(8.5 / 9.0)
    assert f[ETCD]["bm25_reciprocal_rank"] == 0.0 and f[ETCD]["bm25_relative"] == 0.0
    assert f[ETCD]["vector_cosine"] == pytest.approx(0.61)
    assert f[CRASH]["vector_reciprocal_rank"] == 1.0 and f[ETCD]["vector_reciprocal_rank"] == 0.5
    # an English question: the Russian-only features are zero
    assert all(f[d]["russian_vector_cosine"] == 0.0 for d in documents)
    # "Kube Pod Crash Looping" minus the generic "kube": pod, crash, loopi all in the question
    assert f[CRASH]["title_overlap"] == 1.0
    assert f[NOT_READY]["title_overlap"] == pytest.approx(1 / 3)  # pod; not, ready missing
    assert f[CRASH]["chunks"] == pytest.approx(0.2)


def test_a_russian_question_fills_the_russian_features_through_the_glossary() -> None:
    found, _ = lists()
    documents, _, matrix = document_features("под постоянно перезапускается", found)
    f = {doc: dict(zip(FEATURES, matrix[i], strict=True)) for i, doc in enumerate(documents)}
    assert f[ETCD]["russian_vector_cosine"] == pytest.approx(0.61)
    assert f[CRASH]["russian_bm25_relative"] == 1.0
    assert f[CRASH]["title_overlap"] > 0  # "под" adds "pod" to the question's words


def test_rerank_moves_documents_and_puts_each_ones_best_chunk_first() -> None:
    found, rows = lists()
    fused = found.fused
    title_only = np.zeros(len(FEATURES))
    title_only[FEATURES.index("title_overlap")] = 1.0
    model = RerankModel("runbook", title_only, {})
    ranked = rerank("why is etcd without a leader", found, model)
    order = [rows[i].row["source"] for i, _ in ranked]
    assert order[0] == ETCD  # its title matches: first under this model, third when fused
    # the best document's chunks (one here), every other document's best chunk, then the rest
    assert order == [ETCD, CRASH, NOT_READY, CRASH]
    crash_first = np.zeros(len(FEATURES))
    crash_first[FEATURES.index("bm25_relative")] = 1.0
    by_bm25 = [
        rows[i].row["source"]
        for i, _ in rerank("x", found, RerankModel("runbook", crash_first, {}))
    ]
    assert by_bm25 == [CRASH, CRASH, NOT_READY, ETCD]  # two sections of the best runbook first
    crash = [i for i, _ in ranked if rows[i].row["source"] == CRASH]
    assert crash == [i for i, _ in fused if rows[i].row["source"] == CRASH]  # fused order kept
    assert sorted(i for i, _ in ranked) == sorted(rows)  # no chunk lost or repeated
    scores = dict(ranked)
    assert scores[crash[0]] == scores[crash[1]]  # a chunk carries its document's score
    assert [scores[i] for i, _ in ranked[:3]] == sorted(scores.values(), reverse=True)[:3]
    assert rerank("x", Candidates([], [], []), model) == []


def test_the_packaged_weights_load_and_a_mismatched_file_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    models = load_models("")
    assert set(models) == {"runbook"}  # postmortems and signals keep the fused order
    model = models["runbook"]
    assert model.weights.shape == (len(FEATURES),)
    assert model.trained["dev_questions"] >= 100
    lofo = model.trained["dev_leave_one_folder_out"]
    assert lofo["mrr_at_10"] > model.trained["dev_fused_order"]["mrr_at_10"]
    stale = {"models": {"runbook": {"features": ["bm25_rank"], "weights": [1.0]}}}
    with pytest.raises(ValueError, match="retrain"):
        parse_models(stale)
    path = tmp_path / WEIGHTS_FILE
    path.write_text(json.dumps({"models": {}}), "utf-8")
    assert load_models(str(path)) == {}


def group(item_id: str, folder: str, features: list[list[float]], relevant: list[bool]) -> Group:
    source = f"{folder}/doc.md"
    item = EvalItem(item_id, "q", (Rule(source=source),), "en", "paraphrase", split="dev")
    documents = [source if good else f"{folder}/other{i}.md" for i, good in enumerate(relevant)]
    return Group(
        ApplicableItem(item, frozenset({source})),
        documents,
        np.array(features, dtype=np.float64),
        np.array(relevant),
    )


def test_pairwise_fit_learns_the_informative_feature() -> None:
    rng = np.random.default_rng(3)
    groups = []
    for q in range(20):
        noise = rng.normal(size=(6, 2))
        noise[0, 0] += 4.0  # the relevant document is ahead on feature 0 only
        groups.append(group(f"q{q}", "a", noise.tolist(), [True] + [False] * 5))
    weights = fit_pairwise(groups, c=1.0)
    assert weights[0] > 1.0 and abs(weights[1]) < weights[0] / 3
    assert mean_scores(groups, rankings(groups, weights))["mrr_at_10"] > 0.9
    # stronger regularisation shrinks the weights
    assert np.linalg.norm(fit_pairwise(groups, c=0.01)) < np.linalg.norm(weights)


def test_leave_one_folder_out_never_fits_on_the_folder_it_ranks() -> None:
    # folder a: the relevant document leads on feature 0; folder b: on feature 1 and trails on 0
    a = [group(f"a{q}", "a", [[1, 0], [0, 0], [0, 0]], [True, False, False]) for q in range(5)]
    b = [group(f"b{q}", "b", [[0, 1], [1, 0], [0, 0]], [True, False, False]) for q in range(5)]
    fitted_on_all = rankings(a + b, fit_pairwise(a + b))
    assert mean_scores(b, fitted_on_all)["mrr_at_10"] == 1.0
    held_out = leave_one_folder_out(a + b)
    # fitted on folder a alone, feature 0 puts b's distractor first
    assert mean_scores(b, held_out)["mrr_at_10"] == 0.5


def test_the_best_documents_third_chunk_waits_for_the_other_documents() -> None:
    found, rows = lists()
    extra = row("c3", 2.0, CRASH, "Kube Pod Crash Looping", "Impact")
    found = Candidates([*found.lexical, extra], found.semantic, [*found.fused, ("c3", 0.001)])
    rows = found.rows
    bm25_only = np.zeros(len(FEATURES))
    bm25_only[FEATURES.index("bm25_relative")] = 1.0
    ranked = rerank("x", found, RerankModel("runbook", bm25_only, {}))
    order = [rows[i].row["source"] for i, _ in ranked]
    assert order == [CRASH, CRASH, NOT_READY, ETCD, CRASH]
    assert ranked[-1][0] == "c3"

"""The learned re-ranker on a real index of shipped runbooks (real MiniLM + USE vectors):
``opsassist reranker train`` fits it on the dev questions, and searches with the weights it wrote
re-order documents without losing or repeating a chunk."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from opsassist.cache.memory import MemoryKnowledgeCache
from opsassist.cli import app
from opsassist.evaluation.service import evaluate_set
from opsassist.index.embedded import EmbeddedIndexStore
from opsassist.index.rerank import FEATURES
from opsassist.pipelines import runbooks as pipeline
from opsassist.search import search
from opsassist.settings import Settings
from tests.conftest import runbook_corpus

FOLDERS = ("alertmanager", "etcd", "node")


@pytest.mark.slow
def test_train_writes_weights_that_search_and_evaluation_use(
    settings: Settings, tmp_path: Path
) -> None:
    corpus = tmp_path / "corpus"
    for folder in FOLDERS:
        shutil.copytree(
            runbook_corpus() / folder, corpus / folder, ignore=shutil.ignore_patterns("_index.md")
        )
    settings.gate_enabled = False
    store = EmbeddedIndexStore(settings.embedded_index_dir)
    pipeline.run_pipeline(settings, corpus, store, MemoryKnowledgeCache(), "rerank-test")

    weights = tmp_path / "weights.json"
    result = CliRunner().invoke(app, ["reranker", "train", "--out", str(weights)])
    assert result.exit_code == 0, result.output
    # the summary is a status line: on stderr, like every other command's
    assert "dev questions" in result.stderr and "leave-one-folder-out" in result.stderr
    model = json.loads(weights.read_text())["models"]["runbook"]
    assert model["features"] == list(FEATURES) and len(model["weights"]) == len(FEATURES)
    trained = model["trained"]
    assert trained["dev_questions"] >= 20 and trained["index_version"] == "runbooks-v0001"
    assert set(trained["dev_leave_one_folder_out"]) == {"recall_at_5", "mrr_at_10"}

    question = "alertmanager cannot deliver notifications to the receivers"
    fused = search(question, settings=settings.model_copy(update={"reranker": False}), k=50)
    with_weights = settings.model_copy(update={"reranker_weights": str(weights)})
    reranked = search(question, settings=with_weights, k=50)
    assert sorted(h.id for h in reranked) == sorted(h.id for h in fused)  # nothing lost
    sources = [h.source for h in reranked]
    distinct = list(dict.fromkeys(sources))
    # the best runbook's first two chunks, then every other runbook's best chunk, best first
    top = 2 if sources[1] == sources[0] else 1
    assert sources[top : top + len(distinct) - 1] == distinct[1:]
    firsts = [h.score for h in reranked[top : top + len(distinct) - 1]]
    assert firsts == sorted(firsts, reverse=True) and reranked[0].score >= firsts[0]
    assert reranked[0].source.startswith("alertmanager/")

    # fitted on these dev questions, it ranks them at least as well as fusion does
    on, off = (
        evaluate_set(
            configured,
            "runbooks",
            "runbooks-v0001",
            store=store,
            modes=("hybrid",),
            log_to_mlflow=False,
        )
        for configured in (with_weights, settings.model_copy(update={"reranker": False}))
    )
    assert on.report.metrics["hybrid.dev.mrr_at_10"] >= off.report.metrics["hybrid.dev.mrr_at_10"]
    assert on.report.metrics["hybrid.dev.mrr_at_10"] > 0.5

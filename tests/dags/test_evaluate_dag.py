"""The evaluation DAG via ``dag.test()``: triggered with params like from the UI, it evaluates the
runbook set on a promoted index and leaves an MLflow run tagged with the DAG run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import ROOT, runbook_corpus

RUNBOOKS = [
    "kubernetes/KubePodCrashLooping.md",
    "kubernetes/KubeNodeNotReady.md",
    "etcd/etcdNoLeader.md",
    "node/NodeFilesystemAlmostOutOfSpace.md",
    "alertmanager/AlertmanagerFailedToSendAlerts.md",
]


@pytest.mark.slow
def test_evaluate_dag_logs_an_mlflow_run(
    airflow_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opsassist.embedding import model_dimension
    from opsassist.evaluation import tracking
    from opsassist.pipelines import runbooks
    from opsassist.settings import get_settings
    from opsassist.stores import get_index_store

    corpus = tmp_path / "corpus"
    for relative in RUNBOOKS:
        (corpus / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(runbook_corpus() / relative, corpus / relative)
    monkeypatch.setenv("OPSASSIST_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("OPSASSIST_CACHE_BACKEND", "memory")
    monkeypatch.setenv("OPSASSIST_INDEX_BACKEND", "embedded")
    get_settings.cache_clear()
    settings = get_settings()
    store = get_index_store(settings)
    chunks = runbooks.embed_chunks(runbooks.collect(corpus, settings).chunks, settings)
    fresh = runbooks.Plan(None, [c.id for c in chunks], [], 0, [], [])
    version = runbooks.build_version(store, "runbooks", fresh, chunks, model_dimension())
    store.promote("runbooks", version)  # a seed index (the pipeline itself is tested elsewhere)

    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(str(ROOT / "dags" / "evaluate_index.py")).get_dag("evaluate_index")
    assert dag.schedule is None  # manual trigger only (UI or API)
    assert set(dag.params) == {"set", "index"}
    run = dag.test(run_conf={"set": "runbooks", "index": "runbooks"})
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "success", states

    runs = tracking.runs_by_tag(settings, "runbooks", "opsassist.kind", "evaluation")
    assert len(runs) == 1
    assert runs[0].data.tags["opsassist.run_id"] == run.run_id
    assert runs[0].data.params["index_version"] == "runbooks-v0001"
    assert runs[0].data.metrics["questions"] >= 5
    get_settings.cache_clear()

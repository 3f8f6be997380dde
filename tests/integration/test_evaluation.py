"""Evaluation end to end: the quality gate refusing a broken build (and passing a sound one), an
evaluation logged to the default local MLflow store and to a real ``mlflow server`` process
(PostgreSQL backend), and the signals set on documents mined from loghub."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from opsassist.cache.memory import MemoryKnowledgeCache
from opsassist.evaluation import tracking
from opsassist.evaluation.service import evaluate_set, resolve_index
from opsassist.evaluation.signals import ensure_signal_index
from opsassist.index.embedded import EmbeddedIndexStore
from opsassist.pipelines import runbooks as pipeline
from opsassist.settings import Settings
from tests.conftest import SHARED, VENV_BIN, port_open, runbook_corpus, service_port

GATE_FOLDERS = ("alertmanager", "general", "node", "prometheus")  # 42 runbooks, 31 en questions
SMALL = [
    "kubernetes/KubePodCrashLooping.md",
    "kubernetes/KubePodNotReady.md",
    "etcd/etcdNoLeader.md",
    "node/NodeFilesystemAlmostOutOfSpace.md",
]
LOGHUB = SHARED / "corpora" / "loghub"
SIGNAL_SYSTEMS = ["HDFS", "OpenSSH", "Zookeeper"]


def _copy(folders: tuple[str, ...] = (), files: tuple[str, ...] = (), *, to: Path) -> Path:
    source = runbook_corpus()
    for folder in folders:
        shutil.copytree(source / folder, to / folder, ignore=shutil.ignore_patterns("_index.md"))
    for relative in files:
        (to / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / relative, to / relative)
    return to


def _retitle(root: Path, prefix: str) -> None:
    """Change every runbook's title: every chunk's header changes, so everything is re-embedded
    (as when a docs migration renames all pages)."""
    for path in root.rglob("*.md"):
        text = path.read_text()
        if text.startswith("---\n") and "\ntitle: " in text:
            text = text.replace("\ntitle: ", f"\ntitle: {prefix} ", 1)
        else:
            text = f"---\ntitle: {prefix} {path.stem}\n---\n{text}"
        path.write_text(text)


def _shuffled_embeddings(monkeypatch: pytest.MonkeyPatch) -> None:
    """A broken embed step: real unit vectors, but each belongs to another chunk (passes GE)."""
    real = pipeline.embed_texts

    def shuffled(texts: Any, *args: Any, **kwargs: Any) -> np.ndarray:
        vectors = real(texts, *args, **kwargs)
        return vectors[np.random.default_rng(7).permutation(len(vectors))]

    monkeypatch.setattr(pipeline, "embed_texts", shuffled)


@pytest.mark.slow
def test_gate_refuses_a_shuffled_vector_build_and_the_alias_stays(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = _copy(GATE_FOLDERS, to=tmp_path / "corpus")
    store = EmbeddedIndexStore(settings.embedded_index_dir)
    cache = MemoryKnowledgeCache()
    # English only: with the English model the few Russian questions of these folders move by
    # more than the tolerance between two equally good builds (the per-language rule has its
    # own test in tests/unit/test_eval_metrics.py)
    settings = settings.model_copy(update={"gate_languages": "en"})

    first = pipeline.run_pipeline(settings, corpus, store, cache, run_id="gate-1")
    assert first["promoted"] and first["gate"]["decision"] == "promote"
    assert first["gate"]["reason"].startswith("en: first build above floors")
    assert first["gate"]["questions"] >= settings.gate_min_questions

    # control: a build that re-embeds everything correctly passes the comparison
    _retitle(corpus, "Docs")
    second = pipeline.run_pipeline(settings, corpus, store, cache, run_id="gate-2")
    assert second["embed"]["embedded"] == second["collect"]["chunks"]
    assert second["promoted"], second["gate"]
    assert second["gate"]["reason"].startswith("en: no regression")
    good = second["version"]

    # the same kind of build with every vector belonging to another chunk is refused
    _retitle(corpus, "Runbook")
    _shuffled_embeddings(monkeypatch)
    with pytest.raises(pipeline.BuildRefusedError, match="quality gate refused") as refused:
        pipeline.run_pipeline(settings, corpus, store, cache, run_id="gate-3")
    assert "regression vs " + good in str(refused.value)
    assert store.current_version(settings.runbook_index) == good
    assert cache.pack_version() == good

    gate = pipeline.staging.read_json(settings.runs_dir / "runbooks" / "gate-3" / "gate.json")
    assert gate["decision"] == "refuse" and gate["baseline_version"] == good
    assert gate["candidate"]["hybrid.en.mrr_at_10"] < gate["baseline"]["hybrid.en.mrr_at_10"]
    runs = tracking.runs_by_tag(settings, "runbooks", "opsassist.run_id", "gate-3")
    assert len(runs) == 1
    assert runs[0].data.tags["gate.decision"] == "refuse"
    assert runs[0].data.tags["gate.reason"] == gate["reason"]
    assert runs[0].data.params["baseline_version"] == good
    assert "baseline.hybrid.en.recall_at_5" in runs[0].data.metrics


def test_gate_refuses_a_first_build_it_cannot_judge_unless_allowed(
    settings: Settings, tmp_path: Path
) -> None:
    """A small corpus the evaluation set hardly covers: as a first build its floors were never
    checked, so it is refused (nothing is promoted without passing something) unless allowed."""
    corpus = _copy(files=tuple(SMALL), to=tmp_path / "corpus")
    store = EmbeddedIndexStore(settings.embedded_index_dir)
    strict = settings.model_copy(update={"gate_allow_unjudged_first_build": False})
    with pytest.raises(pipeline.BuildRefusedError, match="first build not judged"):
        pipeline.run_pipeline(strict, corpus, store, MemoryKnowledgeCache(), "small-0")
    assert store.current_version(settings.runbook_index) is None
    assert store.list_versions(settings.runbook_index) == []  # the refused build is not kept
    summary = pipeline.run_pipeline(settings, corpus, store, MemoryKnowledgeCache(), "small-1")
    assert summary["promoted"]
    assert summary["gate"]["reason"].startswith("en: too few applicable questions")
    runs = tracking.runs_by_tag(settings, "runbooks", "opsassist.run_id", "small-1")
    assert runs[0].data.tags["gate.decision"] == "promote"


@pytest.fixture(scope="module")
def small_index(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A promoted runbook index of four runbooks (gate off: built only to be evaluated)."""
    root = tmp_path_factory.mktemp("small-index")
    settings = Settings(data_dir=root / "data", cache_backend="memory", index_backend="embedded")
    settings.gate_enabled = False
    corpus = _copy(files=tuple(SMALL), to=root / "corpus")
    store = EmbeddedIndexStore(settings.embedded_index_dir)
    pipeline.run_pipeline(settings, corpus, store, MemoryKnowledgeCache(), "small-index")
    return settings


def _check_run(client: Any, run_id: str, version: str, questions: int) -> None:
    run = client.get_run(run_id)
    params, metrics = run.data.params, run.data.metrics
    assert params["index_version"] == version and params["reranker"] == "linear"
    assert params["evalset_version"].startswith("runbooks@")
    assert {"embedding_model", "chunk_max_chars", "fusion", "rrf_k", "git_sha"} <= set(params)
    for mode in ("hybrid", "bm25", "vector"):
        assert 0.0 <= metrics[f"{mode}.recall_at_5"] <= 1.0
        assert 0.0 <= metrics[f"{mode}.en.mrr_at_10"] <= 1.0
        assert metrics[f"{mode}.latency_p95_ms"] >= metrics[f"{mode}.latency_p50_ms"] > 0
    assert metrics["questions"] == questions
    assert metrics["hybrid.latency_p50_ms"] >= metrics["embedding.latency_p50_ms"] > 0
    names = {a.path for a in client.list_artifacts(run_id)}
    assert names == {"results.csv", "recall_at_k.png"}
    local = Path(client.download_artifacts(run_id, "results.csv"))
    with open(local, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 * questions and {r["mode"] for r in rows} == {"hybrid", "bm25", "vector"}


def test_evaluation_logs_to_the_local_mlflow_store(small_index: Settings) -> None:
    version = resolve_index(small_index, "runbooks", None)
    result = evaluate_set(small_index, "runbooks", version)
    report = result.report
    assert report.questions >= 5 and report.total_items > 60
    assert tracking.tracking_uri(small_index).startswith("sqlite:///")
    assert (small_index.data_dir / "mlflow" / "mlflow.db").exists()
    artifacts = small_index.data_dir / "mlflow" / "artifacts" / "opsassist-runbooks"
    assert (artifacts / str(result.mlflow_run_id) / "artifacts" / "results.csv").exists()
    assert report.metrics["hybrid.en.recall_at_5"] >= report.metrics["bm25.en.recall_at_5"] - 0.2
    _check_run(tracking.client(small_index), str(result.mlflow_run_id), version, report.questions)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _backend_store(tmp: Path) -> str:
    """PostgreSQL when it runs (and psycopg is installed), else SQLite (said in the output)."""
    port = service_port("postgres", 15432)
    try:
        import psycopg  # noqa: F401

        driver = True
    except ImportError:
        driver = False
    if driver and port_open(port):
        return f"postgresql+psycopg://opsassist:opsassist@127.0.0.1:{port}/mlflow"
    if os.environ.get("OPSASSIST_REQUIRE_SERVICES") == "1":
        pytest.fail(f"postgres is not running on 127.0.0.1:{port} (or psycopg is missing)")
    print("mlflow server test: PostgreSQL unavailable, using a SQLite backend store")
    return f"sqlite:///{tmp / 'server.db'}"


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``mlflow server`` process (stopped after the module)."""
    tmp = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    command = [
        str(VENV_BIN / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        _backend_store(tmp),
        "--artifacts-destination",
        str(tmp / "artifacts"),
        "--workers",
        "1",
    ]
    log = open(tmp / "server.log", "wb")  # noqa: SIM115 - closed after the process stops
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"mlflow server exited: {(tmp / 'server.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            pytest.fail(f"mlflow server not ready: {(tmp / 'server.log').read_text()[-2000:]}")
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        log.close()


@pytest.mark.slow
def test_evaluation_logs_to_a_real_mlflow_server(small_index: Settings, mlflow_server: str) -> None:
    from pydantic import SecretStr

    settings = small_index.model_copy(
        update={
            "mlflow_tracking_uri": SecretStr(mlflow_server),
            "mlflow_experiment_prefix": f"test-{uuid.uuid4().hex[:8]}",
        }
    )
    version = resolve_index(settings, "runbooks", None)
    result = evaluate_set(settings, "runbooks", version, tags={"opsassist.run_id": "server-1"})
    client = tracking.client(settings)
    experiment = client.get_experiment_by_name(f"{settings.mlflow_experiment_prefix}-runbooks")
    assert experiment is not None and experiment.artifact_location.startswith("mlflow-artifacts:")
    _check_run(client, str(result.mlflow_run_id), version, result.report.questions)
    runs = tracking.runs_by_tag(settings, "runbooks", "opsassist.run_id", "server-1")
    assert [r.info.run_id for r in runs] == [result.mlflow_run_id]


@pytest.mark.slow
@pytest.mark.skipif(not LOGHUB.is_dir(), reason="the shared loghub corpus is not present")
def test_signal_documents_are_mined_indexed_and_evaluated(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.eval_loghub_path = LOGHUB
    store = EmbeddedIndexStore(settings.embedded_index_dir)
    version = ensure_signal_index(settings, store, SIGNAL_SYSTEMS)
    assert version == f"{settings.eval_signal_index}-v0001"
    assert ensure_signal_index(settings, store, SIGNAL_SYSTEMS) == version  # unchanged: reused
    sources = store.ids_by_source(version)
    assert {s.split("/")[1] for s in sources} == set(SIGNAL_SYSTEMS)
    assert all(s.startswith("loghub/") and len(ids) == 1 for s, ids in sources.items())

    result = evaluate_set(settings, "signals", version, log_to_mlflow=False)
    asked = {r.item_id for r in result.report.results}
    assert {"sg-en-001", "sg-en-002", "sg-en-005", "sg-ru-001"} <= asked  # HDFS, ssh, zookeeper
    assert "sg-en-011" not in asked  # Hadoop is not indexed: its questions are not asked
    assert any(rule.startswith("sg-en-011: Hadoop") for rule in result.unmatched)
    assert result.report.metrics["hybrid.en.recall_at_10"] > 0.5


def test_eval_cli_prints_the_table_json_and_one_line_errors(
    small_index: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from typer.testing import CliRunner

    from opsassist.cli import app
    from opsassist.settings import get_settings

    monkeypatch.setenv("OPSASSIST_DATA_DIR", str(small_index.data_dir))
    get_settings.cache_clear()
    runner = CliRunner()
    try:
        as_json = runner.invoke(app, ["eval", "--json", "--no-mlflow", "--index", "runbooks"])
        assert as_json.exit_code == 0, as_json.output
        data = json.loads(as_json.stdout)
        assert data["version"] == "runbooks-v0001" and data["mlflow_run_id"] is None
        assert {"hybrid.en.recall_at_5", "bm25.mrr_at_10", "vector.latency_p95_ms"} <= set(
            data["metrics"]
        )
        table = runner.invoke(app, ["eval", "--no-mlflow"], env={"COLUMNS": "100"})
        assert table.exit_code == 0, table.output
        assert "MRR@10" in table.stdout and "hybrid" in table.stdout and "bm25" in table.stdout
        lines = table.stdout.splitlines()
        assert max(len(line) for line in lines) <= 100 and "…" not in table.stdout  # nothing cut
        assert any(line.split()[:2] == ["dev", "hybrid"] for line in lines if line.strip())
        bad = runner.invoke(app, ["eval", "--set", "nope"])
        assert bad.exit_code == 1
        assert bad.stderr.strip().splitlines()[-1].startswith("error: unknown evaluation set")
    finally:
        get_settings.cache_clear()

"""MLflow logging of evaluations: one experiment per evaluation set, one run per evaluation.

The tracking URI comes from ``OPSASSIST_MLFLOW_TRACKING_URI``; empty means a local SQLite store
``<data dir>/mlflow/mlflow.db`` whose experiments keep their artifacts under
``<data dir>/mlflow/artifacts/<experiment>`` (never ``./mlruns`` of whatever the working folder
is). Against a tracking server the server chooses where artifacts go.

A run carries the configuration as params, every metric of the report (names as in
:func:`opsassist.evaluation.runner.summarize`), tags given by the caller (the gate adds
``gate.decision`` and ``gate.reason``) and two artifacts: the per-question results table
(``results.csv``) and a recall@k plot per mode and language (``recall_at_k.png``).
"""

from __future__ import annotations

import csv
import functools
import logging
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opsassist.evaluation.metrics import RECALL_KS
from opsassist.evaluation.runner import EvalReport, QuestionResult
from opsassist.logs import get_logger
from opsassist.settings import PROJECT_ROOT, Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = get_logger(__name__)


def tracking_uri(settings: Settings) -> str:
    configured = settings.mlflow_tracking_uri.get_secret_value().strip()
    if configured:
        return configured
    folder = settings.data_dir / "mlflow"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def experiment_name(settings: Settings, set_name: str) -> str:
    return f"{settings.mlflow_experiment_prefix}-{set_name}"


@functools.lru_cache(maxsize=1)
def git_sha() -> str:
    """The checkout's commit (``-dirty`` when it has local changes); ``unknown`` outside Git."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def run_params(
    settings: Settings, *, index_version: str, evalset_version: str, **extra: object
) -> dict[str, str]:
    """The configuration an evaluation ran with (settings of this process, plus ``extra``)."""
    params: dict[str, object] = {
        "embedding_model": settings.embedding_model,
        "chunk_max_chars": settings.chunk_max_chars,
        "chunk_overlap_chars": settings.chunk_overlap_chars,
        "fusion": settings.fusion,
        "fusion_vector_weight": settings.fusion_vector_weight,
        "rrf_k": settings.rrf_k,
        "candidates_per_list": settings.candidates_per_list,
        "reranker": (settings.reranker_weights or "linear") if settings.reranker else "none",
        "index_backend": settings.index_backend,
        "index_version": index_version,
        "evalset_version": evalset_version,
        "git_sha": git_sha(),
    }
    params.update(extra)
    return {key: str(value) for key, value in params.items()}


def client(settings: Settings) -> MlflowClient:
    from mlflow import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # schema set-up chatter; runs are logged
    return MlflowClient(tracking_uri=tracking_uri(settings))


def ensure_experiment(mlflow: MlflowClient, settings: Settings, name: str) -> str:
    existing = mlflow.get_experiment_by_name(name)
    if existing is not None:
        return str(existing.experiment_id)
    location = None
    if not settings.mlflow_tracking_uri.get_secret_value().strip():
        folder = settings.data_dir / "mlflow" / "artifacts" / name
        folder.mkdir(parents=True, exist_ok=True)
        location = folder.resolve().as_uri()
    try:
        return str(mlflow.create_experiment(name, artifact_location=location))
    except Exception:  # created meanwhile by a concurrent run
        again = mlflow.get_experiment_by_name(name)
        if again is None:
            raise
        return str(again.experiment_id)


def write_results_csv(results: Sequence[QuestionResult], path: Path) -> Path:
    rows = [r.row() for r in results]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        if rows:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return path


def plot_recall_at_k(
    metrics: Mapping[str, float], modes: Sequence[str], languages: Sequence[str], path: Path
) -> Path:
    """Recall@k curves, one line per mode, one panel for all questions and one per language."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = ["", *(f"{lang}." for lang in languages)]
    figure, axes = plt.subplots(1, len(groups), figsize=(4 * len(groups), 3.4), squeeze=False)
    for axis, group in zip(axes[0], groups, strict=True):
        for mode in modes:
            values = [metrics.get(f"{mode}.{group}recall_at_{k}") for k in RECALL_KS]
            if all(v is not None for v in values):
                axis.plot(RECALL_KS, values, marker="o", label=mode)
        count = int(metrics.get(f"questions.{group.rstrip('.')}" if group else "questions", 0))
        axis.set_title(f"{group.rstrip('.') or 'all'} (n={count})")
        axis.set_xlabel("k (documents)")
        axis.set_xticks(RECALL_KS)
        axis.set_ylim(0.0, 1.02)
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("recall@k")
    axes[0][0].legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def log_run(
    settings: Settings,
    set_name: str,
    report: EvalReport,
    params: Mapping[str, str],
    tags: Mapping[str, str] | None = None,
    extra_metrics: Mapping[str, float] | None = None,
    run_name: str | None = None,
    artifacts: bool = True,
) -> str:
    """Log one evaluation as an MLflow run (artifacts: results CSV and plot); returns its id."""
    from mlflow.entities import Metric, Param, RunTag

    mlflow = client(settings)
    experiment = ensure_experiment(mlflow, settings, experiment_name(settings, set_name))
    all_tags = {"opsassist.set": set_name, "opsassist.evalset": report.evalset, **(tags or {})}
    run = mlflow.create_run(experiment, run_name=run_name, tags=all_tags)
    run_id = str(run.info.run_id)
    status = "FAILED"
    try:
        now = int(time.time() * 1000)
        metrics = {**report.metrics, **(extra_metrics or {})}
        mlflow.log_batch(
            run_id,
            metrics=[Metric(key, float(value), now, 0) for key, value in sorted(metrics.items())],
            params=[Param(key, value) for key, value in sorted(params.items())],
            tags=[RunTag(key, value) for key, value in sorted(all_tags.items())],
        )
        if artifacts and report.results:
            with tempfile.TemporaryDirectory(prefix="opsassist-eval-") as tmp:
                folder = Path(tmp)
                write_results_csv(report.results, folder / "results.csv")
                languages = sorted({r.language for r in report.results})
                plot_recall_at_k(
                    report.metrics, report.modes, languages, folder / "recall_at_k.png"
                )
                mlflow.log_artifacts(run_id, str(folder))
        status = "FINISHED"
    finally:
        mlflow.set_terminated(run_id, status)
    log.info(
        "evaluation logged to MLflow",
        extra={"run_id": run_id, "experiment": experiment_name(settings, set_name)},
    )
    return run_id


def runs_by_tag(settings: Settings, set_name: str, key: str, value: str) -> list[Any]:
    """Runs of a set's experiment whose tag ``key`` equals ``value`` (newest first)."""
    mlflow = client(settings)
    experiment = mlflow.get_experiment_by_name(experiment_name(settings, set_name))
    if experiment is None:
        return []
    escaped = value.replace("'", "\\'")
    return list(
        mlflow.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.`{key}` = '{escaped}'",
            order_by=["attributes.start_time DESC"],
        )
    )

"""What the runbook and postmortem DAG tests share: the DAG on a fresh data folder, its runs' task
states, and ``opsassist search --json`` against the data folder it built."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, VENV_BIN


def index_dag(monkeypatch: pytest.MonkeyPatch, data_dir: Path, dag_id: str, **env: str) -> Any:
    """``dag_id`` from ``dags/``, its settings on ``data_dir`` (plus ``env``), in-memory cache."""
    from opsassist.settings import get_settings

    monkeypatch.setenv("OPSASSIST_DATA_DIR", str(data_dir))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OPSASSIST_CACHE_BACKEND", "memory")
    get_settings.cache_clear()

    from airflow.dag_processing.dagbag import DagBag

    return DagBag(str(ROOT / "dags")).get_dag(dag_id)


def run_dag(dag: Any) -> tuple[Any, dict[str, Any]]:
    """``dag.test()``: the run and its task states by task id."""
    run = dag.test()
    return run, {ti.task_id: ti.state for ti in run.get_task_instances()}


def search(data_dir: Path, *args: str) -> list[dict[str, Any]]:
    """``opsassist search <args> --json`` on ``data_dir``'s index (the CLI as a user runs it)."""
    env = os.environ | {"OPSASSIST_DATA_DIR": str(data_dir)}
    result = subprocess.run(
        [str(VENV_BIN / "opsassist"), "search", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    )
    hits: list[dict[str, Any]] = json.loads(result.stdout)
    return hits

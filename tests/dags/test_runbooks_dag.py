"""The runbook DAG on the 117 shared runbooks via ``dag.test()``, then the CLI finds the answer."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import VENV_BIN, runbook_corpus


@pytest.mark.slow
def test_runbooks_dag_builds_promotes_and_is_incremental(
    airflow_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opsassist.settings import get_settings

    data_dir = tmp_path / "data"
    monkeypatch.setenv("OPSASSIST_DATA_DIR", str(data_dir))
    monkeypatch.setenv("OPSASSIST_RUNBOOKS_PATH", str(runbook_corpus()))
    monkeypatch.setenv("OPSASSIST_CACHE_BACKEND", "memory")
    get_settings.cache_clear()

    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(str(Path(__file__).resolve().parents[2] / "dags")).get_dag("runbooks_index")
    run = dag.test()
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "success", states
    assert states["promote"] == "success" and states["validate"] == "success"
    aliases = json.loads((data_dir / "index" / "aliases.json").read_text())
    assert aliases["runbooks"] == "runbooks-v0001"

    env = os.environ | {"OPSASSIST_DATA_DIR": str(data_dir)}
    result = subprocess.run(
        [str(VENV_BIN / "opsassist"), "search", "pod keeps restarting", "--json", "--k", "5"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    )
    hits = json.loads(result.stdout)
    assert {"source", "title", "section", "score", "text"} <= set(hits[0])
    assert "kubernetes/KubePodCrashLooping.md" in [h["source"] for h in hits[:3]]
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)

    # a second run with no change embeds nothing and promotes nothing
    second = dag.test()
    states = {ti.task_id: ti.state for ti in second.get_task_instances()}
    assert second.state == "success", states
    assert states["has_changes"] == "success"
    assert states["embed"] == "skipped" and states["promote"] == "skipped"
    assert json.loads((data_dir / "index" / "aliases.json").read_text()) == aliases
    get_settings.cache_clear()


def test_cli_errors_are_one_line_and_non_zero(tmp_path: Path) -> None:
    env = os.environ | {"OPSASSIST_DATA_DIR": str(tmp_path / "empty")}
    result = subprocess.run(
        [str(VENV_BIN / "opsassist"), "search", "anything", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: no index named 'runbooks'")
    assert result.stdout == ""

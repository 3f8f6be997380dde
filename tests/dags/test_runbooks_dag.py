"""The runbook DAG on the 117 shared runbooks via ``dag.test()``, then the CLI finds the answer."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import VENV_BIN, runbook_corpus
from tests.dags.index_dag_runs import index_dag, run_dag, search


@pytest.mark.slow
def test_runbooks_dag_builds_promotes_and_is_incremental(
    airflow_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opsassist.settings import get_settings

    data_dir = tmp_path / "data"
    corpus = str(runbook_corpus())
    dag = index_dag(monkeypatch, data_dir, "runbooks_index", OPSASSIST_RUNBOOKS_PATH=corpus)
    run, states = run_dag(dag)
    assert run.state == "success", states
    assert states["promote"] == "success" and states["validate"] == "success"
    aliases = json.loads((data_dir / "index" / "aliases.json").read_text())
    assert aliases["runbooks"] == "runbooks-v0001"

    hits = search(data_dir, "pod keeps restarting", "--json", "--k", "5")
    assert {"source", "title", "section", "score", "text"} <= set(hits[0])
    assert "kubernetes/KubePodCrashLooping.md" in [h["source"] for h in hits[:3]]
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)

    # a second run with no change embeds nothing and promotes nothing
    second, states = run_dag(dag)
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

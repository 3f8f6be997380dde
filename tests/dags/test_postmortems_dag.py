"""The postmortem DAG on the shipped write-ups via ``dag.test()``: the build is validated, gated on
the postmortem evaluation set and promoted to its own alias, the digests are kept beside the
version, the CLI finds a write-up; a second run with no change builds nothing."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import VENV_BIN


@pytest.mark.slow
def test_postmortems_dag_builds_promotes_and_is_incremental(
    airflow_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opsassist.settings import get_settings

    data_dir = tmp_path / "data"
    monkeypatch.setenv("OPSASSIST_DATA_DIR", str(data_dir))
    monkeypatch.setenv("OPSASSIST_CACHE_BACKEND", "memory")
    get_settings.cache_clear()

    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(str(Path(__file__).resolve().parents[2] / "dags")).get_dag("postmortems_index")
    run = dag.test()
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "success", states
    assert states["validate"] == states["gate"] == states["pack"] == "success"
    aliases = json.loads((data_dir / "index" / "aliases.json").read_text())
    assert aliases == {"postmortems": "postmortems-v0001"}  # its own alias, runbooks untouched
    pack = json.loads((data_dir / "knowledge" / "postmortems-v0001.json").read_text())
    assert len(pack) == 15 and "README.md" not in pack
    gate = json.loads(next((data_dir / "runs" / "postmortems").glob("*/gate.json")).read_text())
    assert gate["decision"] == "promote" and gate["questions"] >= 20

    env = os.environ | {"OPSASSIST_DATA_DIR": str(data_dir)}
    result = subprocess.run(
        [
            str(VENV_BIN / "opsassist"),
            "search",
            "have we seen etcd run out of database space before?",
            "--index",
            "postmortems",
            "--json",
            "--k",
            "3",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    )
    hits = json.loads(result.stdout)
    assert hits[0]["source"] == "2025-02-11-etcd-database-space-exceeded.md"
    assert hits[0]["source_type"] == "postmortem" and hits[0]["timestamp"].startswith("2025-02-11")

    second = dag.test()
    states = {ti.task_id: ti.state for ti in second.get_task_instances()}
    assert second.state == "success", states
    assert states["embed"] == "skipped" and states["promote"] == "skipped"
    assert json.loads((data_dir / "index" / "aliases.json").read_text()) == aliases
    get_settings.cache_clear()

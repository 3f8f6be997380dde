"""The postmortem DAG on the shipped write-ups via ``dag.test()``: the build is validated, gated on
the postmortem evaluation set and promoted to its own alias, the digests are kept beside the
version, the CLI finds a write-up; a second run with no change builds nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.dags.index_dag_runs import index_dag, run_dag, search


@pytest.mark.slow
def test_postmortems_dag_builds_promotes_and_is_incremental(
    airflow_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opsassist.settings import get_settings

    data_dir = tmp_path / "data"
    dag = index_dag(monkeypatch, data_dir, "postmortems_index")
    run, states = run_dag(dag)
    assert run.state == "success", states
    assert states["validate"] == states["gate"] == states["pack"] == "success"
    aliases = json.loads((data_dir / "index" / "aliases.json").read_text())
    assert aliases == {"postmortems": "postmortems-v0001"}  # its own alias, runbooks untouched
    pack = json.loads((data_dir / "knowledge" / "postmortems-v0001.json").read_text())
    assert len(pack) == 15 and "README.md" not in pack
    gate = json.loads(next((data_dir / "runs" / "postmortems").glob("*/gate.json")).read_text())
    assert gate["decision"] == "promote" and gate["questions"] >= 20

    question = "have we seen etcd run out of database space before?"
    hits = search(data_dir, question, "--index", "postmortems", "--json", "--k", "3")
    assert hits[0]["source"] == "2025-02-11-etcd-database-space-exceeded.md"
    assert hits[0]["source_type"] == "postmortem" and hits[0]["timestamp"].startswith("2025-02-11")

    second, states = run_dag(dag)
    assert second.state == "success", states
    assert states["embed"] == "skipped" and states["promote"] == "skipped"
    assert json.loads((data_dir / "index" / "aliases.json").read_text()) == aliases
    get_settings.cache_clear()

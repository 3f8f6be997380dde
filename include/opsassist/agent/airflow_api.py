"""Trigger the ops_action DAG through Airflow 3's REST API (the chat's ``approve <id>`` path)."""

from __future__ import annotations

from typing import Any

from opsassist.airflow_rest import airflow_client
from opsassist.settings import Settings


def trigger_dag(settings: Settings, conf: dict[str, Any], timeout: float = 10.0) -> str:
    """``POST /api/v2/dags/{dag}/dagRuns`` as the API user; the new run id."""
    with airflow_client(settings, timeout) as http:
        run = http.post(
            f"/api/v2/dags/{settings.agent_dag_id}/dagRuns",
            json={"logical_date": None, "conf": conf},
        )
        run.raise_for_status()
        return str(run.json()["dag_run_id"])

"""Trigger the ops_action DAG through Airflow 3's REST API (the chat's ``approve <id>`` path)."""

from __future__ import annotations

from typing import Any

import httpx

from opsassist.settings import Settings


def trigger_dag(settings: Settings, conf: dict[str, Any], timeout: float = 10.0) -> str:
    """``POST /api/v2/dags/{dag}/dagRuns`` with a token from ``/auth/token``; the new run id."""
    base = settings.airflow_api_url.rstrip("/")
    with httpx.Client(base_url=base, timeout=timeout) as http:
        headers: dict[str, str] = {}
        if settings.airflow_api_user:
            token = http.post(
                "/auth/token",
                json={
                    "username": settings.airflow_api_user,
                    "password": settings.airflow_api_password.get_secret_value(),
                },
            )
            token.raise_for_status()
            headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        run = http.post(
            f"/api/v2/dags/{settings.agent_dag_id}/dagRuns",
            json={"logical_date": None, "conf": conf},
            headers=headers,
        )
        run.raise_for_status()
        return str(run.json()["dag_run_id"])

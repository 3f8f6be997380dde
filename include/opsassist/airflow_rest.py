"""Airflow 3's REST API as the API user of ``OPSASSIST_AIRFLOW_API_*``: one client for the chat
server (approved actions trigger ``ops_action``) and the tasks (a history run's note)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from opsassist.settings import Settings


@contextmanager
def airflow_client(settings: Settings, timeout: float = 10.0) -> Iterator[httpx.Client]:
    """An HTTP client on ``OPSASSIST_AIRFLOW_API_URL``, with a bearer token from
    ``/auth/token`` when an API user is set (without one, requests go unauthenticated, as an
    auth manager that allows them expects)."""
    with httpx.Client(base_url=settings.airflow_api_url.rstrip("/"), timeout=timeout) as http:
        if settings.airflow_api_user:
            token = http.post(
                "/auth/token",
                json={
                    "username": settings.airflow_api_user,
                    "password": settings.airflow_api_password.get_secret_value(),
                },
            )
            token.raise_for_status()
            http.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        yield http

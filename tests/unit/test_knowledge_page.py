"""The plugin page's HTML (plugins/knowledge_page.py): what each panel shows, hostile text
escaped, buttons disabled for a read-only user, a panel that is down named and the rest shown.
The page against the real Airflow API server: tests/e2e/test_knowledge_plugin.py."""

from __future__ import annotations

import datetime as dt
import sys
from typing import Any

import pytest

from tests.conftest import ROOT

HOSTILE = "<script>alert(1)</script>'\""


@pytest.fixture(scope="module")
def page() -> Any:
    sys.path.insert(0, str(ROOT / "plugins"))
    try:
        import knowledge_page
    finally:
        sys.path.remove(str(ROOT / "plugins"))
    return knowledge_page


def snapshot() -> dict[str, Any]:
    now = dt.datetime(2026, 12, 6, 7, 0, tzinfo=dt.UTC)
    gate_run = {
        "mlflow_run_id": "0123456789abcdef",
        "mlflow_url": None,
        "started": now,
        "version": "runbooks-v0003",
        "baseline_version": "runbooks-v0002",
        "decision": "refuse",
        "reason": "en: regression vs runbooks-v0002: hybrid.en.recall_at_5 0.500 vs 0.900",
        "metrics": {"hybrid.en.recall_at_5": 0.5, "hybrid.en.mrr_at_10": 0.4},
        "baseline": {"hybrid.en.recall_at_5": 0.9, "hybrid.en.mrr_at_10": 0.8},
        "questions": 10,
        "build": {"run_id": "cli-1", "dag_id": None},
    }
    promoting = gate_run | {
        "version": "runbooks-v0002",
        "decision": "promote",
        "build": {"run_id": "manual__2026-12-06T06:00:00+00:00", "dag_id": "runbooks_index"},
    }
    versions = [
        {"version": "runbooks-v0001", "number": 1, "rows": 20, "promoted": False},
        {"version": "runbooks-v0002", "number": 2, "rows": 25, "promoted": True},
    ]
    return {
        "index": {
            "ok": True,
            "error": None,
            "backend": "embedded",
            "aliases": [
                {
                    "alias": "runbooks",
                    "promoted": "runbooks-v0002",
                    "chunks": 25,
                    "sources": 4,
                    "versions": versions,
                    "can_roll_back": True,
                }
            ],
        },
        "index_audit": {"ok": True, "error": None, "records": []},
        "gate": {
            "ok": True,
            "error": None,
            "enabled": True,
            "alias": "runbooks",
            "last": gate_run,
            "promoted_by": {"runbooks-v0002": promoting},
        },
        "quarantine": {
            "ok": True,
            "error": None,
            "entries": [
                {"source": HOSTILE + ".md", "reason": "broken front matter", "run_id": "r"}
            ],
        },
        "signals": {"ok": False, "error": "signal reports unavailable (PermissionError)"},
        "actions": {
            "ok": True,
            "error": None,
            "pending": [
                {
                    "id": "act-0a1b2c3d",
                    "tool": "rollout_restart",
                    "arguments": {"name": "api"},
                    "change_text": "PATCH deployments payments/api",
                    "requested_by": "alice",
                    "question": HOSTILE,
                    "created_at": now.isoformat(),
                    "expires_at": now.isoformat(),
                }
            ],
        },
        "feedback": {"ok": True, "error": None, "configured": False, "flagged": []},
    }


def test_the_page_shows_every_panel_and_links_the_build_run(page: Any) -> None:
    html = page.render(snapshot(), user="olga", can_operate=True, awaiting={}, dag_id="ops_action")
    assert "runbooks-v0002" in html and "25 chunks, 4 sources" in html
    assert 'href="../dags/runbooks_index/runs/manual__2026-12-06T06%3A00%3A00%2B00%3A00"' in html
    assert 'data-decision="refuse"' in html and "recall_at_5</td><td>0.500" in html
    assert "vs 0.900" in html and "MLflow run <code>0123456789ab</code>" in html
    assert 'id="rollback-runbooks" data-alias="runbooks"' in html  # enabled
    assert 'id="approve-act-0a1b2c3d" data-action' in html
    assert "<code>PATCH deployments payments/api</code>" in html
    assert "signal reports unavailable (PermissionError)" in html  # the panel that is down
    assert "feedback loop not configured" in html


def test_hostile_text_is_escaped(page: Any) -> None:
    html = page.render(snapshot(), user=HOSTILE, can_operate=True, awaiting={}, dag_id="x")
    assert "<script>alert(1)" not in html
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 3  # user, file, question


def test_read_only_users_get_disabled_buttons(page: Any) -> None:
    html = page.render(snapshot(), user="vera", can_operate=False, awaiting={}, dag_id="x")
    assert "read only" in html
    assert 'id="rollback-runbooks" disabled' in html
    assert 'id="approve-act-0a1b2c3d" disabled' in html


def test_actions_waiting_in_airflow_link_there_instead_of_buttons(page: Any) -> None:
    waiting = {"act-0a1b2c3d": "manual__x"}
    html = page.render(
        snapshot(), user="o", can_operate=True, awaiting=waiting, dag_id="ops_action"
    )
    assert 'id="approve-act-0a1b2c3d"' not in html
    assert 'href="../required_actions"' in html and "runs/manual__x" in html
    unknown = page.render(snapshot(), user="o", can_operate=True, awaiting=None, dag_id="x")
    assert "Could not ask Airflow" in unknown and 'id="approve-act-0a1b2c3d"' in unknown

"""The Airflow plugin "Knowledge" (plugins/) on a real Airflow 3 (``scripts/airflow-local``:
api-server, scheduler, dag-processor, simple auth manager with the users admin, operator (op),
usr (user) and viewer (viewer), a temporary home), started once for this module.

The state it shows is made the way production makes it: a runbook index built by the CLI
(``opsassist index runbooks``, v1), a second build by a ``runbooks_index`` DAG run in that
Airflow (v2, promoted by the quality gate: its "built by" links to the DAG run), a third build
by the CLI that the gate refuses (a runbook's text replaced: retrieval regresses) with a broken
file quarantined; signals ingested from a spool folder with malformed lines (dead letters); two
pending agent actions written to the real PostgreSQL action table (the chat's agent proposes
them after a Kubernetes dry-run, which needs a cluster: the only shortcut here); a question
rated bad three times (Open WebUI export entries through the feedback loop's parse and append).

Then, through the API server: the plugin is listed with its nav view; its JSON shows all of the
above; viewer and user are refused (403) on rollback, approve and reject, and nothing changes;
in Debian's Chromium (Playwright, tests/e2e/browser.py) the operator opens Knowledge from the
nav, the page is screenshotted (var/screenshots/knowledge-plugin.png) and its Roll back button
moves the alias back one version with an audit row; the operator rejects one action and the
admin approves the other (an ops_action run is created through Airflow's REST API). Finally a
second ``airflow api-server`` on the same home with the index store and the audit database
down still renders the page, saying what is unavailable.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.conftest import (
    ROOT,
    free_port,
    require_service,
    runbook_corpus,
    service_port,
    stop_process,
)
from tests.e2e.browser import airflow_sign_in, in_browser, launch
from tests.e2e.test_airflow_ui import SCRIPT, Airflow

pytestmark = pytest.mark.slow

SCREENSHOT = ROOT / "var" / "screenshots" / "knowledge-plugin.png"
V1 = ["kubernetes/KubePodCrashLooping.md", "kubernetes/KubePodNotReady.md", "etcd/etcdNoLeader.md"]
V2 = [*V1, "node/NodeFilesystemAlmostOutOfSpace.md"]
GARBLED = "kubernetes/KubePodCrashLooping.md"
USERS = {"admin": "admin", "operator": "op", "usr": "user", "viewer": "viewer"}
RUN_TIMEOUT_S = 1500
CORRELATION = "e2e-knowledge"  # the pending actions this module writes
FLAGGED = "why does etcd have no leader?"  # rated bad three times


@dataclass
class Knowledge:
    airflow: Airflow
    passwords: dict[str, str]
    root: Path
    versions: list[str] = field(default_factory=list)  # v1, v2 (the refused v3 is dropped)
    dag_run_id: str = ""
    actions: list[str] = field(default_factory=list)

    def token(self, user: str) -> str:
        answer = httpx.post(
            f"{self.airflow.base}/auth/token",
            json={"username": user, "password": self.passwords[user]},
            timeout=60,
        )
        assert answer.status_code == 201, answer.text
        return str(answer.json()["access_token"])

    def client(self, user: str, base: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=base or self.airflow.base,
            headers={"Authorization": f"Bearer {self.token(user)}"},
            timeout=120,
        )


def copy_runbooks(target: Path, files: list[str]) -> Path:
    for relative in files:
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(runbook_corpus() / relative, target / relative)
    return target


def cli_build(env: dict[str, str], folder: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "opsassist"),
            "index",
            "runbooks",
            str(folder),
            "--json",
            *options,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def ingest_signals(env: dict[str, str], spool: Path) -> None:
    """A spool folder with OpenSSH lines and two malformed ones, ingested by the library."""
    from opsassist.pipelines.signals import run_sources
    from opsassist.settings import Settings
    from opsassist.stores import get_index_store
    from tests.integration.test_signals_pipeline import loghub_lines, retime_line

    folder = spool / "logs" / "sshd"
    folder.mkdir(parents=True)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    lines = [retime_line(line, now) for line in loghub_lines("OpenSSH", 20)]
    (folder / "app.log").write_text("\n".join(lines) + '\n{"broken json\n[1, 2]\n')
    names = {k.removeprefix("OPSASSIST_").lower(): v for k, v in env.items()}
    settings = Settings(**{k: v for k, v in names.items() if k in Settings.model_fields})
    result = run_sources(settings, get_index_store(settings), ["spool"])["spool"]
    assert result["accepted"] == 20 and result["rejected"] == {
        "invalid json": 1,
        "json not an object": 1,
    }, result


def pending_action(dsn: str, requested_by: str) -> str:
    from opsassist.agent import kube
    from opsassist.agent.store import Action, AgentStore

    now = dt.datetime.now(dt.UTC)
    args = {"namespace": "payments", "name": "checkout"}
    action = Action(
        id=f"act-{secrets.token_hex(4)}",
        created_at=now,
        expires_at=now + dt.timedelta(minutes=30),  # the module's run, not the next one's
        requested_by=requested_by,
        tool="rollout_restart",
        arguments=args,
        change=kube.change_for("rollout_restart", args, now).to_json(),
        dry_run={"kind": "Deployment", "dryRun": "All"},
        runbook_step="KubePodCrashLooping: restart the deployment once the cause is fixed",
        question="checkout pods crash-loop after the config change, restart checkout",
        verify_promql="",
        correlation_id=CORRELATION,
    )
    AgentStore(dsn).create_action(action)
    return action.id


def expire_earlier_runs_actions(dsn: str) -> None:
    """Actions an earlier run of this module left pending (the database is shared) expire."""
    from opsassist.agent.store import AgentStore

    store = AgentStore(dsn)
    for action in store.list_actions(500):
        if action.correlation_id == CORRELATION and action.status == "pending":
            store.transition(action.id, ("pending",), "expired")


@pytest.fixture(scope="module")
def knowledge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Knowledge]:
    require_service("postgres", service_port("postgres", 15432))
    dsn = f"postgresql://opsassist:opsassist@127.0.0.1:{service_port('postgres', 15432)}/opsassist"
    root = tmp_path_factory.mktemp("knowledge-plugin")
    v1 = copy_runbooks(root / "runbooks-v1", V1)
    v2 = copy_runbooks(root / "runbooks-v2", V2)
    v3 = copy_runbooks(root / "runbooks-v3", V2)
    (v3 / GARBLED).write_text(
        "# Lunch menu\n\n## Monday\n\nSoup of the day and a salad bar in the canteen.\n\n"
        "## Tuesday\n\nPasta with tomato sauce; desserts are served until two o'clock.\n"
    )
    (v3 / "kubernetes" / "KubeBroken.md").write_text("---\ntitle: [unclosed\n---\n# Broken\n\nx\n")
    home, data_dir, password = root / "airflow-home", root / "data", "knowledge-pw"
    port = free_port()
    env = {
        **os.environ,
        "OPSASSIST_AIRFLOW_HOME": str(home),
        "OPSASSIST_AIRFLOW_PORT": str(port),
        "OPSASSIST_AIRFLOW_ADMIN_PASSWORD": password,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in USERS.items()),
        # the plugin's approvals trigger ops_action as this API user (the chat server's settings)
        "OPSASSIST_AIRFLOW_API_URL": f"http://127.0.0.1:{port}",
        "OPSASSIST_AIRFLOW_API_USER": "admin",
        "OPSASSIST_AIRFLOW_API_PASSWORD": password,
        "OPSASSIST_AUDIT_DSN": dsn,
        "OPSASSIST_DATA_DIR": str(data_dir),
        "OPSASSIST_INDEX_BACKEND": "embedded",
        "OPSASSIST_CACHE_BACKEND": "memory",
        "OPSASSIST_RUNBOOKS_PATH": str(v1),
        "OPSASSIST_SIGNALS_SPOOL_PATH": str(root / "spool"),
        "OPSASSIST_SIGNALS_SOURCES": "spool",
        # one model (the gate embeds the questions for each build) and a gate that judges this
        # small corpus: English questions, no first-build floors, any number of questions
        "OPSASSIST_EMBEDDING_MODEL": "all-MiniLM-L6-v2",
        "OPSASSIST_GATE_LANGUAGES": "en",
        "OPSASSIST_GATE_MIN_QUESTIONS": "1",
        "OPSASSIST_GATE_MIN_RECALL_AT_5": "0",
        "OPSASSIST_GATE_MIN_MRR_AT_10": "0",
        "OPSASSIST_LOG_LEVEL": "INFO",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "3600",
        "HF_HUB_OFFLINE": "1",
    }
    for key in ("AIRFLOW_HOME", "AIRFLOW__CORE__DAGS_FOLDER", "AIRFLOW__CORE__UNIT_TEST_MODE"):
        env.pop(key, None)
    airflow = Airflow(f"http://127.0.0.1:{port}", password, env, home, data_dir)
    started = time.monotonic()
    up = subprocess.run(
        [str(SCRIPT), "up"], env=env, capture_output=True, text=True, timeout=900, check=False
    )
    try:
        assert up.returncode == 0, f"{up.stdout}\n{up.stderr}"
        print(f"airflow-local up: {time.monotonic() - started:.1f} s")
        passwords = json.loads((home / "passwords.json").read_text())
        state = Knowledge(airflow, passwords, root)

        built = cli_build(env, v1)  # v1: the CLI
        assert built.returncode == 0, built.stderr[-3000:]
        state.versions.append(json.loads(built.stdout)["version"])

        with airflow.api() as api:  # v2: a runbooks_index run in this Airflow
            assert api.patch("/api/v2/dags/runbooks_index", json={"is_paused": False}).is_success
            created = api.post(
                "/api/v2/dags/runbooks_index/dagRuns",
                json={"logical_date": None, "conf": {"runbooks_path": str(v2)}},
            )
            assert created.status_code == 200, created.text
            state.dag_run_id = created.json()["dag_run_id"]
            started = time.monotonic()
            run = airflow.wait_for_run(api, "runbooks_index", state.dag_run_id)
            print(f"runbooks_index run: {time.monotonic() - started:.1f} s")
            assert run["state"] == "success", run
            api.patch("/api/v2/dags/runbooks_index", json={"is_paused": True})
        from opsassist.index.embedded import EmbeddedIndexStore

        promoted = EmbeddedIndexStore(data_dir / "index").current_version("runbooks")
        assert promoted is not None and promoted != state.versions[0]
        state.versions.append(promoted)

        # v3: the CLI, refused by the gate (the runbook's many sections became two: allowed)
        refused = cli_build(env, v3, "--allow-shrink")
        assert refused.returncode == 1, refused.stdout + refused.stderr[-3000:]
        assert "quality gate refused" in refused.stderr, refused.stderr[-3000:]

        ingest_signals(env, root / "spool")
        from opsassist.settings import Settings
        from tests.integration.test_platform_status import rate

        rate(Settings(data_dir=data_dir), FLAGGED, ["bad", "bad", "bad"], state.versions[1])
        expire_earlier_runs_actions(dsn)
        state.actions = [pending_action(dsn, "alice"), pending_action(dsn, "bob")]
        yield state
    finally:
        subprocess.run([str(SCRIPT), "down"], env=env, capture_output=True, timeout=300)


def test_plugin_is_listed_and_shows_the_platform_through_the_api_server(
    knowledge: Knowledge,
) -> None:
    v1, v2 = knowledge.versions
    with knowledge.client("viewer") as api:
        plugins = {p["name"]: p for p in api.get("/api/v2/plugins").json()["plugins"]}
        assert [a["url_prefix"] for a in plugins["knowledge"]["fastapi_apps"]] == ["/knowledge"]
        (view,) = plugins["knowledge"]["external_views"]
        assert (view["name"], view["url_route"], view["destination"]) == (
            "Knowledge",
            "knowledge",
            "nav",
        )
        assert api.get("/api/v2/plugins/importErrors").json()["total_entries"] == 0
        timings = []
        for _ in range(3):  # the first request imports MLflow and LanceDB in the API server
            started = time.monotonic()
            assert api.get("/knowledge/").status_code == 200
            timings.append(round(time.monotonic() - started, 2))
        print("page load (s), first and warm:", timings)
        answer = api.get("/knowledge/api/status")
        assert answer.status_code == 200, answer.text
        data = answer.json()
        assert httpx.get(f"{knowledge.airflow.base}/knowledge/api/status").status_code == 401

    assert all(panel["ok"] for panel in data.values()), {k: v["error"] for k, v in data.items()}
    runbooks = data["index"]["aliases"][0]
    assert (runbooks["alias"], runbooks["promoted"], runbooks["sources"]) == ("runbooks", v2, 4)
    assert runbooks["chunks"] > 0 and runbooks["can_roll_back"]
    assert [v["version"] for v in runbooks["versions"]] == [v1, v2]  # the refused one dropped
    gate = data["gate"]
    built_by = gate["promoted_by"][v2]["build"]
    assert built_by == {"run_id": knowledge.dag_run_id, "dag_id": "runbooks_index"}
    last = gate["last"]
    assert last["decision"] == "refuse" and last["reason"].startswith("en: regression vs")
    assert last["version"] not in (v1, v2) and last["baseline_version"] == v2
    assert set(last["metrics"]) == {"hybrid.en.recall_at_5", "hybrid.en.mrr_at_10"}
    dropped = {k: (v, last["baseline"][k]) for k, v in last["metrics"].items()}
    assert any(b - v > 0.02 for v, b in dropped.values()), dropped  # beyond the tolerance
    quarantined = {q["source"]: q for q in data["quarantine"]["entries"]}
    assert set(quarantined) == {"kubernetes/KubeBroken.md"}
    (spool,) = data["signals"]["sources"]
    assert spool["source"] == "spool" and spool["accepted"] == 20
    assert spool["dead_letters"] == {"invalid json": 1, "json not an object": 1}
    assert spool["freshness_p95_s"] is not None and spool["age_s"] is not None
    pending = {a["id"] for a in data["actions"]["pending"]}
    assert set(knowledge.actions) <= pending
    (flagged,) = data["feedback"]["flagged"]
    assert (flagged["question"], flagged["bad_count"], flagged["index_version"]) == (FLAGGED, 3, v2)


@pytest.mark.parametrize("user", ["viewer", "usr"])
def test_viewer_and_user_roles_are_refused_the_buttons(knowledge: Knowledge, user: str) -> None:
    """Airflow's auth manager decides: only op and admin may roll back, approve or reject."""
    from opsassist.agent.store import AgentStore

    target = knowledge.actions[0]
    with knowledge.client(user) as api:
        page = api.get("/knowledge/")
        assert page.status_code == 200 and "read only" in page.text
        assert 'id="rollback-runbooks" disabled' in page.text
        refused = api.post("/knowledge/api/aliases/runbooks/rollback", json={"reason": "x"})
        assert refused.status_code == 403, refused.text
        for verb in ("approve", "reject"):
            refused = api.post(f"/knowledge/api/actions/{target}/{verb}", json={})
            assert refused.status_code == 403, refused.text
        status = api.get("/knowledge/api/status").json()
    assert status["index"]["aliases"][0]["promoted"] == knowledge.versions[1]
    assert not (knowledge.airflow.data_dir / "audit" / "index.jsonl").exists()
    store = AgentStore(knowledge.airflow.env["OPSASSIST_AUDIT_DSN"])
    action = store.get_action(target)
    assert action is not None and action.status == "pending"
    refusals = [
        (r["actor"], r["role"], r["event"], r["ok"])
        for r in store.audit_rows(action_id=target)
        if r["actor"] == user
    ]
    assert refusals == [
        (user, "viewer", "approval_refused", False),
        (user, "viewer", "rejection_refused", False),
    ]


def browse(request: dict[str, Any]) -> dict[str, Any]:
    """As the operator: log in, open Knowledge from the nav, read the framed page, screenshot
    it, then roll the runbook alias back with its button (reason typed, then Confirm)."""
    import tempfile
    import time

    from playwright.sync_api import sync_playwright

    base = request["base"].rstrip("/")
    seen: dict[str, Any] = {"timings": {}}
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="opsassist-chromium-") as profile,
        sync_playwright() as playwright,
    ):
        context = launch(playwright, profile, request, viewport={"width": 1500, "height": 1500})
        try:
            page = airflow_sign_in(context, base, "operator", request["password"])
            nav = page.get_by_role("link", name="Knowledge")
            nav.first.wait_for()
            seen["nav_links"] = nav.count()
            nav.first.click()
            page.wait_for_url(lambda url: "/plugin/knowledge" in url)
            frame = page.frame_locator("iframe").first
            frame.locator("#aliases").wait_for()
            frame.locator("#actions").wait_for()
            seen["timings"]["page"] = time.monotonic() - started
            seen["url"] = page.url
            seen["text"] = frame.locator("body").inner_text()
            seen["dag_run_links"] = frame.locator(
                "a[href*='/dags/runbooks_index/runs/']"
            ).evaluate_all("links => links.map(a => a.href)")
            seen["mlflow_runs"] = frame.get_by_text("MLflow run").count()
            seen["decision"] = frame.locator("[data-decision]").first.get_attribute("data-decision")
            page.screenshot(path=request["screenshot"], full_page=True)
            frame.locator("#reason-runbooks").fill(request["reason"])
            frame.locator("#rollback-runbooks").click()
            seen["asked"] = frame.locator("#confirm").inner_text()
            frame.locator("#confirm-yes").click()
            result = frame.locator("#result[data-status]")
            result.wait_for()
            seen["rollback_status"] = result.get_attribute("data-status")
            seen["rollback_text"] = result.inner_text()
            frame.locator("#rollbacks").wait_for()  # the page reloads with the audit row
            seen["after_text"] = frame.locator("body").inner_text()
            seen["timings"]["rollback"] = time.monotonic() - started
        finally:
            context.close()
    return seen


def test_operator_sees_the_page_in_the_airflow_ui_and_rolls_back(
    knowledge: Knowledge, tmp_path: Path
) -> None:
    v1, v2 = knowledge.versions
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    reason = "answers got worse since " + v2
    run, seen = in_browser(
        browse,
        {
            "base": knowledge.airflow.base,
            "password": knowledge.passwords["operator"],
            "screenshot": str(SCREENSHOT),
            "reason": reason,
        },
        tmp_path,
    )
    assert seen is not None, f"{run.stdout[-3000:]}\n{run.stderr[-5000:]}"
    print("browser timings (s):", seen["timings"])
    assert seen["nav_links"] >= 1 and seen["url"].startswith(knowledge.airflow.base + "/plugin/")
    text = seen["text"]
    for shown in (
        v2,
        "runbooks_index",
        "refused",
        "regression",
        "kubernetes/KubeBroken.md",
        "invalid json",
        *knowledge.actions,
        "PATCH deployments payments/checkout",
        FLAGGED,
        "operator",
    ):
        assert shown in text, f"{shown!r} not on the page:\n{text}"
    assert "unavailable" not in text, text
    assert seen["decision"] == "refuse" and seen["mlflow_runs"] >= 1
    run_link = (
        f"{knowledge.airflow.base}/dags/runbooks_index/runs/{quote(knowledge.dag_run_id, safe='')}"
    )
    assert seen["dag_run_links"] == [run_link]
    assert SCREENSHOT.stat().st_size > 30_000

    # the button moved the alias back one version and the audit trail says who and why
    assert seen["asked"].startswith(f"Roll runbooks back from {v2} to the version before?")
    assert seen["rollback_status"] == "200", seen["rollback_text"]
    assert f"{v2} -> {v1}" in seen["rollback_text"]
    with knowledge.client("viewer") as api:
        status = api.get("/knowledge/api/status").json()
    assert status["index"]["aliases"][0]["promoted"] == v1
    lines = (knowledge.airflow.data_dir / "audit" / "index.jsonl").read_text().splitlines()
    (record,) = [json.loads(line) for line in lines]
    assert (record["event"], record["alias"], record["from"], record["to"]) == (
        "rollback",
        "runbooks",
        v2,
        v1,
    )
    assert (record["actor"], record["reason"]) == ("airflow:operator", reason)
    assert record["correlation_id"] not in ("", "-")  # the plugin request's own
    assert "airflow:operator" in seen["after_text"] and reason in seen["after_text"]
    versions = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "opsassist"), "versions"],
        env=knowledge.airflow.env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    assert f"* {v1}" in versions and f"  {v2}" in versions  # the CLI reads the same


def test_operator_rejects_and_admin_approves_pending_actions(knowledge: Knowledge) -> None:
    from opsassist.agent.store import AgentStore

    to_reject, to_approve = knowledge.actions
    store = AgentStore(knowledge.airflow.env["OPSASSIST_AUDIT_DSN"])
    with knowledge.client("operator") as api:
        unsafe = api.post(
            f"/knowledge/api/actions/{to_reject}/reject",
            content="x",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert unsafe.status_code == 415  # a cross-site form cannot press the button
        rejected = api.post(
            f"/knowledge/api/actions/{to_reject}/reject",
            json={},
            headers={"X-Request-ID": "req-knowledge-reject"},
        )
        assert rejected.status_code == 200, rejected.text
        assert rejected.json()["text"].startswith(f"Rejected {to_reject}")
        again = api.post(f"/knowledge/api/actions/{to_reject}/approve", json={})
        assert again.status_code == 409 and "rejected, not pending" in again.text
    row = store.get_action(to_reject)
    assert row is not None
    assert (row.status, row.approved_by, row.approval_via) == (
        "rejected",
        "operator",
        "airflow-plugin",
    )

    with knowledge.client("admin") as api:
        approved = api.post(f"/knowledge/api/actions/{to_approve}/approve", json={})
        assert approved.status_code == 200, approved.text
        row = store.get_action(to_approve)
        assert row is not None and row.status == "approved" and row.dag_run_id, approved.text
        assert (row.approved_by, row.approval_via) == ("admin", "airflow-plugin")
        run = api.get(f"/api/v2/dags/ops_action/dagRuns/{quote(row.dag_run_id, safe='')}")
        assert run.status_code == 200 and run.json()["conf"] == {"action_id": to_approve}
        api.delete(f"/api/v2/dags/ops_action/dagRuns/{quote(row.dag_run_id, safe='')}")
        pending = {a["id"] for a in api.get("/knowledge/api/status").json()["actions"]["pending"]}
    assert not pending & {to_reject, to_approve}
    (decided,) = [r for r in store.audit_rows(action_id=to_reject) if r["event"] == "rejection"]
    assert (decided["actor"], decided["role"], decided["result"]) == (
        "operator",
        "operator",
        {"via": "airflow-plugin"},
    )
    assert decided["correlation_id"] == "req-knowledge-reject"
    events = [(r["actor"], r["event"], r["ok"]) for r in store.audit_rows(action_id=to_approve)]
    assert ("admin", "approval", True) in events and ("admin", "dag_trigger", True) in events


def test_page_renders_with_the_index_store_and_audit_database_down(
    knowledge: Knowledge, tmp_path: Path
) -> None:
    """A second ``airflow api-server`` on the same home, its index store an OpenSearch and its
    audit database a PostgreSQL that do not answer: the page still renders and names what is
    unavailable; the rest (quarantine, signals, rollbacks) is shown."""
    exports = subprocess.run(
        [str(SCRIPT), "env"], env=knowledge.airflow.env, capture_output=True, text=True, check=True
    ).stdout
    env = dict(knowledge.airflow.env)
    for line in exports.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value.strip('"')
    port, closed = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    env |= {
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": base,
        "OPSASSIST_INDEX_BACKEND": "opensearch",
        "OPSASSIST_OPENSEARCH_URL": f"http://127.0.0.1:{closed}",
        "OPSASSIST_AUDIT_DSN": f"postgresql://opsassist:opsassist@127.0.0.1:{closed}/opsassist",
    }
    log = (tmp_path / "api-server.log").open("w")
    server = subprocess.Popen(
        [
            str(ROOT / ".venv" / "bin" / "airflow"),
            "api-server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"{base}/api/v2/monitor/health", timeout=3).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, (tmp_path / "api-server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the second api-server did not start"
            time.sleep(2)
        with knowledge.client("operator", base=base) as api:
            page = api.get("/knowledge/")
            status = api.get("/knowledge/api/status").json()
            blocked = api.post("/knowledge/api/aliases/runbooks/rollback", json={})
    finally:
        stop_process(server)
        log.close()
    assert page.status_code == 200, page.text[-2000:]
    assert "index store unavailable" in page.text
    assert "action and audit database unavailable" in page.text
    assert "kubernetes/KubeBroken.md" in page.text and "invalid json" in page.text
    assert status["index"]["ok"] is False and status["actions"]["ok"] is False
    assert status["quarantine"]["ok"] and status["signals"]["ok"] and status["index_audit"]["ok"]
    assert str(closed) not in page.text
    assert blocked.status_code == 503 and "index store unavailable" in blocked.text

"""The Airflow UI and CLI as operators use them, on a real Airflow 3 (``scripts/airflow-local``:
api-server, scheduler with the LocalExecutor, dag-processor, simple auth manager, a temporary
AIRFLOW_HOME, 127.0.0.1 only), started once for this module.

* The trigger form: each DAG's params as the API server serves them to the form, judged by the
  form's own rule (a field is required unless its type allows ``null``; a required field left
  empty disables Trigger), then the form's payload sent to the API server's trigger endpoint.
* Task logs: a runbooks_index run executed by the scheduler; its task log read through the REST
  API has the library's records at their level (INFO), with their fields and correlation id.
* The browser (Debian's Chromium driven headless by Playwright through tests/e2e/browser.py:
  Playwright lives in Open WebUI's venv, ``playwright install`` is never run): log in, open the
  trigger form of runbooks_index (Trigger enabled with the defaults), trigger it, wait for the
  run to succeed, open a task log and find the INFO lines. Screenshots in
  var/test-artifacts/airflow-*.png.
* Backfill as the README's "Reprocessing history" says, on this fresh home: the Spark connection
  in the scheduler's environment, ``airflow dags unpause signals_history``, ``airflow backfill
  create`` for two days; both days run and are indexed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.conftest import ROOT, free_port, runbook_corpus
from tests.e2e.browser import airflow_sign_in, in_browser, launch

pytestmark = pytest.mark.slow

SCRIPT = ROOT / "scripts" / "airflow-local"
ARTIFACTS = ROOT / "var" / "test-artifacts"
SUBSET = [
    "kubernetes/KubePodCrashLooping.md",
    "kubernetes/KubePodNotReady.md",
    "etcd/etcdNoLeader.md",
    "node/NodeFilesystemAlmostOutOfSpace.md",
]
RUN_TIMEOUT_S = 1500  # a run on 2 busy cores: every task is a process that imports the library


@dataclass
class Airflow:
    base: str
    password: str
    env: dict[str, str]  # the environment `up` got (what tasks see)
    home: Path
    data_dir: Path

    @contextlib.contextmanager
    def api(self) -> Iterator[httpx.Client]:
        """A REST client logged in as admin (a token from /auth/token)."""
        with httpx.Client(base_url=self.base, timeout=60) as client:
            login = {"username": "admin", "password": self.password}
            token = client.post("/auth/token", json=login)
            assert token.status_code == 201, token.text
            client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
            yield client

    def cli(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """An ``airflow`` command against this instance (its ``scripts/airflow-local env``)."""
        exports = subprocess.run(
            [str(SCRIPT), "env"], env=self.env, capture_output=True, text=True, check=True
        ).stdout
        env = dict(self.env)
        for line in exports.splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = value.strip('"')
        return subprocess.run(
            [str(ROOT / ".venv" / "bin" / "airflow"), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def wait_for_run(self, api: httpx.Client, dag_id: str, run_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while True:
            run = api.get(f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}").json()
            if run["state"] in ("success", "failed"):
                return dict(run)
            assert time.monotonic() < deadline, f"{dag_id} {run_id} still {run['state']}"
            time.sleep(3)

    def task_log(self, api: httpx.Client, dag_id: str, run_id: str, task: str) -> list[Any]:
        url = f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task}/logs/1"
        answer = api.get(url, headers={"Accept": "application/json"})
        assert answer.status_code == 200, answer.text
        return list(answer.json()["content"])


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Airflow]:
    from tests.integration.history_fixtures import build_two_days

    root = tmp_path_factory.mktemp("airflow-ui")
    corpus = root / "runbooks"
    for relative in SUBSET:
        (corpus / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(runbook_corpus() / relative, corpus / relative)
    days = build_two_days(root / "history", dt.datetime.now(dt.UTC).date() - dt.timedelta(3), 60)
    home, data_dir, password = root / "airflow-home", root / "data", "ui-test-pw"
    port = free_port()
    env = {
        **os.environ,
        "OPSASSIST_AIRFLOW_HOME": str(home),
        "OPSASSIST_AIRFLOW_PORT": str(port),
        "OPSASSIST_AIRFLOW_ADMIN_PASSWORD": password,
        # the API user the history DAG writes its run notes with (the chat server's settings)
        "OPSASSIST_AIRFLOW_API_URL": f"http://127.0.0.1:{port}",
        "OPSASSIST_AIRFLOW_API_USER": "admin",
        "OPSASSIST_AIRFLOW_API_PASSWORD": password,
        # what the tasks read: a temporary data folder, the embedded store, a small runbook folder
        "OPSASSIST_DATA_DIR": str(data_dir),
        "OPSASSIST_INDEX_BACKEND": "embedded",
        "OPSASSIST_CACHE_BACKEND": "memory",
        "OPSASSIST_RUNBOOKS_PATH": str(corpus),
        "OPSASSIST_GATE_ALLOW_UNJUDGED_FIRST_BUILD": "true",  # a four-runbook subset
        "OPSASSIST_LOG_LEVEL": "INFO",
        "OPSASSIST_HISTORY_ARCHIVE_URI": str(days.archive),
        # the driver's class archive has tests of its own (a training run: ~45 s, minutes on a
        # busy machine); these runs start without one
        "OPSASSIST_HISTORY_CLASS_ARCHIVE": "false",
        "PYSPARK_PYTHON": str(ROOT / ".venv" / "bin" / "python"),
        # README: the Spark connection in the environment of what runs the tasks
        "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps({"conn_type": "spark", "host": "local[2]"}),
        # a test instance: DAG files parsed once, not every 2 minutes
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "3600",
        "HF_HUB_OFFLINE": "1",
    }
    for key in ("AIRFLOW_HOME", "AIRFLOW__CORE__DAGS_FOLDER", "AIRFLOW__CORE__UNIT_TEST_MODE"):
        env.pop(key, None)  # the tests' own Airflow home is not this instance's
    instance = Airflow(f"http://127.0.0.1:{port}", password, env, home, data_dir)
    started = time.monotonic()
    up = subprocess.run(
        [str(SCRIPT), "up"], env=env, capture_output=True, text=True, timeout=900, check=False
    )
    try:
        assert up.returncode == 0, f"{up.stdout}\n{up.stderr}"
        print(f"airflow-local up: {time.monotonic() - started:.1f} s")
        instance.days = days.days  # type: ignore[attr-defined]
        yield instance
    finally:
        subprocess.run([str(SCRIPT), "down"], env=env, capture_output=True, timeout=300)


# --- the trigger form's rule ---------------------------------------------------------------------
def form_required(schema: dict[str, Any]) -> bool:
    """Airflow UI (FlexibleForm/isParamRequired.tsx): a field is required when its schema has a
    type and that type is not a list containing "null"."""
    kind = schema.get("type")
    return bool(kind) and not (isinstance(kind, list) and "null" in kind)


def form_missing(params: dict[str, Any]) -> list[str]:
    """Required fields the form shows empty (value null or ""): each keeps Trigger disabled."""
    return [
        name
        for name, spec in params.items()
        if form_required(spec["schema"]) and spec["value"] in (None, "")
    ]


def test_trigger_form_accepts_every_dags_defaults(airflow: Airflow) -> None:
    """Every DAG can be triggered from the form with its defaults, except ops_action, whose
    action id is required by design (the form marks it, and only it, until it is typed)."""
    with airflow.api() as api:
        listed = api.get("/api/v2/dags", params={"limit": 100}).json()["dags"]
        dags = {d["dag_id"]: d for d in listed}
        assert set(dags) == {p.stem for p in (ROOT / "dags").glob("*.py")}
        for dag_id, dag in sorted(dags.items()):
            assert dag["is_paused"], dag_id  # Airflow's default for a new DAG
            assert dag["description"], f"{dag_id}: no summary line in the DAG list"
            params = api.get(f"/api/v2/dags/{dag_id}/details").json()["params"]
            missing = form_missing(params)
            conf = {name: spec["value"] for name, spec in params.items()}
            if dag_id == "ops_action":
                assert missing == ["action_id"]
                refused = api.post(
                    f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf}
                )
                # refused at once, saying why, instead of a run that cannot work
                assert refused.status_code == 400, refused.text
                assert "Invalid input for param action_id" in refused.text
                conf["action_id"] = "act-0123abcd"  # what the operator types
            else:
                assert missing == [], f"{dag_id}: Trigger disabled with the defaults: {missing}"
            # the form's payload, as the UI posts it (the DAGs stay paused: nothing runs)
            created = api.post(
                f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf}
            )
            assert created.status_code == 200, f"{dag_id}: {created.text}"
            run_id = created.json()["dag_run_id"]
            assert created.json()["conf"] == conf
            deleted = api.delete(f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}")
            assert deleted.status_code == 204, deleted.text


# --- the browser (runs in .venv-webui's Python: standard library and Playwright only) -------------
def browse(request: dict[str, Any]) -> dict[str, Any]:
    """Logs in to the Airflow UI, then ``request["step"]``:

    * ``trigger``: opens runbooks_index's trigger form (screenshot), presses its Trigger with the
      defaults, returns the new run's id and what the form showed;
    * ``log``: opens the run's page (what it shows), then the ``collect`` task's log (screenshot)
      and returns the row of the library's "runbooks collected" record and the page's text."""
    import tempfile
    import time
    import urllib.parse

    from playwright.sync_api import sync_playwright

    base, shots = request["base"].rstrip("/"), request["shots"]
    seen: dict[str, Any] = {"timings": {}}
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="opsassist-chromium-") as profile,
        sync_playwright() as playwright,
    ):
        # the whole trigger form, its button too
        context = launch(playwright, profile, request, viewport={"width": 1400, "height": 1150})
        try:
            page = airflow_sign_in(context, base, "admin", request["password"])
            seen["timings"]["login"] = time.monotonic() - started
            if request["step"] == "trigger":
                page.goto(base + "/dags/runbooks_index", wait_until="load")
                page.get_by_role("button", name="Trigger").first.click()
                dialog = page.get_by_role("dialog")
                dialog.get_by_text("Run Parameters").wait_for()
                unpause = dialog.get_by_text("Unpause runbooks_index on trigger")
                seen["unpause_offered"] = unpause.count() == 1
                button = dialog.get_by_role("button", name="Trigger")
                seen["form_text"] = dialog.inner_text()
                seen["trigger_enabled"] = button.is_enabled()
                page.screenshot(path=shots["trigger"])
                with page.expect_response(
                    lambda r: r.request.method == "POST" and r.url.endswith("/dagRuns")
                ) as created:
                    button.click()
                seen["created_status"] = created.value.status
                seen["run_id"] = created.value.json()["dag_run_id"]
            else:
                run_id = urllib.parse.quote(request["run_id"], safe="")
                run_url = f"{base}/dags/runbooks_index/runs/{run_id}"
                page.goto(run_url, wait_until="load")
                page.get_by_text("warm_up").first.wait_for()
                seen["run_page_text"] = page.locator("body").inner_text()
                page.goto(run_url + "/tasks/collect", wait_until="load")
                line = page.get_by_text("runbooks collected").first
                line.wait_for()
                row = line.evaluate("e => (e.closest('[data-index]') || e.parentElement).innerText")
                seen["log_row"] = row
                seen["log_text"] = page.locator("body").inner_text()
                page.screenshot(path=shots["log"])
            seen["timings"][request["step"]] = time.monotonic() - started
        finally:
            context.close()
    return seen


def browser(request: dict[str, Any], workdir: Path) -> dict[str, Any]:
    run, seen = in_browser(browse, request, workdir)
    assert seen is not None, f"{run.stdout[-3000:]}\n{run.stderr[-5000:]}"
    return seen


def test_browser_triggers_runbooks_index_and_shows_info_logs(
    airflow: Airflow, tmp_path: Path
) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    request = {
        "base": airflow.base,
        "password": airflow.password,
        "shots": {
            "trigger": str(ARTIFACTS / "airflow-trigger-form.png"),
            "log": str(ARTIFACTS / "airflow-task-log.png"),
        },
    }
    form = browser({**request, "step": "trigger"}, tmp_path)
    # the form: Trigger enabled with the defaults, the DAG unpaused by the same click
    assert form["trigger_enabled"], form["form_text"]
    assert form["unpause_offered"] and "This field is required" not in form["form_text"]
    assert "Folder to index instead of the configured source." in form["form_text"]
    assert form["created_status"] == 200
    run_id = form["run_id"]
    with airflow.api() as api:
        started = time.monotonic()
        run = airflow.wait_for_run(api, "runbooks_index", run_id)
        print(f"runbooks_index run: {time.monotonic() - started:.1f} s")
        tasks = api.get(
            f"/api/v2/dags/runbooks_index/dagRuns/{quote(run_id, safe='')}/taskInstances"
        ).json()["task_instances"]
        assert run["state"] == "success", {t["task_id"]: t["state"] for t in tasks}
        assert api.get("/api/v2/dags/runbooks_index").json()["is_paused"] is False

        # the same logs through the REST API: levels and fields as structured data
        for task in tasks:
            if task["state"] != "success":
                continue
            events = airflow.task_log(api, "runbooks_index", run_id, task["task_id"])
            ours = [e for e in events if str(e.get("logger", "")).startswith("opsassist")]
            assert all(e["level"] in ("info", "warning") for e in ours), ours
            assert all(e["correlation_id"] == f"runbooks_index/{run_id}" for e in ours), ours
            assert not [e for e in events if e.get("level") == "error"], task["task_id"]
            assert not [e for e in events if str(e.get("event", "")).startswith('{"ts"')]
        collected = [
            e
            for e in airflow.task_log(api, "runbooks_index", run_id, "collect")
            if e.get("event") == "runbooks collected"
        ]
        assert [(e["level"], e["runbooks"], e["logger"]) for e in collected] == [
            ("info", 4, "opsassist.pipelines.runbooks")
        ]

    page = browser({**request, "step": "log", "run_id": run_id}, tmp_path)
    print("browser timings (s):", form["timings"], page["timings"])
    assert "Success" in page["run_page_text"]
    # the task log page: the library's record as INFO, its fields and correlation id beside it
    row = page["log_row"]
    assert re.search(r"\bINFO - runbooks collected runbooks=4 chunks=\d+", row), row
    assert f"correlation_id=runbooks_index/{run_id}" in row, row
    assert "ERROR" not in page["log_text"] and '{"ts"' not in page["log_text"]
    assert all(Path(p).stat().st_size > 10_000 for p in request["shots"].values())


def test_backfill_of_two_days_runs_as_the_readme_says(airflow: Airflow) -> None:
    """README "Reprocessing history": the connection in the scheduler's environment (the
    fixture's `scripts/airflow-local up`), then exactly its two commands."""
    from tests.integration.test_spark_history import index_texts

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Reprocessing history") : readme.index("## Settings")]
    assert "airflow dags unpause signals_history" in section
    assert "airflow backfill create --dag-id signals_history" in section
    first, second = airflow.days  # type: ignore[attr-defined]

    unpaused = airflow.cli("dags", "unpause", "signals_history")
    assert unpaused.returncode == 0, unpaused.stderr
    for _attempt in range(3):
        # SQLite (this home's database, as a first local install has) lets the scheduler hold
        # its lock past the busy timeout now and then; the README says to run the command again
        # (its transaction rolled back: the count of runs below proves no day doubled)
        created = airflow.cli(
            "backfill",
            "create",
            "--dag-id",
            "signals_history",
            "--from-date",
            first.isoformat(),
            "--to-date",
            second.isoformat(),
        )
        if created.returncode == 0 or "database is locked" not in created.stderr:
            break
    assert created.returncode == 0, created.stdout + created.stderr
    with airflow.api() as api:
        deadline = time.monotonic() + 2 * RUN_TIMEOUT_S
        while True:
            runs = api.get(
                "/api/v2/dags/signals_history/dagRuns", params={"run_type": "backfill"}
            ).json()["dag_runs"]
            states = {r["dag_run_id"]: r["state"] for r in runs}
            if len(runs) == 2 and set(states.values()) <= {"success", "failed"}:
                break
            assert time.monotonic() < deadline, states
            time.sleep(5)
        assert set(states.values()) == {"success"}, states
        intervals = sorted(r["data_interval_start"][:10] for r in runs)
        assert intervals == [first.isoformat(), second.isoformat()]
        for run in runs:
            day = run["data_interval_start"][:10]
            said = [
                e
                for e in airflow.task_log(api, "signals_history", run["dag_run_id"], "driver_jvm")
                if str(e.get("event", "")).endswith(f"reprocesses {day}")
            ]
            assert [(e["level"], e["first_day"], e["master"]) for e in said] == [
                ("info", day, "local[2]")
            ], run["dag_run_id"]
            # the run id names the day after; the note (runs list, run page) names the day
            assert run["dag_run_id"].startswith("backfill__")
            assert run["note"] == f"Reprocesses {day}", run
    texts = index_texts(airflow.data_dir)
    assert texts
    from opsassist.index.embedded import EmbeddedIndexStore

    store = EmbeddedIndexStore(airflow.data_dir / "index")
    version = store.current_version("signals")
    assert version is not None
    ids = sorted(i for group in store.ids_by_source(version).values() for i in group)
    assert {c.section[:10] for c in store.fetch(version, ids)} == {
        first.isoformat(),
        second.isoformat(),
    }

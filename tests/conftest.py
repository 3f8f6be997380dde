"""Shared fixtures: isolated settings per test, a migrated Airflow home, real-service access."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SHARED_RUNBOOKS = SHARED / "corpora" / "runbooks" / "prometheus-operator"
SHIPPED_RUNBOOKS = ROOT / "include" / "opsassist" / "corpora" / "runbooks" / "prometheus-operator"
VENV_BIN = Path(sys.executable).parent

# A pytest-xdist worker runs with a __main__ module that has neither __spec__ nor __file__;
# pyspark.sql.connect (imported by Great Expectations) takes that for a doctest run and calls
# sys.exit(0) on import.
if not hasattr(sys.modules["__main__"], "__file__"):
    sys.modules["__main__"].__file__ = "<pytest-xdist worker>"


def runbook_corpus() -> Path:
    """The shared corpus when present (CI and developers), else the copy shipped in the package."""
    return SHARED_RUNBOOKS if SHARED_RUNBOOKS.is_dir() else SHIPPED_RUNBOOKS


def service_port(name: str, default: int) -> int:
    return int(os.environ.get(f"OPSASSIST_{name.upper()}_PORT", default))


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(process: subprocess.Popen[Any], grace: float = 30) -> None:
    """Terminate a server process; kill it if it has not exited after ``grace`` seconds."""
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


@contextlib.contextmanager
def serve_in_thread(app: Any, **config: Any) -> Iterator[str]:
    """An ASGI app served by uvicorn on a free loopback port in a thread of this process; yields
    its base URL once it accepts connections, stops it on exit."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **config)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def require_service(name: str, port: int) -> None:
    """Skip when a real service is not running, unless OPSASSIST_REQUIRE_SERVICES=1 (CI)."""
    if port_open(port):
        return
    message = f"{name} is not running on 127.0.0.1:{port} (start it: scripts/services up {name})"
    if os.environ.get("OPSASSIST_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Settings pointing at a fresh data folder (embedded index, memory cache)."""
    from opsassist.settings import Settings, get_settings

    monkeypatch.setenv("OPSASSIST_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("OPSASSIST_CACHE_BACKEND", "memory")
    monkeypatch.setenv("OPSASSIST_INDEX_BACKEND", "embedded")
    # tests index small subsets the evaluation set barely covers (the gate's refusal of an
    # unjudged first build has tests of its own)
    monkeypatch.setenv("OPSASSIST_GATE_ALLOW_UNJUDGED_FIRST_BUILD", "true")
    get_settings.cache_clear()
    yield Settings()
    get_settings.cache_clear()


@pytest.fixture
def corpus_copy(tmp_path: Path) -> Path:
    """A writable copy of the runbook corpus."""
    target = tmp_path / "runbooks"
    shutil.copytree(runbook_corpus(), target, ignore=shutil.ignore_patterns("LICENSE", "SOURCE"))
    return target


@pytest.fixture(scope="session")
def redis_url() -> str:
    port = service_port("redis", 16379)
    require_service("redis", port)
    return f"redis://127.0.0.1:{port}/15"


def pytest_configure(config: pytest.Config) -> None:
    """Airflow reads its configuration at import: point it at a private home before any import."""
    home = Path(tempfile.mkdtemp(prefix="opsassist-airflow-"))
    os.environ["AIRFLOW_HOME"] = str(home)
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
    os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def shared_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temporary folder common to every pytest-xdist worker of this run (the run's own base
    folder without xdist): for what a session makes once and all workers share."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


MODEL_SCRIPT = ROOT / "scripts" / "model-server"
MODEL_BASE = f"http://127.0.0.1:{os.environ.get('OPSASSIST_MODEL_PORT', '18080')}"


def _model_script(command: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MODEL_SCRIPT), command], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="session")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real KServe model server (scripts/model-server), shared by every test process.

    The test command starts it before pytest, and then it is only used. Otherwise the first
    user starts it (a fresh machine creates its venv first: minutes) and the last user of this
    run stops it; pytest-xdist workers count their users in a file under the run's shared
    temporary folder, so one worker never stops the server under another."""
    from filelock import FileLock

    shared = shared_tmp(tmp_path_factory)
    users, owned = shared / "model-server.users", shared / "model-server.owned"
    with FileLock(str(shared / "model-server.lock"), timeout=1800):
        if _model_script("status", 30).returncode != 0:
            up = _model_script("up", 1500)
            if up.returncode != 0:
                pytest.fail(f"scripts/model-server up failed:\n{up.stdout}\n{up.stderr}")
            owned.touch()
        users.write_text(str(int(users.read_text() or 0) + 1 if users.exists() else 1))
    try:
        yield MODEL_BASE
    finally:
        with FileLock(str(shared / "model-server.lock"), timeout=600):
            left = int(users.read_text()) - 1
            users.write_text(str(left))
            if left == 0 and owned.exists():
                _model_script("down", 120)
                owned.unlink()


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    """The migrated SQLite Airflow home shared by the DAG tests (``dag.test()`` needs tables)."""
    home = Path(os.environ["AIRFLOW_HOME"])
    if not (home / "airflow.db").exists():
        subprocess.run(
            [str(VENV_BIN / "airflow"), "db", "migrate"],
            check=True,
            capture_output=True,
            env=os.environ.copy(),
            timeout=300,
        )
    return home


@pytest.fixture(scope="session")
def history_class_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The history driver's class-data archive, made once by the real training run (spark-submit
    on the bundled sample day) and shared by the Spark tests through
    OPSASSIST_HISTORY_CLASS_ARCHIVE_DIR."""
    from filelock import FileLock

    from opsassist.pipelines.history_jvm import ensure_class_archive
    from opsassist.settings import Settings

    folder = shared_tmp(tmp_path_factory) / "class-archive"
    folder.mkdir(exist_ok=True)
    with FileLock(str(folder.parent / "class-archive.lock"), timeout=900):
        archive = ensure_class_archive(
            Settings(
                data_dir=folder.parent / "class-archive-data", history_class_archive_dir=str(folder)
            )
        )
    assert archive is not None and archive.parent == folder and archive.stat().st_size > 10**7
    assert [p.name for p in folder.iterdir() if p.is_file()] == [archive.name]  # no leftovers
    return archive


# --- scheduling on pytest-xdist workers --------------------------------------------------------
# Each file is one unit of work on one worker (its tests share module fixtures, as with --dist
# loadfile), except that files which each run Spark on all cores are one unit, so two Spark jobs
# never fight over the 2 cores while the other worker has the rest of the suite. (xdist's own
# --dist loadgroup does not group under pytest 9.2, which no longer lets it rename node ids:
# pytest-xdist issue 1386.)
SHARED_UNITS = {
    "tests/integration/test_spark_history.py": "spark",
    "tests/dags/test_signals_history_dag.py": "spark",
    "tests/e2e/test_airflow_ui.py": "spark",  # its backfill runs spark-submit
}


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    class FileScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return SHARED_UNITS.get(path, path)

    return FileScheduling(config, log)


# --- skips and time per folder ------------------------------------------------------------------
# Skips the test command accepts (OPSASSIST_FAIL_ON_SKIP=1): node id prefix -> why it may skip.
# Anything else that skips fails the run, so a test that silently stops running is seen.
ALLOWED_SKIPS: dict[str, str] = {}
_skipped: list[tuple[str, str]] = []
_folder_seconds: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    parts = report.nodeid.split("/")
    folder = "/".join(parts[:2]) if len(parts) > 2 else parts[0]
    _folder_seconds[folder] = _folder_seconds.get(folder, 0.0) + report.duration
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else ""
        if not any(report.nodeid.startswith(prefix) for prefix in ALLOWED_SKIPS):
            _skipped.append((report.nodeid, reason))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return  # the controller sees every worker's reports and decides
    if os.environ.get("OPSASSIST_FAIL_ON_SKIP") == "1" and _skipped and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _folder_seconds:
        terminalreporter.section("test time per folder (setup + call + teardown, summed)")
        for folder, seconds in sorted(_folder_seconds.items(), key=lambda item: -item[1]):
            terminalreporter.write_line(f"{seconds:8.1f} s  {folder}")
    if os.environ.get("OPSASSIST_FAIL_ON_SKIP") == "1" and _skipped:
        terminalreporter.section("skips that are not allowed (OPSASSIST_FAIL_ON_SKIP=1)", red=True)
        for nodeid, reason in _skipped:
            terminalreporter.write_line(f"{nodeid}: {reason}")
        terminalreporter.write_line(
            "a skip fails the test command unless tests/conftest.py ALLOWED_SKIPS lists it"
        )

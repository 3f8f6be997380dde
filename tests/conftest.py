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
    from opsassist.pipelines.history_jvm import ensure_class_archive
    from opsassist.settings import Settings

    folder = tmp_path_factory.mktemp("class-archive")
    archive = ensure_class_archive(
        Settings(data_dir=folder / "data", history_class_archive_dir=str(folder))
    )
    assert archive is not None and archive.parent == folder and archive.stat().st_size > 10**7
    assert [p.name for p in folder.iterdir() if p.is_file()] == [archive.name]  # no leftovers
    return archive

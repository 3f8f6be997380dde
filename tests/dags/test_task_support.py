"""What DAG tasks rely on, in one process: records go to Airflow's task logger (structlog) at their
level with their fields and the correlation id, never to stderr; the history DAG's Spark
connection check and the day a run reprocesses. (tests/e2e/test_airflow_ui.py checks the same
through a real scheduler, the API server's task logs and the UI.)"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port


@pytest.fixture
def opsassist_logger() -> Iterator[logging.Logger]:
    """The ``opsassist`` logger, its handlers, level and propagation restored afterwards."""
    logger = logging.getLogger("opsassist")
    before = (list(logger.handlers), logger.propagate, logger.level)
    yield logger
    logger.handlers[:], logger.propagate = before[0], before[1]
    logger.setLevel(before[2])


def test_task_records_go_to_the_airflow_task_logger_at_their_level(
    opsassist_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    import structlog

    from opsassist.logs import configure_logging, correlation_scope, get_logger

    configure_logging("INFO", "json", airflow_task=True)
    log = get_logger("pipelines.runbooks")
    with structlog.testing.capture_logs() as events, correlation_scope("runbooks_index/manual__1"):
        log.info("runbooks collected", extra={"runbooks": 6, "root": Path("/srv/runbooks")})
        log.warning("file quarantined", extra={"event": "clash", "reason": "not UTF-8"})
        log.debug("below the level")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("stage failed")
    assert [(e["event"], e["log_level"]) for e in events] == [
        ("runbooks collected", "info"),
        ("file quarantined", "warning"),
        ("stage failed", "error"),
    ]
    collected, quarantined, failed = events
    assert collected["runbooks"] == 6 and collected["root"] == "/srv/runbooks"  # JSON-safe
    assert {e["correlation_id"] for e in events} == {"runbooks_index/manual__1"}
    assert quarantined["field_event"] == "clash"  # an extra named like a structlog key is kept
    assert failed["exc_info"][0] is ValueError
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""  # no JSON strings on stderr inside tasks


def test_outside_airflow_records_stay_json_lines_on_stderr(
    opsassist_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    from opsassist.logs import configure_logging, correlation_scope, get_logger

    configure_logging("INFO", "json")
    with correlation_scope("cli-1"):
        get_logger("cli").info("indexed", extra={"chunks": 3})
    [line] = capsys.readouterr().err.splitlines()
    record = json.loads(line)
    assert (record["level"], record["message"], record["chunks"]) == ("INFO", "indexed", 3)
    assert record["correlation_id"] == "cli-1"


def test_spark_connection_is_required_where_the_task_runs(
    monkeypatch: pytest.MonkeyPatch, airflow_home: Path
) -> None:
    from opsassist.pipelines.history_run import SparkConnectionMissing, require_spark_connection

    monkeypatch.setenv(
        "AIRFLOW_CONN_SPARK_TEST_OK", json.dumps({"conn_type": "spark", "host": "local[2]"})
    )
    assert require_spark_connection("spark_test_ok") == "local[2]"
    monkeypatch.delenv("AIRFLOW_CONN_SPARK_TEST_MISSING", raising=False)
    with pytest.raises(SparkConnectionMissing) as missing:
        require_spark_connection("spark_test_missing")
    message = str(missing.value)
    assert "AIRFLOW_CONN_SPARK_TEST_MISSING=" in message and "worker" in message
    assert "YARN" in message  # says what would have happened instead


def test_interval_days_name_the_day_a_run_reprocesses() -> None:
    from opsassist.pipelines.history_run import describe_days, interval_days

    start = dt.datetime(2026, 1, 14, tzinfo=dt.UTC)
    # a backfill run named backfill__2026-01-15...: its interval is the 14th
    days = interval_days(start, start + dt.timedelta(days=1))
    assert days == (dt.date(2026, 1, 14), dt.date(2026, 1, 14))
    assert describe_days(*days) == "2026-01-14"
    assert describe_days(*interval_days(start, start + dt.timedelta(days=3))) == (
        "2026-01-14 to 2026-01-16"
    )
    assert interval_days(start, start) == (dt.date(2026, 1, 14), dt.date(2026, 1, 14))


def test_history_dag_waits_for_no_catch_up_by_default(
    airflow_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new install does not queue a run per day since a fixed date; a start date turns
    catch-up on from that day."""
    from airflow.dag_processing.dagbag import DagBag

    from opsassist.settings import get_settings
    from tests.conftest import ROOT

    def load() -> object:
        get_settings.cache_clear()
        return DagBag(str(ROOT / "dags" / "signals_history.py")).get_dag("signals_history")

    monkeypatch.delenv("OPSASSIST_HISTORY_START_DATE", raising=False)
    default = load()
    assert default.catchup is False  # type: ignore[attr-defined]
    monkeypatch.setenv("OPSASSIST_HISTORY_START_DATE", "2026-03-01")
    dated = load()
    assert dated.catchup is True  # type: ignore[attr-defined]
    assert dated.start_date == dt.datetime(2026, 3, 1, tzinfo=dt.UTC)  # type: ignore[attr-defined]
    get_settings.cache_clear()


def test_run_note_is_best_effort(settings: object) -> None:
    """Without an API user nothing is sent; an API that cannot be reached is logged, never
    raised (the day's run goes on). tests/e2e/test_airflow_ui.py sees the note written."""
    from opsassist.pipelines.history_run import note_run
    from opsassist.settings import Settings

    assert isinstance(settings, Settings)
    assert note_run(settings, "signals_history", "backfill__x", "Reprocesses 2026-01-14") is False
    unreachable = settings.model_copy(
        update={"airflow_api_url": f"http://127.0.0.1:{free_port()}", "airflow_api_user": "admin"}
    )
    assert note_run(unreachable, "signals_history", "backfill__x", "n", timeout=2) is False


def test_class_archive_training_says_it_is_still_going(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The first driver_jvm run makes the class archive (a training run of ~45 s, minutes on a
    busy machine): it logs a progress line every PROGRESS_SECONDS instead of staying silent."""
    import sys
    import time

    from opsassist.pipelines import history_jvm

    monkeypatch.setattr(history_jvm, "PROGRESS_SECONDS", 0.3)
    logger = logging.getLogger("opsassist")
    monkeypatch.setattr(logger, "propagate", True)  # to caplog
    command = [sys.executable, "-c", "import sys, time; time.sleep(1.2); sys.stderr.write('e')"]
    with caplog.at_level(logging.INFO, logger="opsassist"):
        code, stderr = history_jvm._run_with_progress(command, {}, time.perf_counter())
    assert (code, stderr) == (0, "e")
    progress = [r for r in caplog.records if r.getMessage().endswith("still going")]
    assert len(progress) >= 2 and all(r.levelno == logging.INFO for r in progress)
    assert [r.seconds for r in progress] == sorted(r.seconds for r in progress)  # type: ignore[attr-defined]

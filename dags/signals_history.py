"""Signal history: reprocess one day of archived logs, metrics and events with Spark.

One run = one ``data_interval`` (a UTC day ``[D, D+1)``; a scheduled or backfill run's logical
date is ``D``, a manual run's interval is the day that ends at its logical date):
``SparkSubmitOperator`` runs
``spark_jobs/signals_history.py --date <interval start> --end-date <interval end - 1 day>``, which
rebuilds the streaming path's documents for that day from ``OPSASSIST_HISTORY_ARCHIVE_URI``,
validates them (Great Expectations) and replaces the day's documents in the signal index (or
``OPSASSIST_HISTORY_INDEX``). Ids are deterministic, so re-running a day (a retry, a backfill with
``--reprocess-behavior completed``) adds nothing.

Daily schedule. Like every new DAG it is **paused when first parsed**: unpause it
(``airflow dags unpause signals_history`` or the toggle in the UI) or its runs, backfills
included, wait queued. With ``OPSASSIST_HISTORY_START_DATE`` empty (the default) there is no
catch-up: once unpaused it reprocesses each day after it ends, and the past is reprocessed on
purpose with ``airflow backfill create --dag-id signals_history --from-date 2026-01-01 --to-date
2026-01-31`` (a running scheduler executes the runs); with a date it catches up from that day.
Backfill run ids carry the end of their interval (``backfill__<day + 1>``): ``driver_jvm``
logs which day a run reprocesses and writes it as the run's note ("Reprocesses 2026-01-14")
through the REST API when ``OPSASSIST_AIRFLOW_API_USER``/``_PASSWORD`` are set for the workers.

Spark master: the Airflow connection ``OPSASSIST_HISTORY_SPARK_CONN_ID`` as the *worker* sees it
(``AIRFLOW_CONN_SPARK_DEFAULT='{"conn_type": "spark", "host": "local[2]"}'`` in the scheduler's
environment with the LocalExecutor, or a connection in the metadata database); ``driver_jvm``
fails the run when it is missing (the provider would fall back to YARN). ``driver_jvm`` also
gives the driver's JVM options: ``OPSASSIST_HISTORY_DRIVER_JAVA_OPTIONS`` and the class-data
archive of ``opsassist.pipelines.history_jvm`` (made on the first run in an environment, with a
progress line every 15 s). The Spark UI is off unless ``OPSASSIST_HISTORY_SPARK_UI``.
Wiring only: the job and the library do the work.
"""

from __future__ import annotations

import shutil
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

from opsassist.settings import PROJECT_ROOT, get_settings

JOB = PROJECT_ROOT / "spark_jobs" / "signals_history.py"
FIRST_DAY = "{{ data_interval_start.strftime('%Y-%m-%d') }}"
# the interval's last day (a zero-length interval, e.g. from a cron *trigger*: its first day)
LAST_DAY = (
    "{{ (data_interval_end - macros.timedelta(seconds=1) if data_interval_end > "
    "data_interval_start else data_interval_start).strftime('%Y-%m-%d') }}"
)


def _spark_submit() -> str:
    """spark-submit of this environment (pip's pyspark puts it beside the interpreter)."""
    beside = Path(sys.executable).parent / "spark-submit"
    return str(beside) if beside.exists() else (shutil.which("spark-submit") or "spark-submit")


settings = get_settings()


@task(retries=0)
def driver_jvm(data_interval_start: Any = None, data_interval_end: Any = None) -> str:
    """Check the Spark connection (fail now rather than submit to YARN), say which day(s) the run
    reprocesses, and return the driver's JVM options: OPSASSIST_HISTORY_DRIVER_JAVA_OPTIONS and
    the class archive (made on the first run in this environment, ~45 s, with progress lines; a
    failure only means none is used)."""
    from airflow.sdk.exceptions import AirflowFailException

    from opsassist.pipelines.context import task_scope
    from opsassist.pipelines.history_jvm import driver_java_options, ensure_class_archive
    from opsassist.pipelines.history_run import (
        SparkConnectionMissing,
        describe_days,
        interval_days,
        log,
        note_run,
        require_spark_connection,
    )

    with task_scope() as (current, run_id):
        try:
            master = require_spark_connection(current.history_spark_conn_id)
        except SparkConnectionMissing as exc:
            raise AirflowFailException(str(exc)) from None
        first, last = interval_days(data_interval_start, data_interval_end)
        days = describe_days(first, last)
        log.info(
            f"run {run_id} reprocesses {days}",
            extra={"first_day": first.isoformat(), "last_day": last.isoformat(), "master": master},
        )
        note_run(current, "signals_history", run_id, f"Reprocesses {days}")
        return driver_java_options(current, ensure_class_archive(current))


@dag(
    dag_id="signals_history",
    # data intervals [D, D+1) (a bare "@daily" is a cron trigger in Airflow 3: no interval)
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    # empty OPSASSIST_HISTORY_START_DATE: no catch-up (a new install does not queue months of
    # runs); the anchor date only places the daily intervals, backfills may go before it
    start_date=pendulum.parse(settings.history_start_date or "2026-01-01", tz="UTC"),
    catchup=bool(settings.history_start_date),
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=6),
    default_args={"owner": "sre-platform", "retries": 1, "retry_delay": timedelta(minutes=2)},
    tags=["signals", "spark", "history", "backfill"],
    description="Reprocess archived signals one UTC day per run with Spark (paused when new: "
    "unpause it, or runs and backfills wait).",
    doc_md=__doc__,
)
def signals_history() -> None:
    options = driver_jvm()
    reprocess = SparkSubmitOperator(
        task_id="reprocess_day",
        application=str(JOB),
        conn_id=settings.history_spark_conn_id,
        name="opsassist-signals-history",
        application_args=["--date", FIRST_DAY, "--end-date", LAST_DAY],
        env_vars={"PYSPARK_PYTHON": sys.executable},
        conf={"spark.driver.extraJavaOptions": "{{ ti.xcom_pull(task_ids='driver_jvm') }}"},
        spark_binary=_spark_submit(),
        verbose=False,
    )
    options >> reprocess


signals_history()

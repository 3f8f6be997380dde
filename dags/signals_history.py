"""Signal history: reprocess one day of archived logs, metrics and events with Spark.

One run = one ``data_interval`` (a UTC day ``[D, D+1)``; a scheduled or backfill run's logical
date is ``D``, a manual run's interval is the day that ends at its logical date):
``SparkSubmitOperator`` runs
``spark_jobs/signals_history.py --date <interval start> --end-date <interval end - 1 day>``, which
rebuilds the streaming path's documents for that day from ``OPSASSIST_HISTORY_ARCHIVE_URI``,
validates them (Great Expectations) and replaces the day's documents in the signal index (or
``OPSASSIST_HISTORY_INDEX``). Ids are deterministic, so re-running a day (a retry, a backfill with
``--reprocess-behavior completed``) adds nothing.

Daily schedule with ``catchup`` from ``OPSASSIST_HISTORY_START_DATE``; reprocess a range with
``airflow backfill create --dag-id signals_history --from-date 2026-01-01 --to-date 2026-01-31``
(a running scheduler executes the runs). Spark master: the Airflow connection
``OPSASSIST_HISTORY_SPARK_CONN_ID`` (``AIRFLOW_CONN_SPARK_DEFAULT='{"conn_type": "spark",
"host": "local[2]"}'``; without a connection the provider falls back to YARN); the driver's JVM
options from ``OPSASSIST_HISTORY_DRIVER_JAVA_OPTIONS``. Wiring only: the job and the library do
the work.
"""

from __future__ import annotations

import shutil
import sys
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import dag
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


def _driver_conf() -> dict[str, str]:
    options = settings.history_driver_java_options.strip()
    return {"spark.driver.extraJavaOptions": options} if options else {}


@dag(
    dag_id="signals_history",
    # data intervals [D, D+1) (a bare "@daily" is a cron trigger in Airflow 3: no interval)
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.parse(settings.history_start_date, tz="UTC"),
    catchup=True,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=6),
    default_args={"owner": "sre-platform", "retries": 1, "retry_delay": timedelta(minutes=2)},
    tags=["signals", "spark", "history", "backfill"],
    doc_md=__doc__,
)
def signals_history() -> None:
    SparkSubmitOperator(
        task_id="reprocess_day",
        application=str(JOB),
        conn_id=settings.history_spark_conn_id,
        name="opsassist-signals-history",
        application_args=["--date", FIRST_DAY, "--end-date", LAST_DAY],
        env_vars={"PYSPARK_PYTHON": sys.executable},
        conf=_driver_conf(),
        spark_binary=_spark_submit(),
        verbose=False,
    )


signals_history()

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
"host": "local[2]"}'``; without a connection the provider falls back to YARN). The first task,
``driver_jvm``, gives the driver's JVM options: ``OPSASSIST_HISTORY_DRIVER_JAVA_OPTIONS`` and the
class-data archive of ``opsassist.pipelines.history_jvm`` (made on the first run in an environment).
Wiring only: the job and the library do the work.
"""

from __future__ import annotations

import shutil
import sys
from datetime import timedelta
from pathlib import Path

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
def driver_jvm() -> str:
    """The driver's JVM options: OPSASSIST_HISTORY_DRIVER_JAVA_OPTIONS and the class archive
    (made on the first run in this environment, ~45 s; a failure only means none is used)."""
    from opsassist.pipelines.history_jvm import driver_java_options, ensure_class_archive

    current = get_settings()
    return driver_java_options(current, ensure_class_archive(current))


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

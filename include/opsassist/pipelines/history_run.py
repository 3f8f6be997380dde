"""What the history DAG checks and says before spark-submit: the Spark connection exists where the
task runs, and which days the run reprocesses (logged, and written as the run's note).

Without the Airflow connection ``OPSASSIST_HISTORY_SPARK_CONN_ID`` the Spark provider does not
fail: it logs one line and submits with ``--master yarn``, which on a machine without YARN fails
later with an error that names neither the connection nor the fix. The connection is read where
the task runs (the worker: ``AIRFLOW_CONN_*`` in the worker's environment, or the metadata
database / secrets backend), not where ``airflow backfill create`` was typed, so the first task
checks it there and fails with what to set.
"""

from __future__ import annotations

import datetime as dt
from urllib.parse import quote

from opsassist.logs import get_logger
from opsassist.settings import Settings

log = get_logger(__name__)


class SparkConnectionMissing(RuntimeError):
    """The history DAG's Spark connection is not defined where its tasks run."""


def connection_env_name(conn_id: str) -> str:
    return f"AIRFLOW_CONN_{conn_id.upper()}"


def require_spark_connection(conn_id: str) -> str:
    """The master of the Airflow Spark connection ``conn_id`` (its host), or
    :class:`SparkConnectionMissing` saying how to define it for the worker."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        connection = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        raise SparkConnectionMissing(
            f"Airflow connection {conn_id!r} (OPSASSIST_HISTORY_SPARK_CONN_ID) is not defined "
            "where this task runs, and without it the Spark provider would submit to YARN. "
            f"Set it in the worker's environment, e.g. {connection_env_name(conn_id)}="
            '\'{"conn_type": "spark", "host": "local[2]"}\' for the scheduler (LocalExecutor) '
            "or the worker, or create it: airflow connections add "
            f"{conn_id} --conn-type spark --conn-host 'local[2]'"
        ) from None
    master = str(connection.host or "")
    if connection.port:
        master = f"{master}:{connection.port}"
    if not master:
        raise SparkConnectionMissing(
            f"Airflow connection {conn_id!r} has no host: set the Spark master as its host "
            "(local[2], spark://host:7077, yarn, k8s://https://...)"
        )
    return master


def interval_days(start: dt.datetime, end: dt.datetime) -> tuple[dt.date, dt.date]:
    """First and last UTC day of a data interval ``[start, end)`` (as the DAG's templates pass
    them to the job; a zero-length interval is its first day)."""
    first = start.astimezone(dt.UTC).date()
    if end <= start:
        return first, first
    return first, (end.astimezone(dt.UTC) - dt.timedelta(seconds=1)).date()


def describe_days(first: dt.date, last: dt.date) -> str:
    return first.isoformat() if first == last else f"{first.isoformat()} to {last.isoformat()}"


def note_run(
    settings: Settings, dag_id: str, run_id: str, note: str, timeout: float = 10.0
) -> bool:
    """Write ``note`` as the run's note through the Airflow REST API (the run's page and the
    runs list show it), with the API user of ``OPSASSIST_AIRFLOW_API_*`` (the chat server's).
    Tasks cannot set their run's note otherwise, and backfill run ids carry the end of their
    interval, not the day they reprocess. False (and a log line) when no API user is set or the
    API refuses: a note is never a reason for the day to fail."""
    import httpx

    if not settings.airflow_api_user:
        log.info(
            "run note not written: set OPSASSIST_AIRFLOW_API_URL/USER/PASSWORD for the workers "
            "to have the day shown as the run's note"
        )
        return False
    from opsassist.airflow_rest import airflow_client

    try:
        with airflow_client(settings, timeout) as http:
            patched = http.patch(
                f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}",
                params={"update_mask": "note"},
                json={"note": note},
            )
            patched.raise_for_status()
    except httpx.HTTPError as exc:
        log.warning(
            "run note not written", extra={"reason": str(exc), "api": settings.airflow_api_url}
        )
        return False
    return True

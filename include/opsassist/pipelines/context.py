"""What every Airflow task of ours does first: settings, logging into Airflow's task log (at each
record's level, structured fields kept), correlation id = ``<dag id>/<run id>``."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from opsassist.logs import configure_logging, correlation_scope
from opsassist.settings import Settings, get_settings


@contextlib.contextmanager
def task_scope() -> Iterator[tuple[Settings, str]]:
    """Yield (settings, run_id) inside a running Airflow task, logs tagged with the run id and
    sent through Airflow's task logger (never as JSON on stderr, which Airflow records as
    errors)."""
    from airflow.sdk import get_current_context

    context = get_current_context()
    run_id = str(context["run_id"])
    settings = get_settings()
    logger = logging.getLogger("opsassist")
    before = (list(logger.handlers), logger.propagate, logger.level)
    configure_logging(settings.log_level, settings.log_format, airflow_task=True)
    try:
        with correlation_scope(f"{context['dag'].dag_id}/{run_id}"):
            yield settings, run_id
    finally:  # dag.test() runs tasks in the caller's process: leave its logging as it was
        logger.handlers[:], logger.propagate = before[0], before[1]
        logger.setLevel(before[2])

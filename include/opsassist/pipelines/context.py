"""What every Airflow task of ours does first: settings, JSON logging, correlation id = run id."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from opsassist.logs import configure_logging, correlation_scope
from opsassist.settings import Settings, get_settings


@contextlib.contextmanager
def task_scope() -> Iterator[tuple[Settings, str]]:
    """Yield (settings, run_id) inside a running Airflow task, logs tagged with the run id."""
    from airflow.sdk import get_current_context

    context = get_current_context()
    run_id = str(context["run_id"])
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    with correlation_scope(f"{context['dag'].dag_id}/{run_id}"):
        yield settings, run_id

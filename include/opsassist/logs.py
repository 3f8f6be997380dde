"""Structured JSON logging with a correlation id carried in a context variable.

Every log record gets ``correlation_id``: the chat server sets it from ``X-Request-ID`` (or a new
one), DAG tasks set it from the DAG run id, the CLI makes one per invocation. Secrets never reach
the logs because settings hold them as ``SecretStr`` and nothing logs raw URLs with credentials.

Outside Airflow the records are JSON lines on stderr. Inside an Airflow task they go to Airflow's
task logger instead (``configure_logging(airflow_task=True)``, what ``task_scope()`` does): each
record becomes one structlog event at its own level, its ``extra`` fields and the correlation id
as the event's keys, so the UI's task log shows INFO as INFO with ``key=value`` fields and the
REST API returns them as fields. (Airflow 3 records a task's stderr at level error, so JSON
written there showed every line as an ERROR string.)
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
import sys
import uuid
from collections.abc import Iterator
from typing import Any

_correlation_id: contextvars.ContextVar[str] = contextvars.ContextVar(
    "opsassist_correlation_id", default="-"
)

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def new_correlation_id() -> str:
    return uuid.uuid4().hex


def get_correlation_id() -> str:
    return _correlation_id.get()


def set_correlation_id(value: str) -> contextvars.Token[str]:
    return _correlation_id.set(value)


@contextlib.contextmanager
def correlation_scope(value: str | None = None) -> Iterator[str]:
    """Run a block with a correlation id (a new one if none is given)."""
    token = _correlation_id.set(value or new_correlation_id())
    try:
        yield _correlation_id.get()
    finally:
        _correlation_id.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; extra fields passed with ``extra={...}`` are kept."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, tz=dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "correlation_id": _correlation_id.get(),
        }
        payload.update(record_fields(record))
        if record.exc_info:
            payload["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str, ensure_ascii=False)


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra`` fields of a record (what :class:`JsonFormatter` adds to the line)."""
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _RESERVED and not key.startswith("_")
    }


# keys structlog and Airflow's task log give a meaning of their own: an extra field of that name is
# kept under "field_<name>" instead of replacing them
_STRUCTLOG_KEYS = frozenset({"event", "level", "logger", "logger_name", "timestamp", "exc_info"})


class AirflowTaskLogHandler(logging.Handler):
    """Hands records to Airflow's task logger (structlog, set up by the task runner): the level
    kept, ``extra`` fields and ``correlation_id`` as the event's keys, values made JSON-safe."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            import structlog

            fields: dict[str, Any] = {}
            for key, value in record_fields(record).items():
                fields[f"field_{key}" if key in _STRUCTLOG_KEYS else key] = value
            fields = json.loads(json.dumps(fields, default=str, ensure_ascii=False))
            fields["correlation_id"] = _correlation_id.get()
            if record.exc_info:
                fields["exc_info"] = record.exc_info
            logger = structlog.get_logger(record.name)
            logger.log(record.levelno, record.getMessage(), **fields)
        except Exception:  # logging must never fail the task
            self.handleError(record)


class _CorrelationFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.correlation_id = _correlation_id.get()
        return True


def configure_logging(
    level: str = "INFO", fmt: str = "json", stream: Any = None, *, airflow_task: bool = False
) -> None:
    """Install one handler on the ``opsassist`` logger (idempotent; leaves other loggers alone).

    Airflow owns the root logger inside tasks, so only our namespace is configured. With
    ``airflow_task`` (inside a running task) the handler is :class:`AirflowTaskLogHandler`:
    records reach the task log at their level, nothing is written to stderr; otherwise one line
    per record on ``stream`` (stderr), JSON or text as ``fmt`` says.
    """
    logger = logging.getLogger("opsassist")
    logger.setLevel(level.upper())
    for handler in list(logger.handlers):
        if getattr(handler, "_opsassist", False):
            logger.removeHandler(handler)
    if airflow_task:
        task_handler = AirflowTaskLogHandler()
        task_handler._opsassist = True  # type: ignore[attr-defined]
        logger.addHandler(task_handler)
        logger.propagate = False  # once, through the task logger (not again through the root)
        return
    handler = logging.StreamHandler(stream or sys.stderr)
    handler._opsassist = True  # type: ignore[attr-defined]
    handler.addFilter(_CorrelationFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)s [%(correlation_id)s] %(name)s: %(message)s"
            )
        )
    logger.addHandler(handler)
    logger.propagate = False  # one line per record, not a second one from the root's handlers


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name if name.startswith("opsassist") else f"opsassist.{name}")

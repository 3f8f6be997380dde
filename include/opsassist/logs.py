"""Structured JSON logging with a correlation id carried in a context variable.

Every log record gets ``correlation_id``: the chat server sets it from ``X-Request-ID`` (or a new
one), DAG tasks set it from the DAG run id, the CLI makes one per invocation. Secrets never reach
the logs because settings hold them as ``SecretStr`` and nothing logs raw URLs with credentials.
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
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str, ensure_ascii=False)


class _CorrelationFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.correlation_id = _correlation_id.get()
        return True


def configure_logging(level: str = "INFO", fmt: str = "json", stream: Any = None) -> None:
    """Install one handler on the ``opsassist`` logger (idempotent; leaves other loggers alone).

    Airflow owns the root logger inside tasks, so only our namespace is configured; records still
    propagate to Airflow's task log handler.
    """
    logger = logging.getLogger("opsassist")
    logger.setLevel(level.upper())
    for handler in list(logger.handlers):
        if getattr(handler, "_opsassist", False):
            logger.removeHandler(handler)
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
    # One JSON line per record: inside Airflow tasks stderr is captured into the task log already.
    logger.propagate = False


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name if name.startswith("opsassist") else f"opsassist.{name}")

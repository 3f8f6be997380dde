"""Errors of the model client, and the parsing of the error bodies a model server returns.

KServe answers in its own shape (``{"error": "Model with name nope does not exist."}``), the
OpenAI routes in OpenAI's (``{"error": {"message": ..., "type": ..., "code": ...}}``) and request
validation in FastAPI's (``{"detail": [...]}`` or ``{"detail": "Not Found"}``): all three are
reduced to one message here.
"""

from __future__ import annotations

import json
from typing import Any


class ModelError(RuntimeError):
    """A call to the model server failed."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class ModelUnavailableError(ModelError):
    """The server cannot be reached, timed out or failed (5xx): answer in degraded mode."""


class BreakerOpenError(ModelUnavailableError):
    """The circuit breaker is open: the call was not attempted."""


class ModelRequestError(ModelError):
    """The server refused the request (4xx): retrying the same request will not help."""


def error_message(body: bytes | str, status: int) -> str:
    """One readable message from an error body of any of the known shapes (or raw text)."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        data: Any = json.loads(text)
    except ValueError:
        return text.strip()[:500] or f"HTTP {status}"
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str) and error:
            return error
        detail = data.get("detail")
        if isinstance(detail, str) and detail:
            return detail
        if isinstance(detail, list) and detail:
            first = detail[0]
            if isinstance(first, dict):
                where = ".".join(str(p) for p in first.get("loc", []))
                return f"{first.get('msg', 'invalid request')} ({where})" if where else str(first)
        if data.get("message"):
            return str(data["message"])
    return text.strip()[:500] or f"HTTP {status}"


def error_for_status(status: int, body: bytes | str) -> ModelError:
    """The error to raise for an HTTP error status: 5xx unavailable, 4xx refused."""
    message = f"model server HTTP {status}: {error_message(body, status)}"
    if status >= 500:
        return ModelUnavailableError(message, status)
    return ModelRequestError(message, status)

"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``, never a bare 500.

OpenAI clients (the ``openai`` package, Open WebUI) read this shape to raise typed errors
(``AuthenticationError`` for 401, ``NotFoundError`` for 404, ...).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from opsassist.logs import get_correlation_id, get_logger

log = get_logger("serving.errors")

_CODES = {
    400: "invalid_request",
    401: "invalid_api_key",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "unsupported_media_type",
}


class APIError(Exception):
    """An error answered in OpenAI's shape with an HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}


def error_body(
    message: str, type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(
    status: int,
    message: str,
    type: str,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(message, type, param, code), status_code=status, headers=headers)


def internal_error_response() -> JSONResponse:
    message = f"internal server error (request id {get_correlation_id()})"
    return error_response(500, message, "server_error", code="internal_error")


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return error_response(exc.status, exc.message, exc.type, exc.param, exc.code, exc.headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    kind = "server_error" if status >= 500 else "invalid_request_error"
    headers = dict(exc.headers) if exc.headers else None
    return error_response(status, str(exc.detail), kind, code=_CODES.get(status), headers=headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    message = str(first.get("msg", "invalid request"))
    if param:
        message = f"{message} ({param})"
    return error_response(400, message, "invalid_request_error", param, "invalid_request")


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error", exc_info=exc)
    return internal_error_response()


RETRY_AFTER_SECONDS = "5"


async def _dependency_down(request: Request, exc: Exception) -> JSONResponse:
    """A dependency that is down (the action store, the index, the cache): 503, retry later."""
    log.warning("dependency unavailable", extra={"error": type(exc).__name__})
    from opsassist.index.base import IndexNotFoundError

    if isinstance(exc, IndexNotFoundError):
        return error_response(404, str(exc), "invalid_request_error", code="index_not_found")
    return error_response(
        503,
        str(exc) or "a dependency is unavailable",
        "server_error",
        code="dependency_unavailable",
        headers={"Retry-After": RETRY_AFTER_SECONDS},
    )


def install_error_handlers(app: FastAPI) -> None:
    from opsassist.agent.store import AuditStoreUnavailable
    from opsassist.index.base import IndexUnavailableError

    app.add_exception_handler(AuditStoreUnavailable, _dependency_down)
    app.add_exception_handler(IndexUnavailableError, _dependency_down)
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unhandled)

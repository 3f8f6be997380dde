"""Request context as a pure ASGI middleware (no buffering of streamed responses):

- correlation id from ``X-Request-ID`` (when it looks like an id) or a new one, set for the
  request's logs (``opsassist.logs.correlation_scope``) and echoed in the response header;
- request latency histogram by route template, measured to the last byte of the response;
- one JSON access-log line per request;
- an OpenAI-shaped 500 (with the request id) for anything that escaped the handlers.
"""

from __future__ import annotations

import re
import time
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from opsassist.logs import correlation_scope, get_logger
from serving.errors import internal_error_response
from serving.metrics import Metrics

log = get_logger("serving.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")
_QUIET = {"/healthz", "/readyz", "/metrics"}


def request_id_from(headers: Headers) -> str | None:
    value = headers.get("x-request-id", "").strip()
    return value if _REQUEST_ID.match(value) else None


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state: dict[str, Any] = scope.setdefault("state", {})
        state["started"] = started
        status = 500
        response_started = False
        with correlation_scope(request_id_from(Headers(scope=scope))) as request_id:

            async def send_with_id(message: Message) -> None:
                nonlocal status, response_started
                if message["type"] == "http.response.start":
                    response_started = True
                    status = int(message["status"])
                    MutableHeaders(scope=message)["X-Request-ID"] = request_id
                await send(message)

            try:
                await self.app(scope, receive, send_with_id)
            except Exception as exc:
                log.error("unhandled error", exc_info=exc)
                if response_started:
                    raise
                status = 500
                await internal_error_response()(scope, receive, send_with_id)
            finally:
                self._observe(scope, state, status, time.perf_counter() - started)

    def _observe(self, scope: Scope, state: dict[str, Any], status: int, seconds: float) -> None:
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        method = str(scope.get("method", ""))
        self.metrics.requests.labels(route, method, str(status)).observe(seconds)
        level = 10 if route in _QUIET and status < 500 else 20  # DEBUG / INFO
        log.log(
            level,
            "request",
            extra={
                "method": method,
                "route": route,
                "path": scope.get("path", ""),
                "status": status,
                "duration_ms": round(seconds * 1000, 2),
                **{k: v for k, v in state.items() if k.startswith("log_")},
            },
        )

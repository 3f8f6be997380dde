"""Request limits as a pure ASGI middleware: a body larger than ``OPSASSIST_API_MAX_REQUEST_BYTES``
gets 413 before any handler parses it, and one API key (or client address, without keys) may
have at most ``OPSASSIST_API_MAX_CONCURRENT_PER_KEY`` requests in flight on ``/v1`` (429 with
``Retry-After`` beyond), so one client's large or many requests cannot hold up everyone else's.
"""

from __future__ import annotations

import hashlib
from collections import Counter

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.errors import error_response


def client_key(scope: Scope, headers: Headers) -> str:
    """Whose request this is: a digest of the bearer key, else the client address."""
    authorization = headers.get("authorization", "")
    if authorization:
        return "key:" + hashlib.sha256(authorization.encode()).hexdigest()[:16]
    client = scope.get("client")
    return f"addr:{client[0] if client else '-'}"


class RequestLimitsMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int, max_in_flight: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_in_flight = max_in_flight
        self.in_flight: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._too_large(scope, receive, send)
            return
        body: list[Message] = []
        if scope["method"] in ("POST", "PUT", "PATCH"):
            size = 0
            while True:  # read it here (bounded), so a chunked body cannot run past the limit
                message = await receive()
                body.append(message)
                size += len(message.get("body", b""))
                if size > self.max_body_bytes:
                    await self._too_large(scope, receive, send)
                    return
                if message["type"] != "http.request" or not message.get("more_body", False):
                    break
        replay = iter(body)

        async def replayed() -> Message:
            return next(replay, None) or await receive()

        key = client_key(scope, headers) if scope["path"].startswith("/v1/") else ""
        if key and self.in_flight[key] >= self.max_in_flight:
            response = error_response(
                429,
                f"too many requests in flight for this key (at most {self.max_in_flight}); "
                "retry when one has finished",
                "rate_limit_error",
                code="rate_limit_exceeded",
                headers={"Retry-After": "1"},
            )
            await response(scope, replayed, send)
            return
        if key:
            self.in_flight[key] += 1
        try:
            await self.app(scope, replayed if body else receive, send)
        finally:
            if key:
                self.in_flight[key] -= 1
                if not self.in_flight[key]:
                    del self.in_flight[key]

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413,
            f"request body too large: at most {self.max_body_bytes} bytes "
            "(OPSASSIST_API_MAX_REQUEST_BYTES)",
            "invalid_request_error",
            code="request_too_large",
        )
        await response(scope, receive, send)

"""The OpenAPI document as the server really answers: errors are 400 (not FastAPI's default 422)
in OpenAI's error shape, each operation lists the errors it can give (401 without a key, 404 for
what does not exist, 413 and 429 from the request limits, 503 when a dependency is down), and
``/metrics`` is Prometheus text, not JSON. Schemathesis checks the server against this document
in the test suite."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
_WHY = {
    "400": "Invalid request (OpenAI error shape)",
    "401": "Missing or unknown API key",
    "403": "The key's role may not do this",
    "404": "No such model, index, action or source",
    "413": "Request body too large (OPSASSIST_API_MAX_REQUEST_BYTES)",
    "429": "Too many requests in flight for this key (Retry-After)",
    "503": "A dependency is down: the index, the cache or the action database (Retry-After)",
}
_NOT_FOUND = (
    "/v1/models/{model_id}",
    "/v1/chat/completions",
    "/v1/search",
    "/v1/actions",
    "/v1/sources/",
)
_DEPENDENT = ("/v1/search", "/v1/actions", "/readyz")


def _errors(path: str, method: str) -> list[str]:
    codes = []
    if path.startswith("/v1/"):
        codes += ["401", "429"]
        if method in ("post", "put", "patch") or "{" in path:
            codes.append("400")
        if method == "post":
            codes.append("413")
        if path.startswith(_NOT_FOUND):
            codes.append("404")
        if path.startswith("/v1/sources/"):
            codes.append("403")
        if path.startswith(_DEPENDENT) or path == "/v1/chat/completions":
            codes.append("503")
    elif path == "/readyz":
        codes.append("503")
    return codes


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        spec = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
        spec.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
        for schemas in ("HTTPValidationError", "ValidationError"):
            spec["components"]["schemas"].pop(schemas, None)
        for path, operations in spec["paths"].items():
            for method, operation in operations.items():
                responses = operation.setdefault("responses", {})
                responses.pop("422", None)
                for code in _errors(path, method):
                    responses[code] = {
                        "description": _WHY[code],
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                        },
                    }
        spec["paths"]["/metrics"]["get"]["responses"]["200"] = {
            "description": "Prometheus metrics (text exposition format)",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
        ready = spec["paths"]["/readyz"]["get"]["responses"]
        ready["503"] = {
            "description": "Not ready: the body names each dependency's state",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
        app.openapi_schema = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]

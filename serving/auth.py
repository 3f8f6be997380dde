"""Bearer API keys (``OPSASSIST_API_KEYS``, comma-separated); Open WebUI sends one as
``Authorization: Bearer <key>``. No keys configured: authentication is off (a warning is logged
at start-up)."""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from fastapi import Request

from opsassist.settings import Settings
from serving.errors import APIError


def parse_api_keys(settings: Settings) -> tuple[str, ...]:
    raw = settings.api_keys.get_secret_value()
    return tuple(key.strip() for key in raw.split(",") if key.strip())


def key_matches(candidate: str, keys: Sequence[str]) -> bool:
    """Constant-time comparison against every key (no early exit on the first match)."""
    found = False
    for key in keys:
        found |= hmac.compare_digest(candidate.encode(), key.encode())
    return found


def check_api_key(request: Request) -> None:
    """FastAPI dependency: 401 in OpenAI's shape unless a configured key is presented."""
    keys: tuple[str, ...] = request.app.state.api_keys
    if not keys:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise APIError(
            401,
            "You didn't provide an API key: send it as 'Authorization: Bearer <key>'.",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not key_matches(token.strip(), keys):
        raise APIError(
            401,
            "Incorrect API key provided.",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )

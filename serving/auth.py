"""Bearer API keys (``OPSASSIST_API_KEYS``, comma-separated); Open WebUI sends one as
``Authorization: Bearer <key>``. No keys configured: authentication is off (a warning is logged
at start-up) and every caller is the anonymous viewer.

An entry is ``key``, ``key:role`` or ``key:role:user``: the role (viewer, operator, admin;
default ``OPSASSIST_AGENT_DEFAULT_ROLE``) decides what the action agent lets the caller do, the
user names the caller in the audit table (default ``key-<hash prefix>``, never the key).
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from fastapi import Request

from opsassist.agent.roles import ANONYMOUS, Principal, parse_key_entry
from opsassist.settings import Settings
from serving.errors import APIError


def _entries(settings: Settings) -> list[str]:
    raw = settings.api_keys.get_secret_value()
    return [entry.strip() for entry in raw.split(",") if entry.strip()]


def parse_api_keys(settings: Settings) -> tuple[str, ...]:
    return tuple(key for key, _ in parse_principals(settings))


def parse_principals(settings: Settings) -> list[tuple[str, Principal]]:
    """(key, principal) per configured entry."""
    return [parse_key_entry(entry, settings.agent_default_role) for entry in _entries(settings)]


def key_matches(candidate: str, keys: Sequence[str]) -> bool:
    """Constant-time comparison against every key (no early exit on the first match)."""
    found = False
    for key in keys:
        found |= hmac.compare_digest(candidate.encode(), key.encode())
    return found


def principal_for(candidate: str, principals: Sequence[tuple[str, Principal]]) -> Principal | None:
    """The principal of a key, compared in constant time against every entry."""
    match: Principal | None = None
    for key, principal in principals:
        if hmac.compare_digest(candidate.encode(), key.encode()):
            match = principal
    return match


def check_api_key(request: Request) -> None:
    """FastAPI dependency: 401 in OpenAI's shape unless a configured key is presented; the
    caller's principal is left in ``request.state.principal``."""
    keys: tuple[str, ...] = request.app.state.api_keys
    if not keys:
        request.state.principal = ANONYMOUS
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise APIError(
            401,
            "You didn't provide an API key: send it as 'Authorization: Bearer <key>'.",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    principals = getattr(request.app.state, "principals", None) or [
        (key, ANONYMOUS) for key in keys
    ]
    principal = principal_for(token.strip(), principals)
    if principal is None:
        raise APIError(
            401,
            "Incorrect API key provided.",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    request.state.principal = principal

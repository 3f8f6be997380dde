"""Secrets out of tool output, arguments and audit rows before anyone (model, user, log) sees them.

Patterns, not knowledge: bearer tokens, JWTs, ``password=``/``token:`` pairs, URLs with a password,
private keys, AWS keys and the ``data`` of a Kubernetes Secret. Redaction is idempotent.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "[REDACTED]"
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S),
        MASK,
    ),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), rf"\1 {MASK}"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"), MASK),
    (re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b"), MASK),
    (re.compile(r"(?i)([a-z][a-z0-9+.-]*://[^\s:/@]+:)[^\s@/]+@"), rf"\1{MASK}@"),
    (
        re.compile(
            r"(?i)\b([\w.-]*(?:password|passwd|secret|token|api[_-]?key|access[_-]?key|"
            r"credentials?)[\w.-]*)(\"?\s*[:=]\s*\"?)([^\s\"',;}]+)"
        ),
        rf"\1\2{MASK}",
    ),
)


def redact_text(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact(value: Any) -> Any:
    """A copy of ``value`` (str, dict, list, scalars) with secrets masked; a Kubernetes Secret's
    ``data``/``stringData`` is masked whole."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        secret = value.get("kind") == "Secret"
        out: dict[str, Any] = {}
        for key, item in value.items():
            if secret and key in ("data", "stringData"):
                out[key] = MASK
            elif isinstance(key, str) and re.search(r"(?i)password|secret|token|api_?key", key):
                out[key] = MASK if isinstance(item, str) and item else redact(item)
            else:
                out[key] = redact(item)
        return out
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    return value

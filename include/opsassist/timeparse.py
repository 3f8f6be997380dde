"""Parse user-facing time windows: ``15m``, ``1h``, ``2d``, ``1w`` or an ISO-8601 timestamp."""

from __future__ import annotations

import datetime as dt
import re

_RELATIVE = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_WINDOW = dt.timedelta(days=3660)  # ten years: anything longer is a typo, not a window


def parse_since(value: str, now: dt.datetime | None = None) -> dt.datetime:
    now = now or dt.datetime.now(dt.UTC)
    match = _RELATIVE.match(value) if len(value) <= 64 else None
    if match:
        seconds = int(match.group(1)) * _UNITS[match.group(2)]
        if seconds > MAX_WINDOW.total_seconds():
            raise ValueError(f"time window too long: {value!r} (at most {MAX_WINDOW.days} days)")
        return now - dt.timedelta(seconds=seconds)
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(
            f"not a time window or ISO timestamp: {value!r} (try 1h, 30m, 2d)"
        ) from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)

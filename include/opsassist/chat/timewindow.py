"""Time windows for signal retrieval, inferred from how on-call questions name them.

"in the last 30 minutes", "past 2h", "last hour", "right now" (one hour), "today" (since midnight
UTC), "yesterday", "this week" (since Monday). A window given with the request (``since``: ``1h``,
``30m`` or an ISO time, the CLI's syntax) wins over an inferred one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re

from opsassist.timeparse import MAX_WINDOW, parse_since

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_UNIT_WORDS = {
    "s": "second",
    "m": "minute",
    "h": "hour",
    "d": "day",
    "w": "week",
}
_UNIT = r"(seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h|days?|d|weeks?|wk|w)"
_LAST_N = re.compile(rf"\b(?:last|past|previous|recent)\s+(\d+)\s*{_UNIT}\b", re.IGNORECASE)
_N_AGO = re.compile(rf"\b(?:since|from)\s+(\d+)\s*{_UNIT}\s+ago\b", re.IGNORECASE)
_LAST_ONE = re.compile(r"\b(?:last|past|previous)\s+(minute|hour|day|week)\b", re.IGNORECASE)
_NOW = re.compile(
    r"\b(right now|just now|currently|at the moment|at this moment|ongoing|now)\b", re.IGNORECASE
)
_TODAY = re.compile(r"\btoday\b|\bthis morning\b", re.IGNORECASE)
_YESTERDAY = re.compile(r"\byesterday\b|\blast night\b", re.IGNORECASE)
_THIS_WEEK = re.compile(r"\bthis week\b", re.IGNORECASE)


@dataclasses.dataclass(frozen=True, slots=True)
class TimeWindow:
    since: dt.datetime
    until: dt.datetime | None = None
    label: str = ""


def _unit_key(word: str) -> str:
    word = word.lower()
    return "w" if word.startswith("w") else word[0]


def _relative(number: int, unit_word: str, now: dt.datetime) -> TimeWindow:
    unit = _unit_key(unit_word)
    noun = _UNIT_WORDS[unit] + ("" if number == 1 else "s")
    seconds = min(number * _UNIT_SECONDS[unit], int(MAX_WINDOW.total_seconds()))
    return TimeWindow(since=now - dt.timedelta(seconds=seconds), label=f"last {number} {noun}")


def infer_window(text: str, now: dt.datetime | None = None) -> TimeWindow | None:
    """The window a question names, or None when it names none."""
    now = now or dt.datetime.now(dt.UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if match := _LAST_N.search(text) or _N_AGO.search(text):
        return _relative(int(match.group(1)), match.group(2), now)
    if match := _LAST_ONE.search(text):
        return _relative(1, match.group(1), now)
    if _YESTERDAY.search(text):
        return TimeWindow(since=midnight - dt.timedelta(days=1), until=midnight, label="yesterday")
    if _TODAY.search(text):
        return TimeWindow(since=midnight, label="today")
    if _THIS_WEEK.search(text):
        return TimeWindow(since=midnight - dt.timedelta(days=now.weekday()), label="this week")
    if _NOW.search(text):
        return TimeWindow(since=now - dt.timedelta(hours=1), label="last 1 hour")
    return None


def window_from_request(since: str, now: dt.datetime | None = None) -> TimeWindow:
    """A window given explicitly (``1h``, ``30m``, ISO time); raises ``ValueError`` if invalid."""
    return TimeWindow(since=parse_since(since, now), label=f"since {since}")

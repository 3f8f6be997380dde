"""Kubernetes events (reason, object, message, count, type) from the JSON shapes they travel in.

Accepted: a ``core/v1`` Event (``involvedObject``, ``count``, ``firstTimestamp``/``lastTimestamp``,
``source.component``), an ``events.k8s.io/v1`` Event (``regarding``, ``note``,
``series.count``/``deprecatedCount``, ``eventTime``, ``reportingController``), either one wrapped
in a watch notification (``{"type": "ADDED", "object": {...}}``), and the flat objects that
kubernetes-event-exporter and Fluent Bit's ``kubernetes_events`` input write (the same fields).
Anything else raises :class:`~opsassist.parsing.logs.BadRecord`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from opsassist.parsing.logs import (
    REASON_NOT_OBJECT,
    BadRecord,
    decode_payload,
    load_json_object,
    parse_time_value,
)

REASON_NOT_EVENT = "not an event"


@dataclasses.dataclass(frozen=True, slots=True)
class K8sEvent:
    """One Kubernetes event report. ``count`` is Kubernetes' own running count of the event."""

    timestamp: dt.datetime
    namespace: str
    kind: str
    name: str
    reason: str
    type: str
    message: str
    count: int
    uid: str
    reporter: str = ""


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(*values: Any) -> str:
    for value in values:
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""


def parse_event_object(obj: Mapping[str, Any], *, received: dt.datetime) -> K8sEvent:
    """A :class:`K8sEvent` from a decoded JSON object (see the module docstring)."""
    inner = obj.get("object")
    if isinstance(inner, Mapping) and ("involvedObject" in inner or "regarding" in inner):
        obj = inner  # a watch notification
    target = _map(obj.get("involvedObject") or obj.get("regarding"))
    metadata = _map(obj.get("metadata"))
    reason = _text(obj.get("reason"))
    message = _text(obj.get("message"), obj.get("note"))
    if not target or not (reason or message):
        raise BadRecord(REASON_NOT_EVENT, "no involvedObject/regarding with a reason or message")
    series = _map(obj.get("series"))
    count_value = series.get("count") or obj.get("count") or obj.get("deprecatedCount") or 1
    try:
        count = max(1, int(count_value))
    except (TypeError, ValueError):
        count = 1
    timestamp = None
    for value in (
        obj.get("lastTimestamp"),
        series.get("lastObservedTime"),
        obj.get("eventTime"),
        obj.get("deprecatedLastTimestamp"),
        obj.get("firstTimestamp"),
        metadata.get("creationTimestamp"),
    ):
        timestamp = parse_time_value(value)
        if timestamp is not None:
            break
    namespace = _text(target.get("namespace"), metadata.get("namespace")) or "cluster"
    uid = _text(metadata.get("uid"))
    if not uid:
        key = json.dumps([namespace, target.get("kind"), target.get("name"), reason, message])
        uid = hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]
    return K8sEvent(
        timestamp=timestamp or received.astimezone(dt.UTC),
        namespace=namespace,
        kind=_text(target.get("kind")) or "Object",
        name=_text(target.get("name")) or "?",
        reason=reason or "Unknown",
        type=_text(obj.get("type")) or "Normal",
        message=" ".join(message.split())[:1000],
        count=count,
        uid=uid,
        reporter=_text(
            _map(obj.get("source")).get("component"),
            obj.get("reportingComponent"),
            obj.get("reportingController"),
        ),
    )


def parse_event(payload: bytes | str, *, received: dt.datetime, max_bytes: int = 65536) -> K8sEvent:
    """One event message or JSONL line; :class:`BadRecord` if it is not a Kubernetes event."""
    text = decode_payload(payload, max_bytes)
    obj = load_json_object(text)
    if obj is None:
        raise BadRecord(REASON_NOT_OBJECT, "an event must be a JSON object")
    return parse_event_object(obj, received=received)

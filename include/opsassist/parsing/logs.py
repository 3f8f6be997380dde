"""Log records from JSON objects and raw text lines, normalised to one :class:`LogRecord`.

JSON shapes (one object per message or line)
    Kubernetes via Fluent Bit / Fluentd: ``{"log": "...", "stream": "stderr", "time": "...",
    "kubernetes": {"namespace_name", "pod_name", "container_name", "labels"}}``; Logstash, Data
    Prepper and ECS: ``{"@timestamp", "message", "host", "log.level" or {"log": {"level"}},
    "service": {"name"}}``; and the usual application keys (``msg``, ``level``, ``severity``,
    ``ts`` as epoch seconds or milliseconds). A message that is itself a raw line with a header
    (a container printing ``2024-01-01 10:00:00 ERROR ...``) gives its level and component; a
    message that is itself a JSON object is read one level down.

Raw lines
    One header pattern per family, tried in order: the eight loghub systems (HDFS, Hadoop, Spark,
    Zookeeper, OpenStack, Apache, and syslog for Linux and OpenSSH), Kubernetes ``klog``, and a
    generic ISO-8601 timestamp. A line with no known header is still a record (message = the
    line, time = the source's timestamp): continuation lines of stack traces are real log data.
    Timestamps without a zone are taken as UTC; syslog and klog omit the year, which is inferred
    from the source's timestamp (the latest year that does not put the line in the future).

Bad input raises :class:`BadRecord` with one of the ``REASON_*`` codes, which the pipeline
counts and dead-letters: oversized, bad encoding (not UTF-8), binary content, empty, invalid
JSON, JSON that is not an object, JSON without a message.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

REASON_OVERSIZED = "oversized"
REASON_ENCODING = "bad encoding"
REASON_BINARY = "binary content"
REASON_EMPTY = "empty"
REASON_INVALID_JSON = "invalid json"
REASON_NOT_OBJECT = "json not an object"
REASON_NO_MESSAGE = "no message"

LEVELS: dict[str, str] = {
    "TRACE": "DEBUG",
    "DEBUG": "DEBUG",
    "FINE": "DEBUG",
    "INFO": "INFO",
    "NOTICE": "INFO",
    "WARN": "WARN",
    "WARNING": "WARN",
    "ERR": "ERROR",
    "ERROR": "ERROR",
    "SEVERE": "ERROR",
    "CRIT": "FATAL",
    "CRITICAL": "FATAL",
    "ALERT": "FATAL",
    "EMERG": "FATAL",
    "FATAL": "FATAL",
    "PANIC": "FATAL",
    "I": "INFO",
    "W": "WARN",
    "E": "ERROR",
    "F": "FATAL",
}


class BadRecord(ValueError):
    """A message or line that cannot become a record; ``reason`` is one of the REASON_* codes."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclasses.dataclass(frozen=True, slots=True)
class LogRecord:
    """One log event: UTC time, service, normalised level, component and message.

    ``line`` is what a person would read (the raw line, or the message of a JSON record);
    ``timestamp_from`` says whether the time came from the record itself or from the source.
    """

    timestamp: dt.datetime
    service: str
    message: str
    level: str = ""
    component: str = ""
    line: str = ""
    timestamp_from: str = "record"


def normalise_level(value: object) -> str:
    """Map a level name (``warning``, ``E``, ``notice``...) to DEBUG/INFO/WARN/ERROR/FATAL or ''."""
    if not isinstance(value, str | int):
        return ""
    if isinstance(value, int):  # syslog severities 0-7, or Python's 10-50
        if value >= 10:
            return {10: "DEBUG", 20: "INFO", 30: "WARN", 40: "ERROR", 50: "FATAL"}.get(value, "")
        return ["FATAL", "FATAL", "FATAL", "ERROR", "WARN", "INFO", "INFO", "DEBUG"][value % 8]
    return LEVELS.get(value.strip().upper(), "")


# --- payload checks ------------------------------------------------------------------------------
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")


def decode_payload(payload: bytes | str, max_bytes: int) -> str:
    """The payload as text, or :class:`BadRecord` (oversized, bad encoding, binary, empty)."""
    size = len(payload.encode("utf-8")) if isinstance(payload, str) else len(payload)
    if size > max_bytes:
        raise BadRecord(REASON_OVERSIZED, f"{size} bytes > {max_bytes}")
    if isinstance(payload, bytes):
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRecord(REASON_ENCODING, f"not UTF-8 at byte {exc.start}") from None
    else:
        text = payload
    text = text.removeprefix("\ufeff").rstrip("\r\n")
    if _CONTROL.search(text) and (
        "\x00" in text or len(_CONTROL.findall(text)) > max(2, len(text) // 20)
    ):
        raise BadRecord(REASON_BINARY, "control characters")
    if not text.strip():
        raise BadRecord(REASON_EMPTY)
    return text


def load_json_object(text: str) -> dict[str, Any] | None:
    """The JSON object a text holds; None if it is not JSON (a raw line); BadRecord if broken.

    Text starting with ``{`` must be a valid object. Text starting with ``[`` is JSON only if it
    parses (``[Sun Dec 04 ...] [error] ...`` is an Apache line); then it is not an object.
    """
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            value = json.loads(stripped)
        except ValueError as exc:
            raise BadRecord(REASON_INVALID_JSON, str(exc)[:200]) from None
        if not isinstance(value, dict):  # pragma: no cover - "{..." always decodes to a dict
            raise BadRecord(REASON_NOT_OBJECT, type(value).__name__)
        return value
    if stripped.startswith(("[", '"')):
        try:
            value = json.loads(stripped)
        except ValueError:
            return None
        raise BadRecord(REASON_NOT_OBJECT, type(value).__name__)
    return None


# --- timestamps ----------------------------------------------------------------------------------
_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    )
}


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _infer_year(month: int, day: int, rest: dt.time, reference: dt.datetime) -> dt.datetime:
    """The latest year that does not put month/day more than a day after ``reference``."""
    for year in (reference.year, reference.year - 1):
        try:
            candidate = dt.datetime.combine(dt.date(year, month, day), rest, tzinfo=dt.UTC)
        except ValueError:  # 29 February in a non-leap year
            continue
        if candidate <= reference + dt.timedelta(days=1):
            return candidate
    return dt.datetime.combine(dt.date(reference.year - 1, month, day), rest, tzinfo=dt.UTC)


def _hms(text: str) -> dt.time:
    hms, _, frac = text.replace(",", ".").partition(".")
    hour, minute, second = (int(x) for x in hms.split(":"))
    micros = int((frac + "000000")[:6]) if frac else 0
    return dt.time(hour, minute, second, micros)


def _parse_iso(text: str, _reference: dt.datetime) -> dt.datetime:
    value = text.replace(",", ".").replace(" ", "T", 1)
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    date_part, _, time_part = value.partition("T")
    # at most 6 fraction digits (nanoseconds are cut to microseconds)
    match = re.match(r"^(\d{2}:\d{2}:\d{2})(?:\.(\d+))?(.*)$", time_part)
    if match:
        frac = (match.group(2) or "")[:6]
        frac = f".{frac.ljust(6, '0')}" if frac else ""
        value = f"{date_part}T{match.group(1)}{frac}{match.group(3)}"
    return _utc(dt.datetime.fromisoformat(value))


def _fmt_iso_comma(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S,") + f"{when.microsecond // 1000:03d}"


def _fmt_iso_dot(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S.") + f"{when.microsecond // 1000:03d}"


# (strptime is several times slower than slicing fixed-width fields, and this runs per line)
def _parse_hdfs(text: str, _: dt.datetime) -> dt.datetime:  # 081109 203615
    year, month, day = 2000 + int(text[0:2]), int(text[2:4]), int(text[4:6])
    return dt.datetime(
        year, month, day, int(text[7:9]), int(text[9:11]), int(text[11:13]), tzinfo=dt.UTC
    )


def _parse_spark(text: str, _: dt.datetime) -> dt.datetime:  # 17/06/09 20:10:40
    year, month, day = 2000 + int(text[0:2]), int(text[3:5]), int(text[6:8])
    return dt.datetime.combine(dt.date(year, month, day), _hms(text[9:]), tzinfo=dt.UTC)


def _parse_ctime(text: str, _: dt.datetime) -> dt.datetime:  # Sun Dec 04 04:47:44 2005
    _weekday, month, day, hms, year = text.split()
    date = dt.date(int(year), _MONTHS[month.lower()], int(day))
    return dt.datetime.combine(date, _hms(hms), tzinfo=dt.UTC)


def _parse_syslog(text: str, reference: dt.datetime) -> dt.datetime:
    month, day, hms = text.split()
    return _infer_year(_MONTHS[month.lower()[:3]], int(day), _hms(hms), reference)


def _fmt_syslog(when: dt.datetime) -> str:
    return f"{when:%b} {when.day:>2} {when:%H:%M:%S}"


def _parse_klog(text: str, reference: dt.datetime) -> dt.datetime:
    mmdd, hms = text.split()
    return _infer_year(int(mmdd[:2]), int(mmdd[2:]), _hms(hms), reference)


def _fmt_klog(when: dt.datetime) -> str:
    return when.strftime("%m%d %H:%M:%S.") + f"{when.microsecond:06d}"


def _fmt_generic_iso(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


TimeParser = Callable[[str, dt.datetime], dt.datetime]
TimeFormatter = Callable[[dt.datetime], str]


@dataclasses.dataclass(frozen=True)
class LineFormat:
    """One raw-line family: a header regex (groups ts, message, and optionally level, component,
    thread), how its timestamp reads and how to write one (for :func:`retime_line`)."""

    name: str
    pattern: re.Pattern[str]
    parse_time: TimeParser
    format_time: TimeFormatter
    component_from_thread: bool = False


_LEVEL_WORDS = "|".join(sorted((k for k in LEVELS if len(k) > 1), key=len, reverse=True))
_ISO_TS = r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?"

LINE_FORMATS: tuple[LineFormat, ...] = (
    LineFormat(  # HDFS: 081109 203615 148 INFO dfs.DataNode$PacketResponder: ...
        "hdfs",
        re.compile(
            r"^(?P<ts>\d{6} \d{6}) (?P<pid>\d+) (?P<level>[A-Z]+) (?P<component>[^\s:]+): ?"
            r"(?P<message>.*)$"
        ),
        _parse_hdfs,
        lambda w: w.strftime("%y%m%d %H%M%S"),
    ),
    LineFormat(  # Spark: 17/06/09 20:10:40 INFO spark.SecurityManager: ...
        "spark",
        re.compile(
            r"^(?P<ts>\d{2}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}) (?P<level>[A-Z]+) "
            r"(?P<component>[^\s:]+): ?(?P<message>.*)$"
        ),
        _parse_spark,
        lambda w: w.strftime("%y/%m/%d %H:%M:%S"),
    ),
    LineFormat(  # Zookeeper: 2015-07-29 17:41:44,747 - INFO  [thread:Component@774] - ...
        "zookeeper",
        re.compile(
            r"^(?P<ts>\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3}) - (?P<level>[A-Z]+)\s+"
            r"\[(?P<thread>.*?)\] - (?P<message>.*)$"
        ),
        _parse_iso,
        _fmt_iso_comma,
        component_from_thread=True,
    ),
    LineFormat(  # Hadoop: 2015-10-18 18:01:47,978 INFO [main] org.apache...MRAppMaster: ...
        "hadoop",
        re.compile(
            r"^(?P<ts>\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3}) (?P<level>[A-Z]+) "
            r"\[(?P<thread>[^\]]*)\] (?P<component>[^\s:]+): ?(?P<message>.*)$"
        ),
        _parse_iso,
        _fmt_iso_comma,
    ),
    LineFormat(  # OpenStack: [file] 2017-05-16 00:00:00.008 25746 INFO nova.x [req-...] ...
        "openstack",
        re.compile(
            r"^(?:(?P<file>\S+\.log\S*) )?(?P<ts>\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d+) "
            r"(?P<pid>\d+) (?P<level>[A-Z]+) (?P<component>\S+) (?:\[(?P<ctx>[^\]]*)\] )?"
            r"(?P<message>.*)$"
        ),
        _parse_iso,
        _fmt_iso_dot,
    ),
    LineFormat(  # Apache error log: [Sun Dec 04 04:47:44 2005] [notice] ...
        "apache",
        re.compile(
            r"^\[(?P<ts>[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d{2}:\d{2}:\d{2} \d{4})\] "
            r"\[(?P<level>\w+)\] (?P<message>.*)$"
        ),
        _parse_ctime,
        lambda w: f"{w:%a %b %d %H:%M:%S %Y}",
    ),
    LineFormat(  # syslog (Linux, OpenSSH): Jun 14 15:16:01 combo sshd(pam_unix)[19939]: ...
        "syslog",
        re.compile(
            r"^(?P<ts>[A-Z][a-z]{2} [ \d]\d \d{2}:\d{2}:\d{2}) (?P<host>\S+)\s+"
            r"(?P<component>[^\s:\[](?:[^:\[]{0,40}?[^\s:\[])?(?:\([^)]*\))?)"
            r"(?:\[(?P<pid>\d+)\])?: ?(?P<message>.*)$"
        ),
        _parse_syslog,
        _fmt_syslog,
    ),
    LineFormat(  # Kubernetes klog: I0102 15:04:05.123456   12345 file.go:123] ...
        "klog",
        re.compile(
            r"^(?P<level>[IWEF])(?P<ts>\d{4} \d{2}:\d{2}:\d{2}\.\d+)\s+(?P<pid>\d+) "
            r"(?P<component>[^\]\s]+)\] (?P<message>.*)$"
        ),
        _parse_klog,
        _fmt_klog,
    ),
    LineFormat(  # generic: [2024-01-01T10:00:00Z] [ERROR] [thread] pkg.Class: message
        "iso",
        re.compile(
            rf"^\[?(?P<ts>{_ISO_TS})\]?\s+(?:-\s+)?(?:\[?(?P<level>{_LEVEL_WORDS})\]?:?\s+)?"
            r"(?:\[(?P<thread>[^\]]*)\]\s+)?(?:(?P<component>[A-Za-z_][\w$]*(?:\.[\w$]+)+):\s+)?"
            r"(?:-\s+)?(?P<message>.*)$",
            re.IGNORECASE,
        ),
        _parse_iso,
        _fmt_generic_iso,
    ),
)


@dataclasses.dataclass(frozen=True, slots=True)
class LineParts:
    """What a raw line's header gave: its format, time (None: no header) and the fields."""

    format: str
    timestamp: dt.datetime | None
    level: str
    component: str
    message: str
    ts_span: tuple[int, int] | None = None


def parse_line(line: str, reference: dt.datetime) -> LineParts:
    """Split a raw line into header fields and message (the whole line if no format matches)."""
    for fmt in LINE_FORMATS:
        match = fmt.pattern.match(line)
        if match is None:
            continue
        try:
            timestamp = fmt.parse_time(match.group("ts"), reference)
        except (ValueError, KeyError):
            continue
        groups = match.groupdict()
        component = groups.get("component") or ""
        if fmt.component_from_thread and groups.get("thread"):
            # Zookeeper: "QuorumPeer[myid=1]/0:0:0:0:0:0:0:0:2181:FastLeaderElection@774"
            component = groups["thread"].rsplit(":", 1)[-1].split("@", 1)[0]
        return LineParts(
            fmt.name,
            timestamp,
            normalise_level(groups.get("level") or ""),
            component,
            groups["message"].strip(),
            match.span("ts"),
        )
    return LineParts("none", None, "", "", line.strip())


def retime_line(line: str, when: dt.datetime) -> str:
    """The line with its header timestamp replaced by ``when``, in the line's own format.

    Used to replay recorded logs (loghub samples) as if they happened now; the rest of the line
    is kept byte for byte. A line without a known header is returned unchanged.
    """
    when = _utc(when)
    for fmt in LINE_FORMATS:
        match = fmt.pattern.match(line)
        if match is None:
            continue
        start, end = match.span("ts")
        return line[:start] + fmt.format_time(when) + line[end:]
    return line


def parse_time_value(value: object) -> dt.datetime | None:
    """A JSON time field: ISO-8601 text, or epoch seconds/milliseconds/micro/nanoseconds."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        number = float(value)
        for scale in (1.0, 1e3, 1e6, 1e9):  # seconds, ms, us, ns: pick the plausible one
            if abs(number / scale) < 1e10:
                try:
                    return dt.datetime.fromtimestamp(number / scale, tz=dt.UTC)
                except (OverflowError, OSError, ValueError):
                    return None
        return None
    if isinstance(value, str) and value.strip():
        text = value.strip()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            return parse_time_value(float(text))
        try:
            return _parse_iso(text, dt.datetime.now(dt.UTC))
        except ValueError:
            return None
    return None


# --- JSON records --------------------------------------------------------------------------------
def _dig(obj: Mapping[str, Any], dotted: str) -> Any:
    """``obj["a.b"]`` if present (flattened keys), else ``obj["a"]["b"]``."""
    if dotted in obj:
        return obj[dotted]
    current: Any = obj
    for part in dotted.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return None
        current = current[part]
    return current


def _first(obj: Mapping[str, Any], keys: tuple[str, ...], kind: type | tuple[type, ...]) -> Any:
    for key in keys:
        value = _dig(obj, key)
        if isinstance(value, kind) and not isinstance(value, bool) and value != "":
            return value
    return None


_MESSAGE_KEYS = ("log", "message", "msg", "MESSAGE", "event.original", "text", "body")
_LEVEL_KEYS = ("level", "log.level", "severity", "severity_text", "loglevel", "levelname", "lvl")
_TIME_KEYS = ("@timestamp", "time", "timestamp", "ts", "date", "datetime", "eventTime")
_SERVICE_KEYS = (
    "service.name",
    "service",
    "app",
    "application",
    "kubernetes.labels.app.kubernetes.io/name",
    "host.name",
    "host.hostname",
    "hostname",
    "host",
)
_COMPONENT_KEYS = ("logger", "logger_name", "log.logger", "component", "caller")


def _kubernetes_service(meta: Mapping[str, Any]) -> str:
    labels = meta.get("labels") if isinstance(meta.get("labels"), Mapping) else {}
    assert isinstance(labels, Mapping)
    name = (
        labels.get("app.kubernetes.io/name")
        or labels.get("app")
        or labels.get("k8s-app")
        or meta.get("container_name")
        or meta.get("pod_name")
        or ""
    )
    namespace = meta.get("namespace_name") or meta.get("namespace") or ""
    return "/".join(str(p) for p in (namespace, name) if p)


def parse_json_log(
    obj: Mapping[str, Any], *, service: str, received: dt.datetime, depth: int = 0
) -> LogRecord:
    """A record from a JSON log object (see the module docstring for the shapes)."""
    message = _first(obj, _MESSAGE_KEYS, str)
    if message is None:
        raise BadRecord(REASON_NO_MESSAGE, "no log/message/msg field")
    message = message.rstrip("\r\n")
    level = normalise_level(_first(obj, _LEVEL_KEYS, (str, int)))
    timestamp = parse_time_value(_first(obj, _TIME_KEYS, (str, int, float)))
    kubernetes = obj.get("kubernetes")
    if isinstance(kubernetes, Mapping):
        found_service = _kubernetes_service(kubernetes)
    else:
        value = _first(obj, _SERVICE_KEYS, str)
        found_service = value or ""
    component = _first(obj, _COMPONENT_KEYS, str) or ""
    inner = load_json_object(message) if depth == 0 and message.lstrip().startswith("{") else None
    if inner is not None:  # an application's JSON line wrapped by the collector
        nested = parse_json_log(
            inner, service=found_service or service, received=timestamp or received, depth=1
        )
        return dataclasses.replace(
            nested,
            service=found_service or nested.service,
            timestamp=timestamp or nested.timestamp,
            timestamp_from="record" if timestamp else nested.timestamp_from,
        )
    parts = parse_line(message, timestamp or received)
    if parts.timestamp is not None:  # a raw line with its own header inside the JSON
        message = parts.message
        level = level or parts.level
        component = component or parts.component
        timestamp = timestamp or parts.timestamp
    if not message.strip():
        raise BadRecord(REASON_NO_MESSAGE, "empty message")
    return LogRecord(
        timestamp=timestamp or _utc(received),
        service=(found_service or service or "unknown")[:200],
        message=message.strip(),
        level=level,
        component=component[:200],
        line=_display_line(level, component, message),
        timestamp_from="record" if timestamp else "source",
    )


def _display_line(level: str, component: str, message: str) -> str:
    return " ".join(p for p in (level, f"{component}:" if component else "", message.strip()) if p)


def parse_log(
    payload: bytes | str, *, service: str, received: dt.datetime, max_bytes: int = 65536
) -> LogRecord:
    """One log message or line (JSON or raw) as a record; :class:`BadRecord` if it cannot be.

    ``service`` is the fallback service name (Kafka key, spool folder); ``received`` the source's
    timestamp, used when the record has none and to infer a missing year.
    """
    text = decode_payload(payload, max_bytes)
    received = _utc(received)
    obj = load_json_object(text)
    if obj is not None:
        return parse_json_log(obj, service=service, received=received)
    parts = parse_line(text, received)
    if not parts.message:
        raise BadRecord(REASON_EMPTY, "header without message")
    return LogRecord(
        timestamp=parts.timestamp or received,
        service=(service or "unknown")[:200],
        message=parts.message,
        level=parts.level,
        component=parts.component[:200],
        line=text.strip(),
        timestamp_from="record" if parts.timestamp else "source",
    )

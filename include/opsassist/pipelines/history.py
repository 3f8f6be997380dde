"""History reprocessing: archived logs, metrics and events of one day -> the streaming path's
signal documents. The functions here are what ``spark_jobs/signals_history.py`` maps over Spark
partitions; they hold no Spark code, so they also run (and are tested) in one process.

Archive layout (``OPSASSIST_HISTORY_ARCHIVE_URI``)
    ``<root>/logs/date=YYYY-MM-DD/<service>/<file>`` (or ``.../<service>.log``),
    ``<root>/metrics/date=YYYY-MM-DD/...`` and ``<root>/events/date=YYYY-MM-DD/...``. Files are
    JSON lines, raw text lines or Parquet (a row becomes a JSON object of its non-null fields; a
    row whose only field is ``line``/``value``/``message`` is a raw line; files of one kind may
    differ in columns). A log file's service is named as in the spool
    (:mod:`opsassist.sources.spool`): its first folder under the date, else its name up to the
    first dot. A record's reference time (what the spool calls "received": used when a line has
    no timestamp and to infer syslog's missing year) is the last second of its partition's day.

Which records a day's run uses
    A day's documents are those of the windows starting in that day. They depend on records
    before the day too: a log window's "vs previous window" figures read the window before, a
    metric window's anomaly baseline reads ``OPSASSIST_SIGNALS_METRIC_BASELINE_SECONDS`` before
    it. So a run reads its partition and ``OPSASSIST_HISTORY_SLACK_DAYS`` partitions on each side,
    keeps records whose *event time* is in ``[day start - context, day end)`` and builds documents
    for the day's windows only. A record archived under the wrong date (rotation at midnight)
    therefore still reaches its window, from either side. Each record belongs to the run of the
    day its event time falls in; the run of a record's *own* partition dead-letters it if it is
    bad (parse error, with the parser's reason) or if its time is further than the slack from
    the partition (``outside partition``), so nothing is dropped silently and nothing twice.

Template mining at scale: per-partition aggregates, merged exactly, mined once per window
    Each Spark partition folds its records into the same mergeable window aggregates the
    streaming ingest keeps (:class:`~opsassist.mining.windows.TemplateWindow`: per distinct
    masked sequence its count, first/last time, levels and earliest examples, with a bottom-k
    bound; :class:`~opsassist.signals.EventWindow`; metric step points). The partial aggregates
    of one window are merged (sums, min/max, k smallest: the merge is commutative and
    associative, so the result does not depend on partitioning or order) and the window is then
    mined *once*, replaying its distinct sequences most frequent first
    (``mine_sequences(order="frequency")``). That is the two-pass scheme of
    :func:`opsassist.mining.templates.mine_two_pass` (count, then mine), split across machines:
    pass one is the per-partition counting plus the merge, pass two the per-window mining. It is
    chosen over "mine each partition, then merge the templates" because Drain is order
    dependent: templates mined on different subsets generalise differently and cannot be merged
    back into what one miner would find. Merging counts is exact, so the Spark job's templates
    (and documents) are identical to the streaming path's and to the single-process miner's on
    the same lines (``tests/unit/test_history.py`` checks grouping accuracy on the loghub
    samples; ``tests/integration/test_spark_history.py`` the documents). Pass two runs per
    (kind, group, block of about an hour), not per group, so a busy service's day is spread
    over many tasks; :func:`window_blocks` says which windows each block needs.
"""

from __future__ import annotations

import base64
import bz2
import dataclasses
import datetime as dt
import gzip
import json
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from opsassist.documents import Chunk
from opsassist.mining.windows import TemplateWindow
from opsassist.parsing.events import parse_event
from opsassist.parsing.logs import BadRecord, parse_log
from opsassist.parsing.metrics import Points, add_point, merge_points, parse_metric
from opsassist.settings import Settings
from opsassist.signals import (
    EventWindow,
    SignalConfig,
    embedding_text,
    epoch_ms,
    event_window_documents,
    log_window_documents,
    metric_window_documents,
    point_values,
    window_start,
)

DAY_SECONDS = 86_400
KIND_DIRS: dict[str, str] = {"logs": "log", "metrics": "metric", "events": "event"}
REASON_OUTSIDE = "outside partition"
REASON_UNREADABLE = "unreadable file"
# Whole-file rows (see add_file): compression the Python worker undoes itself; files compressed
# with Hadoop's other codecs, and Parquet, are read by Spark's readers.
WHOLE_FILE_CODECS: dict[str, Callable[[bytes], bytes]] = {
    ".gz": gzip.decompress,
    ".bz2": bz2.decompress,
}
SPARK_ONLY_SUFFIXES = (".parquet", ".deflate", ".snappy", ".lz4", ".zst", ".zstd", ".br", ".xz")
DEADLETTER = "deadletter"
COUNT = "count"
# the schema of the partial-aggregate rows (kind, group, window start, aggregate as JSON, block)
PARTIAL_SCHEMA = "kind string, grp string, start long, agg string, block long"
BLOCK_SECONDS = 3600  # log and event windows are built in blocks of about an hour (see blocks)
WHOLE = -1  # the block of rows a group needs whole (metric series: their baseline spans blocks)
DOCUMENT_COLUMNS = (
    "id",
    "source_type",
    "source",
    "title",
    "section",
    "text",
    "content_hash",
    "timestamp",
    "end_timestamp",
    "metadata",
    "embed_text",
)
DOCUMENT_SCHEMA = ", ".join(f"{name} string" for name in DOCUMENT_COLUMNS)


# --- the day and its partitions ------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class DayScope:
    """One day's run: which partitions it reads, which records it keeps, which windows it emits."""

    day: dt.date
    window_seconds: int = 300
    context_seconds: int = 3600
    slack_days: int = 1

    def __post_init__(self) -> None:
        if DAY_SECONDS % self.window_seconds:
            raise ValueError(
                f"window of {self.window_seconds} s does not divide a day: windows would straddle "
                "date partitions (use a divisor of 86400, e.g. 300)"
            )

    @classmethod
    def for_day(cls, day: dt.date, config: SignalConfig, slack_days: int) -> DayScope:
        context = max(config.window_seconds, config.baseline_seconds)
        return cls(day, config.window_seconds, context, slack_days)

    @property
    def start(self) -> int:
        """Epoch seconds of the day's first second (UTC)."""
        return int(dt.datetime.combine(self.day, dt.time(), tzinfo=dt.UTC).timestamp())

    @property
    def end(self) -> int:
        return self.start + DAY_SECONDS

    def partitions(self) -> list[dt.date]:
        """The date partitions this run reads (its own and the slack on each side)."""
        return [
            self.day + dt.timedelta(days=d) for d in range(-self.slack_days, self.slack_days + 1)
        ]

    def keeps(self, when_ms: int) -> bool:
        """A record at this event time feeds one of the day's windows or their context."""
        return (self.start - self.context_seconds) * 1000 <= when_ms < self.end * 1000

    def emits(self, start: int) -> bool:
        """The window starting here is one of the day's (its documents are this run's output)."""
        return self.start <= start < self.end

    def tolerated(self, partition: dt.date, when_ms: int) -> bool:
        """An event time close enough to its partition for some run to pick the record up."""
        low = partition_start(partition) - self.slack_days * DAY_SECONDS
        high = partition_start(partition) + (self.slack_days + 1) * DAY_SECONDS
        return low * 1000 <= when_ms < high * 1000


def partition_start(day: dt.date) -> int:
    return int(dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp())


def partition_reference(day: dt.date) -> dt.datetime:
    """The "received" time of an archived record: the last second of its partition's day."""
    return dt.datetime.fromtimestamp(partition_start(day) + DAY_SECONDS - 1, tz=dt.UTC)


def archive_root(settings: Settings) -> str:
    """The archive URI; a plain relative path is made absolute (Spark resolves it otherwise)."""
    uri = settings.history_archive_uri.rstrip("/")
    if "://" in uri:
        return uri
    from pathlib import Path

    return str(Path(uri).expanduser().resolve())


def deadletter_root(settings: Settings) -> str:
    uri = settings.history_deadletter_uri.rstrip("/")
    return uri or str(settings.data_dir / "history" / "deadletter")


def partition_dirs(root: str, kind_dir: str, days: Sequence[dt.date]) -> list[str]:
    return [f"{root}/{kind_dir}/date={day.isoformat()}" for day in days]


def describe_path(path: str) -> tuple[str, str, dt.date | None]:
    """(kind, service hint, partition date) of an archived file's path or URI.

    ``.../logs/date=2026-01-02/HDFS/part-1.log`` -> ("log", "HDFS", 2026-01-02); a file directly
    under the date is named by its file name up to the first dot. The last ``<kind>/date=...``
    pair of the path counts, so the archive root may sit anywhere.
    """
    parts = [p for p in path.split("/") if p]
    for index in range(len(parts) - 1, 0, -1):
        part = parts[index]
        if part.startswith("date=") and parts[index - 1] in KIND_DIRS:
            try:
                day = dt.date.fromisoformat(part[len("date=") :])
            except ValueError:
                continue
            inner = parts[index + 1 :]
            hint = inner[0] if len(inner) > 1 else (inner[-1].split(".", 1)[0] if inner else "")
            return KIND_DIRS[parts[index - 1]], hint, day
    return "log", "", None


# --- pass one: per-partition aggregates ----------------------------------------------------------
@dataclasses.dataclass(slots=True)
class Partial:
    """The aggregates of one partition's records, keyed (kind, group, window start)."""

    logs: dict[tuple[str, int], TemplateWindow] = dataclasses.field(default_factory=dict)
    events: dict[tuple[str, int], EventWindow] = dataclasses.field(default_factory=dict)
    metrics: dict[tuple[str, int], Points] = dataclasses.field(default_factory=dict)
    letters: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    counts: dict[str, int] = dataclasses.field(default_factory=dict)

    def count(self, what: str, n: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + n

    def reject(self, kind: str, origin: str, payload: bytes, reason: str, detail: str) -> None:
        """Dead-letter a record (or a whole file) and count it as rejected."""
        self.letters.append(dead_letter_entry(kind, origin, payload, reason, detail))
        self.count(f"{kind}_rejected")


def dead_letter_entry(
    kind: str, origin: str, payload: bytes, reason: str, detail: str
) -> dict[str, Any]:
    """A rejected record, in the spool's dead-letter shape (payload as text, else base64)."""
    entry: dict[str, Any] = {"reason": reason, "detail": detail, "file": origin, "kind": kind}
    try:
        entry["payload"] = payload.decode("utf-8")
    except UnicodeDecodeError:
        entry["payload_base64"] = base64.b64encode(payload).decode()
    return entry


def splits_itself(name: str) -> bool:
    """True when a worker can read the whole file and split its lines itself (plain text, or
    text compressed with gzip or bzip2); False for Parquet and Hadoop's other codecs."""
    return not name.lower().endswith(SPARK_ONLY_SUFFIXES)


def file_lines(origin: str, content: bytes) -> list[bytes]:
    """The lines of a whole archived file as Spark's text reader gives them: decompressed by
    suffix (``.gz``, ``.bz2``), split at LF, CR or CRLF, the terminators dropped."""
    lowered = origin.lower()
    for suffix, decompress in WHOLE_FILE_CODECS.items():
        if lowered.endswith(suffix):
            content = decompress(content)
            break
    return content.splitlines()


def add_file(
    partial: Partial,
    origin: str,
    content: bytes,
    scope: DayScope,
    config: SignalConfig,
    max_bytes: int,
) -> None:
    """:func:`add_record` for every line of a whole file. A file that cannot be decompressed is
    one dead letter, its bytes kept (Spark's line reader would fail the job on it)."""
    try:
        lines = file_lines(origin, content)
    except (OSError, EOFError, zlib.error) as exc:
        kind, _, day = describe_cached(origin)
        if day == scope.day:
            detail = f"{type(exc).__name__}: {exc}"
            partial.reject(kind, origin, content, REASON_UNREADABLE, detail)
        return
    for line in lines:
        add_record(partial, origin, line, scope, config, max_bytes)


def add_record(
    partial: Partial,
    origin: str,
    payload: bytes,
    scope: DayScope,
    config: SignalConfig,
    max_bytes: int,
) -> None:
    """Parse one archived line or row (``payload``) of the file ``origin`` into the partition's
    aggregates, or dead-letter it (see the module docstring for who owns which record)."""
    kind, hint, day = describe_cached(origin)
    own = day == scope.day
    received = partition_reference(day or scope.day)
    if not payload.strip():
        return  # blank lines are not records (as in the spool)
    try:
        if kind == "log":
            item = parse_log(payload, service=hint, received=received, max_bytes=max_bytes)
            times = [epoch_ms(item.timestamp)]
        elif kind == "event":
            event = parse_event(payload, received=received, max_bytes=max_bytes)
            times = [epoch_ms(event.timestamp)]
        else:
            samples = parse_metric(payload, received=received, max_bytes=max_bytes)
            times = [epoch_ms(s.timestamp) for s in samples]
    except BadRecord as exc:
        if own:
            partial.reject(kind, origin, payload, exc.reason, exc.detail)
        return
    if own and day is not None and not all(scope.tolerated(day, t) for t in times):
        first = dt.datetime.fromtimestamp(min(times) / 1000, tz=dt.UTC).isoformat()
        partial.reject(kind, origin, payload, REASON_OUTSIDE, first)
        return
    kept = False
    if kind == "log":
        when = times[0]
        if scope.keeps(when):
            key = (item.service, window_start(when, config.window_seconds))
            window = partial.logs.get(key)
            if window is None:
                window = partial.logs[key] = TemplateWindow(config.max_sequences, config.examples)
            window.add(config.miner.tokens(item.message), when, item.level, item.line)
            kept = True
    elif kind == "event":
        if scope.keeps(times[0]):
            key = (event.namespace, window_start(times[0], config.window_seconds))
            ewindow = partial.events.get(key)
            if ewindow is None:
                ewindow = partial.events[key] = EventWindow(config.examples)
            ewindow.add(event)
            kept = True
    else:
        for sample, when in zip(samples, times, strict=True):
            if scope.keeps(when):
                key = (sample.series, window_start(when, config.window_seconds))
                points = partial.metrics.setdefault(key, {})
                add_point(points, when, sample.value, config.metric_step_seconds)
                kept = True
    partial.count(f"{kind}_used" if kept else f"{kind}_other_days")


_DESCRIBED: dict[str, tuple[str, str, dt.date | None]] = {}


def describe_cached(origin: str) -> tuple[str, str, dt.date | None]:
    """:func:`describe_path`, once per file rather than once per line."""
    found = _DESCRIBED.get(origin)
    if found is None:
        if len(_DESCRIBED) > 100_000:
            _DESCRIBED.clear()
        found = _DESCRIBED[origin] = describe_path(origin)
    return found


def block_seconds(window_seconds: int) -> int:
    """The span of a block: whole windows, about :data:`BLOCK_SECONDS`."""
    return window_seconds * max(1, BLOCK_SECONDS // window_seconds)


def window_blocks(kind: str, start: int, window_seconds: int) -> list[int]:
    """The blocks that need the aggregate of the window starting at ``start``.

    Pass two builds documents per (kind, group, block), so one busy service's day is spread over
    ~24 tasks instead of one. A log window's documents read the window before it, so a log
    window also goes to the next window's block when that is another block (only the last
    window of each block is sent twice). An event window needs only itself. A metric window's
    anomaly baseline reaches back an hour or more, so metric series stay whole (:data:`WHOLE`).
    """
    if kind == "metric":
        return [WHOLE]
    span = block_seconds(window_seconds)
    own = start // span
    if kind == "log" and (start + window_seconds) // span != own:
        return [own, own + 1]
    return [own]


def partial_rows(
    partial: Partial, window_seconds: int = 300
) -> Iterator[tuple[str, str, int, str, int]]:
    """The partition's aggregates as (kind, group, window start, JSON, block) rows
    (PARTIAL_SCHEMA): a window's row once per block that needs it (:func:`window_blocks`)."""
    for (service, start), window in partial.logs.items():
        data = _dump(window.to_dict())
        for block in window_blocks("log", start, window_seconds):
            yield "log", service, start, data, block
    for (namespace, start), ewindow in partial.events.items():
        data = _dump(ewindow.to_dict())
        for block in window_blocks("event", start, window_seconds):
            yield "event", namespace, start, data, block
    for (series, start), points in partial.metrics.items():
        data = _dump(sorted([b, t, v] for b, (t, v) in points.items()))
        yield "metric", series, start, data, WHOLE
    for entry in partial.letters:
        yield DEADLETTER, str(entry["reason"]), 0, _dump(entry), WHOLE
    for what, n in partial.counts.items():
        yield COUNT, what, n, "", WHOLE


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# --- pass two: merge a group's windows, mine each once, build its documents ----------------------
def group_documents(
    kind: str,
    group: str,
    parts: Iterable[tuple[int, str]],
    scope: DayScope,
    config: SignalConfig,
    block: int = WHOLE,
) -> list[Chunk]:
    """Documents of one service / namespace / series for the day's windows, from the partial
    aggregates ``(window start, JSON)`` of every partition (in any order). With ``block``, only
    the windows of that block (:func:`window_blocks`; the parts hold what they need)."""
    span = block_seconds(config.window_seconds)

    def emits(start: int) -> bool:
        return scope.emits(start) and (block == WHOLE or start // span == block)

    if kind == "log":
        logs: dict[int, TemplateWindow] = {}
        for start, data in parts:
            window = TemplateWindow.from_dict(json.loads(data))
            if start in logs:
                logs[start].merge(window)
            else:
                logs[start] = window
        docs: list[Chunk] = []
        for start in sorted(s for s in logs if emits(s)):
            previous = logs.get(start - config.window_seconds)
            docs.extend(log_window_documents(group, start, logs[start], previous, config))
        return docs
    if kind == "event":
        events: dict[int, EventWindow] = {}
        for start, data in parts:
            ewindow = EventWindow.from_dict(json.loads(data))
            if start in events:
                events[start].merge(ewindow)
            else:
                events[start] = ewindow
        return [
            doc
            for start in sorted(s for s in events if emits(s))
            for doc in event_window_documents(group, start, events[start], config)
        ]
    points: Points = {}
    starts: set[int] = set()
    for start, data in parts:
        merge_points(points, {int(b): (int(t), float(v)) for b, t, v in json.loads(data)})
        starts.add(start)
    values = point_values(points)
    return [
        doc
        for start in sorted(s for s in starts if emits(s))
        for doc in metric_window_documents(group, group, start, values, config)
    ]


def document_row(chunk: Chunk) -> dict[str, str]:
    """A document as strings (DOCUMENT_SCHEMA), with the text its vector encodes."""
    return {
        "id": chunk.id,
        "source_type": chunk.source_type,
        "source": chunk.source,
        "title": chunk.title,
        "section": chunk.section,
        "text": chunk.text,
        "content_hash": chunk.content_hash,
        "timestamp": chunk.timestamp.isoformat() if chunk.timestamp else "",
        "end_timestamp": chunk.end_timestamp.isoformat() if chunk.end_timestamp else "",
        "metadata": json.dumps(chunk.metadata, sort_keys=True, ensure_ascii=False),
        "embed_text": embedding_text(chunk),
    }


def chunk_from_row(row: Mapping[str, Any], vector: Sequence[float] | None = None) -> Chunk:
    """The :class:`Chunk` of a :func:`document_row` (and its vector)."""
    record = {name: row[name] for name in DOCUMENT_COLUMNS if name != "embed_text"}
    for key in ("timestamp", "end_timestamp"):
        record[key] = record[key] or None
    record["vector"] = None if vector is None else [float(x) for x in vector]
    return Chunk.from_record(record)

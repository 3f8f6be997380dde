"""The chat server's answer log: one record per answer, what the feedback DAG joins ratings to.

A record holds the answer's OpenAI completion id (``chatcmpl-...``), the request's correlation
id (``X-Request-ID``), the ids Open WebUI forwards with the request (``X-OpenWebUI-Chat-Id``,
``X-OpenWebUI-Message-Id``: the assistant message a rating in Open WebUI points at), the question
(as asked and standalone), its language, the cited sources, the index version, the answer mode,
the model that wrote text (if any), cache status, degradation and the time.

Where: the PostgreSQL database of ``OPSASSIST_AUDIT_DSN`` (table ``chat_answers``; the
project's services start it and the DSN has a default, as for the agent's audit), one connection
kept per process. With an empty DSN, or while PostgreSQL cannot be written, records go to
``<data dir>/answers/answers.jsonl`` (append-only JSON lines) instead; the readers read both, so
an outage of the database loses no record (the file of one chat server replica is only readable
where that replica's data folder is).

Recording never fails an answer: the server runs it after the response, and errors are logged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import re
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opsassist.logs import get_logger
from opsassist.settings import Settings

if TYPE_CHECKING:
    from opsassist.chat.pipeline import Outcome, Prepared

log = get_logger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS chat_answers (
    id               text PRIMARY KEY,
    at               timestamptz NOT NULL,
    correlation_id   text NOT NULL DEFAULT '-',
    webui_chat_id    text NOT NULL DEFAULT '',
    webui_message_id text NOT NULL DEFAULT '',
    question         text NOT NULL,
    standalone       text NOT NULL DEFAULT '',
    language         text NOT NULL DEFAULT '',
    sources          jsonb NOT NULL DEFAULT '[]'::jsonb,
    index_version    text,
    mode             text NOT NULL DEFAULT '',
    model            text,
    cache            text NOT NULL DEFAULT '',
    degraded         text
);
CREATE INDEX IF NOT EXISTS chat_answers_message ON chat_answers (webui_message_id);
CREATE INDEX IF NOT EXISTS chat_answers_at ON chat_answers (at);
"""
_SCHEMA_LOCK = 74211  # pg advisory lock while the schema is made (the agent's store uses 74210)
WEBUI_CHAT_HEADER = "x-openwebui-chat-id"
WEBUI_MESSAGE_HEADER = "x-openwebui-message-id"
_HEADER_ID = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")


def header_id(value: str | None) -> str:
    """An id from a forwarded header, or "" when it is absent or does not look like an id."""
    value = (value or "").strip()
    return value if _HEADER_ID.match(value) else ""


@dataclasses.dataclass(slots=True)
class AnswerRecord:
    id: str  # the completion id, chatcmpl-...
    at: dt.datetime
    correlation_id: str
    question: str
    standalone: str = ""
    language: str = ""
    sources: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    index_version: str | None = None
    mode: str = ""
    model: str | None = None
    cache: str = ""
    degraded: str | None = None
    webui_chat_id: str = ""
    webui_message_id: str = ""

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["at"] = self.at.isoformat()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AnswerRecord:
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        at = values.get("at")
        if isinstance(at, str):
            values["at"] = dt.datetime.fromisoformat(at)
        if isinstance(values.get("sources"), str):
            values["sources"] = json.loads(values["sources"])
        return cls(**values)


_COLUMNS = [f.name for f in dataclasses.fields(AnswerRecord)]


def cited_sources(citations: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The cited sources of an answer (source, section, type, title), in citation order."""
    keep = ("source", "section", "source_type", "title")
    return [{k: c.get(k, "") for k in keep} for c in citations if c.get("source")]


def answer_record(
    prepared: Prepared,
    outcome: Outcome,
    *,
    completion_id: str,
    correlation_id: str,
    model: str | None,
    webui_chat_id: str = "",
    webui_message_id: str = "",
    at: dt.datetime | None = None,
) -> AnswerRecord:
    """The record of one answer the pipeline made (cached answers cite what the cache kept)."""
    citations = [c.to_json() for c in prepared.citations] or (
        list(prepared.cached.payload.get("citations", [])) if prepared.cached else []
    )
    return AnswerRecord(
        id=completion_id,
        at=at or dt.datetime.now(dt.UTC),
        correlation_id=correlation_id,
        question=prepared.question,
        standalone=prepared.standalone,
        language=prepared.language,
        sources=cited_sources(citations),
        index_version=prepared.index_version,
        mode=prepared.mode,
        model=model if prepared.model_messages else None,
        cache=prepared.cache_status,
        degraded=outcome.degraded,
        webui_chat_id=header_id(webui_chat_id),
        webui_message_id=header_id(webui_message_id),
    )


def jsonl_path(settings: Settings) -> Path:
    return settings.data_dir / "answers" / "answers.jsonl"


class AnswerLog:
    """Writes records to PostgreSQL (one connection, reopened after an error) or, with an empty
    DSN or on a failed write, to the JSON-lines file. After a failed write PostgreSQL is not
    tried again for ``retry_seconds`` (an unreachable host would otherwise hold a worker thread
    for the connect timeout on every answer). Thread-safe."""

    def __init__(self, dsn: str, fallback: Path, retry_seconds: float = 30.0) -> None:
        self.dsn = dsn
        self.fallback = fallback
        self.retry_seconds = retry_seconds
        self._lock = threading.Lock()
        self._conn: Any = None
        self._down_until = 0.0  # time.monotonic() before which PostgreSQL is not tried

    @classmethod
    def from_settings(cls, settings: Settings) -> AnswerLog:
        return cls(settings.audit_dsn.get_secret_value().strip(), jsonl_path(settings))

    def _connection(self) -> Any:
        if self._conn is None or self._conn.closed:
            from opsassist.agent.store import connect

            conn = connect(self.dsn)
            conn.execute("SELECT pg_advisory_lock(%s)", (_SCHEMA_LOCK,))
            try:
                conn.execute(SCHEMA)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_SCHEMA_LOCK,))
            self._conn = conn
        return self._conn

    def record(self, record: AnswerRecord) -> str:
        """Store one record; returns where it went (``postgres`` or ``jsonl``)."""
        with self._lock:
            if self.dsn and time.monotonic() >= self._down_until:
                try:
                    self._insert(record)
                    return "postgres"
                except Exception as exc:
                    self.close()
                    self._down_until = time.monotonic() + self.retry_seconds
                    log.warning(
                        "answer log: PostgreSQL write failed, records go to the JSONL file",
                        extra={
                            "answer_id": record.id,
                            "error": type(exc).__name__,
                            "retry_in_s": self.retry_seconds,
                        },
                    )
            self._append(record)
            return "jsonl"

    def _insert(self, record: AnswerRecord) -> None:
        data = record.to_json()
        data["sources"] = json.dumps(record.sources, ensure_ascii=False)
        data["at"] = record.at
        placeholders = ", ".join(["%s"] * len(_COLUMNS))
        self._connection().execute(
            f"INSERT INTO chat_answers ({', '.join(_COLUMNS)}) VALUES ({placeholders}) "
            "ON CONFLICT (id) DO NOTHING",
            [data[c] for c in _COLUMNS],
        )

    def _append(self, record: AnswerRecord) -> None:
        self.fallback.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record.to_json(), ensure_ascii=False) + "\n"
        with open(self.fallback, "a", encoding="utf-8") as handle:
            handle.write(line)

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):  # already broken
                self._conn.close()
            self._conn = None


# --- readers (the feedback DAG) -------------------------------------------------------------------
def _jsonl_records(path: Path) -> list[AnswerRecord]:
    if not path.exists():
        return []
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                records.append(AnswerRecord.from_json(json.loads(line)))
            except (ValueError, TypeError) as exc:  # a torn last line of a killed writer
                log.warning(
                    "answer log: unreadable JSONL line skipped",
                    extra={"path": str(path), "line": number, "error": str(exc)[:200]},
                )
    return records


def _select(settings: Settings, where: str, params: Sequence[Any]) -> list[AnswerRecord]:
    dsn = settings.audit_dsn.get_secret_value().strip()
    if not dsn:
        return []
    from opsassist.agent.store import connect

    with connect(dsn) as conn:
        exists = conn.execute("SELECT to_regclass('chat_answers')").fetchone()[0]
        if exists is None:
            return []
        rows = conn.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM chat_answers WHERE {where}", params
        ).fetchall()
    return [AnswerRecord(*row) for row in rows]


def answers_by_message(settings: Settings, message_ids: Iterable[str]) -> dict[str, AnswerRecord]:
    """Records by the Open WebUI message id they answered (PostgreSQL and the JSONL file)."""
    wanted = sorted({m for m in message_ids if m})
    if not wanted:
        return {}
    found = {r.webui_message_id: r for r in _jsonl_records(jsonl_path(settings))}
    found = {k: v for k, v in found.items() if k in wanted}
    for record in _select(settings, "webui_message_id = ANY(%s)", [wanted]):
        found[record.webui_message_id] = record
    return found


def answers_between(settings: Settings, start: dt.datetime, end: dt.datetime) -> list[AnswerRecord]:
    """Records answered in ``[start, end]`` (the fallback join by question text and time)."""
    records = [r for r in _jsonl_records(jsonl_path(settings)) if start <= r.at <= end]
    seen = {r.id for r in records}
    for record in _select(settings, "at BETWEEN %s AND %s", [start, end]):
        if record.id not in seen:
            records.append(record)
    return records

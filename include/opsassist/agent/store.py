"""PostgreSQL tables of the agent: ``agent_audit`` (append-only: a trigger refuses UPDATE, DELETE
and TRUNCATE) and ``agent_actions`` (pending actions and their state).

The audit row: who (actor, role), when, what (event, tool), arguments, result, ok, the action it
belongs to and the correlation id. Arguments and results are redacted before they are written.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opsassist.agent.redact import redact
from opsassist.logs import get_correlation_id, get_logger

log = get_logger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS agent_audit (
    id             bigserial PRIMARY KEY,
    at             timestamptz NOT NULL DEFAULT now(),
    actor          text NOT NULL,
    role           text NOT NULL DEFAULT '',
    event          text NOT NULL,
    tool           text NOT NULL DEFAULT '',
    arguments      jsonb NOT NULL DEFAULT '{}'::jsonb,
    result         jsonb NOT NULL DEFAULT '{}'::jsonb,
    ok             boolean NOT NULL,
    action_id      text,
    correlation_id text NOT NULL DEFAULT '-'
);
CREATE INDEX IF NOT EXISTS agent_audit_action ON agent_audit (action_id);
CREATE OR REPLACE FUNCTION agent_audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'agent_audit is append-only (% refused)', TG_OP;
END $$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS agent_audit_no_change ON agent_audit;
CREATE TRIGGER agent_audit_no_change BEFORE UPDATE OR DELETE ON agent_audit
    FOR EACH ROW EXECUTE FUNCTION agent_audit_append_only();
DROP TRIGGER IF EXISTS agent_audit_no_truncate ON agent_audit;
CREATE TRIGGER agent_audit_no_truncate BEFORE TRUNCATE ON agent_audit
    FOR EACH STATEMENT EXECUTE FUNCTION agent_audit_append_only();
CREATE TABLE IF NOT EXISTS agent_actions (
    id             text PRIMARY KEY,
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    requested_by   text NOT NULL,
    tool           text NOT NULL,
    arguments      jsonb NOT NULL,
    change         jsonb NOT NULL,
    dry_run        jsonb NOT NULL,
    runbook_step   text NOT NULL DEFAULT '',
    question       text NOT NULL DEFAULT '',
    verify_promql  text NOT NULL DEFAULT '',
    correlation_id text NOT NULL DEFAULT '-',
    status         text NOT NULL DEFAULT 'pending',
    approved_by    text,
    approved_at    timestamptz,
    approval_via   text,
    dag_run_id     text,
    result         jsonb
);
"""

STATUSES = ("pending", "approved", "executing", "succeeded", "failed", "rejected", "expired")


@dataclasses.dataclass(slots=True)
class Action:
    id: str
    created_at: dt.datetime
    expires_at: dt.datetime
    requested_by: str
    tool: str
    arguments: dict[str, Any]
    change: dict[str, Any]
    dry_run: dict[str, Any]
    runbook_step: str
    question: str
    verify_promql: str
    correlation_id: str
    # a new action is pending, neither approved nor run
    status: str = "pending"
    approved_by: str | None = None
    approved_at: dt.datetime | None = None
    approval_via: str | None = None
    dag_run_id: str | None = None
    result: dict[str, Any] | None = None

    def expired(self, now: dt.datetime | None = None) -> bool:
        return (now or dt.datetime.now(dt.UTC)) >= self.expires_at

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key in ("created_at", "expires_at", "approved_at"):
            data[key] = data[key].isoformat() if data[key] else None
        return data


_COLUMNS = [f.name for f in dataclasses.fields(Action)]


class AuditStoreUnavailable(RuntimeError):
    """The action and audit database cannot be reached (the message names no address)."""


def connect(dsn: str) -> Any:
    """An autocommit connection to the audit database (``OPSASSIST_AUDIT_DSN``), 5 s connect
    timeout; ``AuditStoreUnavailable`` (no address in the message) when it cannot be reached.
    Shared by the agent's tables and the chat server's answer log."""
    import psycopg

    try:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise AuditStoreUnavailable(
            f"the action store (PostgreSQL) is unreachable: {type(exc).__name__}"
        ) from exc


class AgentStore:
    """Both tables behind one DSN; a short connection per call (the chat server's calls are few)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._ready = False

    @contextmanager
    def _conn(self) -> Iterator[Any]:
        with connect(self.dsn) as conn:
            if not self._ready:
                conn.execute("SELECT pg_advisory_lock(74210)")
                try:
                    conn.execute(SCHEMA)
                finally:
                    conn.execute("SELECT pg_advisory_unlock(74210)")
                self._ready = True
            yield conn

    # --- audit ----------------------------------------------------------------------------------
    def audit(
        self,
        *,
        actor: str,
        role: str,
        event: str,
        ok: bool,
        tool: str = "",
        arguments: Any = None,
        result: Any = None,
        action_id: str | None = None,
    ) -> None:
        """Append one audit row (redacted); a failure is logged and raised."""
        row = (
            actor,
            role,
            event,
            tool,
            json.dumps(redact(arguments if arguments is not None else {}), default=str),
            json.dumps(redact(result if result is not None else {}), default=str),
            ok,
            action_id,
            get_correlation_id(),
        )
        with self._conn() as conn:
            conn.execute(
                "INSERT INTO agent_audit (actor, role, event, tool, arguments, result, ok, "
                "action_id, correlation_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                row,
            )
        log.info(
            "audit",
            extra={"actor": actor, "event": event, "tool": tool, "ok": ok, "action_id": action_id},
        )

    def audit_rows(
        self, *, action_id: str | None = None, correlation_id: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        where, params = [], []
        if action_id:
            where.append("action_id = %s")
            params.append(action_id)
        if correlation_id:
            where.append("correlation_id = %s")
            params.append(correlation_id)
        sql = "SELECT id, at, actor, role, event, tool, arguments, result, ok, action_id, "
        sql += "correlation_id FROM agent_audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT %s"
        params.append(str(limit))
        with self._conn() as conn:
            cur = conn.execute(sql, params)
            names = [d.name for d in cur.description]
            rows = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        return list(reversed(rows))

    # --- actions --------------------------------------------------------------------------------
    def create_action(self, action: Action) -> None:
        data = action.to_json()
        values = [
            json.dumps(data[c], default=str)
            if c in ("arguments", "change", "dry_run", "result")
            else getattr(action, c)
            for c in _COLUMNS
        ]
        placeholders = ", ".join(["%s"] * len(_COLUMNS))
        with self._conn() as conn:
            conn.execute(
                f"INSERT INTO agent_actions ({', '.join(_COLUMNS)}) VALUES ({placeholders})",
                values,
            )

    def get_action(self, action_id: str) -> Action | None:
        with self._conn() as conn:
            row = conn.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM agent_actions WHERE id = %s", (action_id,)
            ).fetchone()
        return Action(*row) if row else None

    def transition(
        self, action_id: str, from_status: tuple[str, ...], to_status: str, **fields: Any
    ) -> Action | None:
        """Atomically move an action from one of ``from_status`` to ``to_status`` (setting
        ``fields``); ``None`` when it was not in such a state (already used, expired, unknown)."""
        sets = ["status = %s"] + [f"{name} = %s" for name in fields]
        values: list[Any] = [to_status]
        for name, value in fields.items():
            values.append(json.dumps(value, default=str) if name == "result" else value)
        values += [action_id, list(from_status)]
        with self._conn() as conn:
            row = conn.execute(
                f"UPDATE agent_actions SET {', '.join(sets)} WHERE id = %s "
                f"AND status = ANY(%s) RETURNING {', '.join(_COLUMNS)}",
                values,
            ).fetchone()
        return Action(*row) if row else None

    def list_actions(self, limit: int = 50) -> list[Action]:
        with self._conn() as conn:
            rows = conn.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM agent_actions ORDER BY created_at DESC "
                "LIMIT %s",
                (limit,),
            ).fetchall()
        return [Action(*row) for row in rows]

"""Index versions over time: rollback of an alias, and one build at a time per alias.

``rollback`` moves an alias back to an earlier complete version (by default the newest one older
than the promoted version) and appends who did it, when and why to ``<data>/audit/index.jsonl``
(the Airflow plugin's button calls the same function). ``build_lock`` is an exclusive,
non-blocking file lock per alias under ``<data>/locks``: a second ``index runbooks`` on the same
data dir fails at once with the holder's pid instead of racing the first to promote.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import getpass
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from opsassist.index.base import IndexNotFoundError, IndexStore, version_number
from opsassist.logs import get_correlation_id, get_logger

log = get_logger(__name__)


class BuildLockedError(RuntimeError):
    """Another build of the same alias holds the lock."""


class RollbackError(ValueError):
    """No version to roll back to, or the one named cannot serve."""


def version_rows(store: IndexStore, version: str) -> int | None:
    """A version's row count, or None when it cannot be opened (a build killed half-way may
    leave one that cannot)."""
    try:
        return store.count(version)
    except Exception:
        return None


def version_table(store: IndexStore, alias: str) -> list[dict[str, Any]]:
    """The versions of ``alias``, oldest first: ``version``, ``number``, ``rows`` (None: a build
    killed half-way) and ``promoted`` (the one the alias points at). ``opsassist versions`` and
    the Airflow plugin show this."""
    current = store.current_version(alias)
    return [
        {
            "version": version,
            "number": version_number(version),
            "rows": version_rows(store, version),
            "promoted": version == current,
        }
        for version in store.list_versions(alias)
    ]


def _can_serve(store: IndexStore, version: str) -> bool:
    return (version_rows(store, version) or 0) > 0


def rollback(
    store: IndexStore,
    alias: str,
    data_dir: Path,
    *,
    to: str | None = None,
    actor: str | None = None,
    reason: str = "",
) -> dict[str, Any]:
    """Point ``alias`` at ``to`` (default: the newest complete version older than the current
    one); returns and audits ``{"alias", "from", "to", ...}``."""
    current = store.current_version(alias)
    versions = store.list_versions(alias)
    if to is None:
        older = [
            v for v in versions if current is None or version_number(v) < version_number(current)
        ]
        candidates = [v for v in reversed(older) if _can_serve(store, v)]
        if not candidates:
            raise RollbackError(
                f"no earlier complete version of {alias!r} to roll back to "
                f"(versions: {', '.join(versions) or 'none'})"
            )
        to = candidates[0]
    elif to not in versions:
        raise IndexNotFoundError(f"{to!r} is not a version of {alias!r}")
    elif not _can_serve(store, to):
        raise RollbackError(f"{to} is empty or incomplete: it cannot serve")
    if to == current:
        raise RollbackError(f"{alias!r} already points at {to}")
    store.promote(alias, to)
    record = {
        "at": dt.datetime.now(dt.UTC).isoformat(),
        "event": "rollback",
        "alias": alias,
        "from": current,
        "to": to,
        "actor": actor or _whoami(),
        "reason": reason,
        "correlation_id": get_correlation_id(),
    }
    audit_path = index_audit_path(data_dir)
    audit_path.parent.mkdir(parents=True, exist_ok=True)
    with open(audit_path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
    log.warning("index rolled back", extra=record)
    return record


def index_audit_path(data_dir: Path) -> Path:
    return data_dir / "audit" / "index.jsonl"


def index_audit(data_dir: Path, limit: int = 20) -> list[dict[str, Any]]:
    """The newest ``limit`` records of the index audit trail (rollbacks), oldest first."""
    path = index_audit_path(data_dir)
    if not path.exists():
        return []
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [json.loads(line) for line in lines[-limit:]] if limit > 0 else []


def _whoami() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


@contextlib.contextmanager
def build_lock(data_dir: Path, alias: str) -> Iterator[None]:
    """Hold the build lock of ``alias`` (released when the process ends, even on kill -9)."""
    path = data_dir / "locks" / f"{alias}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise BuildLockedError(
                f"another build of {alias!r} is running ({holder}); wait for it to finish"
            ) from exc
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} since {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC")
        fh.flush()
        try:
            yield
        finally:
            fh.seek(0)
            fh.truncate()
            fcntl.flock(fh, fcntl.LOCK_UN)

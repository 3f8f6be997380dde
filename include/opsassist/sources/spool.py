"""Spool folder source: JSONL and raw log files dropped by a collector (the embedded default).

Layout: ``<spool>/logs/...``, ``<spool>/metrics/...``, ``<spool>/events/...`` (files directly in
the spool, or in any other folder, are logs). A log file's service is its first sub-folder under
``logs/`` (``logs/payments/app.log`` -> ``payments``), else its name up to the first dot
(``logs/nginx.log.1`` -> ``nginx``); JSON records may name their own service.

Positions: per file, the byte offset just past the last line committed, in a small JSON state
file, so a re-run resumes where the last committed batch ended. A file is known by its device
and inode plus a fingerprint of its first bytes, so
* a rotated file (``app.log`` renamed ``app.log.1``) is finished under its new name, and the new
  ``app.log`` starts from 0;
* a truncated file (copytruncate rotation: size below the offset) or an inode reused by another
  file (fingerprint changed) starts again from 0 as a new stream generation.
Only complete lines are read; a last line without a newline is read once the file has not been
modified for ``settle_seconds``. Blank lines are skipped. Hidden files and compressed or
temporary files (``*.gz``, ``*.zip``, ``*.tmp``, ``*.swp``, ``*~``...) are ignored.

Dead letters go to a JSONL file (one object per rejected line: reason, detail, file, offset,
the line itself, base64 if it is not UTF-8), appended and fsynced before the commit.
"""

from __future__ import annotations

import base64
import datetime as dt
import fnmatch
import hashlib
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from opsassist.logs import get_logger
from opsassist.sources.base import DeadLetter, RawRecord, RecordKind, append_dead_letters

log = get_logger(__name__)

KIND_DIRS: dict[str, RecordKind] = {"logs": "log", "metrics": "metric", "events": "event"}
DEFAULT_IGNORE: tuple[str, ...] = (
    "*.gz",
    "*.bz2",
    "*.xz",
    "*.zst",
    "*.zip",
    "*.tmp",
    "*.part",
    "*.swp",
    "*~",
    "LICENSE*",
    "CITATION*",
    "README*",
    "SOURCE",
)
FINGERPRINT_BYTES = 64
READ_BLOCK = 1 << 20


def _fingerprint(path: Path, length: int) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha1(handle.read(length)).hexdigest()


class SpoolSource:
    """Reads new complete lines of the spool's files; see the module docstring."""

    name = "spool"

    def __init__(
        self,
        root: Path,
        state_path: Path,
        deadletter_path: Path,
        *,
        max_bytes: int = 65536,
        settle_seconds: float = 10.0,
        ignore: Sequence[str] = DEFAULT_IGNORE,
    ) -> None:
        self.root = root
        self.state_path = state_path
        self.deadletter_path = deadletter_path
        self.max_bytes = max_bytes
        self.settle_seconds = settle_seconds
        self.ignore = tuple(ignore)
        self._committed: dict[str, dict[str, Any]] = self._load()
        self._cursor: dict[str, dict[str, Any]] = {k: dict(v) for k, v in self._committed.items()}
        self._streams: dict[str, str] = {}  # stream -> file identity
        self._present: set[str] = set()

    # --- state ---------------------------------------------------------------------------------
    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return {}
        return {str(k): dict(v) for k, v in data.get("files", {}).items()}

    def _save(self) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"files": self._committed}, indent=1, sort_keys=True))
        os.replace(tmp, self.state_path)

    @staticmethod
    def stream_of(identity: str, entry: Mapping[str, Any]) -> str:
        return f"spool:{identity}:{str(entry['fp'])[:12]}:{entry['gen']}"

    # --- listing -------------------------------------------------------------------------------
    def _ignored(self, relative: Path) -> bool:
        if any(part.startswith(".") for part in relative.parts):
            return True
        return any(fnmatch.fnmatch(relative.name, pattern) for pattern in self.ignore)

    def files(self) -> list[tuple[Path, RecordKind, str]]:
        """(path, kind, service hint) of every spool file to read, in a stable order."""
        if not self.root.is_dir():
            return []
        found: list[tuple[Path, RecordKind, str]] = []
        for path in sorted(p for p in self.root.rglob("*") if p.is_file()):
            relative = path.relative_to(self.root)
            if self._ignored(relative):
                continue
            parts = relative.parts
            kind = KIND_DIRS.get(parts[0]) if len(parts) > 1 else None
            inner = parts[1:] if kind else parts
            hint = inner[0] if len(inner) > 1 else inner[-1].split(".", 1)[0]
            found.append((path, kind or "log", hint))
        return found

    def _entry(self, path: Path, stat: os.stat_result) -> tuple[str, dict[str, Any]] | None:
        identity = f"{stat.st_dev}:{stat.st_ino}"
        entry = self._cursor.get(identity)
        if entry is None:
            if stat.st_size == 0:
                return None
            length = min(FINGERPRINT_BYTES, stat.st_size)
            entry = {"offset": 0, "fp": _fingerprint(path, length), "fp_len": length, "gen": 0}
        else:
            restart = ""
            if stat.st_size < int(entry["offset"]):
                restart = "truncated"
            elif _fingerprint(path, int(entry["fp_len"])) != entry["fp"]:
                restart = "replaced"
            if restart:
                length = min(FINGERPRINT_BYTES, stat.st_size)
                if length == 0:
                    return None
                log.info("spool file restarted", extra={"file": str(path), "why": restart})
                entry = {
                    "offset": 0,
                    "fp": _fingerprint(path, length),
                    "fp_len": length,
                    "gen": int(entry["gen"]) + 1,
                }
        entry["path"] = str(path)
        self._cursor[identity] = entry
        return identity, entry

    # --- Source --------------------------------------------------------------------------------
    def poll(self, max_records: int, timeout: float = 0.0) -> list[RawRecord]:
        """Up to ``max_records`` new lines; never waits (files are there or not)."""
        records: list[RawRecord] = []
        self._present = set()
        for path, kind, hint in self.files():
            try:
                stat = path.stat()
                found = self._entry(path, stat)
            except OSError:
                continue  # vanished between listing and reading
            if found is None:
                continue
            identity, entry = found
            self._present.add(identity)
            if len(records) >= max_records or int(entry["offset"]) >= stat.st_size:
                continue
            stream = self.stream_of(identity, entry)
            self._streams[stream] = identity
            settled = time.time() - stat.st_mtime >= self.settle_seconds
            received = dt.datetime.fromtimestamp(stat.st_mtime, tz=dt.UTC)
            budget = max_records - len(records)
            where = (path, int(entry["offset"]), stream, received, settled)
            entry["offset"] = self._read(where, kind, hint, budget, records)
        return records

    def _read(
        self,
        where: tuple[Path, int, str, dt.datetime, bool],
        kind: RecordKind,
        hint: str,
        budget: int,
        out: list[RawRecord],
    ) -> int:
        """Append up to ``budget`` lines of a file from an offset; return the offset after them.

        ``where`` is (path, offset, stream, file time, settled).
        """
        path, offset, stream, received, settled = where
        origin = str(path.relative_to(self.root))
        limit = self.max_bytes + 1

        def emit(payload: bytes, start: int, end: int) -> None:
            if payload.strip():
                payload = payload.rstrip(b"\r")[:limit]  # an oversized line is rejected anyway
                out.append(RawRecord(kind, payload, stream, start, end, received, origin, hint))

        emitted = 0
        position = offset  # offset of the first byte not yet consumed
        with open(path, "rb") as handle:
            handle.seek(offset)
            buffer = b""
            dropped = 0  # bytes of an oversized line beyond what is kept in ``buffer``
            eof = False
            while emitted < budget and not eof:
                block = handle.read(READ_BLOCK)
                eof = not block
                buffer += block
                while emitted < budget:
                    newline = buffer.find(b"\n")
                    if newline < 0:
                        if len(buffer) > limit:  # keep the head: the line is rejected anyway
                            dropped += len(buffer) - limit
                            buffer = buffer[:limit]
                        break
                    line, buffer = buffer[:newline], buffer[newline + 1 :]
                    end = position + dropped + newline + 1
                    emit(line, position, end)
                    emitted += 1 if line.strip() else 0
                    position, dropped = end, 0
            if eof and buffer and settled and emitted < budget:
                end = position + dropped + len(buffer)
                emit(buffer, position, end)
                position = end
        return position

    def dead_letter(self, letters: Sequence[DeadLetter]) -> None:
        append_dead_letters(self.deadletter_path, letters, _dead_letter_fields)

    def commit(self, positions: Mapping[str, int]) -> None:
        for stream, offset in positions.items():
            identity = self._streams.get(stream)
            if identity is None or identity not in self._cursor:
                continue
            entry = dict(self._cursor[identity])
            entry["offset"] = offset
            self._committed[identity] = entry
        # files that are gone (rotated away and deleted) no longer need a position
        for identity in list(self._committed):
            if self._present and identity not in self._present:
                del self._committed[identity]
        self._save()

    def close(self) -> None:
        return None


# --- the shipped sample ---------------------------------------------------------------------------
SAMPLE_END = dt.datetime(2026, 1, 1, 0, 5, tzinfo=dt.UTC)
_SAMPLE_TIME_KEYS = frozenset(
    {"time", "@timestamp", "timestamp", "lastTimestamp", "firstTimestamp", "eventTime"}
    | {"lastObservedTime", "creationTimestamp"}
)


def sample_spool() -> Path:
    """The sample spool shipped with the package (loghub excerpts and synthetic JSON files)."""
    from opsassist.settings import PACKAGE_ROOT

    return PACKAGE_ROOT / "corpora" / "signals" / "spool"


def _shift(value: Any, delta: dt.timedelta) -> Any:
    """JSON with every known time field moved by ``delta`` (and raw lines inside retimed)."""
    from opsassist.parsing.logs import parse_line, parse_time_value, retime_line

    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            when = parse_time_value(item) if key in _SAMPLE_TIME_KEYS else None
            if when is not None:
                moved = when + delta
                millis = f"{moved.microsecond // 1000:03d}"
                out[key] = moved.strftime("%Y-%m-%dT%H:%M:%S.") + millis + "Z"
            elif key == "log" and isinstance(item, str):
                parts = parse_line(item, SAMPLE_END)
                out[key] = retime_line(item, parts.timestamp + delta) if parts.timestamp else item
            else:
                out[key] = _shift(item, delta)
        return out
    if isinstance(value, list):
        return [_shift(item, delta) for item in value]
    return value


def seed_spool(
    dest: Path,
    now: dt.datetime | None = None,
    *,
    sample: Path | None = None,
    span_seconds: int = 600,
) -> list[Path]:
    """Copy the sample spool into ``dest`` as if it had just been written.

    Raw log lines get header timestamps spread evenly over the last ``span_seconds`` (the rest of
    each line is kept); JSON files are shifted so the sample's end is ``now``. Licence files are
    copied alongside. Returns the files written.
    """
    from opsassist.parsing.logs import retime_line

    now = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    sample = sample or sample_spool()
    written: list[Path] = []
    for path in sorted(p for p in sample.rglob("*") if p.is_file()):
        target = dest / path.relative_to(sample)
        target.parent.mkdir(parents=True, exist_ok=True)
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
            lines = [json.dumps(_shift(row, now - SAMPLE_END)) for row in rows]
        elif path.suffix == ".log":
            raw = text.splitlines()
            step = span_seconds / max(1, len(raw))
            lines = [
                retime_line(line, now - dt.timedelta(seconds=span_seconds - (i + 1) * step))
                for i, line in enumerate(raw)
            ]
        else:
            lines = text.splitlines()
        target.write_text("\n".join(lines) + "\n", encoding="utf-8")
        written.append(target)
    return written


def _dead_letter_fields(letter: DeadLetter) -> dict[str, Any]:
    """Where the line came from, and the line as text (base64 when it is not UTF-8)."""
    entry: dict[str, Any] = {
        "file": letter.record.origin,
        "offset": letter.record.offset,
        "kind": letter.record.kind,
    }
    try:
        entry["payload"] = letter.record.payload.decode("utf-8")
    except UnicodeDecodeError:
        entry["payload_base64"] = base64.b64encode(letter.record.payload).decode()
    return entry

"""Files that carry data between DAG tasks (XCom carries only their paths and counts)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from opsassist.documents import Chunk

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def run_dir(runs_root: Path, pipeline: str, run_id: str) -> Path:
    path = runs_root / pipeline / _UNSAFE.sub("_", run_id)
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_chunks(path: Path, chunks: Sequence[Chunk]) -> Path:
    rows = [c.to_record() for c in chunks]
    for row in rows:
        for key in ("timestamp", "end_timestamp"):
            if row[key] is not None:
                row[key] = row[key].isoformat()
    table = pa.Table.from_pylist(rows) if rows else pa.table({"id": pa.array([], pa.string())})
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
    return path


def read_chunks(path: Path) -> list[Chunk]:
    table = pq.read_table(path)
    if table.num_rows == 0:
        return []
    return [Chunk.from_record(row) for row in table.to_pylist()]


def write_json(path: Path, data: Any) -> Path:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str))
    tmp.replace(path)
    return path


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())

"""The Spark history job with spark-submit in local mode on two days of loghub archives: its
documents (ids and text) are exactly the streaming path's for the same records, it dead-letters
what the streaming path dead-letters, and it writes them to the index."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from opsassist.index.embedded import EmbeddedIndexStore
from opsassist.pipelines import signals as pipeline
from opsassist.pipelines.history_jvm import (
    driver_java_options,
    ensure_class_archive,
    write_training_archive,
)
from opsassist.settings import Settings
from tests.conftest import ROOT, VENV_BIN
from tests.integration.history_fixtures import TwoDays, build_two_days
from tests.integration.test_signals_pipeline import fake_embed

JOB = ROOT / "spark_jobs" / "signals_history.py"


def spark_env(data_dir: Path, archive: Path, **extra: str) -> dict[str, str]:
    return os.environ | {
        "OPSASSIST_DATA_DIR": str(data_dir),
        "OPSASSIST_HISTORY_ARCHIVE_URI": str(archive),
        "OPSASSIST_INDEX_BACKEND": "embedded",
        "PYSPARK_PYTHON": str(VENV_BIN / "python"),
        "OPSASSIST_LOG_FORMAT": "json",
        **extra,
    }


def index_texts(data_dir: Path, alias: str = "signals") -> dict[str, str]:
    """id -> text of every document the alias's version holds."""
    store = EmbeddedIndexStore(data_dir / "index")
    version = store.current_version(alias)
    assert version is not None
    ids = sorted(i for group in store.ids_by_source(version).values() for i in group)
    return {chunk.id: chunk.text for chunk in store.fetch(version, ids)}


def day_summaries(stdout: str) -> list[dict[str, Any]]:
    """The job's per-day summary lines (stdout also carries JSON log lines)."""
    rows = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return [row for row in rows if {"day", "files"} <= set(row) and "message" not in row]


def streamed(days: TwoDays, data_dir: Path) -> tuple[dict[str, str], dict[str, int]]:
    """The streaming path on the spool mirror: documents and dead-letter counts."""
    settings = Settings(
        data_dir=data_dir,
        signals_spool_path=days.spool,
        signals_batch_max_records=100_000,
        index_backend="embedded",
    )
    store = EmbeddedIndexStore(settings.embedded_index_dir)
    source = pipeline.open_source(settings, "spool")
    ingestor = pipeline.SignalIngestor(settings, store, embed=fake_embed)
    try:
        summary = pipeline.summarise("spool", ingestor.drain(source, budget_seconds=600))
    finally:
        ingestor.close()
    return index_texts(data_dir), summary["rejected"]


@pytest.mark.slow
def test_spark_submit_two_days_equals_streaming(
    tmp_path: Path, history_class_archive: Path
) -> None:
    today = dt.datetime.now(dt.UTC).date()
    days = build_two_days(tmp_path, today - dt.timedelta(days=2))  # inside the retention
    stream_docs, stream_rejected = streamed(days, tmp_path / "stream")
    assert len(stream_docs) > 1000 and stream_rejected == {"binary content": 1, "invalid json": 1}

    data_dir = tmp_path / "spark"
    first, second = (d.isoformat() for d in days.days)
    command = [str(VENV_BIN / "spark-submit"), "--master", "local[2]"]
    settings = Settings(
        data_dir=data_dir, history_class_archive_dir=str(history_class_archive.parent)
    )
    # as documented (opsassist history-java-options); -Xshare:on: a JVM that cannot map the
    # archive fails instead of quietly starting without it
    options = driver_java_options(settings, ensure_class_archive(settings)) + " -Xshare:on"
    command += ["--driver-java-options", options, str(JOB)]
    command += ["--date", first, "--end-date", second, "--output", str(tmp_path / "out")]
    result = subprocess.run(
        command,
        # 1 MB input splits: several partitions' partial aggregates to merge per window; every
        # file read line by line by Spark (the DAG test reads whole files, the default here)
        env=spark_env(
            data_dir,
            days.archive,
            OPSASSIST_HISTORY_SPLIT_MB="1",
            OPSASSIST_HISTORY_WHOLE_FILE_MB="0",
        ),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    summaries = day_summaries(result.stdout)
    assert [s["day"] for s in summaries] == [first, second]
    assert {s["master"] for s in summaries} == {"local[2]"}  # spark-submit's --master stands
    assert all("-XX:TieredStopAtLevel=1" in s["jvm_options"] for s in summaries)
    shared = f"-XX:SharedArchiveFile={history_class_archive}"
    assert all(shared in s["jvm_options"] for s in summaries)
    assert all(s["splits"] >= 4 for s in summaries), [s["splits"] for s in summaries]
    assert summaries[0]["rejected"] == stream_rejected  # dead-lettered by day one's run only
    assert summaries[1]["rejected"] == {}
    letters = list((data_dir / "history" / "deadletter" / f"date={first}").glob("part-*"))
    reasons = [json.loads(line)["reason"] for p in letters for line in p.read_text().splitlines()]
    assert sorted(reasons) == ["binary content", "invalid json"]

    written: dict[str, str] = {}
    for day in (first, second):
        for line in (tmp_path / "out" / f"{day}.jsonl").read_text().splitlines():
            row = json.loads(line)
            assert row["section"].startswith(day)  # each run writes its own day's windows
            written[row["id"]] = row["text"]
    assert written == stream_docs  # same ids, same text: nothing missing, nothing extra
    assert index_texts(data_dir) == stream_docs  # and that is what the index holds
    assert sum(s["index"]["upserted"] for s in summaries) == len(stream_docs)


@pytest.mark.slow
def test_class_archive_training_failure_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A training run that fails (here: its Python workers cannot start) gives no archive and no
    half-written file: the job then starts without one."""
    monkeypatch.setenv("PYSPARK_PYTHON", str(tmp_path / "no-such-python"))
    settings = Settings(data_dir=tmp_path / "data")
    assert ensure_class_archive(settings) is None
    folder = tmp_path / "data" / "spark"
    assert list(folder.iterdir()) == []
    assert driver_java_options(settings, None) == settings.history_driver_java_options


@pytest.mark.slow
def test_parquet_archives_give_the_documents_of_the_same_records_as_text(
    tmp_path: Path, history_class_archive: Path
) -> None:
    """The same day archived as text (raw lines, JSON lines) and as Parquet (a JSON record per
    row, nested objects as structs; raw lines in a single ``line`` column, beside JSON logs of
    the same kind): the same documents and the same dead letters."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    day = dt.date(2026, 1, 15)
    text = write_training_archive(tmp_path / "text", day)  # logs, metrics and events
    parquet = tmp_path / "parquet" / "archive"
    for path in sorted(p for p in text.rglob("*") if p.suffix in (".log", ".jsonl")):
        lines = path.read_text(encoding="utf-8").splitlines()
        if path.suffix == ".jsonl":
            records = [json.loads(line) for line in lines if line.strip()]
            # every record's fields (the JSON logs mix two shapes), "log.level" and "@timestamp"
            table = pa.Table.from_struct_array(pa.array(records))
        else:
            table = pa.table({"line": lines})
        target = (parquet / path.relative_to(text)).with_suffix(".parquet")
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, target)

    settings = Settings(data_dir=tmp_path)
    documents: dict[str, dict[str, str]] = {}
    kinds: dict[str, set[str]] = {}
    rejected: dict[str, dict[str, int]] = {}
    for name, archive in (("text", text), ("parquet", parquet)):
        command = [str(VENV_BIN / "spark-submit"), "--master", "local[2]"]
        command += ["--driver-java-options", driver_java_options(settings, history_class_archive)]
        command += [str(JOB), "--date", day.isoformat(), "--archive", str(archive), "--dry-run"]
        command += ["--output", str(tmp_path / name)]
        result = subprocess.run(
            command,
            env=spark_env(tmp_path / f"data-{name}", archive),
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert result.returncode == 0, result.stderr[-4000:]
        (summary,) = day_summaries(result.stdout)
        rejected[name] = summary["rejected"]
        rows = (tmp_path / name / f"{day}.jsonl").read_text().splitlines()
        documents[name] = {r["id"]: r["text"] for r in map(json.loads, rows)}
        kinds[name] = {json.loads(row)["source_type"] for row in rows}
    assert len(documents["text"]) > 50
    assert kinds["text"] == kinds["parquet"] == {"log", "event", "metric"}  # every reader
    assert documents["parquet"] == documents["text"]
    assert rejected["parquet"] == rejected["text"]  # the sample's bad records, judged alike

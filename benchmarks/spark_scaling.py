"""Spark history job: scaling from ``local[1]`` to ``local[2]``, and end to end on 1M lines.

Input: synthetic archives of one day, ``--lines`` log lines (the eight loghub 2k samples in
turn, header times spread evenly over the day, eight services, four files each), written under
``<tmp>/archive/logs/date=2026-01-15/`` (not timed).

1. Scaling: ``spark_jobs/signals_history.py`` with spark-submit on ``--scaling-lines`` of them,
   once with ``--master local[1]`` and once with ``local[2]``, same input, same process.
   Figure: lines/s of the Spark stages (read + parse + per-partition aggregates, then merge +
   mining + documents: the job's ``parse_s + documents_s``), and the ratio local[2] / local[1]
   (target >= 1.7x). JVM start, model load, Great Expectations and indexing do not scale with
   cores and are reported separately (end-to-end seconds of each run).
2. End to end: the whole job (spark-submit to indexed, ``local[2]``) on ``--lines`` lines
   (default 1,000,000): wall time, documents, lines/s.

Baseline in the same run: the library's single-process path (``add_record`` + ``group_documents``,
no Spark) on the scaling input: lines/s of one Python process, so the Spark figures can be read
against what one core does without Spark.

The machine's load average is printed before and after: other work shares the cores.

    .venv/bin/python -m benchmarks.spark_scaling [--lines 1000000] [--scaling-lines 200000]
        [--skip-e2e] [--json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import emit, machine

ROOT = Path(__file__).resolve().parents[1]
LOGHUB = ROOT.parent / "shared" / "corpora" / "loghub"
SYSTEMS = ("HDFS", "Hadoop", "Spark", "Zookeeper", "OpenSSH", "Linux", "Apache", "OpenStack")
DAY = dt.date(2026, 1, 15)
FILES_PER_SERVICE = 4


def write_archive(root: Path, lines: int) -> Path:
    """``lines`` retimed loghub lines over one day, eight services x four files."""
    from opsassist.parsing.logs import retime_line

    samples = {
        s: (LOGHUB / s / f"{s}_2k.log").read_text(encoding="utf-8").splitlines() for s in SYSTEMS
    }
    start = dt.datetime.combine(DAY, dt.time(), tzinfo=dt.UTC)
    step = 86_400 / lines
    handles = {}
    folder = root / "archive" / "logs" / f"date={DAY}"
    for system in SYSTEMS:
        (folder / system).mkdir(parents=True, exist_ok=True)
        for part in range(FILES_PER_SERVICE):
            handles[system, part] = open(folder / system / f"part-{part}.log", "w")  # noqa: SIM115
    try:
        for i in range(lines):
            system = SYSTEMS[i % len(SYSTEMS)]
            raw = samples[system][(i // len(SYSTEMS)) % len(samples[system])]
            when = start + dt.timedelta(seconds=i * step)
            handles[system, (i // 1000) % FILES_PER_SERVICE].write(retime_line(raw, when) + "\n")
    finally:
        for handle in handles.values():
            handle.close()
    return root / "archive"


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def spark_run(archive: Path, data_dir: Path, master: str) -> dict[str, Any]:
    env = os.environ | {
        "OPSASSIST_DATA_DIR": str(data_dir),
        "OPSASSIST_HISTORY_ARCHIVE_URI": str(archive),
        "OPSASSIST_INDEX_BACKEND": "embedded",
        "OPSASSIST_LOG_LEVEL": "WARNING",
        "PYSPARK_PYTHON": sys.executable,
    }
    command = [str(Path(sys.executable).parent / "spark-submit"), "--master", master]
    command += ["--driver-memory", "2g", str(ROOT / "spark_jobs" / "signals_history.py")]
    command += ["--date", DAY.isoformat(), "--kinds", "logs"]
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=7200)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"spark-submit failed ({master}): {result.stderr[-3000:]}")
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    summary = next(r for r in rows if "files" in r and "message" not in r)
    lines = int(summary["records"].get("log_used", 0))
    spark_s = float(summary["parse_s"]) + float(summary["documents_s"])
    return {
        "master": master,
        "lines": lines,
        "documents": summary["documents"],
        "spark_stages_s": round(spark_s, 2),
        "lines_per_s": round(lines / spark_s),
        "job_s": summary["seconds"],
        "wall_s": round(wall, 2),
        "end_to_end_lines_per_s": round(lines / wall),
        "load_after": load(),
    }


def single_process(archive: Path) -> dict[str, Any]:
    """The library alone in this process: parse + aggregates + documents, no Spark."""
    from opsassist.pipelines.history import DayScope, Partial, add_record, group_documents
    from opsassist.signals import SignalConfig

    config = SignalConfig()
    scope = DayScope.for_day(DAY, config, 1)
    files = sorted(archive.rglob("*.log"))
    started = time.perf_counter()
    partial, lines = Partial(), 0
    for path in files:
        with open(path, "rb") as handle:
            for line in handle:
                add_record(partial, str(path), line.rstrip(b"\n"), scope, config, 65536)
                lines += 1
    by_group: dict[str, list[tuple[int, str]]] = {}
    for (service, start), window in partial.logs.items():
        by_group.setdefault(service, []).append((start, json.dumps(window.to_dict())))
    docs = sum(len(group_documents("log", g, p, scope, config)) for g, p in by_group.items())
    seconds = time.perf_counter() - started
    return {"lines": lines, "documents": docs, "seconds": round(seconds, 2),
            "lines_per_s": round(lines / seconds)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--scaling-lines", type=int, default=200_000)
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result: dict[str, Any] = {"machine": machine(), "load_before": load()}
    with tempfile.TemporaryDirectory(prefix="opsassist-spark-bench-") as tmp:
        root = Path(tmp)
        small = write_archive(root / "scaling", args.scaling_lines)
        result["baseline_single_process"] = single_process(small)
        one = spark_run(small, root / "data1", "local[1]")
        two = spark_run(small, root / "data2", "local[2]")
        result["local_1"], result["local_2"] = one, two
        result["scaling_ratio"] = round(two["lines_per_s"] / one["lines_per_s"], 2)
        result["scaling_ratio_end_to_end"] = round(one["wall_s"] / two["wall_s"], 2)
        if not args.skip_e2e:
            big = write_archive(root / "e2e", args.lines)
            result["end_to_end"] = spark_run(big, root / "data3", "local[2]")
    result["load_after"] = load()
    emit(result, args.json)
    if not args.json:
        base = result["baseline_single_process"]
        print(f"load average before {result['load_before']}, after {result['load_after']}")
        print(f"baseline, one process without Spark: {base['lines_per_s']} lines/s")
        for key in ("local_1", "local_2"):
            run = result[key]
            print(
                f"{run['master']}: {run['lines_per_s']} lines/s in the Spark stages "
                f"({run['spark_stages_s']} s), job {run['job_s']} s, wall {run['wall_s']} s, "
                f"{run['documents']} documents, load after {run['load_after']}"
            )
        print(f"scaling local[2] / local[1]: {result['scaling_ratio']}x (Spark stages), "
              f"{result['scaling_ratio_end_to_end']}x (end to end)")  # fmt: skip
        if "end_to_end" in result:
            e2e = result["end_to_end"]
            print(
                f"end to end, {e2e['lines']} lines on local[2]: {e2e['wall_s']} s wall "
                f"({e2e['end_to_end_lines_per_s']} lines/s), {e2e['documents']} documents, "
                f"Spark stages {e2e['spark_stages_s']} s"
            )


if __name__ == "__main__":
    main()

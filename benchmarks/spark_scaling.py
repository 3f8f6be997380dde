"""Spark history job: scaling from ``local[1]`` to ``local[2]``, and end to end on 1M lines.

Input: a synthetic archive of one day, ``--lines`` log lines (default 1,000,000: the eight loghub
2k samples in turn, header times spread evenly over the day, eight services, four files each),
written under ``<tmp>/archive/logs/date=2026-01-15/`` (not timed).

The whole job (``spark_jobs/signals_history.py`` with spark-submit, to indexed) runs twice on
that same input, ``--master local[1]`` then ``local[2]``, with the driver options the DAG gives
(the class archive is made first if missing, not timed); then ``--pairs`` - 1 more pairs as dry
runs (validated, not indexed). On this VM one pair's ratio moves by +-10% from run to run, so the
scaling figures are the medians over the pairs, each pair's shown. Figures per run, from the
job's own summary:

- the Spark stages: ``parse`` (read + parse + per-partition aggregates) and ``documents`` (merge
  + mining once per window + documents): seconds, lines/s, and the local[2] / local[1] ratio,
  which is the scaling figure (target >= 1.7x);
- the parts that do not scale with cores, reported apart: JVM start and file listing, the
  embedding (model load in a Python worker), the driver's collect, validation and indexing;
- end to end: wall time of spark-submit, lines/s. The ``local[2]`` run is the end-to-end figure
  for 1M lines.

The scaling input is the 1M-line day itself: each run pays a few seconds of fixed cost (a cold
JVM compiling the read path, Python workers starting), which on a small input hides the scaling
of the per-line work (at 200k lines the same job shows about 1.4x).

Baseline in the same run: the library's single-process path (``add_record`` +
``group_documents``, no Spark) on the first ``--baseline-lines`` lines: lines/s of one Python
process, so the Spark stages can be read against one core without Spark.

The machine's load average is printed before and after (other work shares the cores), and so is
the scaling the machine itself allows: two pure-Python loops in two processes against one
(``two_core_ceiling``; on this VM anywhere from 1.65x to 2.5x on the same day): how noisy the
machine is while the pairs run.

    .venv/bin/python -m benchmarks.spark_scaling [--lines 1000000] [--baseline-lines 200000]
        [--pairs 3] [--java-options ...] [--json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import emit, load_average, machine, two_core_ceiling
from opsassist.pipelines.history_jvm import (
    driver_java_options,
    ensure_class_archive,
    spark_submit,
)

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


def spark_run(
    archive: Path, data_dir: Path, master: str, java_options: str = "", dry_run: bool = False
) -> dict[str, Any]:
    env = os.environ | {
        "OPSASSIST_DATA_DIR": str(data_dir),
        "OPSASSIST_HISTORY_ARCHIVE_URI": str(archive),
        "OPSASSIST_INDEX_BACKEND": "embedded",
        "OPSASSIST_LOG_LEVEL": "WARNING",
        "PYSPARK_PYTHON": sys.executable,
    }
    command = [spark_submit(), "--master", master]
    command += ["--driver-memory", "2g"]
    if java_options:
        command += ["--driver-java-options", java_options]
    command += [str(ROOT / "spark_jobs" / "signals_history.py")]
    command += ["--date", DAY.isoformat(), "--kinds", "logs"]
    if dry_run:
        command += ["--dry-run"]  # validated, not indexed
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=7200)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"spark-submit failed ({master}): {result.stderr[-3000:]}")
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    summary = next(r for r in rows if "files" in r and "message" not in r)
    if summary.get("master") != master:
        raise RuntimeError(f"the job ran on {summary.get('master')}, not {master}")
    lines = int(summary["records"].get("log_used", 0))
    parse_s, documents_s = float(summary["parse_s"]), float(summary["documents_s"])
    spark_s = parse_s + documents_s
    index_s = None if dry_run else float(summary["index"]["seconds"])
    return {
        "master": master,
        "jvm_options": summary.get("jvm_options"),
        "lines": lines,
        "documents": summary["documents"],
        "parse_s": parse_s,
        "documents_s": documents_s,
        "spark_stages_s": round(spark_s, 2),
        "lines_per_s": round(lines / spark_s),
        "parse_lines_per_s": round(lines / parse_s),
        "embed_s": summary.get("embed_s"),
        "collect_build_s": round(float(summary["build_s"]) - float(summary.get("embed_s", 0)), 2),
        "index_s": index_s,
        "job_s": summary["seconds"],
        "startup_s": round(wall - float(summary["seconds"]), 2),
        "wall_s": round(wall, 2),
        "end_to_end_lines_per_s": round(lines / wall),
        "load_after": load_average(),
    }


def pair_ratios(one: dict[str, Any], two: dict[str, Any]) -> dict[str, float]:
    """local[2] against local[1]: lines/s of the Spark stages, of parse alone, documents time,
    wall time."""
    return {
        "scaling_ratio": round(two["lines_per_s"] / one["lines_per_s"], 2),
        "scaling_ratio_parse": round(two["parse_lines_per_s"] / one["parse_lines_per_s"], 2),
        "scaling_ratio_documents": round(one["documents_s"] / two["documents_s"], 2),
        "scaling_ratio_end_to_end": round(one["wall_s"] / two["wall_s"], 2),
    }


def single_process(archive: Path, limit: int) -> dict[str, Any]:
    """The library alone in this process on the first ``limit`` lines: parse + aggregates +
    documents, no Spark."""
    from opsassist.pipelines.history import DayScope, Partial, add_record, group_documents
    from opsassist.signals import SignalConfig

    config = SignalConfig()
    scope = DayScope.for_day(DAY, config, 1)
    files = sorted(archive.rglob("*.log"))
    per_file = max(1, limit // len(files))
    started = time.perf_counter()
    partial, lines = Partial(), 0
    for path in files:
        with open(path, "rb") as handle:
            for n, line in enumerate(handle):
                if n >= per_file:
                    break
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
    parser.add_argument("--baseline-lines", type=int, default=200_000)
    parser.add_argument(
        "--java-options",
        default=None,
        help="spark-submit --driver-java-options for both runs (default: what the DAG gives, "
        "OPSASSIST_HISTORY_DRIVER_JAVA_OPTIONS and the class archive, made first if missing; "
        "'' for none)",
    )
    parser.add_argument(
        "--pairs",
        type=int,
        default=3,
        help="local[1] / local[2] pairs, run one after the other; the first indexes (the end to "
        "end figure), the others are dry runs (validated, not indexed); the scaling figures are "
        "the medians over the pairs (default 3)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    archive_s = 0.0
    if args.java_options is None:
        from opsassist.settings import get_settings

        started = time.perf_counter()
        classes = ensure_class_archive(get_settings())  # not timed: once per environment
        archive_s = time.perf_counter() - started
        args.java_options = driver_java_options(get_settings(), classes)
    result: dict[str, Any] = {
        "machine": machine(),
        "load_before": load_average(),
        "java_options": args.java_options,
        "class_archive_s": round(archive_s, 1),
        "two_core_ceiling_before": two_core_ceiling(),
    }
    with tempfile.TemporaryDirectory(prefix="opsassist-spark-bench-") as tmp:
        root = Path(tmp)
        archive = write_archive(root / "input", args.lines)
        result["baseline_single_process"] = single_process(archive, args.baseline_lines)
        pairs = []
        for n in range(max(1, args.pairs)):
            dry = n > 0
            one = spark_run(archive, root / f"d{n}-1", "local[1]", args.java_options, dry)
            two = spark_run(archive, root / f"d{n}-2", "local[2]", args.java_options, dry)
            pairs.append({"local_1": one, "local_2": two, **pair_ratios(one, two)})
    two = pairs[0]["local_2"]
    result["pairs"] = pairs
    for key in ("scaling_ratio", "scaling_ratio_parse", "scaling_ratio_documents"):
        result[key] = round(statistics.median(p[key] for p in pairs), 2)
        result[f"{key}_range"] = [min(p[key] for p in pairs), max(p[key] for p in pairs)]
    result["scaling_ratio_end_to_end"] = pairs[0]["scaling_ratio_end_to_end"]
    result["load_after"] = load_average()
    result["two_core_ceiling_after"] = two_core_ceiling()
    emit(result, args.json)
    if args.json:
        return
    base = result["baseline_single_process"]
    print(f"machine: {result['machine']}")
    print(f"load average before {result['load_before']}, after {result['load_after']}")
    print(f"driver JVM options: {two['jvm_options']} (class archive ready in "
          f"{result['class_archive_s']} s, not timed)")  # fmt: skip
    print(
        "this machine's own 1 -> 2 core scaling (two pure-Python loops in two processes vs one): "
        f"{result['two_core_ceiling_before']} before, {result['two_core_ceiling_after']} after"
    )
    print(f"baseline, one process without Spark: {base['lines_per_s']} lines/s "
          f"({base['lines']} lines)")  # fmt: skip
    for n, pair in enumerate(pairs):
        print(f"pair {n + 1}" + (" (indexed)" if n == 0 else " (dry run: not indexed)"))
        for run in (pair["local_1"], pair["local_2"]):
            print(
                f"  {run['master']}: Spark stages {run['spark_stages_s']} s = "
                f"{run['lines_per_s']} lines/s (parse {run['parse_s']} s, documents "
                f"{run['documents_s']} s); not scaling with cores: start {run['startup_s']} s, "
                f"embed {run['embed_s']} s, collect {run['collect_build_s']} s, index "
                f"{run['index_s']} s; wall {run['wall_s']} s ({run['end_to_end_lines_per_s']} "
                f"lines/s), {run['documents']} documents"
            )
        print(
            f"  local[2] / local[1]: {pair['scaling_ratio']}x Spark stages (parse "
            f"{pair['scaling_ratio_parse']}x, documents {pair['scaling_ratio_documents']}x)"
        )
    print(
        f"scaling local[2] / local[1], median of {len(pairs)} pairs: {result['scaling_ratio']}x "
        f"Spark stages (range {result['scaling_ratio_range']}; parse "
        f"{result['scaling_ratio_parse']}x, documents {result['scaling_ratio_documents']}x); "
        f"{result['scaling_ratio_end_to_end']}x end to end (pair 1)"
    )
    print(f"end to end, {two['lines']} lines on local[2]: {two['wall_s']} s")


if __name__ == "__main__":
    main()

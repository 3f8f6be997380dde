"""Reprocess archived logs, metrics and events into the signal index, one day at a time.

    PYSPARK_PYTHON=.venv/bin/python .venv/bin/spark-submit spark_jobs/signals_history.py \\
        --date 2026-01-02 [--end-date 2026-01-31] [--archive s3a://bucket/archive] \\
        [--kinds logs,metrics,events] [--index signals-history] [--dry-run]

Produces exactly the documents the streaming path (``opsassist.pipelines.signals``) produces for
the same records: same parsing, windows, template mining and ids, because every step is a
function of ``opsassist`` mapped over Spark partitions (see ``opsassist.pipelines.history`` for
the archive layout, which records a day uses, and why templates are mined after an exact merge
of per-partition counts rather than merged afterwards). Per day:

1. read ``<archive>/<kind>/date=D±slack`` (text, JSON lines, gzip/bzip2 text, Parquet; any
   Hadoop URI) as (file, bytes) rows;
2. ``mapInPandas``: parse each record and fold it into per-partition window aggregates; bad
   records become dead letters (written to ``<dead letters>/date=D``, counted by reason);
3. ``groupBy(kind, group, block).applyInPandas``: merge a service's / namespace's / series'
   partial windows and build the day's documents (templates mined once per window), a block of
   about an hour per task for logs and events so one busy service does not make one long task;
4. ``mapInPandas`` over the distinct embedding texts: one model per Python worker process,
   encoded in batches of ``OPSASSIST_EMBEDDING_BATCH_SIZE``; joined back to the documents;
5. on the driver: Great Expectations suite ``signal_documents``, then bulk upsert into the
   alias's version and deletion of the day's documents the run no longer produces
   (``opsassist.pipelines.history_index``). Re-running a day changes nothing.

Runs in ``local[*]`` unless ``--master`` is given to spark-submit (or to this script); on a
cluster, give the executors the same Python environment (``spark.pyspark.python``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

KIND_CHOICES = ("logs", "metrics", "events")
# Each embedding partition loads the model in its Python worker (~5 s of CPU); a long text costs
# ~25 ms on one core (Spark gives a Python worker one thread), so a few hundred texts already
# pay for a second worker.
EMBED_TEXTS_PER_PARTITION = 256
IGNORED = ("LICENSE", "CITATION", "README", "SOURCE", "_SUCCESS")
# Each parse task adds one to this count: the input splits, known without planning the read twice.
SPLIT_COUNT = "_splits"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="spark-submit spark_jobs/signals_history.py",
        description="Reprocess archived signals of one day (or a range of days) into the signal "
        "index: the same documents and ids as the streaming ingest.",
    )
    parser.add_argument("--date", required=True, type=dt.date.fromisoformat, help="YYYY-MM-DD")
    parser.add_argument(
        "--end-date",
        type=dt.date.fromisoformat,
        help="last day of a range (inclusive); each day is processed and indexed on its own",
    )
    parser.add_argument(
        "--archive", help="archive root URI (default: OPSASSIST_HISTORY_ARCHIVE_URI)"
    )
    parser.add_argument(
        "--kinds",
        default=",".join(KIND_CHOICES),
        help="comma-separated subset of logs,metrics,events (default: all)",
    )
    parser.add_argument("--index", help="target alias (default: OPSASSIST_HISTORY_INDEX)")
    parser.add_argument(
        "--master",
        help="Spark master when spark-submit gives none (default: OPSASSIST_HISTORY_SPARK_MASTER)",
    )
    parser.add_argument(
        "--output", help="also write each day's documents as JSON lines under this folder"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="build and validate, but do not write the index"
    )
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if not kinds or set(kinds) - set(KIND_CHOICES):
        parser.error(f"--kinds: choose from {', '.join(KIND_CHOICES)}")
    args.kinds = kinds
    args.end_date = args.end_date or args.date
    if args.end_date < args.date:
        parser.error("--end-date is before --date")
    return args


# --- Spark plumbing ---
def session(master: str, split_mb: int, ui: bool = False) -> Any:
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName("opsassist-signals-history")
    # The Spark UI listens on 4040 on every interface; a one-day batch job needs none of it
    # unless asked (OPSASSIST_HISTORY_SPARK_UI).
    builder = builder.config("spark.ui.enabled", "true" if ui else "false")
    # Under spark-submit its --master stands (it always sets one, local[*] by default). Its JVM
    # is not reachable yet, so SparkConf() would look empty here and a master set on the builder
    # would override spark-submit's: the gateway port in the environment tells instead.
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        builder = builder.master(master)
    spark = builder.config("spark.sql.session.timeZone", "UTC").getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    parallelism = spark.sparkContext.defaultParallelism
    spark.conf.set("spark.sql.shuffle.partitions", str(max(2, 2 * parallelism)))
    # Input splits by size alone (Spark's default also divides the input by the cores): each
    # split is folded into its own partial aggregates, which pass two merges, so splits that
    # followed the cores would make a bigger cluster do more work for the same documents.
    spark.conf.set("spark.sql.files.maxPartitionBytes", f"{split_mb}m")
    spark.conf.set("spark.sql.files.minPartitionNum", "1")
    # The documents shuffle is small in bytes but heavy in CPU (template mining per window):
    # adaptive execution would merge it by size into a few uneven tasks (one on local[1],
    # 1.7/2.3/3.3 s on local[2]), so its 2 x cores partitions stay as they are.
    spark.conf.set("spark.sql.adaptive.coalescePartitions.enabled", "false")
    return spark


def jvm_options(spark: Any) -> list[str]:
    """The driver JVM's -XX options (e.g. the JIT tier from spark.driver.extraJavaOptions)."""
    runtime = spark.sparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean()
    return [str(a) for a in runtime.getInputArguments() if str(a).startswith("-XX:")]


def list_files(spark: Any, folders: Sequence[str]) -> list[tuple[str, int]]:
    """(URI, bytes) of the data files under the folders that exist (any Hadoop file system),
    hidden ones skipped."""
    jvm = spark.sparkContext._jvm
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    files: list[tuple[str, int]] = []
    for folder in folders:
        path = jvm.org.apache.hadoop.fs.Path(folder)
        fs = path.getFileSystem(conf)
        if not fs.exists(path):
            continue
        listing = fs.listFiles(path, True)
        while listing.hasNext():
            status = listing.next()
            name = status.getPath().toString()
            base = name.rsplit("/", 1)[-1]
            if base.startswith((".", "_")) or base.startswith(IGNORED) or base.endswith("~"):
                continue
            files.append((name, int(status.getLen())))
    return sorted(files)


def remove(spark: Any, folder: str) -> None:
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(folder)
    fs = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    if fs.exists(path):
        fs.delete(path, True)


def read_records(spark: Any, files: Sequence[tuple[str, int]], whole_bytes: int) -> Any:
    """(origin, payload bytes, whole) rows: a whole file (``whole``: text files up to
    ``whole_bytes``, split into lines by the worker), a text line, or a Parquet row (as JSON)."""
    from pyspark.sql import functions as F

    from opsassist.pipelines.history import describe_path, splits_itself

    frames: list[Any] = []
    whole = [f for f, size in files if size <= whole_bytes and splits_itself(f)]
    parquet = [f for f, _ in files if f.endswith(".parquet")]
    taken = set(whole) | set(parquet)
    text = [f for f, _ in files if f not in taken]
    origin = F.col("_metadata.file_path").alias("origin")
    if whole:  # one row per file: no per-line work in the JVM beside the Python workers
        blobs = spark.read.format("binaryFile").load(whole)
        frames.append(blobs.select(origin, F.col("content").alias("payload"), F.lit(True)))
    if text:
        lines = spark.read.text(text)
        frames.append(lines.select(origin, F.col("value").cast("binary"), F.lit(False)))
    by_kind: dict[str, list[str]] = {}
    for name in parquet:  # one read per kind: logs and events have different columns
        by_kind.setdefault(describe_path(name)[0], []).append(name)
    for names in by_kind.values():
        # Files of one kind may differ in columns (raw lines beside JSON records): read them with
        # the union of their schemas and judge each row by the fields it has. A row whose only
        # field is line/value/message is a raw line; any other row is a JSON record (to_json
        # leaves out the fields other files brought in, which are null in this row).
        rows = spark.read.option("mergeSchema", "true").parquet(*names)
        field = {c: F.col(f"`{c}`") for c in rows.columns}  # names like "log.level", "@timestamp"
        value = F.to_json(F.struct(*field.values())).cast("binary")
        for raw in [c for c in ("message", "value", "line") if c in field]:
            alone = field[raw].isNotNull()
            for other in (c for c in field if c != raw):
                alone = alone & field[other].isNull()
            value = F.when(alone, field[raw].cast("binary")).otherwise(value)
        frames.append(rows.select(origin, value, F.lit(False)))
    if not frames:
        return None
    out = frames[0]
    for frame in frames[1:]:
        out = out.union(frame)
    return out.toDF("origin", "payload", "whole")


# --- the functions Spark maps (library calls only) ---
def partial_aggregates(scope: Any, config: Any, max_bytes: int) -> Any:
    def run(batches: Iterator[Any]) -> Iterator[Any]:
        import pandas as pd

        from opsassist.pipelines.history import (
            COUNT,
            WHOLE,
            Partial,
            add_file,
            add_record,
            partial_rows,
        )

        partial = Partial()
        for frame in batches:
            records = zip(frame["origin"], frame["payload"], frame["whole"], strict=True)
            for origin, payload, whole in records:
                add = add_file if whole else add_record
                add(partial, origin, bytes(payload), scope, config, max_bytes)
        rows = list(partial_rows(partial, config.window_seconds))
        rows.append((COUNT, SPLIT_COUNT, 1, "", WHOLE))
        yield pd.DataFrame(rows, columns=["kind", "grp", "start", "agg", "block"])

    return run


def window_documents(scope: Any, config: Any) -> Any:
    def run(frame: Any) -> Any:
        import pandas as pd

        from opsassist.pipelines.history import DOCUMENT_COLUMNS, document_row, group_documents

        kind, group = str(frame["kind"].iloc[0]), str(frame["grp"].iloc[0])
        block = int(frame["block"].iloc[0])
        parts = zip(frame["start"].astype(int), frame["agg"], strict=True)
        docs = group_documents(kind, group, parts, scope, config, block)
        return pd.DataFrame([document_row(d) for d in docs], columns=list(DOCUMENT_COLUMNS))

    return run


def embed_batches(model: str, batch_size: int, device: str) -> Any:
    def run(batches: Iterator[Any]) -> Iterator[Any]:
        import pandas as pd

        from opsassist.embedding import embed_texts  # the model is cached per worker process

        for frame in batches:
            texts = [str(t) for t in frame["embed_text"]]
            for offset in range(0, len(texts), batch_size):
                part = texts[offset : offset + batch_size]
                vectors = embed_texts(part, model, batch_size, device)
                yield pd.DataFrame({"embed_text": part, "vector": [list(v) for v in vectors]})

    return run


# --- one day ---
def process_day(spark: Any, day: dt.date, args: argparse.Namespace) -> dict[str, Any]:
    from pyspark.sql import functions as F

    from opsassist.logs import get_logger
    from opsassist.pipelines.history import (
        COUNT,
        DEADLETTER,
        DOCUMENT_SCHEMA,
        PARTIAL_SCHEMA,
        DayScope,
        archive_root,
        chunk_from_row,
        deadletter_root,
        partition_dirs,
    )
    from opsassist.pipelines.history_index import (
        cached_vectors,
        index_day,
        remember_vectors,
        target_alias,
    )
    from opsassist.settings import get_settings
    from opsassist.signals import SignalConfig
    from opsassist.stores import get_index_store

    log = get_logger("spark_jobs.signals_history")
    settings = get_settings()
    config = SignalConfig.from_settings(settings)
    scope = DayScope.for_day(day, config, settings.history_slack_days)
    root = (args.archive or archive_root(settings)).rstrip("/")
    timer = time.perf_counter()
    folders = [d for kind in args.kinds for d in partition_dirs(root, kind, scope.partitions())]
    files = list_files(spark, folders)
    context = spark.sparkContext
    summary: dict[str, Any] = {
        "day": day.isoformat(),
        "archive": root,
        "files": len(files),
        "master": context.master,
        "jvm_options": jvm_options(spark),
        "parallelism": context.defaultParallelism,
        "list_s": round(time.perf_counter() - timer, 3),
    }
    parsing = time.perf_counter()
    whole_mb = min(settings.history_whole_file_mb, settings.history_split_mb)
    records = read_records(spark, files, whole_mb * 1024 * 1024)
    if records is None:
        summary |= {"records": {}, "rejected": {}, "documents": 0}
        partials = None
    else:
        max_bytes = settings.signals_max_message_bytes
        partials = records.mapInPandas(
            partial_aggregates(scope, config, max_bytes), PARTIAL_SCHEMA
        ).cache()
        counts: dict[str, int] = {}
        for row in partials.filter(F.col("kind") == COUNT).collect():
            counts[row["grp"]] = counts.get(row["grp"], 0) + int(row["start"])
        summary["splits"] = counts.pop(SPLIT_COUNT, 0)
        summary["records"] = dict(sorted(counts.items()))
        summary["parse_s"] = round(time.perf_counter() - parsing, 3)
        letters = partials.filter(F.col("kind") == DEADLETTER)
        rejected = {r["grp"]: int(r["count"]) for r in letters.groupBy("grp").count().collect()}
        summary["rejected"] = dict(sorted(rejected.items()))
        target = f"{deadletter_root(settings)}/date={day.isoformat()}"
        if rejected:  # one folder per day, replaced on a re-run
            letters.select("agg").coalesce(1).write.mode("overwrite").text(target)
            summary["deadletter"] = target
        else:
            remove(spark, target)  # what an earlier run of the day rejected is no longer bad
    dead = time.perf_counter()
    rows: list[dict[str, Any]] = []
    vectors: dict[str, list[float]] = {}
    parallelism = spark.sparkContext.defaultParallelism
    if partials is not None:
        windows = partials.filter(F.col("kind").isin("log", "event", "metric"))
        # One job builds the documents and brings them to the driver (the indexing needs them
        # there anyway): no cache, count, distinct or sort jobs over them in Spark.
        table = (
            windows.groupBy("kind", "grp", "block")
            .applyInPandas(window_documents(scope, config), DOCUMENT_SCHEMA)
            .toArrow()
            .sort_by("id")
        )
        partials.unpersist()
        summary["windows_documents"] = table.num_rows
        summary["documents_s"] = round(time.perf_counter() - dead, 3)
        texts = sorted(set(table.column("embed_text").to_pylist()))
        known = cached_vectors(settings, texts)
        missing = [t for t in texts if t not in known]
        fresh: dict[str, list[float]] = {}
        if missing:
            slices = max(1, min(parallelism, -(-len(missing) // EMBED_TEXTS_PER_PARTITION)))
            frame = spark.createDataFrame([(t,) for t in missing], "embed_text string")
            embedded = frame.repartition(slices).mapInPandas(
                embed_batches(
                    settings.embedding_model,
                    settings.embedding_batch_size,
                    settings.embedding_device,
                ),
                "embed_text string, vector array<float>",
            )
            vectors_table = embedded.toArrow()
            fresh = dict(
                zip(
                    vectors_table.column("embed_text").to_pylist(),
                    vectors_table.column("vector").to_pylist(),
                    strict=True,
                )
            )
            remember_vectors(settings, fresh)
        summary |= {"embedded_texts": len(missing), "cached_texts": len(known)}
        summary["embed_s"] = round(time.perf_counter() - dead - summary["documents_s"], 3)
        rows = table.to_pylist()
        vectors = known | fresh
    built = time.perf_counter()
    chunks = [chunk_from_row(row, vectors[row["embed_text"]]) for row in rows]
    summary |= {"documents": len(chunks), "build_s": round(built - dead, 3)}
    if args.output:
        os.makedirs(args.output, exist_ok=True)
        with open(os.path.join(args.output, f"{day.isoformat()}.jsonl"), "w") as handle:
            for chunk in chunks:
                record = chunk.to_record()
                record.pop("vector")
                handle.write(json.dumps(record, default=str, ensure_ascii=False) + "\n")
    used = summary.get("records", {})
    kinds = sorted(k.split("_")[0] for k, n in used.items() if k.endswith("_used") and n)
    if args.dry_run:
        from opsassist.pipelines.history_index import validate_documents

        if chunks:
            validate_documents(chunks, len(chunks[0].vector or []))
        summary["indexed"] = "dry run: validated, not indexed"
    else:
        store = get_index_store(settings)
        alias = args.index or target_alias(settings)
        summary["index"] = index_day(settings, store, chunks, scope, kinds, alias=alias)
    summary["seconds"] = round(time.perf_counter() - timer, 3)
    log.info("history day done", extra=summary)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from opsassist.logs import configure_logging
    from opsassist.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    spark = session(
        args.master or settings.history_spark_master,
        settings.history_split_mb,
        ui=settings.history_spark_ui,
    )
    if args.master and args.master != spark.sparkContext.master:
        print(
            f"signals_history: --master {args.master} after the script is ignored under "
            f"spark-submit (running on {spark.sparkContext.master}): give it to spark-submit",
            file=sys.stderr,
        )
    try:
        day = args.date
        while day <= args.end_date:
            summary = process_day(spark, day, args)
            print(json.dumps(summary, default=str), flush=True)
            day += dt.timedelta(days=1)
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The history job's driver JVM: its options, and a class-data archive that makes it start faster.

A cold Spark driver spends seconds of one core loading, verifying and interpreting Spark's and
Scala's classes, before the first task and again while the first query of a day is planned: time
that no number of cores shortens. An application class-data sharing archive (AppCDS, a JDK
"dynamic archive") holds the classes a run loaded, parsed and verified, and the next JVMs map it
instead: measured on the 1M-line benchmark day, the first Spark stage starts ~3.5 s sooner and the
parse phase is ~2 s shorter (the README's "Reprocessing history").

The archive is made once per environment by a short training run of the history job itself on a
small generated day (:func:`ensure_class_archive`, ~45 s; the DAG's first task, the benchmark and
``opsassist history-java-options`` call it), written under another name and renamed when
complete, so a JVM never maps a half-written file. It is valid only for the JDK and the Spark jars
it was made with; its file name carries both, so an upgrade makes a new one. A JVM given an archive
it cannot use ignores it (``-Xshare:auto``, the default) and starts as before: the archive is an
optimisation, never a reason for a day to fail.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from opsassist.logs import get_logger
from opsassist.settings import PROJECT_ROOT, Settings

JOB = PROJECT_ROOT / "spark_jobs" / "signals_history.py"
TRAINING_DAY = dt.date(2026, 1, 15)
TRAINING_TIMEOUT_SECONDS = 900
PROGRESS_SECONDS = 15.0

log = get_logger(__name__)


def spark_submit() -> str:
    """spark-submit of this environment (pip's pyspark puts it beside the interpreter)."""
    beside = Path(sys.executable).parent / "spark-submit"
    return str(beside) if beside.exists() else (shutil.which("spark-submit") or "spark-submit")


def java_home() -> Path | None:
    """The JDK spark-submit starts: ``JAVA_HOME``, else the ``java`` on the PATH."""
    if os.environ.get("JAVA_HOME"):
        return Path(os.environ["JAVA_HOME"]).resolve()
    java = shutil.which("java")
    return Path(java).resolve().parents[1] if java else None


def archive_key(spark_version: str, jdk: Path | None) -> str:
    """A short digest of what an archive is bound to: the Spark jars' version and the JDK (its
    path and its ``release`` file, which names its exact version)."""
    release = ""
    if jdk is not None and (jdk / "release").is_file():
        release = (jdk / "release").read_text(encoding="utf-8", errors="replace")
    material = "\n".join((spark_version, str(jdk), release))
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def class_archive_path(settings: Settings) -> Path:
    import pyspark

    key = archive_key(pyspark.__version__, java_home())
    folder = Path(settings.history_class_archive_dir or settings.data_dir / "spark")
    return folder.expanduser().resolve() / f"history-driver-{key}.jsa"


def driver_java_options(settings: Settings, archive: Path | None = None) -> str:
    """``OPSASSIST_HISTORY_DRIVER_JAVA_OPTIONS``, plus the class archive when there is one."""
    options = settings.history_driver_java_options.split()
    if archive is not None and archive.is_file():
        options.append(f"-XX:SharedArchiveFile={archive}")
    return " ".join(options)


def write_training_archive(root: Path, day: dt.date = TRAINING_DAY) -> Path:
    """A small archive of ``day`` from the bundled sample spool (raw logs, JSON metrics and
    events), laid out as the history job reads it; returns its root."""
    from opsassist.sources.spool import seed_spool

    seed = root / "seed"
    seed_spool(seed, dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC))
    archive = root / "archive"
    for path in sorted(p for p in seed.rglob("*") if p.is_file()):
        kind, *inner = path.relative_to(seed).parts
        target = archive.joinpath(kind, f"date={day.isoformat()}", *inner)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, target)
    return archive


def _run_with_progress(command: list[str], env: dict[str, str], started: float) -> tuple[int, str]:
    """Run the training job; one progress line every PROGRESS_SECONDS while it runs (so the first
    run's task log is not silent for a minute or more). (returncode, stderr)."""
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        while True:
            try:
                _, stderr = process.communicate(timeout=PROGRESS_SECONDS)
                return process.returncode, stderr
            except subprocess.TimeoutExpired:
                elapsed = time.perf_counter() - started
                if elapsed > TRAINING_TIMEOUT_SECONDS:
                    process.kill()
                    process.communicate()
                    raise
                log.info(
                    "class archive: training run still going",
                    extra={"seconds": round(elapsed, 1)},
                )


def ensure_class_archive(settings: Settings) -> Path | None:
    """The class archive for this environment, made by a training run when it is missing.

    None when ``OPSASSIST_HISTORY_CLASS_ARCHIVE`` is off or the training run failed (logged; the
    job then runs without one).
    """
    if not settings.history_class_archive:
        return None
    target = class_archive_path(settings)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="opsassist-cds-", dir=target.parent) as tmp:
        root = Path(tmp)
        partial = root / target.name
        env = os.environ | {
            "OPSASSIST_DATA_DIR": str(root / "data"),
            "OPSASSIST_HISTORY_DEADLETTER_URI": str(root / "deadletter"),
            "OPSASSIST_INDEX_BACKEND": "embedded",
            "OPSASSIST_LOG_LEVEL": "WARNING",
            "PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON", sys.executable),
        }
        options = f"{driver_java_options(settings)} -XX:ArchiveClassesAtExit={partial}".strip()
        command = [spark_submit(), "--master", "local[2]", "--driver-java-options", options]
        command += [str(JOB), "--date", TRAINING_DAY.isoformat(), "--dry-run"]
        command += ["--archive", str(write_training_archive(root))]
        log.info(
            "making the class archive: a training run of the history job on a small sample day "
            "(first run in this environment, ~45 s)",
            extra={"path": str(target)},
        )
        try:
            returncode, stderr = _run_with_progress(command, env, started)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("class archive not made", extra={"reason": str(exc)})
            return None
        if returncode != 0 or not partial.is_file():
            log.warning(
                "class archive not made",
                extra={"returncode": returncode, "stderr": stderr[-2000:]},
            )
            return None
        os.replace(partial, target)  # complete before any JVM can see it
    log.info(
        "class archive made",
        extra={"path": str(target), "seconds": round(time.perf_counter() - started, 1)},
    )
    return target

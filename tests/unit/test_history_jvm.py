"""The history driver's JVM options and class-data archive: what the archive is bound to, where it
lives, when it is given to the JVM, and the training day it is made from. (Making one with
spark-submit is in tests/integration/test_spark_history.py.)"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from opsassist.pipelines.history import describe_path
from opsassist.pipelines.history_jvm import (
    archive_key,
    class_archive_path,
    driver_java_options,
    ensure_class_archive,
    java_home,
    write_training_archive,
)
from opsassist.settings import Settings


def _jdk(root: Path, version: str) -> Path:
    root.mkdir(parents=True)
    (root / "release").write_text(f'JAVA_VERSION="{version}"\n')
    return root


def test_archive_key_follows_spark_and_the_jdk(tmp_path: Path) -> None:
    jdk = _jdk(tmp_path / "jdk-17", "17.0.15")
    key = archive_key("4.3.0", jdk)
    assert key == archive_key("4.3.0", jdk) and len(key) == 16
    assert archive_key("4.3.1", jdk) != key  # other Spark jars
    assert archive_key("4.3.0", _jdk(tmp_path / "jdk-21", "21.0.5")) != key  # another JDK
    (jdk / "release").write_text('JAVA_VERSION="17.0.16"\n')  # the same path, updated in place
    assert archive_key("4.3.0", jdk) != key
    assert archive_key("4.3.0", None) != key  # no JDK found: still a key, another one


def test_java_home_prefers_java_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    jdk = _jdk(tmp_path / "jdk", "17.0.15")
    monkeypatch.setenv("JAVA_HOME", str(jdk))
    assert java_home() == jdk.resolve()
    monkeypatch.delenv("JAVA_HOME")
    found = java_home()  # the java on the PATH (the machine has a JDK for Spark)
    assert found is not None and (found / "bin" / "java").exists()


def test_archive_path_default_and_setting(tmp_path: Path) -> None:
    default = class_archive_path(Settings(data_dir=tmp_path / "data"))
    assert default.parent == (tmp_path / "data" / "spark").resolve()
    assert default.name.startswith("history-driver-") and default.suffix == ".jsa"
    shared = class_archive_path(
        Settings(data_dir=tmp_path / "data", history_class_archive_dir=str(tmp_path / "cds"))
    )
    assert shared == (tmp_path / "cds").resolve() / default.name


def test_options_name_the_archive_only_when_it_exists(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, history_driver_java_options="-XX:TieredStopAtLevel=1")
    archive = tmp_path / "a.jsa"
    assert driver_java_options(settings) == "-XX:TieredStopAtLevel=1"
    assert driver_java_options(settings, archive) == "-XX:TieredStopAtLevel=1"  # not made
    archive.write_bytes(b"x")
    assert driver_java_options(settings, archive) == (
        f"-XX:TieredStopAtLevel=1 -XX:SharedArchiveFile={archive}"
    )
    bare = Settings(data_dir=tmp_path, history_driver_java_options="")
    assert driver_java_options(bare, archive) == f"-XX:SharedArchiveFile={archive}"


def test_ensure_uses_an_existing_archive_and_respects_the_switch(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    target = class_archive_path(settings)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"made earlier")
    stamp = target.stat().st_mtime_ns
    assert ensure_class_archive(settings) == target  # no training run when it is there
    assert target.stat().st_mtime_ns == stamp
    off = Settings(data_dir=tmp_path, history_class_archive=False)
    assert ensure_class_archive(off) is None


def test_training_archive_is_a_day_the_job_reads(tmp_path: Path) -> None:
    day = dt.date(2026, 1, 15)
    archive = write_training_archive(tmp_path, day)
    files = sorted(p for p in archive.rglob("*") if p.is_file())
    kinds = {describe_path(str(p))[0] for p in files if not p.name.startswith(("LICENSE", "CIT"))}
    assert kinds == {"log", "metric", "event"}  # every reader and pass the job has
    assert all(describe_path(str(p))[2] == day for p in files)
    logs = [p for p in files if p.suffix == ".log"]
    assert len(logs) >= 5 and all(os.path.getsize(p) > 0 for p in logs)
    assert (archive / "logs" / f"date={day}" / "LICENSE").is_file()  # licence kept beside
    first = (archive / "logs" / f"date={day}" / "Linux" / "Linux.log").read_text().splitlines()[0]
    assert first.startswith("Jan 15")  # syslog header retimed into the day

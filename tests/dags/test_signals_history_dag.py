"""The history DAG via ``dag.test()``: one run per date (data interval = that day), each through
SparkSubmitOperator and spark-submit in local mode (archived files read whole and split into lines
by the workers, the default; the spark-submit test reads them line by line). Each day's documents
are in the index once, exactly the streaming path's; re-running a day adds nothing."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from tests.integration.history_fixtures import build_two_days
from tests.integration.test_spark_history import index_texts, spark_env, streamed

DAGS = Path(__file__).resolve().parents[2] / "dags"


@pytest.mark.slow
def test_history_dag_backfills_two_dates_once(
    airflow_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    history_class_archive: Path,
) -> None:
    today = dt.datetime.now(dt.UTC).date()
    days = build_two_days(tmp_path, today - dt.timedelta(days=2), per_day=60)
    expected, _ = streamed(days, tmp_path / "stream")
    data_dir = tmp_path / "spark"
    env = spark_env(data_dir, days.archive)
    env["AIRFLOW_CONN_SPARK_DEFAULT"] = json.dumps({"conn_type": "spark", "host": "local[2]"})
    env["OPSASSIST_HISTORY_CLASS_ARCHIVE_DIR"] = str(history_class_archive.parent)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from opsassist.settings import get_settings

    get_settings.cache_clear()
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(str(DAGS)).get_dag("signals_history")
    # no catch-up on a new install unless OPSASSIST_HISTORY_START_DATE says from when
    assert dag is not None and not dag.catchup
    submit = dag.get_task("reprocess_day")
    assert submit.task_type == "SparkSubmitOperator"
    assert submit.upstream_task_ids == {"driver_jvm"}
    conf = submit.conf  # type: ignore[attr-defined]
    assert conf == {"spark.driver.extraJavaOptions": "{{ ti.xcom_pull(task_ids='driver_jvm') }}"}

    def run(day: dt.date) -> dict[str, str]:
        start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
        # dag.test infers a manual run's interval: the day that ends at its logical date
        dag_run = dag.test(logical_date=start + dt.timedelta(days=1))
        assert dag_run.state == "success", [ti.state for ti in dag_run.get_task_instances()]
        # the driver got the default options and the shared class archive
        assert _driver_options(dag_run.run_id) == (
            f"-XX:TieredStopAtLevel=1 -XX:SharedArchiveFile={history_class_archive}"
        )
        assert (dag_run.data_interval_start, dag_run.data_interval_end) == (
            start,
            start + dt.timedelta(days=1),
        )
        return index_texts(data_dir)

    first, second = days.days
    after_first = run(first)
    assert after_first and all(t for t in after_first.values())
    assert {i for i in expected if i in after_first} == set(after_first)
    sections = {dt.date.fromisoformat(text_day) for text_day in _days(data_dir)}
    assert sections == {first}  # the run handled its own data interval only
    letters = (data_dir / "history" / "deadletter" / f"date={first}").glob("part-*")
    reasons = [json.loads(line)["reason"] for p in letters for line in p.read_text().splitlines()]
    assert sorted(reasons) == ["binary content", "invalid json"]  # as the streaming path
    after_second = run(second)
    assert after_second == expected  # both days, each document once, as streamed
    assert set(_days(data_dir)) == {first.isoformat(), second.isoformat()}
    assert run(first) == expected  # a re-run replaces in place: nothing added, nothing lost


def _driver_options(run_id: str) -> str:
    """What the run's driver_jvm task returned (the reprocess task's JVM options)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        query = XComModel.get_many(
            run_id=run_id, dag_ids="signals_history", task_ids="driver_jvm", key="return_value"
        )
        row = session.scalars(query).one()
        return str(XComModel.deserialize_value(row))


def _days(data_dir: Path) -> list[str]:
    """The day of every indexed document's window (its section starts with it)."""
    from opsassist.index.embedded import EmbeddedIndexStore

    store = EmbeddedIndexStore(data_dir / "index")
    version = store.current_version("signals")
    assert version is not None
    ids = sorted(i for group in store.ids_by_source(version).values() for i in group)
    return [chunk.section[:10] for chunk in store.fetch(version, ids)]

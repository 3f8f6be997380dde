"""The signal DAG via ``dag.test()`` on the real Kafka broker and Prometheus, plus the spool:
loghub samples (times rewritten to now, 5% malformed messages) -> signal index -> the CLI finds
them with ``--index signals --since 1h``; a replay of the same offsets adds nothing."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_service, service_port
from tests.dags.index_dag_runs import search as search_cli
from tests.integration.test_signals_pipeline import produce_loghub, reset_offsets

DAGS = Path(__file__).resolve().parents[2] / "dags"


def cli_search(query: str, data_dir: Path, *extra: str) -> list[dict[str, Any]]:
    return search_cli(
        data_dir, query, "--index", "signals", "--since", "1h", "--json", "--k", "5", *extra
    )


def totals(reports: Path, source: str, since_line: int = 0) -> dict[str, Any]:
    rows = [json.loads(line) for line in reports.read_text().splitlines()[since_line:]]
    rows = [r for r in rows if r["source"] == source]
    rejected: dict[str, int] = {}
    for row in rows:
        for reason, n in row["rejected"].items():
            rejected[reason] = rejected.get(reason, 0) + n
    return {
        "accepted": sum(r["accepted"] for r in rows),
        "replayed": sum(r["replayed"] for r in rows),
        "upserted": sum(r["upserted"] for r in rows),
        "rejected": rejected,
        "freshness_p95_s": [r["freshness_p95_s"] for r in rows],
    }


@pytest.mark.slow
@pytest.mark.services
def test_signals_dag_ingests_kafka_spool_and_prometheus(
    airflow_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kafka_port = service_port("kafka", 19092)
    require_service("kafka", kafka_port)
    prometheus_port = service_port("prometheus", 19090)
    require_service("prometheus", prometheus_port)
    bootstrap = f"127.0.0.1:{kafka_port}"
    tag = uuid.uuid4().hex[:8]
    logs_topic, group = f"dag-{tag}.logs", f"dag-{tag}"
    data_dir = tmp_path / "data"
    jump = int(time.time()) - 40
    env = {
        "OPSASSIST_DATA_DIR": str(data_dir),
        "OPSASSIST_SIGNALS_SOURCES": "kafka,spool,prometheus",
        "OPSASSIST_SIGNALS_SPOOL_PATH": str(tmp_path / "spool"),
        "OPSASSIST_SIGNALS_LOG_TOPICS": logs_topic,
        "OPSASSIST_SIGNALS_METRIC_TOPICS": f"dag-{tag}.metrics",
        "OPSASSIST_SIGNALS_EVENT_TOPICS": f"dag-{tag}.events",
        "OPSASSIST_SIGNALS_PROMETHEUS_URL": f"http://127.0.0.1:{prometheus_port}",
        "OPSASSIST_SIGNALS_PROMQL": json.dumps(
            {"checkout_errors": f"vector(100 * (time() > bool {jump}))"}
        ),
        "OPSASSIST_SIGNALS_WINDOW_SECONDS": "300",
        "OPSASSIST_SIGNALS_METRIC_STEP_SECONDS": "5",
        "OPSASSIST_SIGNALS_METRIC_BASELINE_SECONDS": "600",
        "OPSASSIST_CACHE_BACKEND": "memory",
        "OPSASSIST_INDEX_BACKEND": "embedded",
        "AIRFLOW_CONN_OPSASSIST_KAFKA": json.dumps(
            {
                "conn_type": "kafka",
                "extra": {
                    "bootstrap.servers": bootstrap,
                    "group.id": group,
                    "enable.auto.commit": "false",
                    "auto.offset.reset": "earliest",
                    "enable.partition.eof": "true",
                },
            }
        ),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from opsassist.settings import get_settings
    from opsassist.sources.spool import seed_spool

    get_settings.cache_clear()
    now = dt.datetime.now(dt.UTC)
    seed_spool(tmp_path / "spool", now)
    for folder in (tmp_path / "spool" / "logs").iterdir():  # the loghub part comes via Kafka
        if folder.is_dir() and folder.name != "payments":
            shutil.rmtree(folder)
    good, bad = produce_loghub(bootstrap, logs_topic, 60, now)

    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(str(DAGS)).get_dag("signals_ingest")
    assert dag is not None
    assert type(dag.timetable).__name__ == "AssetOrTimeSchedule"  # Kafka watcher + 30 s tick
    run = dag.test()
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "success", states
    enabled = ("ingest_kafka", "ingest_spool", "ingest_prometheus")
    assert {states[t] for t in enabled} == {"success"}, states
    assert {s for t, s in states.items() if t not in enabled} == {"skipped"}, states

    reports = data_dir / "signals" / "reports" / "batches.jsonl"
    kafka = totals(reports, "kafka")
    assert kafka["accepted"] == good and kafka["rejected"] == bad
    assert totals(reports, "spool")["accepted"] == 61 + 6 + 280  # JSON logs, events, samples
    assert totals(reports, "prometheus")["upserted"] >= 1

    # the acceptance query, through the CLI
    ssh = cli_search("Failed password for invalid user", data_dir)
    assert ssh[0]["source"].startswith("OpenSSH/") and ssh[0]["source_type"] == "log"
    assert "Failed password for invalid user <*>" in ssh[0]["text"]
    assert ssh[0]["timestamp"] and ssh[0]["end_timestamp"]
    # the other sources, through the same search function in this process
    from opsassist.index.base import Filters
    from opsassist.search import search

    settings = get_settings()
    since = Filters(since=now - dt.timedelta(hours=1), source_types=("metric",))
    metric = search("checkout_errors anomaly", settings=settings, target="signals", filters=since)
    assert metric[0].source == "checkout_errors" and "PromQL: vector(" in metric[0].text
    since = Filters(since=now - dt.timedelta(hours=1), source_types=("event",))
    crash = search("Back-off restarting", settings=settings, target="signals", filters=since)
    assert crash[0].source == "payments/Pod/payments-api-7f9c6d5b8-x2lqk"

    # replay the same offsets: every message is recognised, no document is added or changed
    from opsassist.index.embedded import EmbeddedIndexStore

    store = EmbeddedIndexStore(data_dir / "index")
    version = store.current_version("signals")
    assert version is not None

    def replayable_ids() -> set[str]:
        # the Prometheus series is re-queried on every run and its window moves with the clock,
        # so only the Kafka and spool documents must stay exactly as they were
        by_source = store.ids_by_source(version)
        return {i for source, ids in by_source.items() if source != "checkout_errors" for i in ids}

    before = replayable_ids()
    reset_offsets(bootstrap, group, [logs_topic])
    lines = len(reports.read_text().splitlines())
    second = dag.test()
    assert second.state == "success"
    replay = totals(reports, "kafka", since_line=lines)
    assert replay["replayed"] == good + sum(bad.values()) and replay["upserted"] == 0
    after = replayable_ids()
    assert after == before
    get_settings.cache_clear()


@pytest.mark.slow
@pytest.mark.services
def test_signals_dag_reads_kubernetes_and_opensearch_logs_through_airflow_connections(
    airflow_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ingest_kube`` with a cncf-kubernetes-type connection (the read-only service account's
    kubeconfig) and ``ingest_opensearch_logs`` with the OpenSearch provider's connection, on
    the real kube-apiserver and OpenSearch node; then the OpenSearch connection points at a
    closed port: the task fails (and is retried), its error names the node, and the checkpoint
    is what the good run left."""
    from opensearchpy import OpenSearch

    from tests.conftest import free_port
    from tests.integration.agent_cluster import KUBE, token
    from tests.integration.test_kube_source import Cluster
    from tests.integration.test_opensearch_logs_source import bulk, ecs_documents

    os_port = service_port("opensearch", 19200)
    require_service("opensearch", os_port)
    kube_port = service_port("kube_apiserver", 16443)
    require_service("kube-apiserver", kube_port)
    cluster = Cluster(f"sig-dag-{uuid.uuid4().hex[:6]}")
    prefix = f"test-dag-oslogs-{uuid.uuid4().hex[:8]}-"
    client = OpenSearch(hosts=[f"http://127.0.0.1:{os_port}"], timeout=60)
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "local",
                "cluster": {
                    "server": f"https://127.0.0.1:{kube_port}",
                    "certificate-authority": str(KUBE / "pki" / "ca.crt"),
                },
            }
        ],
        "users": [{"name": "reader", "user": {"token": token("reader")}}],
        "contexts": [{"name": "reader", "context": {"cluster": "local", "user": "reader"}}],
        "current-context": "reader",
    }
    data_dir = tmp_path / "data"
    env = {
        "OPSASSIST_DATA_DIR": str(data_dir),
        "OPSASSIST_SIGNALS_SOURCES": "kube,opensearch_logs",
        "OPSASSIST_SIGNALS_KUBE_CONN_ID": "opsassist_kube_read",
        "OPSASSIST_SIGNALS_KUBE_NAMESPACES": cluster.namespace,
        "OPSASSIST_SIGNALS_KUBE_WATCH_SECONDS": "5",
        "OPSASSIST_SIGNALS_OPENSEARCH_LOGS_CONN_ID": "opsassist_logs",
        "OPSASSIST_SIGNALS_OPENSEARCH_LOGS_PATTERNS": f"{prefix}logs-*",
        "OPSASSIST_CACHE_BACKEND": "memory",
        "OPSASSIST_INDEX_BACKEND": "embedded",
        "AIRFLOW_CONN_OPSASSIST_KUBE_READ": json.dumps(
            {"conn_type": "kubernetes", "extra": {"kube_config": json.dumps(kubeconfig)}}
        ),
        "AIRFLOW_CONN_OPSASSIST_LOGS": json.dumps(
            {"conn_type": "opensearch", "host": "127.0.0.1", "port": os_port}
        ),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from opsassist.settings import get_settings

    get_settings.cache_clear()
    try:
        cluster.crash_looping_pod("cart-api-6f7d8c9b5-q2w4e")
        now = dt.datetime.now(dt.UTC)
        bulk(client, f"{prefix}logs-app-1", ecs_documents(300, now, span_s=120))

        from airflow.dag_processing.dagbag import DagBag

        dag = DagBag(str(DAGS)).get_dag("signals_ingest")
        assert dag is not None
        assert type(dag.timetable).__name__ == "DeltaTriggerTimetable"  # no Kafka, no watcher
        run = dag.test()
        states = {ti.task_id: ti.state for ti in run.get_task_instances()}
        assert run.state == "success", states
        mine = ("ingest_kube", "ingest_opensearch_logs")
        assert {states[t] for t in mine} == {"success"}, states
        assert {s for t, s in states.items() if t not in mine} == {"skipped"}, states
        reports = data_dir / "signals" / "reports" / "batches.jsonl"
        assert totals(reports, "kube")["accepted"] == 3  # CrashLoopBackOff, OOMKilled, BackOff
        assert totals(reports, "opensearch_logs")["accepted"] == 300

        def checkpoint() -> list[tuple[Any, ...]]:
            import sqlite3

            with sqlite3.connect(data_dir / "signals" / "opensearch-logs.sqlite") as db:
                rows = "SELECT pattern, watermark_ms, next_seq FROM checkpoint"
                seen = "SELECT count(*) FROM seen"
                return [*db.execute(rows), *db.execute(seen)]

        saved = checkpoint()
        assert saved[0][2] == 300

        # the logs cluster unreachable: a clear error, the task fails and is retried
        dead = f"127.0.0.1:{free_port()}"
        monkeypatch.setenv(
            "AIRFLOW_CONN_OPSASSIST_LOGS",
            json.dumps({"conn_type": "opensearch", "host": "127.0.0.1", "port": int(dead[10:])}),
        )
        bulk(client, f"{prefix}logs-app-1", ecs_documents(20, now, span_s=5))
        from opsassist.pipelines import signals
        from opsassist.sources.opensearch_logs import OpenSearchLogsError
        from opsassist.stores import get_index_store

        settings = get_settings()
        with pytest.raises(OpenSearchLogsError, match=f"OpenSearch {dead} unreachable"):
            signals.stage_ingest(
                settings, "manual", "opensearch_logs", get_index_store(settings), airflow=True
            )
        assert dag.default_args["retries"] == 3
        failed = dag.test()
        states = {ti.task_id: ti.state for ti in failed.get_task_instances()}
        assert states["ingest_opensearch_logs"] in ("up_for_retry", "failed"), states
        assert states["ingest_kube"] == "success", states
        assert checkpoint() == saved
    finally:
        client.indices.delete(index=f"{prefix}*", ignore_unavailable=True)
        client.close()
        cluster.close()
        get_settings.cache_clear()

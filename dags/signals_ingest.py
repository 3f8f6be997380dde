"""Signal ingest: Kafka topics, the spool folder, Prometheus, the Kubernetes API (Events and pod
status) and log indices in OpenSearch -> the signal index (alias ``OPSASSIST_SIGNAL_INDEX``,
default ``signals``).

Each source is one task that drains it batch by batch: parse (JSON and raw logs, metric samples,
Kubernetes events; bad records dead-lettered with their reason) -> windows -> signal documents
(log templates per service and window, metric anomaly summaries, event digests) -> embed ->
validate (Great Expectations suite ``signal_documents``) -> upsert into today's version -> commit
the source's offsets. Wiring only: the steps are ``opsassist.pipelines.signals``.

Scheduling: event-driven for Kafka, a 30-second timetable for what cannot push.

* Kafka: the schedule holds an ``Asset`` with an ``AssetWatcher`` on the common-messaging
  ``MessageQueueTrigger`` (scheme ``kafka``; the Kafka provider runs it in the triggerer as an
  ``AwaitMessageTrigger``), so a message on any log, metric or event topic creates an asset
  event and a run within seconds. The watcher is a doorbell, not the data path: it has its own
  connection and consumer group (``OPSASSIST_SIGNALS_KAFKA_WATCH_CONN_ID``), commits its own
  offsets and raises one event per message, which the scheduler folds into the next run
  (``max_active_runs=1``). ``ingest_kafka`` reads the topics with the ingest connection
  (``OPSASSIST_SIGNALS_KAFKA_CONN_ID``, through the provider's consumer hook,
  ``enable.auto.commit=false``) and commits only after a batch is indexed.
* Kubernetes (``ingest_kube``): list + watch of Events and pods with the read-only identity
  (the cncf-kubernetes connection ``OPSASSIST_SIGNALS_KUBE_CONN_ID``, else the read token or the
  kubeconfig), resumed from the last resourceVersion, re-listed on 410 Gone.
* OpenSearch logs (``ingest_opensearch_logs``): index patterns read by timestamp with a point in
  time and ``search_after`` (the OpenSearch provider's connection
  ``OPSASSIST_SIGNALS_OPENSEARCH_LOGS_CONN_ID``), a checkpoint per pattern.
* The spool, Prometheus, Kubernetes and OpenSearch do not ring the doorbell, and a stopped
  triggerer must not stop ingestion, so an
  ``AssetOrTimeSchedule`` adds a ``DeltaTriggerTimetable`` of 30 s: every source is read at
  least every 30 s. Without ``kafka`` in ``OPSASSIST_SIGNALS_SOURCES`` the schedule is the
  30-second timetable alone (no watcher to start).

After downtime nothing is skipped and nothing is doubled: missed ticks are not replayed
(``catchup=False``) because every run drains each source from its committed position (Kafka
group offsets, spool byte offsets, the last Prometheus step) for up to
``OPSASSIST_SIGNALS_RUN_BUDGET_SECONDS`` and the next run goes on; records already applied are
skipped by offset and document ids are deterministic. Sources are separate tasks so a broken
broker does not stop the spool; a file lock serialises their writes. A task whose source is not
in ``OPSASSIST_SIGNALS_SOURCES`` is skipped.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Asset, AssetOrTimeSchedule, AssetWatcher, DeltaTriggerTimetable, dag, task

from opsassist.settings import get_settings

DEFAULT_ARGS = {
    "owner": "sre-platform",
    "retries": 3,
    "retry_delay": timedelta(seconds=15),
}


def _schedule() -> Any:
    settings = get_settings()
    tick = DeltaTriggerTimetable(timedelta(seconds=30))
    sources = {s.strip() for s in settings.signals_sources.split(",")}
    if "kafka" not in sources:
        return tick
    from airflow.providers.common.messaging.triggers.msg_queue import MessageQueueTrigger

    topics = [
        t.strip()
        for value in (
            settings.signals_log_topics,
            settings.signals_metric_topics,
            settings.signals_event_topics,
        )
        for t in value.split(",")
        if t.strip()
    ]
    trigger = MessageQueueTrigger(
        scheme="kafka",
        topics=topics,
        apply_function="opsassist.sources.kafka.wake_up",
        kafka_config_id=settings.signals_kafka_watch_conn_id,
        poll_timeout=1,
        poll_interval=1,
    )
    asset = Asset(
        "opsassist-signals-kafka",
        watchers=[AssetWatcher(name="opsassist-signals-kafka-watcher", trigger=trigger)],
    )
    return AssetOrTimeSchedule(timetable=tick, assets=[asset])


def _ingest(source: str) -> dict[str, Any]:
    from airflow.sdk.exceptions import AirflowSkipException

    from opsassist.pipelines import signals
    from opsassist.pipelines.context import task_scope
    from opsassist.stores import get_index_store

    with task_scope() as (settings, run_id):
        if source not in signals.enabled_sources(settings):
            raise AirflowSkipException(f"{source} is not in OPSASSIST_SIGNALS_SOURCES")
        return signals.stage_ingest(
            settings, run_id, source, get_index_store(settings), airflow=True
        )


@dag(
    dag_id="signals_ingest",
    schedule=_schedule(),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=15),
    default_args=DEFAULT_ARGS,
    tags=["signals", "kafka", "kubernetes", "opensearch", "index", "streaming"],
    description="Kafka, spool, Prometheus, Kubernetes and OpenSearch logs -> the signal index, "
    "every 30 s and on new messages.",
    doc_md=__doc__,
)
def signals_ingest() -> None:
    @task
    def ingest_kafka() -> dict[str, Any]:
        return _ingest("kafka")

    @task
    def ingest_spool() -> dict[str, Any]:
        return _ingest("spool")

    @task
    def ingest_prometheus() -> dict[str, Any]:
        return _ingest("prometheus")

    @task
    def ingest_kube() -> dict[str, Any]:
        return _ingest("kube")

    @task
    def ingest_opensearch_logs() -> dict[str, Any]:
        return _ingest("opensearch_logs")

    ingest_kafka()
    ingest_spool()
    ingest_prometheus()
    ingest_kube()
    ingest_opensearch_logs()


signals_ingest()

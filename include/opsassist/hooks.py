"""Clients from Airflow connections, for code that runs inside Airflow tasks.

Inside a task, credentials belong to Airflow connections (secrets backend, UI, ``AIRFLOW_CONN_*``),
so the library asks the provider hooks for its clients there; outside Airflow (CLI, chat server)
it uses the ``OPSASSIST_*`` settings. Airflow is imported lazily: the library stays importable
without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opensearchpy import OpenSearch


def in_airflow_task() -> bool:
    """True while an Airflow task is executing in this process (a task context exists)."""
    try:
        from airflow.sdk import get_current_context
    except ImportError:
        return False
    try:
        get_current_context()
    except Exception:  # no context: "Current context was requested but no context was found!"
        return False
    return True


def opensearch_client(conn_id: str) -> OpenSearch:
    """The opensearch-py client of an Airflow OpenSearch connection (provider hook)."""
    from airflow.providers.opensearch.hooks.opensearch import OpenSearchHook

    return OpenSearchHook(open_search_conn_id=conn_id, log_query=False).client


def kafka_consumer(conn_id: str, topics: Sequence[str]) -> Any:
    """A confluent-kafka ``Consumer`` of an Airflow Kafka connection, subscribed to ``topics``."""
    from airflow.providers.apache.kafka.hooks.consume import KafkaConsumerHook

    return KafkaConsumerHook(topics=list(topics), kafka_config_id=conn_id).get_consumer()

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


def _extra(extra: dict[str, Any], key: str) -> Any:
    """A connection extra, also under the provider's old ``extra__kubernetes__`` prefix."""
    value = extra.get(key)
    return value if value not in (None, "") else extra.get(f"extra__kubernetes__{key}")


def kube_api_client(conn_id: str) -> Any:
    """A Kubernetes ``ApiClient`` from an Airflow connection of the cncf-kubernetes provider's
    type (``in_cluster``, ``kube_config_path``, ``kube_config`` as JSON, ``cluster_context``,
    ``disable_verify_ssl``), read field by field: the provider itself is not installed (its
    releases pin the kubernetes client to one major, e.g. 10.7 to ``>=32,<33``; the lock has
    37.0.2 for the agent)."""
    import json

    from airflow.sdk import BaseHook
    from kubernetes import client, config

    extra = BaseHook.get_connection(conn_id).extra_dejson
    configuration = client.Configuration()
    context = _extra(extra, "cluster_context") or None
    inline = _extra(extra, "kube_config")
    if str(_extra(extra, "in_cluster")).lower() in ("true", "1"):
        config.load_incluster_config(client_configuration=configuration)
    elif inline:
        loaded = json.loads(inline) if isinstance(inline, str) else inline
        config.load_kube_config_from_dict(
            loaded, context=context, client_configuration=configuration
        )
    else:
        config.load_kube_config(
            config_file=_extra(extra, "kube_config_path") or None,
            context=context,
            client_configuration=configuration,
        )
    if str(_extra(extra, "disable_verify_ssl")).lower() in ("true", "1"):
        configuration.verify_ssl = False
    configuration.retries = 0
    return client.ApiClient(configuration)

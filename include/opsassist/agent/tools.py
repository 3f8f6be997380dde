"""The tools, declared as data: Prometheus, Kubernetes read views, search, and write actions.

Read tools run in the chat server with the read-only identity. Write tools have no handler that
changes anything: ``kube.change_for`` turns their arguments into the exact change, which becomes a
pending action (dry-run by the chat server, executed by the ops_action DAG after approval).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from opsassist.agent import kube
from opsassist.agent.registry import AllowList, Registry, Tool
from opsassist.documents import SearchHit
from opsassist.settings import Settings

SearchFn = Callable[[str, str, int], list[SearchHit]]  # (index alias, query, k) -> hits

NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"}
NAMESPACE = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"}
SELECTOR = {"type": "string", "pattern": r"^[A-Za-z0-9_./=!,\- ()]{0,200}$"}
KIND = {"type": "string", "enum": ["pods", "deployments", "replicasets", "events", "nodes"]}
PROMQL = {"type": "string", "minLength": 1, "maxLength": 500}


def _obj(props: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": props,
        "required": required,
        "additionalProperties": False,
    }


WRITE_TOOLS: dict[str, tuple[str, dict[str, Any], str]] = {
    "rollout_restart": (
        "Restart a Deployment's pods (kubectl rollout restart): patches the pod template.",
        _obj({"namespace": NAMESPACE, "name": NAME}, ["namespace", "name"]),
        "deployments",
    ),
    "scale_deployment": (
        "Set a Deployment's replica count (kubectl scale).",
        _obj(
            {
                "namespace": NAMESPACE,
                "name": NAME,
                "replicas": {"type": "integer", "minimum": 0, "maximum": 50},
            },
            ["namespace", "name", "replicas"],
        ),
        "deployments",
    ),
    "delete_pod": (
        "Delete one pod (its controller recreates it).",
        _obj({"namespace": NAMESPACE, "name": NAME}, ["namespace", "name"]),
        "pods",
    ),
    "cordon_node": (
        "Mark a node unschedulable (kubectl cordon).",
        _obj({"name": NAME}, ["name"]),
        "nodes",
    ),
    "uncordon_node": (
        "Mark a node schedulable again (kubectl uncordon).",
        _obj({"name": NAME}, ["name"]),
        "nodes",
    ),
}


def prometheus_get(base: str, path: str, params: dict[str, Any], timeout: float) -> Any:
    response = httpx.get(f"{base.rstrip('/')}{path}", params=params, timeout=timeout)
    body = response.json()
    if response.status_code >= 400 or body.get("status") != "success":
        raise RuntimeError(f"prometheus: {body.get('errorType')}: {body.get('error')}")
    return body["data"]


def format_vector(data: dict[str, Any], limit: int = 20) -> str:
    result = data.get("result") or []
    if not result:
        return "no data (empty result)"
    lines = []
    for series in result[:limit]:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(series["metric"].items()))
        if "values" in series:
            values = [float(v) for _, v in series["values"]]
            lines.append(
                f"{{{labels}}} points={len(values)} min={min(values):.4g} max={max(values):.4g} "
                f"last={values[-1]:.4g}"
            )
        else:
            lines.append(f"{{{labels}}} {float(series['value'][1]):.4g}")
    return "\n".join(lines)


def build_registry(settings: Settings, read_api: Any, search_fn: SearchFn | None) -> Registry:
    """Every tool, bound to this settings' Prometheus, the read identity and a search function."""
    prom = settings.signals_prometheus_url
    timeout = settings.agent_tool_timeout_seconds

    def instant(args: dict[str, Any]) -> str:
        params = {"query": args["query"]}
        return format_vector(prometheus_get(prom, "/api/v1/query", params, timeout))

    def range_query(args: dict[str, Any]) -> str:
        end = time.time()
        minutes = int(args.get("minutes", 30))
        params = {
            "query": args["query"],
            "start": end - minutes * 60,
            "end": end,
            "step": int(args.get("step_seconds", 60)),
        }
        return format_vector(prometheus_get(prom, "/api/v1/query_range", params, timeout))

    def search_tool(alias: str) -> Callable[[dict[str, Any]], list[SearchHit]]:
        def run(args: dict[str, Any]) -> list[SearchHit]:
            if search_fn is None:
                raise RuntimeError("search is not available here")
            return search_fn(alias, str(args["query"]), int(args.get("k", 3)))

        return run

    ns_name = {"namespace": NAMESPACE, "name": NAME}
    tools = [
        Tool(
            "prometheus_query",
            "Instant PromQL query on Prometheus.",
            _obj({"query": PROMQL}, ["query"]),
            "read",
            instant,
            timeout,
        ),
        Tool(
            "prometheus_range",
            "PromQL range query over the last N minutes (min/max/last per series).",
            _obj(
                {
                    "query": PROMQL,
                    "minutes": {"type": "integer", "minimum": 1, "maximum": 1440},
                    "step_seconds": {"type": "integer", "minimum": 5, "maximum": 3600},
                },
                ["query"],
            ),
            "read",
            range_query,
            timeout,
        ),
        Tool(
            "k8s_get",
            "List or get Kubernetes objects (kubectl get) in a namespace.",
            _obj(
                {"kind": KIND, "namespace": NAMESPACE, "name": NAME, "label_selector": SELECTOR},
                ["kind", "namespace"],
            ),
            "read",
            lambda a: kube.get(
                read_api, a["kind"], a["namespace"], a.get("name"), a.get("label_selector")
            ),
            timeout,
        ),
        Tool(
            "k8s_describe",
            "Describe one pod or deployment with its events (kubectl describe).",
            _obj({"kind": KIND, **ns_name}, ["kind", "namespace", "name"]),
            "read",
            lambda a: kube.describe(read_api, a["kind"], a["namespace"], a["name"]),
            timeout,
        ),
        Tool(
            "k8s_logs",
            "Last log lines of a pod's container (kubectl logs --tail).",
            _obj(
                {
                    "namespace": NAMESPACE,
                    "pod": NAME,
                    "container": NAME,
                    "tail_lines": {"type": "integer", "minimum": 1, "maximum": 200},
                    "previous": {"type": "boolean"},
                },
                ["namespace", "pod"],
            ),
            "read",
            lambda a: kube.logs(
                read_api,
                a["namespace"],
                a["pod"],
                a.get("container"),
                int(a.get("tail_lines", 50)),
                bool(a.get("previous", False)),
            ),
            timeout,
            kind="pods",
        ),
        Tool(
            "k8s_events",
            "Recent events of a namespace, or of one object (kubectl get events).",
            _obj({"namespace": NAMESPACE, "name": NAME}, ["namespace"]),
            "read",
            lambda a: kube.events(read_api, a["namespace"], a.get("name")),
            timeout,
            kind="events",
        ),
        Tool(
            "rollout_status",
            "Rollout status of a Deployment (kubectl rollout status).",
            _obj(ns_name, ["namespace", "name"]),
            "read",
            lambda a: kube.rollout_status(read_api, a["namespace"], a["name"]),
            timeout,
            kind="deployments",
        ),
        Tool(
            "search_runbooks",
            "Search the runbooks (hybrid BM25 + vector).",
            _obj(
                {
                    "query": {"type": "string", "minLength": 1, "maxLength": 300},
                    "k": {"type": "integer", "minimum": 1, "maximum": 5},
                },
                ["query"],
            ),
            "read",
            search_tool(settings.runbook_index),
            timeout,
        ),
        Tool(
            "search_signals",
            "Search recent log templates, metric anomalies and events.",
            _obj(
                {
                    "query": {"type": "string", "minLength": 1, "maxLength": 300},
                    "k": {"type": "integer", "minimum": 1, "maximum": 5},
                },
                ["query"],
            ),
            "read",
            search_tool(settings.signal_index),
            timeout,
        ),
    ]
    for name, (description, schema, kind) in WRITE_TOOLS.items():
        tools.append(
            Tool(name, description, schema, "write", _no_direct_write(name), timeout, kind=kind)
        )
    return Registry(tools, AllowList.from_settings(settings))


def _no_direct_write(name: str) -> Callable[[dict[str, Any]], Any]:
    def refuse(_: dict[str, Any]) -> Any:
        raise PermissionError(f"{name} is a write action: it only runs in the ops_action DAG")

    return refuse

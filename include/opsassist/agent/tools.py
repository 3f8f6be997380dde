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

from opsassist.agent import kuberead
from opsassist.agent.registry import AllowList, Registry, Tool
from opsassist.documents import SearchHit
from opsassist.settings import Settings

SearchFn = Callable[[str, str, int], list[SearchHit]]  # (index alias, query, k) -> hits

NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"}
NAMESPACE = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"}
SELECTOR = {"type": "string", "pattern": r"^[A-Za-z0-9_./=!,\- ()]{0,200}$"}
KIND = {"type": "string", "enum": [k for k in kuberead.RESOURCES if k != "endpoints"]}
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


PromGet = Callable[[str, dict[str, Any]], Any]  # (API path, params) -> the answer's data


def rollout_status(source: kuberead.Source, namespace: str, name: str) -> dict[str, Any]:
    """kubectl's rollout-status rule: done when the controller saw the latest generation and every
    replica is updated and available."""
    dep = kuberead.read(source, "deployments", namespace, name)
    spec, st, meta = dep.get("spec") or {}, dep.get("status") or {}, dep.get("metadata") or {}
    want = int(spec["replicas"]) if spec.get("replicas") is not None else 1
    observed: int | None = st.get("observedGeneration")
    seen = observed is not None and observed >= (meta.get("generation") or 0)
    done = (
        seen
        and int(st.get("updatedReplicas") or 0) >= want
        and int(st.get("availableReplicas") or 0) >= want
        and int(st.get("replicas") or 0) <= want
    )
    annotations = ((spec.get("template") or {}).get("metadata") or {}).get("annotations") or {}
    return {
        "deployment": f"{namespace}/{name}",
        "done": bool(done),
        "generation": meta.get("generation"),
        "observed_generation": observed,
        "replicas": want,
        "updated": st.get("updatedReplicas") or 0,
        "available": st.get("availableReplicas") or 0,
        "restarted_at": annotations.get("kubectl.kubernetes.io/restartedAt"),
    }


def build_registry(
    settings: Settings,
    read_api: Any,
    search_fn: SearchFn | None,
    *,
    source: kuberead.Source | None = None,
    prom: PromGet | None = None,
) -> Registry:
    """Every tool, bound to this settings' Prometheus, the read identity and a search function.
    ``source`` / ``prom`` replace the API server and Prometheus (recorded runs)."""
    timeout = settings.agent_tool_timeout_seconds
    if source is None and read_api is not None:
        source = kuberead.ApiSource(read_api)
    if prom is None:
        url = settings.signals_prometheus_url

        def prom_http(path: str, params: dict[str, Any]) -> Any:
            return prometheus_get(url, path, params, timeout)

        prom = prom_http
    kube: kuberead.Source = source if source is not None else _NoSource()
    holder: list[Registry] = []

    def instant(args: dict[str, Any]) -> str:
        assert prom is not None
        return format_vector(prom("/api/v1/query", {"query": args["query"]}))

    def range_query(args: dict[str, Any]) -> str:
        assert prom is not None
        end = time.time()
        minutes = int(args.get("minutes", 30))
        params = {
            "query": args["query"],
            "start": end - minutes * 60,
            "end": end,
            "step": int(args.get("step_seconds", 60)),
        }
        return format_vector(prom("/api/v1/query_range", params))

    def metric_names(args: dict[str, Any]) -> str:
        assert prom is not None
        names = [str(n) for n in prom("/api/v1/label/__name__/values", {}) or []]
        words = [w for w in str(args["match"]).lower().replace("_", " ").split() if w]
        hits = [n for n in names if all(w in n.lower() for w in words)]
        return "\n".join(hits[:30]) or f"no metric name contains {args['match']!r}"

    def find(args: dict[str, Any]) -> str:
        allowed = holder[0].allow.namespaces
        namespaces = [args["namespace"]] if args.get("namespace") else sorted(allowed)
        resources = holder[0].allow.resources
        kinds = [args["kind"]] if args.get("kind") else [*kuberead.FINDABLE, "nodes"]
        kinds = [k for k in kinds if k in resources]
        matches = kuberead.find(kube, args["name"], namespaces, kinds)
        return kuberead.find_text(matches, args["name"], namespaces)

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
            "prometheus_metrics",
            "Metric names on Prometheus containing these words (which metric exists).",
            _obj({"match": {"type": "string", "minLength": 2, "maxLength": 80}}, ["match"]),
            "read",
            metric_names,
            timeout,
        ),
        Tool(
            "k8s_find",
            "Find the object a name means in the allowed namespaces (or one): exact name, name "
            "prefix, app label; Deployments, StatefulSets, DaemonSets, Jobs, CronJobs, pods, "
            "Services, PVCs, nodes.",
            _obj({"name": NAME, "namespace": NAMESPACE, "kind": KIND}, ["name"]),
            "read",
            find,
            timeout,
        ),
        Tool(
            "k8s_get",
            "List or get Kubernetes objects (kubectl get) in a namespace (none for nodes and "
            "StorageClasses).",
            _obj(
                {"kind": KIND, "namespace": NAMESPACE, "name": NAME, "label_selector": SELECTOR},
                ["kind"],
            ),
            "read",
            lambda a: kuberead.get(
                kube, a["kind"], a.get("namespace"), a.get("name"), a.get("label_selector")
            ),
            timeout,
        ),
        Tool(
            "k8s_describe",
            "Describe one object with its events (kubectl describe): pods, deployments, "
            "statefulsets, daemonsets, jobs, cronjobs, persistentvolumeclaims, storageclasses, "
            "horizontalpodautoscalers, services (with endpoints), ingresses, networkpolicies, "
            "configmaps (keys only) and nodes.",
            _obj({"kind": KIND, **ns_name}, ["kind", "name"]),
            "read",
            lambda a: kuberead.describe(kube, a["kind"], a.get("namespace"), a["name"]),
            timeout,
        ),
        Tool(
            "k8s_logs",
            "Log lines of a pod's container (kubectl logs): tail, previous container, since, "
            "lines containing a string.",
            _obj(
                {
                    "namespace": NAMESPACE,
                    "pod": NAME,
                    "container": NAME,
                    "tail_lines": {"type": "integer", "minimum": 1, "maximum": 200},
                    "previous": {"type": "boolean"},
                    "since_seconds": {"type": "integer", "minimum": 1, "maximum": 86400},
                    "grep": {"type": "string", "minLength": 1, "maxLength": 100},
                },
                ["namespace", "pod"],
            ),
            "read",
            lambda a: kuberead.logs(
                kube,
                a["namespace"],
                a["pod"],
                a.get("container"),
                int(a.get("tail_lines", 50)),
                bool(a.get("previous", False)),
                a.get("since_seconds"),
                a.get("grep"),
            ),
            timeout,
            kind="pods",
        ),
        Tool(
            "k8s_events",
            "Recent events of a namespace, or of one object (kubectl get events).",
            _obj({"namespace": NAMESPACE, "name": NAME, "kind": KIND}, ["namespace"]),
            "read",
            lambda a: kuberead.events(kube, a["namespace"], a.get("name"), a.get("kind")),
            timeout,
            kind="events",
        ),
        Tool(
            "rollout_status",
            "Rollout status of a Deployment (kubectl rollout status).",
            _obj(ns_name, ["namespace", "name"]),
            "read",
            lambda a: rollout_status(kube, a["namespace"], a["name"]),
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
    registry = Registry(tools, AllowList.from_settings(settings))
    holder.append(registry)
    return registry


class _NoSource:
    """No Kubernetes API configured: every read says so."""

    def get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        raise RuntimeError("the Kubernetes API is not configured here")

    def text(self, path: str, params: dict[str, Any] | None = None) -> str:
        raise RuntimeError("the Kubernetes API is not configured here")


def _no_direct_write(name: str) -> Callable[[dict[str, Any]], Any]:
    def refuse(_: dict[str, Any]) -> Any:
        raise PermissionError(f"{name} is a write action: it only runs in the ops_action DAG")

    return refuse

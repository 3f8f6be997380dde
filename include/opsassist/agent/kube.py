"""Kubernetes through the official client: three identities, compact read views, and the exact
change of each write action (applied with ``dryRun=All`` by the chat server, for real by the DAG).

Identities (settings): ``read`` (read-only service account, chat server), ``dryrun`` (chat server;
an admission policy rejects its requests unless they are dry-runs), ``write`` (ops_action DAG only).
Without ``OPSASSIST_KUBE_API_URL`` the in-cluster config (or ``~/.kube/config``) is used.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, Literal

from opsassist.settings import Settings

Identity = Literal["read", "dryrun", "write"]
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


def api_client(settings: Settings, identity: Identity) -> Any:
    """An ``ApiClient`` for one identity (imports the client lazily: DAG files stay light)."""
    from kubernetes import client, config

    token = {
        "read": settings.kube_read_token,
        "dryrun": settings.kube_dryrun_token,
        "write": settings.kube_write_token,
    }[identity].get_secret_value()
    if not settings.kube_api_url:
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            config.load_kube_config(client_configuration=configuration)
    else:
        configuration = client.Configuration()
        configuration.host = settings.kube_api_url
        if settings.kube_ca_file:
            configuration.ssl_ca_cert = settings.kube_ca_file
    if token:
        configuration.api_key = {"authorization": token}
        configuration.api_key_prefix = {"authorization": "Bearer"}
    configuration.retries = 0
    return client.ApiClient(configuration)


def _core(api: Any) -> Any:
    from kubernetes import client

    return client.CoreV1Api(api)


def _apps(api: Any) -> Any:
    from kubernetes import client

    return client.AppsV1Api(api)


def format_age(moment: dt.datetime | None) -> str:
    """How long ago ``moment`` was, kubectl style (``3d``, ``5h``, ``12m``, ``40s``; ``?``)."""
    if moment is None:
        return "?"
    seconds = int((dt.datetime.now(dt.UTC) - moment).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def pod_line(pod: Any) -> str:
    statuses = pod.status.container_statuses or []
    ready = sum(1 for c in statuses if c.ready)
    restarts = sum(c.restart_count or 0 for c in statuses)
    reasons = [
        c.state.waiting.reason
        for c in statuses
        if c.state is not None and c.state.waiting is not None and c.state.waiting.reason
    ]
    status = reasons[0] if reasons else (pod.status.phase or "Unknown")
    total = len(pod.spec.containers or [])
    return (
        f"pod/{pod.metadata.name} ready={ready}/{total} status={status} restarts={restarts} "
        f"age={format_age(pod.metadata.creation_timestamp)} node={pod.spec.node_name or '-'}"
    )


def deployment_line(dep: Any) -> str:
    st = dep.status
    return (
        f"deployment/{dep.metadata.name} replicas={dep.spec.replicas} "
        f"ready={st.ready_replicas or 0} updated={st.updated_replicas or 0} "
        f"available={st.available_replicas or 0} generation={dep.metadata.generation} "
        f"observed={st.observed_generation} age={format_age(dep.metadata.creation_timestamp)}"
    )


def event_line(ev: Any) -> str:
    obj = ev.involved_object
    when = ev.last_timestamp or ev.event_time or ev.metadata.creation_timestamp
    return (
        f"{ev.type or 'Normal'} {ev.reason or '-'} {obj.kind.lower()}/{obj.name} "
        f"x{ev.count or 1} ({format_age(when)} ago): {ev.message or ''}"
    )


def node_line(node: Any) -> str:
    ready = next((c.status for c in node.status.conditions or [] if c.type == "Ready"), "Unknown")
    return f"node/{node.metadata.name} ready={ready} unschedulable={bool(node.spec.unschedulable)}"


def get(api: Any, kind: str, namespace: str, name: str | None, selector: str | None) -> str:
    core, apps = _core(api), _apps(api)
    sel = selector or None
    if kind == "pods":
        items = (
            [core.read_namespaced_pod(name, namespace)]
            if name
            else core.list_namespaced_pod(namespace, label_selector=sel).items
        )
        lines = [pod_line(p) for p in items]
    elif kind == "deployments":
        items = (
            [apps.read_namespaced_deployment(name, namespace)]
            if name
            else apps.list_namespaced_deployment(namespace, label_selector=sel).items
        )
        lines = [deployment_line(d) for d in items]
    elif kind == "replicasets":
        items = apps.list_namespaced_replica_set(namespace, label_selector=sel).items
        lines = [
            f"replicaset/{r.metadata.name} replicas={r.spec.replicas} "
            f"ready={r.status.ready_replicas or 0}"
            for r in items
        ]
    elif kind == "events":
        return events(api, namespace, name)
    elif kind == "nodes":
        items = [core.read_node(name)] if name else core.list_node(label_selector=sel).items
        lines = [node_line(n) for n in items]
    else:
        raise ValueError(f"unsupported kind {kind!r}")
    return "\n".join(lines) or f"no {kind} found in namespace {namespace}"


def events(api: Any, namespace: str, name: str | None = None, limit: int = 20) -> str:
    selector = f"involvedObject.name={name}" if name else None
    items = _core(api).list_namespaced_event(namespace, field_selector=selector).items
    items.sort(key=lambda e: e.last_timestamp or e.event_time or e.metadata.creation_timestamp)
    lines = [event_line(e) for e in items[-limit:]]
    return "\n".join(lines) or f"no events in namespace {namespace}"


def describe(api: Any, kind: str, namespace: str, name: str) -> str:
    if kind == "pods":
        pod = _core(api).read_namespaced_pod(name, namespace)
        head = [pod_line(pod)]
        for c in pod.status.container_statuses or []:
            state = c.state.waiting or c.state.terminated if c.state else None
            message = getattr(state, "message", None) or ""
            last = c.last_state.terminated if c.last_state else None
            head.append(
                f"  container {c.name}: image={c.image} restarts={c.restart_count} "
                f"state={getattr(state, 'reason', None) or 'running'} {message}".rstrip()
            )
            if last is not None:
                head.append(f"    last terminated: reason={last.reason} exit={last.exit_code}")
    elif kind == "deployments":
        dep = _apps(api).read_namespaced_deployment(name, namespace)
        head = [deployment_line(dep)]
        for c in dep.spec.template.spec.containers:
            head.append(f"  container {c.name}: image={c.image}")
        annotations = dep.spec.template.metadata.annotations or {}
        if RESTARTED_AT in annotations:
            head.append(f"  restartedAt={annotations[RESTARTED_AT]}")
    else:
        return get(api, kind, namespace, name, None)
    return "\n".join(head) + "\nEvents:\n" + events(api, namespace, name)


def logs(
    api: Any, namespace: str, pod: str, container: str | None, tail: int, previous: bool
) -> str:
    text: str = _core(api).read_namespaced_pod_log(
        pod, namespace, container=container or None, tail_lines=tail, previous=previous
    )
    return text or "(no log lines)"


def rollout_status(api: Any, namespace: str, name: str) -> dict[str, Any]:
    """kubectl's rollout-status rule: done when the controller saw the latest generation and every
    replica is updated and available."""
    dep = _apps(api).read_namespaced_deployment(name, namespace)
    st, want = dep.status, dep.spec.replicas if dep.spec.replicas is not None else 1
    observed = st.observed_generation is not None and st.observed_generation >= (
        dep.metadata.generation or 0
    )
    done = (
        observed
        and (st.updated_replicas or 0) >= want
        and (st.available_replicas or 0) >= want
        and (st.replicas or 0) <= want
    )
    annotations = dep.spec.template.metadata.annotations or {}
    return {
        "deployment": f"{namespace}/{name}",
        "done": bool(done),
        "generation": dep.metadata.generation,
        "observed_generation": st.observed_generation,
        "replicas": want,
        "updated": st.updated_replicas or 0,
        "available": st.available_replicas or 0,
        "restarted_at": annotations.get(RESTARTED_AT),
    }


# --- write actions --------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class Change:
    """The exact request a write action sends (shown to the approver, stored with the action)."""

    verb: Literal["patch", "delete"]
    kind: str  # deployments | deployments/scale | pods | nodes
    namespace: str | None
    name: str
    body: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Change:
        return cls(**data)

    def describe(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        body = f" {self.body}" if self.body is not None else ""
        return f"{self.verb.upper()} {self.kind} {where}{self.name}{body}"


def change_for(tool: str, args: dict[str, Any], now: dt.datetime | None = None) -> Change:
    ns, name = args.get("namespace"), str(args.get("name", ""))
    if tool == "rollout_restart":
        moment = (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: moment}}}}}
        return Change("patch", "deployments", ns, name, body)
    if tool == "scale_deployment":
        return Change(
            "patch", "deployments/scale", ns, name, {"spec": {"replicas": int(args["replicas"])}}
        )
    if tool == "delete_pod":
        return Change("delete", "pods", ns, name, None)
    if tool in ("cordon_node", "uncordon_node"):
        return Change(
            "patch", "nodes", None, name, {"spec": {"unschedulable": tool == "cordon_node"}}
        )
    raise ValueError(f"{tool!r} is not a write action")


def apply_change(api: Any, change: Change, *, dry_run: bool) -> dict[str, Any]:
    """Send the change (``dryRun=All`` when ``dry_run``); a summary of the API's answer."""
    core, apps = _core(api), _apps(api)
    kw: dict[str, Any] = {"dry_run": "All"} if dry_run else {}
    ns = change.namespace or ""
    if change.kind == "deployments":
        dep = apps.patch_namespaced_deployment(change.name, ns, change.body, **kw)
        annotations = dep.spec.template.metadata.annotations or {}
        return {
            "dry_run": dry_run,
            "result": "patched",
            "generation": dep.metadata.generation,
            "restarted_at": annotations.get(RESTARTED_AT),
        }
    if change.kind == "deployments/scale":
        scale = apps.patch_namespaced_deployment_scale(change.name, ns, change.body, **kw)
        return {"dry_run": dry_run, "result": "scaled", "replicas": scale.spec.replicas}
    if change.kind == "pods":
        core.delete_namespaced_pod(change.name, ns, **kw)
        return {"dry_run": dry_run, "result": "deleted"}
    if change.kind == "nodes":
        node = core.patch_node(change.name, change.body, **kw)
        return {"dry_run": dry_run, "result": "patched", "unschedulable": node.spec.unschedulable}
    raise ValueError(f"unsupported change kind {change.kind!r}")

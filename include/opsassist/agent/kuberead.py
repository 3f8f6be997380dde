"""Read-only Kubernetes views for the agent's tools, over the API's JSON (``GET`` only).

A ``Source`` answers ``GET <path>``: ``ApiSource`` through the official client (the read-only
identity's token and CA), ``opsassist.agent.replay.ReplaySource`` from recorded objects. The same
views format both, so a recorded run and a live one produce the same tool output.

Views: compact lines (``kubectl get``), ``describe`` per kind (containers with their states, last
termination and exit code, scheduling conditions, volumes, owners; a Job's conditions and pods; a
PVC's StorageClass; a Service's endpoints; a Node's conditions and taints; a ConfigMap's keys,
never its values), events of one object, logs (``previous``, ``since``, ``grep``, container), and
``find``: the objects a name means across namespaces (name, prefix, ``app`` label, owner).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from opsassist.agent.kube import format_age


class ApiError(Exception):
    """An API answer other than 200 (the attributes of the client's ``ApiException``)."""

    def __init__(self, status: int, reason: str, message: str = "") -> None:
        super().__init__(f"HTTP {status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.body = json.dumps({"message": message})


class Source(Protocol):
    def get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]: ...

    def text(self, path: str, params: dict[str, Any] | None = None) -> str: ...


@dataclasses.dataclass(frozen=True, slots=True)
class Resource:
    plural: str
    kind: str
    prefix: str
    namespaced: bool = True


RESOURCES: dict[str, Resource] = {
    r.plural: r
    for r in (
        Resource("pods", "Pod", "/api/v1"),
        Resource("services", "Service", "/api/v1"),
        Resource("endpoints", "Endpoints", "/api/v1"),
        Resource("events", "Event", "/api/v1"),
        Resource("configmaps", "ConfigMap", "/api/v1"),
        Resource("persistentvolumeclaims", "PersistentVolumeClaim", "/api/v1"),
        Resource("nodes", "Node", "/api/v1", False),
        Resource("deployments", "Deployment", "/apis/apps/v1"),
        Resource("replicasets", "ReplicaSet", "/apis/apps/v1"),
        Resource("statefulsets", "StatefulSet", "/apis/apps/v1"),
        Resource("daemonsets", "DaemonSet", "/apis/apps/v1"),
        Resource("jobs", "Job", "/apis/batch/v1"),
        Resource("cronjobs", "CronJob", "/apis/batch/v1"),
        Resource("horizontalpodautoscalers", "HorizontalPodAutoscaler", "/apis/autoscaling/v2"),
        Resource("ingresses", "Ingress", "/apis/networking.k8s.io/v1"),
        Resource("networkpolicies", "NetworkPolicy", "/apis/networking.k8s.io/v1"),
        Resource("storageclasses", "StorageClass", "/apis/storage.k8s.io/v1", False),
    )
}
KIND_TO_PLURAL = {r.kind: r.plural for r in RESOURCES.values()}
WORKLOADS = ("deployments", "statefulsets", "daemonsets", "jobs", "cronjobs")
FINDABLE = (*WORKLOADS, "pods", "services", "persistentvolumeclaims")


def path(plural: str, namespace: str | None, name: str | None = None) -> str:
    res = RESOURCES[plural]
    where = f"/namespaces/{namespace}" if res.namespaced else ""
    if res.namespaced and not namespace:
        raise ValueError(f"{plural} are namespaced: name the namespace")
    return f"{res.prefix}{where}/{plural}" + (f"/{name}" if name else "")


class ApiSource:
    """``GET`` through the official client's ``ApiClient`` (auth, TLS, the client's errors)."""

    def __init__(self, api: Any) -> None:
        self.api = api

    def _call(self, url: str, params: dict[str, Any] | None, accept: str) -> bytes:
        from kubernetes.client.exceptions import ApiException

        query = [(k, v) for k, v in (params or {}).items() if v is not None and v != ""]
        method, full, headers, body, post = self.api.param_serialize(
            "GET",
            url,
            query_params=query,
            header_params={"Accept": accept},
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(
            method, full, header_params=headers, body=body, post_params=post
        )
        data: bytes = response.read()
        if not 200 <= response.status <= 299:  # the client's own error (status, reason, body)
            raise ApiException(http_resp=response, body=data.decode("utf-8", "replace"))
        return data

    def get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self._call(path, params, "application/json"))
        return body

    def text(self, path: str, params: dict[str, Any] | None = None) -> str:
        return self._call(path, params, "*/*").decode("utf-8", "replace")


# --- small accessors -----------------------------------------------------------------------------
def _m(obj: dict[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = obj.get("metadata") or {}
    return meta


def name_of(obj: dict[str, Any]) -> str:
    return str(_m(obj).get("name", ""))


def _parse_time(value: Any) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def age(value: Any) -> str:
    """:func:`opsassist.agent.kube.format_age` of a timestamp as the API's JSON gives it."""
    return format_age(_parse_time(value))


def items(
    source: Source, plural: str, namespace: str | None, **params: Any
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = source.get(path(plural, namespace), params).get("items") or []
    return found


def read(source: Source, plural: str, namespace: str | None, name: str) -> dict[str, Any]:
    return source.get(path(plural, namespace, name))


def selector_matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def owned_by(obj: dict[str, Any], kind: str, name: str) -> bool:
    return any(
        o.get("kind") == kind and o.get("name") == name
        for o in _m(obj).get("ownerReferences") or []
    )


# --- lines ---------------------------------------------------------------------------------------
def _states(pod: dict[str, Any]) -> list[dict[str, Any]]:
    status = pod.get("status") or {}
    found: list[dict[str, Any]] = (status.get("initContainerStatuses") or []) + (
        status.get("containerStatuses") or []
    )
    return found


def pod_status(pod: dict[str, Any]) -> str:
    """kubectl's STATUS column: a waiting or terminated reason first, then the phase."""
    for state in _states(pod):
        st = state.get("state") or {}
        for key in ("waiting", "terminated"):
            reason = (st.get(key) or {}).get("reason")
            if reason and not (key == "terminated" and reason == "Completed"):
                return str(reason)
    status = pod.get("status") or {}
    return str(status.get("reason") or status.get("phase") or "Unknown")


def pod_ready(pod: dict[str, Any]) -> tuple[int, int]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    total = len((pod.get("spec") or {}).get("containers") or [])
    return sum(1 for c in statuses if c.get("ready")), total


def pod_restarts(pod: dict[str, Any]) -> int:
    return sum(int(c.get("restartCount") or 0) for c in _states(pod))


def pod_line(pod: dict[str, Any]) -> str:
    ready, total = pod_ready(pod)
    spec = pod.get("spec") or {}
    return (
        f"pod/{name_of(pod)} ready={ready}/{total} status={pod_status(pod)} "
        f"restarts={pod_restarts(pod)} age={age(_m(pod).get('creationTimestamp'))} "
        f"node={spec.get('nodeName') or '-'}"
    )


def pod_unhealthy(pod: dict[str, Any]) -> bool:
    status = pod_status(pod)
    ready, total = pod_ready(pod)
    if status == "Succeeded":
        return False
    return status != "Running" or ready < total or pod_restarts(pod) > 0


def workload_line(plural: str, obj: dict[str, Any]) -> str:
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    name = f"{RESOURCES[plural].kind.lower()}/{name_of(obj)}"
    if plural in ("deployments", "statefulsets", "replicasets"):
        return (
            f"{name} replicas={spec.get('replicas')} ready={st.get('readyReplicas') or 0} "
            f"updated={st.get('updatedReplicas') or 0} "
            f"available={st.get('availableReplicas') or 0} "
            f"generation={_m(obj).get('generation')} observed={st.get('observedGeneration')} "
            f"age={age(_m(obj).get('creationTimestamp'))}"
        )
    if plural == "daemonsets":
        return (
            f"{name} desired={st.get('desiredNumberScheduled') or 0} "
            f"ready={st.get('numberReady') or 0} unavailable={st.get('numberUnavailable') or 0}"
        )
    if plural == "jobs":
        cond: dict[str, Any] = next(
            (c for c in st.get("conditions") or [] if c.get("status") == "True"), {}
        )
        state = cond.get("type") or ("Active" if st.get("active") else "Pending")
        return (
            f"{name} status={state} reason={cond.get('reason') or '-'} "
            f"active={st.get('active') or 0} succeeded={st.get('succeeded') or 0} "
            f"failed={st.get('failed') or 0}"
        )
    if plural == "cronjobs":
        return (
            f"{name} schedule={spec.get('schedule')!r} suspend={bool(spec.get('suspend'))} "
            f"last-schedule={st.get('lastScheduleTime') or '-'}"
        )
    return name


def node_line(node: dict[str, Any]) -> str:
    conditions = (node.get("status") or {}).get("conditions") or []
    ready = next((c.get("status") for c in conditions if c.get("type") == "Ready"), "Unknown")
    pressure = [
        c["type"] for c in conditions if c.get("type") != "Ready" and c.get("status") == "True"
    ]
    labels = _m(node).get("labels") or {}
    taints = [_taint(t) for t in (node.get("spec") or {}).get("taints") or []]
    parts = [
        f"node/{name_of(node)} ready={ready}",
        f"unschedulable={bool((node.get('spec') or {}).get('unschedulable'))}",
    ]
    if pressure:
        parts.append("conditions=" + ",".join(pressure))
    if taints:
        parts.append("taints=" + ",".join(taints))
    parts.append("labels=" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())))
    return " ".join(parts)


def _taint(taint: dict[str, Any]) -> str:
    value = f"={taint['value']}" if taint.get("value") else ""
    return f"{taint.get('key')}{value}:{taint.get('effect')}"


def event_line(ev: dict[str, Any]) -> str:
    obj = ev.get("involvedObject") or {}
    when = ev.get("lastTimestamp") or ev.get("eventTime") or _m(ev).get("creationTimestamp")
    return (
        f"{ev.get('type') or 'Normal'} {ev.get('reason') or '-'} "
        f"{str(obj.get('kind', '')).lower()}/{obj.get('name')} x{ev.get('count') or 1} "
        f"({age(when)} ago): {ev.get('message') or ''}"
    )


def get(
    source: Source,
    plural: str,
    namespace: str | None,
    name: str | None = None,
    selector: str | None = None,
) -> str:
    if plural == "events":
        return events(source, namespace or "", name)
    objs = (
        [read(source, plural, namespace, name)]
        if name
        else items(source, plural, namespace, labelSelector=selector or None)
    )
    if plural == "pods":
        lines = [pod_line(p) for p in objs]
    elif plural == "nodes":
        lines = [node_line(n) for n in objs]
    elif plural in WORKLOADS or plural == "replicasets":
        lines = [workload_line(plural, o) for o in objs]
    else:
        lines = [f"{RESOURCES[plural].kind.lower()}/{name_of(o)}" for o in objs]
    where = f" in namespace {namespace}" if RESOURCES[plural].namespaced else ""
    return "\n".join(lines) or f"no {plural} found{where}"


def events(
    source: Source,
    namespace: str,
    name: str | None = None,
    kind: str | None = None,
    limit: int = 20,
) -> str:
    fields = []
    if name:
        fields.append(f"involvedObject.name={name}")
    if kind:
        fields.append(f"involvedObject.kind={RESOURCES[kind].kind if kind in RESOURCES else kind}")
    found = items(source, "events", namespace, fieldSelector=",".join(fields) or None)
    found.sort(
        key=lambda e: str(
            e.get("lastTimestamp") or e.get("eventTime") or _m(e).get("creationTimestamp") or ""
        )
    )
    lines = [event_line(e) for e in found[-limit:]]
    what = f"{name}" if name else f"namespace {namespace}"
    return "\n".join(lines) or f"no events for {what}"


# --- describe ------------------------------------------------------------------------------------
def _resources(container: dict[str, Any]) -> str:
    res = container.get("resources") or {}
    parts = []
    for key in ("limits", "requests"):
        values = res.get(key) or {}
        if values:
            parts.append(f"{key}: " + " ".join(f"{k}={v}" for k, v in sorted(values.items())))
    return "; ".join(parts)


def _probe(probe: dict[str, Any] | None) -> str:
    if not probe:
        return ""
    if "httpGet" in probe:
        http = probe["httpGet"]
        return f"http-get :{http.get('port')}{http.get('path', '/')}"
    if "tcpSocket" in probe:
        return f"tcp :{probe['tcpSocket'].get('port')}"
    if "exec" in probe:
        return "exec " + " ".join(probe["exec"].get("command") or [])
    return "grpc" if "grpc" in probe else "?"


def describe_pod(source: Source, pod: dict[str, Any], namespace: str) -> str:
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    lines = [f"{pod_line(pod)} namespace={namespace} phase={status.get('phase')}"]
    for owner in _m(pod).get("ownerReferences") or []:
        lines.append(f"  owner: {owner.get('kind')}/{owner.get('name')}")
    if spec.get("nodeSelector"):
        selector = ",".join(f"{k}={v}" for k, v in sorted(spec["nodeSelector"].items()))
        lines.append(f"  node-selector: {selector}")
    if spec.get("tolerations"):
        tolerations = ",".join(
            f"{t.get('key', '*')}:{t.get('effect', '*')}" for t in spec["tolerations"]
        )
        lines.append(f"  tolerations: {tolerations}")
    for cond in status.get("conditions") or []:
        if cond.get("status") != "True":
            reason = f" reason={cond['reason']}" if cond.get("reason") else ""
            message = f": {cond['message']}" if cond.get("message") else ""
            lines.append(f"  condition {cond.get('type')}=False{reason}{message}")
    states = {s.get("name"): s for s in _states(pod)}
    for container in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        cname = container.get("name")
        st = states.get(cname) or {}
        state = st.get("state") or {}
        if "waiting" in state:
            now = f"waiting reason={state['waiting'].get('reason')}"
            if state["waiting"].get("message"):
                now += f" message={state['waiting']['message']}"
        elif "terminated" in state:
            term = state["terminated"]
            now = f"terminated reason={term.get('reason')} exit={term.get('exitCode')}"
        elif "running" in state:
            now = "running"
        else:
            now = "not started"
        lines.append(
            f"  container {cname}: image={container.get('image')} "
            f"ready={str(bool(st.get('ready'))).lower()} restarts={st.get('restartCount', 0)} "
            f"state={now}"
        )
        if _resources(container):
            lines.append(f"    {_resources(container)}")
        last = (st.get("lastState") or {}).get("terminated")
        if last:
            lines.append(
                f"    last terminated: reason={last.get('reason')} exit={last.get('exitCode')} "
                f"at={last.get('finishedAt') or '?'}"
            )
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            if container.get(probe):
                lines.append(f"    {probe}: {_probe(container[probe])}")
    for volume in spec.get("volumes") or []:
        claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
        if claim:
            lines.append(f"  volume {volume.get('name')}: pvc={claim}")
        elif volume.get("configMap"):
            lines.append(
                f"  volume {volume.get('name')}: configmap={volume['configMap'].get('name')}"
            )
    return "\n".join(lines)


def pods_of(
    source: Source, plural: str, namespace: str, obj: dict[str, Any]
) -> list[dict[str, Any]]:
    """The pods a workload runs: its selector's pods (Deployment, StatefulSet, DaemonSet), a
    Job's pods (owner reference or ``job-name`` label), a CronJob's Jobs' pods."""
    name = name_of(obj)
    pods = items(source, "pods", namespace)
    if plural == "jobs":
        return [
            p
            for p in pods
            if owned_by(p, "Job", name) or (_m(p).get("labels") or {}).get("job-name") == name
        ]
    if plural == "cronjobs":
        jobs = jobs_of(source, namespace, name)
        names = {name_of(j) for j in jobs}
        return [
            p
            for p in pods
            if any(owned_by(p, "Job", j) for j in names)
            or (_m(p).get("labels") or {}).get("job-name") in names
        ]
    selector = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    if plural == "services":
        selector = (obj.get("spec") or {}).get("selector") or {}
    return [p for p in pods if selector_matches(selector, _m(p).get("labels") or {})]


def jobs_of(source: Source, namespace: str, cronjob: str) -> list[dict[str, Any]]:
    jobs = [
        j
        for j in items(source, "jobs", namespace)
        if owned_by(j, "CronJob", cronjob) or name_of(j).startswith(f"{cronjob}-")
    ]
    jobs.sort(key=lambda j: str((j.get("status") or {}).get("startTime") or ""))
    return jobs


def _pod_summary(pods: Sequence[dict[str, Any]]) -> list[str]:
    return [f"  {pod_line(p)}" for p in pods[:10]] or ["  pods: none"]


def describe_workload(source: Source, plural: str, namespace: str, obj: dict[str, Any]) -> str:
    lines = [workload_line(plural, obj)]
    spec = obj.get("spec") or {}
    if plural == "cronjobs":
        template = (((spec.get("jobTemplate") or {}).get("spec") or {}).get("template")) or {}
    else:
        template = spec.get("template") or {}
    tspec = template.get("spec") or {}
    match_labels = (spec.get("selector") or {}).get("matchLabels") or {}
    if match_labels and plural != "jobs":
        lines.append("  selector: " + ",".join(f"{k}={v}" for k, v in sorted(match_labels.items())))
    for container in tspec.get("containers") or []:
        extra = f" {_resources(container)}" if _resources(container) else ""
        lines.append(f"  container {container.get('name')}: image={container.get('image')}{extra}")
    if tspec.get("nodeSelector"):
        lines.append(
            "  node-selector: "
            + ",".join(f"{k}={v}" for k, v in sorted(tspec["nodeSelector"].items()))
        )
    status = obj.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("status") == "True" or plural != "jobs":
            lines.append(
                f"  condition {cond.get('type')}={cond.get('status')} "
                f"reason={cond.get('reason') or '-'}: {cond.get('message') or ''}".rstrip(": ")
            )
    if plural == "jobs":
        if spec.get("activeDeadlineSeconds"):
            lines.append(f"  activeDeadlineSeconds={spec['activeDeadlineSeconds']}")
        lines.append(f"  backoffLimit={spec.get('backoffLimit', 6)}")
    annotations = (template.get("metadata") or {}).get("annotations") or {}
    if "kubectl.kubernetes.io/restartedAt" in annotations:
        lines.append(f"  restartedAt={annotations['kubectl.kubernetes.io/restartedAt']}")
    if plural == "cronjobs":
        for job in jobs_of(source, namespace, name_of(obj))[-3:]:
            lines.append(f"  {workload_line('jobs', job)}")
    pods = pods_of(source, plural, namespace, obj)
    lines.extend(_pod_summary(pods))
    return "\n".join(lines)


def describe(source: Source, plural: str, namespace: str | None, name: str) -> str:
    """kubectl describe, compact, with the object's events."""
    ns = namespace if RESOURCES[plural].namespaced else None
    obj = read(source, plural, ns, name)
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    if plural == "pods":
        head = describe_pod(source, obj, ns or "")
    elif plural in WORKLOADS or plural == "replicasets":
        head = describe_workload(source, plural, ns or "", obj)
    elif plural == "nodes":
        lines = [node_line(obj)]
        for cond in status.get("conditions") or []:
            lines.append(
                f"  condition {cond.get('type')}={cond.get('status')} "
                f"reason={cond.get('reason') or '-'}: {cond.get('message') or ''}".rstrip(": ")
            )
        alloc = status.get("allocatable") or {}
        if alloc:
            lines.append("  allocatable: " + " ".join(f"{k}={v}" for k, v in sorted(alloc.items())))
        head = "\n".join(lines)
    elif plural == "persistentvolumeclaims":
        storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
        sc = spec.get("storageClassName")
        lines = [
            f"persistentvolumeclaim/{name} status={status.get('phase')} storageclass={sc or '-'} "
            f"volume={spec.get('volumeName') or '-'} size={storage} "
            f"access={','.join(spec.get('accessModes') or [])}"
        ]
        if sc:
            try:
                read(source, "storageclasses", None, sc)
                lines.append(f"  storageclass {sc}: exists")
            except Exception as exc:  # a missing StorageClass is the finding, not an error
                if getattr(exc, "status", None) == 404:
                    lines.append(f"  storageclass {sc}: not found")
                else:
                    raise
        head = "\n".join(lines)
    elif plural == "storageclasses":
        head = (
            f"storageclass/{name} provisioner={obj.get('provisioner')} "
            f"binding={obj.get('volumeBindingMode') or 'Immediate'} "
            f"reclaim={obj.get('reclaimPolicy') or 'Delete'}"
        )
    elif plural == "services":
        selector = ",".join(f"{k}={v}" for k, v in sorted((spec.get("selector") or {}).items()))
        ports = ",".join(f"{p.get('port')}->{p.get('targetPort')}" for p in spec.get("ports") or [])
        lines = [
            f"service/{name} type={spec.get('type') or 'ClusterIP'} selector={selector or '-'}"
        ]
        lines.append(f"  ports: {ports}")
        try:
            endpoints = read(source, "endpoints", ns, name)
        except Exception as exc:
            if getattr(exc, "status", None) != 404:
                raise
            endpoints = {}
        ready = [a for s in endpoints.get("subsets") or [] for a in s.get("addresses") or []]
        not_ready = [
            a for s in endpoints.get("subsets") or [] for a in s.get("notReadyAddresses") or []
        ]
        lines.append(f"  endpoints: ready={len(ready)} not-ready={len(not_ready)}")
        for address in not_ready:
            target = (address.get("targetRef") or {}).get("name", "?")
            lines.append(f"    not ready: {address.get('ip')} pod/{target}")
        pods = pods_of(source, "services", ns or "", obj)
        lines.append(f"  pods matching selector {selector or '-'}: {len(pods)}")
        lines.extend(f"    {pod_line(p)}" for p in pods[:10])
        head = "\n".join(lines)
    elif plural == "horizontalpodautoscalers":
        target = spec.get("scaleTargetRef") or {}
        lines = [
            f"horizontalpodautoscaler/{name} target={target.get('kind')}/{target.get('name')} "
            f"minReplicas={spec.get('minReplicas', 1)} maxReplicas={spec.get('maxReplicas')} "
            f"current={status.get('currentReplicas')} desired={status.get('desiredReplicas')}"
        ]
        for metric in status.get("currentMetrics") or []:
            res = metric.get("resource") or {}
            current = res.get("current") or {}
            lines.append(
                f"  metric {res.get('name')}: current={current.get('averageUtilization')}%"
            )
        for metric in spec.get("metrics") or []:
            res = metric.get("resource") or {}
            target_u = (res.get("target") or {}).get("averageUtilization")
            lines.append(f"  metric {res.get('name')}: target={target_u}%")
        for cond in status.get("conditions") or []:
            lines.append(
                f"  condition {cond.get('type')}={cond.get('status')} "
                f"reason={cond.get('reason') or '-'}: {cond.get('message') or ''}"
            )
        head = "\n".join(lines)
    elif plural == "configmaps":
        keys = sorted((obj.get("data") or {}).keys()) + sorted(obj.get("binaryData") or {})
        head = f"configmap/{name} keys={','.join(keys) or '-'} (values not shown)"
    elif plural == "ingresses":
        rules = []
        for rule in spec.get("rules") or []:
            for p in ((rule.get("http") or {}).get("paths")) or []:
                svc = ((p.get("backend") or {}).get("service")) or {}
                rules.append(f"{rule.get('host', '*')}{p.get('path', '/')}->{svc.get('name')}")
        head = f"ingress/{name} class={spec.get('ingressClassName') or '-'} rules={';'.join(rules)}"
    elif plural == "networkpolicies":
        pod_labels = ((spec.get("podSelector") or {}).get("matchLabels")) or {}
        chosen = ",".join(f"{k}={v}" for k, v in sorted(pod_labels.items())) or "all"
        head = (
            f"networkpolicy/{name} pods={chosen} "
            f"types={','.join(spec.get('policyTypes') or [])} "
            f"ingress-rules={len(spec.get('ingress') or [])} "
            f"egress-rules={len(spec.get('egress') or [])}"
        )
    else:
        head = f"{RESOURCES[plural].kind.lower()}/{name}"
    if plural in ("storageclasses", "configmaps", "pods"):  # a pod's events: k8s_events
        return head
    event_ns = ns or "default"
    return head + "\nEvents:\n" + events(source, event_ns, name)


def logs(
    source: Source,
    namespace: str,
    pod: str,
    container: str | None = None,
    tail: int = 50,
    previous: bool = False,
    since_seconds: int | None = None,
    grep: str | None = None,
) -> str:
    params: dict[str, Any] = {
        "container": container or None,
        "tailLines": tail if not grep else max(tail, 500),
        "previous": "true" if previous else None,
        "sinceSeconds": since_seconds,
    }
    text = source.text(f"/api/v1/namespaces/{namespace}/pods/{pod}/log", params)
    lines = text.splitlines()
    if grep:
        needle = grep.lower()
        lines = [line for line in lines if needle in line.lower()][-tail:]
    which = "previous container" if previous else "current container"
    head = f"logs of pod/{pod} ({which}{f', container {container}' if container else ''}):"
    return head + "\n" + ("\n".join(lines) if lines else "(no log lines)")


# --- find ----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class Match:
    plural: str
    namespace: str | None
    name: str
    how: str  # exact | prefix | label | owner

    def line(self) -> str:
        kind = RESOURCES[self.plural].kind.lower()
        where = f" namespace={self.namespace}" if self.namespace else ""
        return f"{kind}/{self.name}{where} match={self.how}"


def find(
    source: Source,
    term: str,
    namespaces: Iterable[str],
    kinds: Sequence[str] = FINDABLE,
) -> list[Match]:
    """Objects ``term`` may mean: exact names first, then name prefixes (``term-``), then the
    ``app`` / ``app.kubernetes.io/name`` label; nodes by exact name. Forbidden or missing
    kinds in a namespace are skipped (the read identity may not list every kind)."""
    term = term.lower()
    found: list[Match] = []
    for namespace in sorted(set(namespaces)):
        for plural in kinds:
            if plural == "nodes":
                continue
            try:
                objs = items(source, plural, namespace)
            except Exception as exc:
                if getattr(exc, "status", None) in (403, 404):
                    continue
                raise
            for obj in objs:
                name = name_of(obj)
                labels = _m(obj).get("labels") or {}
                if name == term:
                    how = "exact"
                elif name.startswith(f"{term}-"):
                    how = "prefix"
                elif term in (labels.get("app"), labels.get("app.kubernetes.io/name")):
                    how = "label"
                else:
                    continue
                found.append(Match(plural, namespace, name, how))
    if "nodes" in kinds:
        try:
            for node in items(source, "nodes", None):
                if name_of(node) == term:
                    found.append(Match("nodes", None, term, "exact"))
        except Exception as exc:
            if getattr(exc, "status", None) not in (403, 404):
                raise
    return found


def find_text(matches: Sequence[Match], term: str, namespaces: Iterable[str]) -> str:
    if not matches:
        return f"no object named {term!r} found in namespaces {', '.join(sorted(namespaces))}"
    return "\n".join(m.line() for m in matches)

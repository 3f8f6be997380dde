"""Incidents on the real kube-apiserver of ``scripts/services`` (shared by the agent's
integration tests and ``benchmarks/agent_latency.py``).

No kubelet, scheduler or controller manager runs there: pods never start. So each incident is
made the way the API allows: the objects are created (Deployment, Job, pods with owner references
and labels), and what the kubelet and the controllers would write (a container's OOMKilled
termination, an image pull back-off, the scheduler's Unschedulable condition, a Job's Failed
condition) is written through the **status subresource** with the admin identity, and events
are created as the kubelet would. Pod logs are real ``pods/log`` API calls, which the API server
proxies to the node's kubelet address: there ``FakeKubelet`` (the one fake; no kubelet can run
here) serves each pod's recorded log lines.

The reader gets the shipped read-only ClusterRole (``deploy/k8s/base/rbac/read.yaml``, rendered
from the chart), which covers every kind the agent's read tools describe (ConfigMaps only with
the chart's ``rbac.readConfigMaps``).
"""

from __future__ import annotations

import datetime as dt
import http.server
import socket
import ssl
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, service_port

KUBE = ROOT / "var" / "services" / "kube-apiserver"
NS = "incidents"
NODE = "worker-inc"
LOGS: dict[tuple[str, ...], str] = {  # (namespace, pod, container) -> log text
    (NS, "cart-api-6f7d8c9b5-q2w4e", "api"): (
        "2026-12-06T02:30:41Z INFO loading product catalogue into memory\n"
        "2026-12-06T02:30:58Z WARN heap 121MiB of 128MiB\n"
    ),
    (NS, "nightly-export-x7k2m", "export"): (
        "2026-12-06T02:02:58Z INFO exporting orders for 2026-12-05\n"
        "2026-12-06T02:03:00Z ERROR psycopg.OperationalError: connection failed: FATAL: "
        'password authentication failed for user "exporter"\n'
    ),
}


def token(identity: str) -> str:
    return (KUBE / "tokens" / f"{identity}.token").read_text().strip()


def kube_api(identity: str) -> Any:
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = f"https://127.0.0.1:{service_port('kube_apiserver', 16443)}"
    configuration.ssl_ca_cert = str(KUBE / "pki" / "ca.crt")
    configuration.api_key = {"authorization": token(identity)}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    return client.ApiClient(configuration)


class FakeKubelet:
    """Only the kubelet's container-log endpoint, for the real API server to proxy ``pods/log``
    to (no kubelet runs here): HTTPS on 127.0.0.1 with the local CA's serving certificate, which
    the API server reaches through the Node's InternalIP and kubeletEndpoint port. ``logs``
    gives the text of a ``/containerLogs/<namespace>/<pod>/<container>`` path (None: 404)."""

    def __init__(self, logs: Callable[[tuple[str, ...]], str | None]) -> None:
        outer = self
        self.paths: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.paths.append(self.path)
                parts = self.path.split("?", 1)[0].split("/")
                text = logs(tuple(parts[2:5])) if parts[1:2] == ["containerLogs"] else None
                if text is None:
                    self.send_error(404)
                    return
                body = text.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(KUBE / "pki" / "apiserver.crt", KUBE / "pki" / "apiserver.key")
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ignore(status: int, call: Any, *args: Any, **kwargs: Any) -> None:
    from kubernetes.client.rest import ApiException

    try:
        call(*args, **kwargs)
    except ApiException as exc:
        if exc.status != status:
            raise


def _deployment(apps: Any, name: str, spec: dict[str, Any]) -> None:
    labels = {"app": name}
    _ignore(404, apps.delete_namespaced_deployment, name, NS)
    apps.create_namespaced_deployment(
        NS,
        {
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": spec},
            },
        },
    )


def _pod(core: Any, name: str, labels: dict[str, str], spec: dict[str, Any], **meta: Any) -> None:
    _ignore(404, core.delete_namespaced_pod, name, NS, grace_period_seconds=0)
    core.create_namespaced_pod(
        NS, {"metadata": {"name": name, "labels": labels, **meta}, "spec": spec}
    )


def _event(core: Any, kind: str, name: str, reason: str, message: str, count: int) -> None:
    now = _now()
    core.create_namespaced_event(
        NS,
        {
            "metadata": {"name": f"{name}.{uuid.uuid4().hex[:8]}"},
            "involvedObject": {"kind": kind, "name": name, "namespace": NS},
            "reason": reason,
            "type": "Warning",
            "count": count,
            "message": message,
            "firstTimestamp": now,
            "lastTimestamp": now,
        },
    )


def build() -> FakeKubelet:
    """The four incidents in namespace ``incidents`` (recreated), the reader's shipped RBAC, and
    the node whose "kubelet" serves their logs. Close the returned kubelet when done."""
    from kubernetes import client

    admin = kube_api("admin")
    core, apps, batch = client.CoreV1Api(admin), client.AppsV1Api(admin), client.BatchV1Api(admin)
    _ignore(409, core.create_namespace, {"metadata": {"name": NS}})
    apply(admin, ROOT / "deploy" / "k8s" / "base" / "rbac" / "read.yaml", "default")
    kubelet = FakeKubelet(LOGS.get)
    _ignore(404, core.delete_node, NODE)
    core.create_node({"metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE}}})
    core.patch_node_status(
        NODE,
        {
            "status": {
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet.port}},
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
            }
        },
    )
    now = _now()

    # 1. OOMKilled: cart-api's container exceeds its 128Mi limit and crash-loops
    container = {
        "name": "api",
        "image": "registry.internal/cart-api:2.0.0",
        "resources": {"limits": {"memory": "128Mi", "cpu": "500m"}},
    }
    _deployment(apps, "cart-api", {"containers": [container]})
    pod = "cart-api-6f7d8c9b5-q2w4e"
    _pod(core, pod, {"app": "cart-api"}, {"nodeName": NODE, "containers": [container]})
    core.patch_namespaced_pod_status(
        pod,
        NS,
        {
            "status": {
                "phase": "Running",
                "containerStatuses": [
                    {
                        "name": "api",
                        "image": container["image"],
                        "imageID": "",
                        "ready": False,
                        "restartCount": 4,
                        "state": {
                            "waiting": {"reason": "CrashLoopBackOff", "message": "back-off 1m20s"}
                        },
                        "lastState": {
                            "terminated": {
                                "reason": "OOMKilled",
                                "exitCode": 137,
                                "startedAt": now,
                                "finishedAt": now,
                            }
                        },
                    }
                ],
            }
        },
    )

    # 2. image pull failure: image-web's new tag does not exist
    image = "registry.internal/image-web:9.9.9-missing"
    web = {"name": "web", "image": image}
    _deployment(apps, "image-web", {"containers": [web]})
    pod = "image-web-7c8d9f6b5-h3j5k"
    _pod(core, pod, {"app": "image-web"}, {"nodeName": NODE, "containers": [web]})
    core.patch_namespaced_pod_status(
        pod,
        NS,
        {
            "status": {
                "phase": "Pending",
                "containerStatuses": [
                    {
                        "name": "web",
                        "image": image,
                        "imageID": "",
                        "ready": False,
                        "restartCount": 0,
                        "state": {
                            "waiting": {
                                "reason": "ImagePullBackOff",
                                "message": f'Back-off pulling image "{image}"',
                            }
                        },
                    }
                ],
            }
        },
    )
    _event(
        core,
        "Pod",
        pod,
        "Failed",
        f'Failed to pull image "{image}": rpc error: code = NotFound desc = {image}: not found',
        3,
    )

    # 3. Pending: gpu-scorer asks for a node label no node has
    scorer = {"name": "scorer", "image": "registry.internal/gpu-scorer:1.0"}
    selector = {"accelerator": "nvidia-t4"}
    _deployment(apps, "gpu-scorer", {"nodeSelector": selector, "containers": [scorer]})
    pod = "gpu-scorer-5b6c7d8e9-m4n6p"
    _pod(core, pod, {"app": "gpu-scorer"}, {"nodeSelector": selector, "containers": [scorer]})
    message = "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
    core.patch_namespaced_pod_status(
        pod,
        NS,
        {
            "status": {
                "phase": "Pending",
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": message,
                    }
                ],
            }
        },
    )
    _event(core, "Pod", pod, "FailedScheduling", message, 6)

    # 4. failed Job: nightly-export's pod exits 2 (the database refuses its password)
    _ignore(404, batch.delete_namespaced_job, "nightly-export", NS, propagation_policy="Background")
    _wait_gone(lambda: batch.read_namespaced_job("nightly-export", NS))
    export = {"name": "export", "image": "registry.internal/exporter:3.1"}
    job = batch.create_namespaced_job(
        NS,
        {
            "metadata": {"name": "nightly-export"},
            "spec": {
                "backoffLimit": 0,
                "template": {"spec": {"restartPolicy": "Never", "containers": [export]}},
            },
        },
    )
    labels = dict(job.spec.template.metadata.labels or {})
    pod = "nightly-export-x7k2m"
    owner = job_owner("nightly-export", job.metadata.uid)
    _pod(
        core,
        pod,
        labels,
        {"nodeName": NODE, "restartPolicy": "Never", "containers": [export]},
        ownerReferences=[owner],
    )
    core.patch_namespaced_pod_status(
        pod, NS, {"status": failed_pod_status("export", export["image"], now)}
    )
    batch.patch_namespaced_job_status("nightly-export", NS, {"status": failed_job_status(now)})
    return kubelet


def job_owner(name: str, uid: str) -> dict[str, Any]:
    """The ownerReference the Job controller puts on its pods."""
    return {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid, "controller": True}


def failed_pod_status(container: str, image: str, now: str) -> dict[str, Any]:
    """A pod status whose one container exited with code 2 (a Job's failed attempt)."""
    return {
        "phase": "Failed",
        "containerStatuses": [
            {
                "name": container,
                "image": image,
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": {
                    "terminated": {
                        "reason": "Error",
                        "exitCode": 2,
                        "startedAt": now,
                        "finishedAt": now,
                    }
                },
            }
        ],
    }


def failed_job_status(now: str) -> dict[str, Any]:
    """A Job status past its backoff limit, as the Job controller writes it."""
    condition = {
        "status": "True",
        "reason": "BackoffLimitExceeded",
        "message": "Job has reached the specified backoff limit",
        "lastProbeTime": now,
        "lastTransitionTime": now,
    }
    return {
        "startTime": now,
        "failed": 1,
        "conditions": [{"type": "FailureTarget", **condition}, {"type": "Failed", **condition}],
    }


def apply(api: Any, path: Path, namespace: str) -> None:
    """Create (or merge-patch, when it exists) every object of a shipped manifest file."""
    import yaml
    from kubernetes.client.rest import ApiException
    from kubernetes.dynamic import DynamicClient

    dynamic = DynamicClient(api)
    for doc in yaml.safe_load_all(path.read_text()):
        if not doc:
            continue
        resource = dynamic.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        kwargs = {"namespace": namespace} if resource.namespaced else {}
        try:
            resource.create(body=doc, **kwargs)
        except ApiException as exc:
            if exc.status != 409:
                raise
            resource.patch(
                body=doc,
                name=doc["metadata"]["name"],
                content_type="application/merge-patch+json",
                **kwargs,
            )


def _wait_gone(read: Any, timeout: float = 10.0) -> None:
    import time

    from kubernetes.client.rest import ApiException

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            read()
        except ApiException as exc:
            if exc.status == 404:
                return
            raise
        time.sleep(0.2)

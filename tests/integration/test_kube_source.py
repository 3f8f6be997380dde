"""The Kubernetes API source on the real kube-apiserver of ``scripts/services``.

No kubelet, scheduler or controller manager runs there, so what they would write is written the
way they would write it, with the admin identity (as ``tests/integration/agent_cluster.py``
does): pods are created and their status is patched through the **status subresource** (a
crash-looping container after an OOM kill, the scheduler's Unschedulable condition, a Job pod's
failed termination), the Job's Failed condition through the Job's status, and
``events.k8s.io/v1`` Events are created with the reporting controller and instance a kubelet,
the scheduler or the Job controller would set. The source itself reads with the read-only
service account's token and the shipped read ClusterRole (``deploy/k8s/base/rbac/read.yaml``).

A real 410 Gone: the API server answers watches from its watch cache, which keeps serving a
compacted revision (etcd compaction alone gives no 410 here); the cache drops events older than
75 s once it is full, so the test compacts etcd, lets the saved revision age past 75 s and
writes 150 pod status changes; the watch from the saved revision is then answered "too old
resource version" and the source re-lists.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from opsassist.documents import Chunk
from opsassist.index.embedded import EmbeddedIndexStore
from opsassist.pipelines import signals as pipeline
from opsassist.settings import Settings
from opsassist.sources.kube import KubeSource, KubeSourceError, WriteIdentityError, pod_findings
from tests.conftest import ROOT, free_port, require_service, service_port
from tests.integration.test_signals_pipeline import fake_embed, indexed

UTC = dt.UTC
READ_RBAC = ROOT / "deploy" / "k8s" / "base" / "rbac" / "read.yaml"


def _stamp(when: dt.datetime | None = None) -> str:
    return (when or dt.datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro(when: dt.datetime | None = None) -> str:
    return (when or dt.datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- the cluster ----------------------------------------------------------------------------------
class Cluster:
    """Admin-side writes into one fresh namespace, as the kubelet and controllers would."""

    def __init__(self, namespace: str) -> None:
        from kubernetes import client

        from tests.integration.agent_cluster import apply, kube_api

        self.namespace = namespace
        self.admin = kube_api("admin")
        self.core = client.CoreV1Api(self.admin)
        self.batch = client.BatchV1Api(self.admin)
        self.events = client.EventsV1Api(self.admin)
        apply(self.admin, READ_RBAC, "default")
        self.core.create_namespace({"metadata": {"name": namespace}})

    def event(self, kind: str, name: str, reason: str, note: str, controller: str) -> None:
        """An ``events.k8s.io/v1`` Event as ``controller`` reports one."""
        self.events.create_namespaced_event(
            self.namespace,
            {
                "apiVersion": "events.k8s.io/v1",
                "kind": "Event",
                "metadata": {"name": f"{name}.{uuid.uuid4().hex[:10]}"},
                "eventTime": _micro(),
                "regarding": {"kind": kind, "name": name, "namespace": self.namespace},
                "reason": reason,
                "note": note,
                "type": "Warning",
                "action": reason,
                "reportingController": controller,
                "reportingInstance": f"{controller}-worker-1",
            },
        )

    def pod(self, name: str, status: dict[str, Any], **spec: Any) -> None:
        body = {"containers": [{"name": "main", "image": "registry.internal/app:1.0"}], **spec}
        meta: dict[str, Any] = {"name": name, "labels": {"app": name.rsplit("-", 2)[0]}}
        if "owner" in spec:
            meta["ownerReferences"] = [body.pop("owner")]
        self.core.create_namespaced_pod(self.namespace, {"metadata": meta, "spec": body})
        self.core.patch_namespaced_pod_status(name, self.namespace, {"status": status})

    def crash_looping_pod(self, name: str) -> None:
        now = _stamp()
        self.pod(
            name,
            {
                "phase": "Running",
                "containerStatuses": [
                    {
                        "name": "main",
                        "image": "registry.internal/app:1.0",
                        "imageID": "",
                        "ready": False,
                        "restartCount": 3,
                        "state": {
                            "waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}
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
            },
            nodeName="worker-sig",
        )
        self.event("Pod", name, "BackOff", "Back-off restarting failed container main", "kubelet")

    def pending_pod(self, name: str) -> None:
        message = "0/3 nodes are available: 3 Insufficient memory."
        self.pod(
            name,
            {
                "phase": "Pending",
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": message,
                        "lastTransitionTime": _stamp(),
                    }
                ],
            },
        )
        self.event("Pod", name, "FailedScheduling", message, "default-scheduler")

    def failed_job(self, name: str) -> str:
        from tests.integration.agent_cluster import failed_job_status, failed_pod_status, job_owner

        job = self.batch.create_namespaced_job(
            self.namespace,
            {
                "metadata": {"name": name},
                "spec": {
                    "backoffLimit": 0,
                    "template": {
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [{"name": "main", "image": "registry.internal/x:1"}],
                        }
                    },
                },
            },
        )
        pod = f"{name}-x7k2m"
        now = _stamp()
        self.pod(
            pod,
            failed_pod_status("main", "registry.internal/x:1", now),
            nodeName="worker-sig",
            restartPolicy="Never",
            owner=job_owner(name, job.metadata.uid),
        )
        self.batch.patch_namespaced_job_status(
            name, self.namespace, {"status": failed_job_status(now)}
        )
        self.event(
            "Job",
            name,
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
            "job-controller",
        )
        return pod

    def close(self) -> None:
        """Deletes what the namespace holds (it stays: no namespace controller runs here)."""
        for pod in self.core.list_namespaced_pod(self.namespace).items:
            self.core.delete_namespaced_pod(
                pod.metadata.name, self.namespace, grace_period_seconds=0
            )
        self.batch.delete_collection_namespaced_job(self.namespace)
        self.events.delete_collection_namespaced_event(self.namespace)
        self.admin.close()


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    require_service("kube-apiserver", service_port("kube_apiserver", 16443))
    made = Cluster(f"sig-{uuid.uuid4().hex[:8]}")
    yield made
    made.close()


def kube_settings(data: Path, namespace: str, identity: str = "reader", **extra: Any) -> Settings:
    from tests.integration.agent_cluster import KUBE, token

    return Settings(
        data_dir=data,
        index_backend="embedded",
        signals_sources="kube",
        signals_kube_namespaces=namespace,
        signals_kube_watch_seconds=5,
        kube_api_url=f"https://127.0.0.1:{service_port('kube_apiserver', 16443)}",
        kube_ca_file=str(KUBE / "pki" / "ca.crt"),
        kube_read_token=token(identity),
        **extra,
    )


@pytest.fixture
def settings_for(tmp_path: Path) -> Callable[..., Settings]:
    def make(namespace: str, identity: str = "reader", **extra: Any) -> Settings:
        return kube_settings(tmp_path / "data", namespace, identity, **extra)

    return make


def event_docs(store: EmbeddedIndexStore) -> dict[tuple[str, str], Chunk]:
    """(source, reason) -> document, of every indexed event document."""
    if store.current_version("signals") is None:
        return {}
    return {(c.source, c.metadata["reason"]): c for c in indexed(store)}


class Follower:
    """The source and the pipeline running in a thread, as a long-lived ingest would (both made
    in that thread: the pipeline's SQLite state belongs to the thread that opened it)."""

    def __init__(self, settings: Settings, store: EmbeddedIndexStore) -> None:
        self.settings = settings
        self.store = store
        self.source: KubeSource | None = None
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        ingest = pipeline.SignalIngestor(self.settings, self.store, embed=fake_embed)
        source = pipeline.open_source(self.settings, "kube")
        assert isinstance(source, KubeSource)
        self.source = source
        try:
            while not self.stop.is_set():
                ingest.drain(source, budget_seconds=5)
        except BaseException as exc:
            self.error = exc
        finally:
            source.close()
            ingest.close()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.source is None or not self.source.ready:
            assert self.error is None, self.error
            assert time.monotonic() < deadline, "the source did not list its streams"
            time.sleep(0.1)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)
        assert self.error is None, self.error


def wait_for(
    store: EmbeddedIndexStore, wanted: set[tuple[str, str]], follower: Follower, timeout: float
) -> dict[tuple[str, str], float]:
    """Seconds from now until each wanted (source, reason) document is searchable."""
    started = time.monotonic()
    seen: dict[tuple[str, str], float] = {}
    while set(seen) != wanted:
        assert follower.error is None, follower.error
        assert time.monotonic() - started < timeout, f"missing {sorted(wanted - set(seen))}"
        for key in event_docs(store):
            if key in wanted and key not in seen:
                seen[key] = time.monotonic() - started
        time.sleep(0.1)
    return seen


def etcd_compact() -> int:
    """Compact the local etcd at its current revision; returns the revision."""
    base = f"http://127.0.0.1:{service_port('etcd', 12379)}"

    def call(path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            base + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            result: dict[str, Any] = json.loads(answer.read())
            return result

    head = call("/v3/kv/range", {"key": base64.b64encode(b"/").decode()})
    revision = int(head["header"]["revision"])
    call("/v3/kv/compaction", {"revision": revision, "physical": True})
    return revision


# --- tests ----------------------------------------------------------------------------------------
@pytest.mark.services
def test_crash_loop_pending_and_failed_job_become_event_documents_once(
    cluster: Cluster, settings_for: Callable[..., Settings]
) -> None:
    settings = settings_for(cluster.namespace)
    store = EmbeddedIndexStore(settings.embedded_index_dir)
    follower = Follower(settings, store)
    try:
        follower.wait_ready()
        ns = cluster.namespace
        cluster.crash_looping_pod("cart-api-6f7d8c9b5-q2w4e")
        cluster.pending_pod("gpu-scorer-5b6c7d8e9-m4n6p")
        job_pod = cluster.failed_job("nightly-export")
        wanted = {
            (f"{ns}/Pod/cart-api-6f7d8c9b5-q2w4e", "CrashLoopBackOff"),
            (f"{ns}/Pod/cart-api-6f7d8c9b5-q2w4e", "OOMKilled"),
            (f"{ns}/Pod/cart-api-6f7d8c9b5-q2w4e", "BackOff"),
            (f"{ns}/Pod/gpu-scorer-5b6c7d8e9-m4n6p", "Unschedulable"),
            (f"{ns}/Pod/gpu-scorer-5b6c7d8e9-m4n6p", "FailedScheduling"),
            (f"{ns}/Pod/{job_pod}", "Error"),
            (f"{ns}/Pod/{job_pod}", "PodFailed"),
            (f"{ns}/Job/nightly-export", "BackoffLimitExceeded"),
        }
        # a liveness bound, not a performance check: benchmarks/kube_events_latency.py times it
        seconds = wait_for(store, wanted, follower, timeout=90)
        assert set(seconds) == wanted
    finally:
        follower.close()

    docs = event_docs(store)
    assert set(docs) == wanted  # nothing else: no finding for the healthy parts of the pods
    oom = docs[(f"{ns}/Pod/cart-api-6f7d8c9b5-q2w4e", "OOMKilled")]
    assert oom.source_type == "event" and "was OOMKilled (exit code 137" in oom.text
    assert "Reported by opsassist/pod-status" in oom.text
    scheduling = docs[(f"{ns}/Pod/gpu-scorer-5b6c7d8e9-m4n6p", "FailedScheduling")]
    assert "3 Insufficient memory" in scheduling.text and "default-scheduler" in scheduling.text
    assert all(d.metadata["reports"] == 1 for d in docs.values())
    # searchable by time window, as the chat and the agent ask
    from opsassist.index.base import Filters, Query, hybrid_search

    since = dt.datetime.now(UTC) - dt.timedelta(minutes=10)
    hits = hybrid_search(
        store,
        "signals",
        Query(
            "OOMKilled cart-api",
            mode="bm25",
            k=3,
            filters=Filters(source_types=("event",), since=since),
        ),
    )
    assert hits and hits[0].id == oom.id

    # a restart: the saved revisions resume the watches, nothing is read twice
    before = {c.id: c.text for c in indexed(store)}
    ingest = pipeline.SignalIngestor(settings, store, embed=fake_embed)
    source = pipeline.open_source(settings, "kube")
    again = pipeline.summarise("kube", ingest.drain(source, budget_seconds=20))
    assert again["accepted"] == 0 and again["upserted"] == 0, again
    # a change while the source is away is read once on the next start
    cluster.event("Job", "nightly-export", "SuccessfulDelete", "Deleted pod", "job-controller")
    source.close()
    source = pipeline.open_source(settings, "kube")
    later = pipeline.summarise("kube", ingest.drain(source, budget_seconds=20))
    source.close()
    ingest.close()
    assert later["accepted"] == 1, later
    after = {c.id: c.text for c in indexed(store)}
    assert {i: t for i, t in after.items() if i in before} == before
    assert len(after) == len(before) + 1


@pytest.mark.slow
@pytest.mark.services
def test_expired_resource_version_is_recovered_by_a_relist_without_duplicates(
    cluster: Cluster, settings_for: Callable[..., Settings]
) -> None:
    settings = settings_for(cluster.namespace)
    store = EmbeddedIndexStore(settings.embedded_index_dir)
    cluster.crash_looping_pod("cart-api-6f7d8c9b5-q2w4e")
    cluster.pending_pod("gpu-scorer-5b6c7d8e9-m4n6p")
    ingest = pipeline.SignalIngestor(settings, store, embed=fake_embed)
    source = pipeline.open_source(settings, "kube")
    first = pipeline.summarise("kube", ingest.drain(source, budget_seconds=30))
    source.close()
    assert first["accepted"] == 5, first  # 3 findings + 2 events
    before = {c.id: c.text for c in indexed(store)}
    saved = json.loads((settings.data_dir / "signals" / "kube.json").read_text())
    pods_stream = f"kube:{cluster.namespace}:pods"
    resume = max(saved["positions"][pods_stream] - 1, saved["resume"].get(pods_stream, 0))

    # while the source is away: a new finding, an etcd compaction, and the saved revision aging
    # out of the API server's watch cache (older than 75 s, then newer pod changes until the
    # cache has dropped it: 150 at a time, as other tests may have grown the cache)
    cluster.pending_pod("search-indexer-7d9f8b6c5-k2l4m")
    assert etcd_compact() > resume
    time.sleep(80)
    churn = f"churn-{uuid.uuid4().hex[:6]}"
    cluster.pod(churn, {"phase": "Pending"})
    from opsassist.sources.kube import ExpiredError, KubeApi

    probe = KubeApi(cluster.admin)
    path = f"/api/v1/namespaces/{cluster.namespace}/pods"
    expired = ""
    for batch in range(40):
        for i in range(150):
            cluster.core.patch_namespaced_pod_status(
                churn, cluster.namespace, {"status": {"message": f"churn {batch}.{i}"}}
            )
        try:
            list(probe.watch(path, str(resume), 1, threading.Event()))
        except ExpiredError as exc:
            expired = str(exc)
            break
    assert "too old resource version" in expired

    source = pipeline.open_source(settings, "kube")
    assert isinstance(source, KubeSource)
    second = pipeline.summarise("kube", ingest.drain(source, budget_seconds=30))
    relists = source.relists
    source.close()
    ingest.close()
    assert relists >= 1
    # the new pod's finding and its scheduler event, nothing of the re-list again
    assert second["accepted"] == 2, second
    after = {c.id: c.text for c in indexed(store)}
    assert {i: t for i, t in after.items() if i in before} == before
    new = [c for i, c in ((c.id, c) for c in indexed(store)) if i not in before]
    assert sorted((c.source.split("/")[-1], c.metadata["reason"]) for c in new) == [
        ("search-indexer-7d9f8b6c5-k2l4m", "FailedScheduling"),
        ("search-indexer-7d9f8b6c5-k2l4m", "Unschedulable"),
    ]


@pytest.mark.services
def test_write_identity_refused_and_unreachable_api_is_a_clear_error(
    cluster: Cluster, settings_for: Callable[..., Settings]
) -> None:
    admin = settings_for(cluster.namespace, identity="admin")
    source = pipeline.open_source(admin, "kube")
    with pytest.raises(WriteIdentityError, match="may create pods"):
        source.poll(10, 1.0)
    source.close()

    settings = settings_for(cluster.namespace)
    store = EmbeddedIndexStore(settings.embedded_index_dir)
    cluster.pending_pod("gpu-scorer-5b6c7d8e9-m4n6p")
    ingest = pipeline.SignalIngestor(settings, store, embed=fake_embed)
    source = pipeline.open_source(settings, "kube")
    assert pipeline.summarise("kube", ingest.drain(source, budget_seconds=20))["accepted"] == 2
    source.close()
    state = settings.data_dir / "signals" / "kube.json"
    saved = state.read_text()
    down = settings.model_copy(update={"kube_api_url": f"https://127.0.0.1:{free_port()}"})
    source = pipeline.open_source(down, "kube")
    with pytest.raises(KubeSourceError, match=r"could not be reached"):
        ingest.drain(source, budget_seconds=20)
    source.close()
    ingest.close()
    assert state.read_text() == saved


def test_pod_findings_name_what_kubectl_shows() -> None:
    running = {
        "metadata": {"name": "web-1", "namespace": "shop", "uid": "u1"},
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "t1"}],
            "containerStatuses": [
                {"name": "web", "restartCount": 0, "state": {"running": {"startedAt": "t0"}}}
            ],
        },
    }
    found = pod_findings(running)
    assert [(f.reason, f.type) for f in found] == [("Ready", "Normal")]
    restarted = json.loads(json.dumps(running))
    status = restarted["status"]
    status["containerStatuses"][0] |= {
        "restartCount": 2,
        "lastState": {"terminated": {"reason": "Error", "exitCode": 1, "finishedAt": "t2"}},
    }
    status["conditions"][0] |= {"status": "False", "lastTransitionTime": "t3"}
    reasons = [f.reason for f in pod_findings(restarted)]
    assert reasons == ["Restarted", "NotReady"]
    pulled = {
        "status": {
            "phase": "Pending",
            "containerStatuses": [
                {
                    "name": "app",
                    "restartCount": 0,
                    "state": {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}},
                }
            ],
        }
    }
    (finding,) = pod_findings(pulled)
    assert finding.reason == "ImagePullBackOff" and "not found" in finding.message
    evicted = {"status": {"phase": "Failed", "reason": "Evicted", "message": "low on memory"}}
    assert [(f.reason, f.message) for f in pod_findings(evicted)] == [("Evicted", "low on memory")]

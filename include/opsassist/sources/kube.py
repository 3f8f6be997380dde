"""Kubernetes API source: Events (``events.k8s.io/v1``) and pod status changes, list + watch.

Streams: one per (namespace, resource), ``kube:<namespace>:events`` and ``kube:<namespace>:pods``
(``*`` for a cluster-wide watch when ``OPSASSIST_SIGNALS_KUBE_NAMESPACES=*``). Each stream has a
watcher thread that lists the collection once (paged, a consistent read), then watches it from
the list's ``resourceVersion`` with bookmarks, and queues what it receives; :meth:`KubeSource.poll`
turns the queue into records on the caller's thread.

Records are the same kind as the spool's and Kafka's Kubernetes events (``kind="event"``, parsed
by :func:`opsassist.parsing.events.parse_event`, indexed as ``source_type="event"`` window
digests), so the chat and the agent find them by time window as before:

* an Event is passed on as the API's JSON (``regarding``, ``note``, ``series``, ``eventTime``...);
* a pod's status is turned into event-shaped findings by :func:`pod_findings`: a container
  waiting in a back-off or error state (CrashLoopBackOff, ImagePullBackOff, ErrImagePull,
  CreateContainerConfigError...), an OOMKilled termination, a failed termination (non-zero exit),
  a restart, a PodScheduled=False condition (Unschedulable: why a pod is Pending), a pod that
  turned NotReady (and Ready again), a Failed phase (Evicted...). A finding is emitted when its
  signature (reason, restart count, finish time...) differs from the one last emitted for that
  pod and key, so a pod updated for an unrelated reason emits nothing new.

Positions: ``resourceVersion`` is, on every API server backed by etcd, the etcd revision of the
object's last change (an integer, increasing across all resources); it is the record's offset, so
the pipeline skips a record it has already applied. The API documents resourceVersion as opaque;
a non-integer one is refused with a clear error. After a batch is committed the source saves, per
stream, the next offset and the revision through which everything was handled (list or bookmark
revision), plus the pod signatures, in a small JSON file (atomic replace). A restart watches
from there; a watch answered **410 Gone** (the revision was compacted away) re-lists, and the
objects of the new list whose revision is below the committed position are skipped, so nothing
is applied twice; objects changed while the source was away are delivered once, in their
current state (what list/watch gives every client: intermediate states in the gap are lost).

Identity: the source reads with the read-only service account (``OPSASSIST_KUBE_READ_TOKEN``, the
chart's ``opsassist-read`` ClusterRole: get/list/watch on pods and events) or the Airflow
connection of the cncf-kubernetes type. Before the first request it asks the API server
(SelfSubjectAccessReview) whether the identity may create or delete pods or patch Deployments in
a watched namespace, and refuses to run with one that may (:class:`WriteIdentityError`).

Errors: an unreachable API server, an authorisation failure or any other watch error is raised
by the next :meth:`KubeSource.poll` as :class:`KubeSourceError` (the DAG task fails and Airflow
retries it); the saved positions are untouched, so nothing is lost.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import hashlib
import json
import os
import queue
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from opsassist.logs import get_logger
from opsassist.sources.base import DeadLetter, RawRecord, append_dead_letters

log = get_logger(__name__)

RESOURCES = ("events", "pods")
REPORTER = "opsassist/pod-status"
WAITING_REASONS = frozenset(
    {
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "ErrImagePull",
        "ErrImageNeverPull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
        "PreCreateHookError",
        "PostStartHookError",
    }
)
LIST_PAGE = 500
# SelfSubjectAccessReviews the identity must be refused: (verb, group, resource)
WRITE_CHECKS = (("create", "", "pods"), ("delete", "", "pods"), ("patch", "apps", "deployments"))


class KubeSourceError(RuntimeError):
    """The API server could not be read (unreachable, unauthorised, an unexpected answer)."""


class WriteIdentityError(KubeSourceError):
    """The configured identity may write: the source runs only with a read-only one."""


class ExpiredError(Exception):
    """The API answered 410 Gone: the requested resourceVersion is no longer available."""


# --- pods: status -> findings ---------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class Finding:
    """One notable fact of a pod's status, shaped as an event (reason, type, message, time)."""

    key: str  # what it is about (a container's state, a condition): one signature per key
    signature: str  # changes when the fact changes (a new restart, another reason)
    reason: str
    type: str
    message: str
    when: str  # RFC 3339 time of the fact ("" if the status gives none)
    count: int = 1


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _container_findings(status: Mapping[str, Any], phase: str) -> list[Finding]:
    found: list[Finding] = []
    name = str(status.get("name") or "?")
    restarts = int(status.get("restartCount") or 0)
    state, last = _map(status.get("state")), _map(status.get("lastState"))
    waiting, terminated = _map(state.get("waiting")), _map(state.get("terminated"))
    previous = _map(last.get("terminated"))
    reason = str(waiting.get("reason") or "")
    if reason in WAITING_REASONS:
        detail = f": {waiting['message']}" if waiting.get("message") else ""
        cause = ""
        if previous:
            cause = (
                f"; last terminated {previous.get('reason') or 'Error'} "
                f"(exit code {previous.get('exitCode')})"
            )
        found.append(
            Finding(
                f"{name}:waiting",
                f"{reason}:{restarts}",
                reason,
                "Warning",
                f"Container {name} is waiting: {reason}{detail} (restarts {restarts}{cause})",
                str(previous.get("finishedAt") or ""),
                max(1, restarts),
            )
        )
    for which, term in (("last", previous), ("now", terminated)):
        if term.get("reason") == "OOMKilled":
            found.append(
                Finding(
                    f"{name}:oom",
                    f"{restarts}:{term.get('finishedAt') or ''}",
                    "OOMKilled",
                    "Warning",
                    f"Container {name} was OOMKilled (exit code {term.get('exitCode', 137)}, "
                    f"restarts {restarts}): it exceeded its memory limit",
                    str(term.get("finishedAt") or ""),
                    max(1, restarts),
                )
            )
            break
        if which == "now" and term and int(term.get("exitCode") or 0) != 0:
            message = f": {term['message']}" if term.get("message") else ""
            found.append(
                Finding(
                    f"{name}:terminated",
                    f"{term.get('exitCode')}:{term.get('finishedAt') or ''}",
                    str(term.get("reason") or "Error"),
                    "Warning",
                    f"Container {name} terminated with exit code {term.get('exitCode')} "
                    f"({term.get('reason') or 'Error'}){message}",
                    str(term.get("finishedAt") or ""),
                )
            )
    if restarts and not reason and state.get("running") is not None and phase == "Running":
        found.append(
            Finding(
                f"{name}:restarted",
                str(restarts),
                "Restarted",
                "Warning",
                f"Container {name} restarted (restarts {restarts}; last terminated "
                f"{previous.get('reason') or 'unknown'}, exit code {previous.get('exitCode')})",
                str(_map(state.get("running")).get("startedAt") or ""),
                restarts,
            )
        )
    return found


def pod_findings(pod: Mapping[str, Any]) -> list[Finding]:
    """The notable facts of a pod's status (see the module docstring), in a stable order."""
    status = _map(pod.get("status"))
    phase = str(status.get("phase") or "")
    found: list[Finding] = []
    for key in ("initContainerStatuses", "containerStatuses"):
        for item in status.get(key) or []:
            found.extend(_container_findings(_map(item), phase))
    for condition in status.get("conditions") or []:
        cond = _map(condition)
        kind, value = cond.get("type"), cond.get("status")
        when = str(cond.get("lastTransitionTime") or "")
        if kind == "PodScheduled" and value == "False":
            reason = str(cond.get("reason") or "Unschedulable")
            message = str(cond.get("message") or "the pod cannot be scheduled")
            found.append(
                Finding(
                    "scheduled",
                    f"{reason}:{message}",
                    reason,
                    "Warning",
                    f"Pod is {phase or 'Pending'}: {message}",
                    when,
                )
            )
        elif kind == "Ready" and phase == "Running":
            ready = value == "True"
            message = str(cond.get("message") or "")
            found.append(
                Finding(
                    "ready",
                    f"{value}:{when}",
                    "Ready" if ready else "NotReady",
                    "Normal" if ready else "Warning",
                    "Pod is Ready again" if ready else f"Pod is not Ready: {message or value}",
                    when,
                )
            )
    if phase == "Failed":
        reason = str(status.get("reason") or "PodFailed")
        message = str(status.get("message") or "all containers terminated, one or more failed")
        found.append(Finding("phase", f"Failed:{reason}", reason, "Warning", message, ""))
    return found


def finding_event(
    pod: Mapping[str, Any], finding: Finding, observed: dt.datetime
) -> dict[str, Any]:
    """A finding as a ``core/v1`` Event object (what :func:`parse_event` reads)."""
    meta = _map(pod.get("metadata"))
    namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "?")
    uid = str(meta.get("uid") or name)
    digest = hashlib.sha1(f"{uid}\x1f{finding.key}\x1f{finding.signature}".encode()).hexdigest()
    when = finding.when or observed.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{name}.{digest[:12]}", "namespace": namespace, "uid": digest[:32]},
        "involvedObject": {"kind": "Pod", "name": name, "namespace": namespace, "uid": uid},
        "reason": finding.reason,
        "type": finding.type,
        "message": finding.message,
        "count": finding.count,
        "firstTimestamp": when,
        "lastTimestamp": when,
        "source": {"component": REPORTER},
    }


# --- the API --------------------------------------------------------------------------------------
def collection_path(resource: str, namespace: str) -> str:
    base = "/apis/events.k8s.io/v1" if resource == "events" else "/api/v1"
    if namespace == "*":
        return f"{base}/{resource}"
    return f"{base}/namespaces/{namespace}/{resource}"


def revision(obj: Mapping[str, Any]) -> int:
    value = _map(obj.get("metadata")).get("resourceVersion")
    try:
        return int(str(value))
    except ValueError:
        raise KubeSourceError(
            f"resourceVersion {value!r} is not an integer: this source needs an etcd-backed API "
            "server (revisions as integers)"
        ) from None


class KubeApi:
    """GET, list and watch through the official client's ``ApiClient`` (its auth and TLS)."""

    def __init__(self, api: Any, *, request_timeout: float = 30.0) -> None:
        self.api = api
        self.request_timeout = request_timeout

    @property
    def host(self) -> str:
        return str(getattr(self.api.configuration, "host", "?"))

    def _open(self, path: str, params: Mapping[str, Any], read_timeout: float) -> Any:
        query = [(k, v) for k, v in params.items() if v is not None and v != ""]
        method, url, headers, body, post = self.api.param_serialize(
            "GET",
            path,
            query_params=query,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        return self.api.call_api(
            method,
            url,
            header_params=headers,
            body=body,
            post_params=post,
            _request_timeout=(min(10.0, self.request_timeout), read_timeout),
        ).response

    def _check(self, response: Any, path: str) -> None:
        if response.status == 410:
            response.release_conn()
            raise ExpiredError(path)
        if not 200 <= response.status <= 299:
            body = response.data.decode("utf-8", "replace")[:300]
            response.release_conn()
            raise KubeSourceError(f"GET {path}: HTTP {response.status} {body}")

    def list(self, path: str) -> tuple[list[dict[str, Any]], str]:
        """Every item of a collection (paged) and the list's resourceVersion."""
        items: list[dict[str, Any]] = []
        token = ""
        while True:
            response = self._open(
                path, {"limit": LIST_PAGE, "continue": token}, self.request_timeout
            )
            self._check(response, path)
            body = json.loads(response.data)
            items.extend(body.get("items") or [])
            meta = body.get("metadata") or {}
            token = str(meta.get("continue") or "")
            if not token:
                return items, str(meta.get("resourceVersion") or "")

    def watch(
        self, path: str, resource_version: str, seconds: int, stop: threading.Event
    ) -> Iterator[dict[str, Any]]:
        """Watch notifications from ``resource_version`` for about ``seconds`` (server side);
        :class:`ExpiredError` on 410 Gone (an HTTP status or an ERROR notification)."""
        from kubernetes.watch.watch import iter_resp_lines

        params = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": seconds,
        }
        response = self._open(path, params, seconds + 15)
        try:
            self._check(response, path)
            for line in iter_resp_lines(response):
                if not line:
                    continue
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    if status.get("code") == 410:
                        raise ExpiredError(str(status.get("message") or path))
                    raise KubeSourceError(f"watch {path}: {status.get('message') or status}")
                yield event
                if stop.is_set():
                    return
        finally:
            response.release_conn()

    def may(self, verb: str, group: str, resource: str, namespace: str) -> bool:
        """Whether this identity may ``verb`` the resource (SelfSubjectAccessReview)."""
        from kubernetes import client

        body = client.V1SelfSubjectAccessReview(
            spec=client.V1SelfSubjectAccessReviewSpec(
                resource_attributes=client.V1ResourceAttributes(
                    verb=verb,
                    group=group,
                    resource=resource,
                    namespace="" if namespace == "*" else namespace,
                )
            )
        )
        review = client.AuthorizationV1Api(self.api).create_self_subject_access_review(body)
        return review.status is not None and bool(review.status.allowed)


def assert_read_only(api: KubeApi, namespaces: Sequence[str]) -> None:
    """Refuse an identity that may write (see the module docstring)."""
    for namespace in namespaces[:1] or ["*"]:
        for verb, group, resource in WRITE_CHECKS:
            if api.may(verb, group, resource, namespace):
                raise WriteIdentityError(
                    f"the Kubernetes identity may {verb} {group + '/' if group else ''}{resource} "
                    f"in {namespace!r}: the signal source runs only with the read-only identity "
                    "(OPSASSIST_KUBE_READ_TOKEN or a read-only Airflow connection)"
                )


# --- watcher threads ------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """What a watcher thread hands to ``poll``: a list, a notification, a 410, ready, an error."""

    stream: str
    what: str  # "list", "event", "expired", "ready", "error"
    items: tuple[dict[str, Any], ...] = ()
    event_type: str = ""
    revision: str = ""
    error: BaseException | None = None


def _watch_loop(
    api: KubeApi,
    stream: str,
    path: str,
    resume: str | None,
    out: queue.Queue[Message],
    stop: threading.Event,
    watch_seconds: int,
) -> None:
    revision_ = resume
    announced = False
    try:
        while not stop.is_set():
            if revision_ is None:
                items, revision_ = api.list(path)
                out.put(Message(stream, "list", tuple(items), revision=revision_))
            if not announced:
                out.put(Message(stream, "ready"))
                announced = True
            try:
                for event in api.watch(path, revision_, watch_seconds, stop):
                    obj = event.get("object") or {}
                    revision_ = str(_map(obj.get("metadata")).get("resourceVersion") or revision_)
                    out.put(Message(stream, "event", (obj,), str(event.get("type")), revision_))
            except ExpiredError as exc:
                log.info(
                    "kube watch expired: re-listing", extra={"stream": stream, "why": str(exc)}
                )
                out.put(Message(stream, "expired", revision=revision_ or ""))
                revision_ = None
    except BaseException as exc:  # reported by the next poll
        out.put(Message(stream, "error", error=exc))


# --- the source -----------------------------------------------------------------------------------
class KubeSource:
    """Kubernetes Events and pod status changes as event records; see the module docstring."""

    name = "kube"

    def __init__(
        self,
        api: Any,
        namespaces: Sequence[str],
        state_path: Path,
        deadletter_path: Path,
        *,
        watch_seconds: int = 30,
        startup_timeout: float = 30.0,
        check_identity: bool = True,
    ) -> None:
        self.api = api if isinstance(api, KubeApi) else KubeApi(api)
        self.namespaces = list(namespaces) or ["*"]
        self.state_path = state_path
        self.deadletter_path = deadletter_path
        self.watch_seconds = watch_seconds
        self.startup_timeout = startup_timeout
        self.check_identity = check_identity
        self.streams = {
            f"kube:{ns}:{resource}": (resource, collection_path(resource, ns))
            for ns in self.namespaces
            for resource in RESOURCES
        }
        state = self._load()
        self._committed: dict[str, int] = {k: int(v) for k, v in state["positions"].items()}
        self._resume: dict[str, int] = {k: int(v) for k, v in state["resume"].items()}
        self._pods: dict[str, dict[str, str]] = {k: dict(v) for k, v in state["pods"].items()}
        self._emitted: dict[str, int] = {}  # highest revision handed out per stream (session)
        self._handled: dict[str, int] = {}  # revision through which a stream was read (session)
        self._queue: queue.Queue[Message] = queue.Queue()
        self._pending: collections.deque[RawRecord] = collections.deque()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._ready: set[str] = set()
        self.relists = 0  # 410 Gone answers recovered by a re-list (this session)

    # --- state ---------------------------------------------------------------------------------
    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            data = {}
        return {key: dict(data.get(key) or {}) for key in ("positions", "resume", "pods")}

    def _save(self) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        data = {"positions": self._committed, "resume": self._resume, "pods": self._pods}
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, self.state_path)

    def resume_from(self, stream: str) -> str | None:
        """Where a stream's watch starts: the saved revision (None: list first)."""
        known = max(self._committed.get(stream, 0) - 1, self._resume.get(stream, 0))
        return str(known) if known > 0 else None

    @property
    def ready(self) -> bool:
        """Every stream has listed its objects or resumed its watch."""
        return len(self._ready) == len(self.streams)

    # --- threads -------------------------------------------------------------------------------
    def _start(self) -> None:
        if self._threads:
            return
        if self.check_identity:
            try:
                assert_read_only(self.api, self.namespaces)
            except KubeSourceError:
                raise
            except Exception as exc:
                raise KubeSourceError(
                    f"Kubernetes API {self.api.host} could not be reached: {exc}"
                ) from exc
        for stream, (_, path) in self.streams.items():
            thread = threading.Thread(
                target=_watch_loop,
                args=(
                    self.api,
                    stream,
                    path,
                    self.resume_from(stream),
                    self._queue,
                    self._stop,
                    self.watch_seconds,
                ),
                name=f"opsassist-{stream}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    # --- Source --------------------------------------------------------------------------------
    def poll(self, max_records: int, timeout: float) -> list[RawRecord]:
        """Records until ``max_records`` or ``timeout`` seconds (extended up to
        ``startup_timeout`` until every stream has listed or resumed its watch)."""
        self._start()
        started = time.monotonic()
        last = started
        while len(self._pending) < max_records:
            ready = len(self._ready) == len(self.streams)
            budget = timeout if ready else max(timeout, self.startup_timeout)
            now = time.monotonic()
            if now >= started + budget or (self._pending and ready and now - last >= 0.1):
                break
            wait = min(started + budget - now, 0.1 if self._pending else 0.25)
            try:
                message = self._queue.get(timeout=max(wait, 0.001))
            except queue.Empty:
                continue
            before = len(self._pending)
            self._handle(message)
            if len(self._pending) > before:
                last = time.monotonic()
        return self._take(max_records)

    def _take(self, max_records: int) -> list[RawRecord]:
        """Up to ``max_records`` pending records, never splitting one revision's records (their
        offsets are equal: a split would make the rest look applied)."""
        out: list[RawRecord] = []
        while self._pending and len(out) < max_records:
            first = self._pending.popleft()
            out.append(first)
            while (
                self._pending
                and self._pending[0].stream == first.stream
                and (self._pending[0].offset == first.offset)
            ):
                out.append(self._pending.popleft())
        return out

    def _handle(self, message: Message) -> None:
        stream = message.stream
        if message.what == "error":
            error = message.error
            if isinstance(error, KubeSourceError):
                raise error
            raise KubeSourceError(
                f"Kubernetes API {self.api.host} ({stream}): {type(error).__name__}: {error}"
            ) from error
        if message.what == "ready":
            self._ready.add(stream)
            return
        if message.what == "expired":
            self.relists += 1
            return
        if message.what == "list":
            if self.streams[stream][0] == "pods":
                present = {str(_map(i.get("metadata")).get("uid")) for i in message.items}
                for uid in [u for u in self._pods if u not in present]:
                    del self._pods[uid]  # pods deleted while we were away
            for item in sorted(message.items, key=revision):
                self._object(stream, "ADDED", item)
            self._mark(stream, message.revision)
            return
        obj = message.items[0]
        if message.event_type == "BOOKMARK":
            self._mark(stream, message.revision)
        elif message.event_type == "DELETED":
            if self.streams[stream][0] == "pods":
                self._pods.pop(str(_map(obj.get("metadata")).get("uid")), None)
            self._mark(stream, message.revision)
        else:
            self._object(stream, message.event_type, obj)
            self._mark(stream, message.revision)

    def _mark(self, stream: str, value: str) -> None:
        if value.isdigit():
            self._handled[stream] = max(self._handled.get(stream, 0), int(value))

    def _object(self, stream: str, event_type: str, obj: Mapping[str, Any]) -> None:
        rv = revision(obj)
        if rv < self._committed.get(stream, 0) or rv <= self._emitted.get(stream, 0):
            return  # applied before (a re-list after a restart or a 410), or handed out already
        meta = _map(obj.get("metadata"))
        namespace = str(meta.get("namespace") or "")
        received = dt.datetime.now(dt.UTC)
        resource = self.streams[stream][0]
        if resource == "events":
            payloads = [json.dumps(obj, separators=(",", ":")).encode()]
            origin = f"{namespace}/events.k8s.io/{meta.get('name')}"
        else:
            uid = str(meta.get("uid") or meta.get("name"))
            memory = self._pods.setdefault(uid, {})
            payloads = []
            for finding in pod_findings(obj):
                if memory.get(finding.key) == finding.signature:
                    continue
                if finding.reason == "Ready" and not memory.get("ready", "").startswith("False"):
                    memory[finding.key] = finding.signature
                    continue  # Ready from the start is not news; Ready again is
                memory[finding.key] = finding.signature
                event = finding_event(obj, finding, received)
                payloads.append(json.dumps(event, separators=(",", ":")).encode())
            origin = f"{namespace}/pods/{meta.get('name')}"
        self._emitted[stream] = rv
        for payload in payloads:
            self._pending.append(
                RawRecord(
                    kind="event",
                    payload=payload,
                    stream=stream,
                    offset=rv,
                    next_offset=rv + 1,
                    received=received,
                    origin=origin,
                    hint=namespace,
                )
            )

    def dead_letter(self, letters: Sequence[DeadLetter]) -> None:
        append_dead_letters(
            self.deadletter_path,
            letters,
            lambda letter: {
                "stream": letter.record.stream,
                "resource_version": letter.record.offset,
                "origin": letter.record.origin,
                "payload": letter.record.payload.decode("utf-8", "replace"),
            },
        )

    def commit(self, positions: Mapping[str, int]) -> None:
        for stream, offset in positions.items():
            if stream in self.streams:
                self._committed[stream] = max(self._committed.get(stream, 0), int(offset))
        for stream in self.streams:
            waiting = any(r.stream == stream for r in self._pending)
            handed = self._emitted.get(stream, 0)
            if not waiting and (handed == 0 or self._committed.get(stream, 0) > handed):
                # everything read from this stream is applied: resume after what was read
                self._resume[stream] = max(
                    self._resume.get(stream, 0), self._handled.get(stream, 0)
                )
        self._save()

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(0.2)

"""The investigating planner: find the object the question means, then follow the evidence.

1. **Read the question** (``parse``): the namespace (``-n x``, ``namespace x``, ``x namespace``,
   an allowed namespace named; a namespace off the allow-list is refused, never replaced by
   another), the names it mentions (hyphenated names, a word next to a kind: ``job x``, ``x
   pods``), the kinds, and the metrics (the catalogue in ``playbooks.yaml``).
2. **Resolve the target** (``k8s_find`` across the allowed namespaces): exact names first, then
   name prefixes (a workload's pods fold into the workload), then the ``app`` label. Two
   candidates in different namespaces or two workloads: ask back, read neither. No match: say so,
   read nothing else.
3. **Investigate per kind** with read tools only (pod: describe, events, previous and current
   logs; workloads: describe, their pods, the worst pod; Jobs and CronJobs: the failed Job's pod;
   PVC: its StorageClass; Service: its endpoints and not-ready backends; nodes: conditions), and
   match the output against the findings declared per kind in ``playbooks.yaml``. A finding
   states the root cause and may ask for more reads (nodes, the PVC, its StorageClass, memory).
4. **State the root cause** citing the tool results (``[#i]``: the i-th run, renumbered as
   sources by the loop). Every call goes through the loop's gate (registry check, step budget,
   redaction, audit).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from opsassist.agent.kuberead import FINDABLE, RESOURCES, WORKLOADS
from opsassist.agent.registry import AllowList, ToolCall

PLAYBOOKS = Path(__file__).with_name("playbooks.yaml")
_TOKEN = re.compile(r"[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?")
_POD_LINE = re.compile(
    r"pod/(?P<name>\S+) ready=(?P<ready>\d+)/(?P<total>\d+) status=(?P<status>\S+) "
    r"restarts=(?P<restarts>\d+)"
)
_BY_NAME_ONLY = ("configmaps", "horizontalpodautoscalers", "ingresses", "networkpolicies")
_BAD_STATUS = ("CrashLoopBackOff", "Error", "OOMKilled", "ImagePullBackOff", "ErrImagePull")


@functools.lru_cache(maxsize=4)
def load_book(path: Path = PLAYBOOKS) -> dict[str, Any]:
    book: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return book


@dataclasses.dataclass(slots=True)
class Question:
    text: str
    lower: str
    tokens: list[str]
    namespace: str | None = None
    refused_namespace: str | None = None
    names: list[tuple[str, str | None, bool]] = dataclasses.field(default_factory=list)
    kinds: list[str] = dataclasses.field(default_factory=list)
    metrics: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    diagnose: bool = False
    wants_logs: bool = False
    wants_previous: bool = False
    wants_events: bool = False


def _has(lower: str, phrase: str) -> bool:
    return re.search(rf"(?<![a-z0-9-]){re.escape(phrase)}(?![a-z0-9-])", lower) is not None


def parse(text: str, allow: AllowList, book: dict[str, Any] | None = None) -> Question | None:
    """What the question asks about, or ``None`` when it needs no tool (a concept question)."""
    book = book or load_book()
    lower = text.lower().replace("’", "'")
    tokens = [t for t in _TOKEN.findall(lower.replace("'s ", " "))]
    q = Question(text, lower, tokens)
    system = set(book["system_namespaces"])
    stop = set(book["stopwords"]) | set(book["diagnose"])
    kind_of = {word: kind for kind, words in book["kinds"].items() for word in words}
    # namespace: explicit forms first; one off the allow-list is refused, not replaced
    explicit = [
        m.group(1)
        for pattern in (
            r"(?:^|\s)(?:-n|--namespace)[=\s]+([a-z0-9-]+)",
            r"\bnamespace\s+([a-z0-9-]+)",
            r"\b([a-z0-9-]+)\s+namespace\b",
        )
        for m in re.finditer(pattern, lower)
    ]
    for candidate in explicit:
        if candidate in allow.namespaces:
            q.namespace = candidate
            break
        if candidate in system or (candidate not in stop and candidate not in kind_of):
            q.refused_namespace = candidate
            break
    if q.namespace is None and q.refused_namespace is None:
        for token in tokens:
            if token in system:
                q.refused_namespace = token
                break
            if token in allow.namespaces:
                q.namespace = token
                break
    # kinds and names
    for token in tokens:
        kind = kind_of.get(token)
        if kind and kind not in q.kinds:
            q.kinds.append(kind)
    namespaces = allow.namespaces | system
    seen: set[str] = set()

    def add(term: str, kind: str | None, strong: bool) -> None:
        if term in seen or term in stop or term in kind_of or len(term) < 3:
            return
        if term in namespaces and not (kind and strong):
            return
        if term.isdigit():
            return
        seen.add(term)
        q.names.append((term, kind, strong))

    for i, token in enumerate(tokens):  # a word next to a kind word: "job x", "x pods"
        kind = kind_of.get(token)
        if not kind or kind == "events":
            continue
        if i + 1 < len(tokens) and tokens[i + 1] not in kind_of:
            add(tokens[i + 1], kind, True)
        if i > 0 and tokens[i - 1] not in kind_of:
            add(tokens[i - 1], kind, True)
    for token in tokens:  # names that look like Kubernetes names
        if "-" in token and token not in namespaces:
            add(token, None, True)
    for token in tokens:  # plain words, tried last and never reported as missing
        if re.fullmatch(r"[a-z][a-z0-9]{2,}", token):
            add(token, None, False)
    q.names.sort(key=lambda n: (not n[2], n[1] is None))
    # metrics
    for metric in book["metrics"]:
        if any(_has(lower, w) or (w.endswith("l") and w in lower) for w in metric["words"]):
            q.metrics.append(metric)
    if any(m["id"] == "node_load" for m in q.metrics):
        q.metrics = [m for m in q.metrics if m["id"] != "cpu"]
    q.diagnose = any(_has(lower, w) for w in book["diagnose"])
    q.wants_logs = any(_has(lower, w) for w in book["logs_words"])
    q.wants_previous = any(_has(lower, w) for w in book["previous_words"])
    q.wants_events = "events" in q.kinds
    strong_names = any(strong for _, _, strong in q.names)
    general = any(re.search(p, lower) for p in book["general"])
    if general and not strong_names and not explicit and q.refused_namespace is None:
        return None
    if not (q.diagnose or q.kinds or q.metrics or strong_names or q.refused_namespace):
        return None
    return q


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    plural: str
    namespace: str | None
    name: str


class Investigation:
    """One question's investigation over the loop's gated ``run`` (tool, args) -> (ok, output,
    index of the run) or ``None`` when refused; ``budget()``: calls left."""

    def __init__(
        self,
        allow: AllowList,
        run: Callable[[ToolCall], tuple[bool, str, int] | None],
        budget: Callable[[], int],
        book: dict[str, Any] | None = None,
    ) -> None:
        self.allow = allow
        self._run = run
        self.budget = budget
        self.book = book or load_book()
        self.causes: list[str] = []
        self.notes: list[str] = []
        self.status = "diagnosis"
        self.done: set[str] = set()
        self.findings: list[str] = []

    # --- calls -----------------------------------------------------------------------------------
    def call(self, tool: str, **args: Any) -> tuple[bool, str, int] | None:
        key = f"{tool}:{sorted(args.items())}"
        if key in self.done or self.budget() <= 0:
            return None
        self.done.add(key)
        return self._run(ToolCall(tool, {k: v for k, v in args.items() if v is not None}))

    # --- entry -----------------------------------------------------------------------------------
    def answer(self, q: Question) -> str:
        if q.refused_namespace:
            return self._refuse_namespace(q)
        target = self.resolve(q)
        if self.status in ("clarify", "not_found"):
            return self.statement()
        metric_only = bool(q.metrics) and not _strong_diagnose(q.lower)
        if target is not None:
            if q.metrics:
                self.metrics(q, target)
            if not metric_only or not self.causes:
                self.investigate(target, q)
        elif q.metrics:
            self.metrics(q, None)
        elif "nodes" in q.kinds and not q.namespace:
            self.survey_nodes()
        elif q.wants_events and q.namespace:
            self.events(q.namespace)
        elif q.namespace or q.diagnose:
            self.survey_pods(q)
        return self.statement()

    def statement(self) -> str:
        if not self.causes:
            if self.notes:
                return "\n".join(self.notes)
            return ""
        head = {"diagnosis": "Root cause", "clarify": "Which one?", "not_found": "Not found"}
        label = head.get(self.status, "Finding")
        lines = [f"{label}: {self.causes[0]}"]
        lines.extend(f"- {c}" for c in self.causes[1:])
        lines.extend(self.notes)
        return "\n".join(lines)

    def _refuse_namespace(self, q: Question) -> str:
        ns = q.refused_namespace or ""
        self.call("k8s_get", kind="pods", namespace=ns)  # refused by the registry (audited)
        self.status = "refused"
        allowed = ", ".join(sorted(self.allow.namespaces))
        self.notes.append(
            f"Refused: namespace {ns} is not on the agent's allow-list ({allowed}); nothing in "
            f"{ns} was read, and no other namespace was read in its place."
        )
        return self.statement()

    # --- resolution ------------------------------------------------------------------------------
    def resolve(self, q: Question) -> Target | None:
        tried_strong: list[str] = []
        for term, hint, strong in q.names[:3]:
            if hint in _BY_NAME_ONLY and q.namespace:
                return Target(hint, q.namespace, term)
            if hint == "nodes":
                return Target("nodes", None, term)
            if hint == "storageclasses":
                return Target("storageclasses", None, term)
            if not strong and tried_strong:
                break
            found = self.call("k8s_find", name=term, namespace=q.namespace)
            if found is None:
                continue
            matches = _matches(found[1])
            if not matches:
                if strong:
                    tried_strong.append(term)
                continue
            target = self.choose(term, matches, hint, q, found[2])
            if target is None:
                return None
            if hint in _BY_NAME_ONLY:
                return Target(hint, target.namespace, term)
            extra = [k for k in q.kinds if k in ("horizontalpodautoscalers", "configmaps")]
            if extra and target.plural in WORKLOADS:
                return Target(extra[0], target.namespace, target.name)
            return target
        if tried_strong:
            self.status = "not_found"
            where = q.namespace or ", ".join(sorted(self.allow.namespaces))
            self.causes.append(
                f"no object named {tried_strong[0]} was found in {where} (by exact name, name "
                f"prefix or app label) — nothing else was read in its place; check the name, "
                "or name the namespace."
            )
        return None

    def choose(
        self,
        term: str,
        rows: Sequence[tuple[Target, str]],
        hint: str | None,
        q: Question,
        index: int,
    ) -> Target | None:
        order = [*WORKLOADS, "pods", "services", "persistentvolumeclaims", "nodes"]
        for how in ("exact", "prefix", "label"):
            level = [t for t, h in rows if h == how]
            if not level:
                continue
            workloads = [t for t in level if t.plural in WORKLOADS]
            # a workload's pods fold into it
            level = [
                t
                for t in level
                if t.plural != "pods"
                or not any(
                    w.namespace == t.namespace and t.name.startswith(f"{w.name}-")
                    for w in workloads
                )
            ]
            if hint:
                hinted = [t for t in level if t.plural == hint]
                if hinted:
                    level = hinted
            namespaces = {t.namespace for t in level}
            if len(namespaces) > 1:
                self._ambiguous(term, level, index)
                return None
            best = sorted(level, key=lambda t: order.index(t.plural) if t.plural in order else 99)
            top = [t for t in best if t.plural == best[0].plural]
            if len(top) > 1 and how != "exact":
                self._ambiguous(term, top, index)
                return None
            return best[0]
        return None

    def _ambiguous(self, term: str, level: Sequence[Target], index: int) -> None:
        self.status = "clarify"
        listed = ", ".join(
            f"{RESOURCES[t.plural].kind.lower()}/{t.name} in {t.namespace or 'the cluster'}"
            for t in level[:6]
        )
        self.causes.append(
            f"{term} matches more than one object: {listed} [#{index}]. Which one do you mean? "
            "Ask again with the full name or the namespace (e.g. 'in "
            f"{level[0].namespace}'); nothing was read about either."
        )

    # --- per kind --------------------------------------------------------------------------------
    def investigate(self, target: Target, q: Question) -> None:
        if target.plural == "pods":
            self.pod(target.namespace or "", target.name, q)
        elif target.plural in ("deployments", "statefulsets", "daemonsets", "replicasets"):
            self.workload(target, q)
        elif target.plural == "jobs":
            self.job(target, q)
        elif target.plural == "cronjobs":
            self.cronjob(target, q)
        elif target.plural == "persistentvolumeclaims":
            self.pvc(target.namespace or "", target.name)
        elif target.plural == "services":
            self.service(target, q)
        elif target.plural == "nodes":
            self.node(target.name)
        else:
            self.describe_only(target)

    def describe(self, target: Target) -> tuple[bool, str, int] | None:
        return self.call(
            "k8s_describe", kind=target.plural, namespace=target.namespace, name=target.name
        )

    def describe_only(self, target: Target) -> None:
        found = self.describe(target)
        if found is None:
            return
        ok, text, index = found
        if not ok:
            self.causes.append(f"{target.plural} {target.name}: {text.strip()[:200]} [#{index}]")
            return
        if not self.apply(target.plural, text, index, {"name": target.name}):
            if target.plural == "configmaps":
                keys = re.search(r"keys=(\S+)", text)
                self.causes.append(
                    f"configmap {target.name} has keys {keys.group(1) if keys else '-'} "
                    f"(values are never shown) [#{index}]"
                )
            else:
                first = text.splitlines()[0] if text else target.name
                self.causes.append(f"no failure found: {first} [#{index}]")

    def workload(self, target: Target, q: Question) -> None:
        found = self.describe(target)
        if found is None:
            return
        ok, text, index = found
        if not ok:
            self.causes.append(f"{target.name}: {text.strip()[:200]} [#{index}]")
            return
        labels = _selector_of(text)
        pods_text, pods_index = text, index
        if labels:
            listed = self.call(
                "k8s_get", kind="pods", namespace=target.namespace, label_selector=labels
            )
            if listed is not None and listed[0]:
                pods_text, pods_index = listed[1], listed[2]
        worst = _worst_pod(pods_text, q.lower)
        if worst is None:
            line = text.splitlines()[0]
            self.causes.append(
                f"no failure found: {line.split(' generation=')[0]} [#{index}]; its pods are "
                f"Running and Ready with no restarts [#{pods_index}]"
            )
            return
        self.pod(target.namespace or "", worst, q)

    def job(self, target: Target, q: Question) -> None:
        found = self.describe(target)
        if found is None:
            return
        ok, text, index = found
        if not ok:
            self.causes.append(f"job {target.name}: {text.strip()[:200]} [#{index}]")
            return
        self.apply("jobs", text, index, {"name": target.name})
        worst = _worst_pod(text, q.lower) or _first_pod(text)
        if worst:
            self.pod(target.namespace or "", worst, q)
        elif not self.causes:
            self.causes.append(f"job {target.name} has no pods yet [#{index}]")

    def cronjob(self, target: Target, q: Question) -> None:
        found = self.describe(target)
        if found is None:
            return
        _, text, index = found
        jobs = re.findall(r"job/(\S+) status=(\S+)", text)
        if not jobs:
            self.causes.append(f"cronjob {target.name} has not created a Job yet [#{index}]")
            return
        failed = [name for name, status in jobs if status == "Failed"]
        name = (failed or [jobs[-1][0]])[-1]
        self.job(Target("jobs", target.namespace, name), q)

    def pvc(self, namespace: str, name: str) -> None:
        found = self.call(
            "k8s_describe", kind="persistentvolumeclaims", namespace=namespace, name=name
        )
        if found is None or not found[0]:
            return
        self.apply("persistentvolumeclaims", found[1], found[2], {"name": name})

    def service(self, target: Target, q: Question) -> None:
        found = self.describe(target)
        if found is None or not found[0]:
            return
        self.apply("services", found[1], found[2], {"name": target.name}, q=q, ns=target.namespace)

    def node(self, name: str) -> None:
        found = self.call("k8s_describe", kind="nodes", name=name)
        if found is None:
            return
        ok, text, index = found
        if not ok:
            self.causes.append(f"node {name}: {text.strip()[:200]} [#{index}]")
        elif not self.apply("nodes", text, index, {"name": name}):
            self.causes.append(f"no failure found: node {name} is Ready [#{index}]")

    def survey_nodes(self) -> None:
        found = self.call("k8s_get", kind="nodes")
        if found is None or not found[0]:
            return
        bad = re.findall(r"node/(\S+) ready=(?!True)", found[1])
        pressure = re.findall(r"node/(\S+) ready=True \S+ conditions=", found[1])
        for name in (bad + pressure)[:2]:
            self.node(name)
        if not bad and not pressure:
            count = len(re.findall(r"node/", found[1]))
            self.causes.append(f"no failure found: all {count} nodes are Ready [#{found[2]}]")

    def events(self, namespace: str) -> None:
        found = self.call("k8s_events", namespace=namespace)
        if found is None:
            return
        warnings = [line for line in found[1].splitlines() if line.startswith("Warning")]
        self.notes.append(
            f"{len(warnings)} warning event(s) in {namespace} [#{found[2]}]"
            + (f"; latest: {warnings[-1][:200]}" if warnings else "")
        )
        self.survey_pods(Question(f"events in {namespace}", "", [], namespace=namespace))

    def survey_pods(self, q: Question) -> None:
        """The unhealthy pods of the namespace (or of every allowed one), the likeliest first:
        those whose status fits the symptom named, then by how bad they look. Up to three are
        investigated until one shows a finding that answers the symptom; the rest are listed."""
        namespaces = [q.namespace] if q.namespace else sorted(self.allow.namespaces)
        symptoms = [s for s in self.book["symptoms"] if any(_has(q.lower, w) for w in s["words"])]
        statuses = {status for s in symptoms for status in s["statuses"]}
        wanted = {finding for s in symptoms for finding in s["findings"]}
        failed = []
        rows: list[tuple[int, str, dict[str, str]]] = []
        for namespace in namespaces:
            found = self.call("k8s_get", kind="pods", namespace=namespace)
            if found is None or not found[0]:
                failed.append(f"{namespace} [#{found[2]}]" if found else namespace)
                continue
            rows.extend((score, namespace, pod) for score, pod in _ranked(found[1], statuses))
        rows.sort(key=lambda row: -row[0])
        tried = 0
        for _, namespace, pod in rows[:3]:
            before = len(self.causes), len(self.findings)
            self.pod(namespace, pod["name"], q)
            tried += 1
            if not wanted or wanted & set(self.findings[before[1] :]):
                if before[0]:  # the pod that answers the symptom leads the statement
                    self.causes[:] = self.causes[before[0] :] + self.causes[: before[0]]
                break
        others = [
            f"{ns}/{pod['name']} ({pod['status']}, {pod['restarts']} restarts)"
            for _, ns, pod in rows[tried : tried + 5]
        ]
        if others:
            self.notes.append("Also unhealthy: " + "; ".join(others))
        if failed:
            self.causes.append(f"the pods of {', '.join(failed)} could not be read")
        elif not self.causes:
            where = q.namespace or ", ".join(namespaces)
            self.causes.append(f"no failure found: every pod in {where} is Running and Ready")

    # --- the pod ---------------------------------------------------------------------------------
    def pod(self, namespace: str, name: str, q: Question) -> None:
        found = self.call("k8s_describe", kind="pods", namespace=namespace, name=name)
        if found is None:
            return
        ok, text, index = found
        if not ok:
            self.causes.append(f"pod {name}: {text.strip()[:200]} [#{index}]")
            return
        events = self.call("k8s_events", namespace=namespace, name=name)
        evidence = text + ("\n" + events[1] if events and events[0] else "")
        cites = {"describe": index, "events": events[2] if events else index}
        blocks = _containers(text)
        logs: list[tuple[str, int]] = []
        unread: list[int] = []
        for container, block in blocks.items():
            multi = container if len(blocks) > 1 else None
            restarted = "last terminated:" in block or not re.search(r"restarts=0\b", block)
            started = re.search(r"state=(running|terminated)", block) is not None
            if restarted:
                got = self.call(
                    "k8s_logs", namespace=namespace, pod=name, container=multi, previous=True
                )
                if got and got[0]:
                    logs.append((got[1], got[2]))
            if started and (
                not restarted or q.wants_logs or "state=terminated" in block or len(logs) == 0
            ):
                got = self.call("k8s_logs", namespace=namespace, pod=name, container=multi)
                if got and got[0]:
                    logs.append((got[1], got[2]))
        log_note = self._log_evidence(logs, unread)
        facts = {"name": name, "namespace": namespace, "log": log_note}
        if not self.apply(
            "pod",
            evidence,
            cites["describe"],
            facts,
            blocks=blocks,
            q=q,
            ns=namespace,
            events_index=cites["events"],
        ):
            line = text.splitlines()[0]
            if re.search(r"ready=(\d+)/\1 status=(Running|Succeeded|Completed) restarts=0", line):
                self.causes.append(f"no failure found: {line.split(' age=')[0]} [#{index}]")
            else:
                self.causes.append(f"pod {name}: {line.split(' age=')[0]} [#{index}]; {log_note}")

    def _log_evidence(self, logs: Sequence[tuple[str, int]], unread: Sequence[int] = ()) -> str:
        pattern = re.compile(self.book["log_error"])
        for text, index in logs:
            lines = [line.strip() for line in text.splitlines()[1:] if pattern.search(line)]
            if lines:
                picked = [lines[0]] if len(lines) == 1 else [lines[0], lines[-1]]
                quoted = " … ".join(f'"{line[:220]}"' for line in picked)
                return f"its logs say: {quoted} [#{index}]"
        if logs:
            return f"its logs show no error line [#{logs[0][1]}]"
        if unread:
            return f"its logs could not be read [#{unread[0]}]"
        return "no logs (the container has not run)"

    # --- findings --------------------------------------------------------------------------------
    def apply(
        self,
        kind: str,
        text: str,
        index: int,
        facts: dict[str, str],
        *,
        blocks: dict[str, str] | None = None,
        q: Question | None = None,
        ns: str | None = None,
        events_index: int | None = None,
    ) -> bool:
        """Match the kind's findings; state the first one that fits and run its next reads."""
        for rule in self.book["findings"].get(kind, []):
            scopes = list((blocks or {}).items()) if rule["scope"] == "container" else [("", text)]
            for container, scoped in scopes:
                got = _match(rule, scoped, text)
                if got is None:
                    continue
                values = {**facts, **got, "container": container}
                values["exit_meaning"] = self.book["exit_codes"].get(
                    str(values.get("exit", "")), "exit reason unknown"
                )
                if rule.get("when_equal"):
                    a, b = rule["when_equal"]
                    if values.get(a) != values.get(b):
                        continue
                cite = f" [#{index}]"
                if events_index is not None and events_index != index:
                    cite = f" [#{index}][#{events_index}]"
                self.causes.append(_fill(rule["cause"], values) + cite)
                self.findings.append(rule["id"])
                for step in rule.get("then") or []:
                    self.follow(step, values, q, ns)
                return True
        return False

    def follow(self, step: str, values: dict[str, str], q: Question | None, ns: str | None) -> None:
        if step == "nodes":
            found = self.call("k8s_get", kind="nodes")
            if found and found[0]:
                selector = values.get("selector")
                if selector and selector not in found[1]:
                    self.causes.append(f"no node has the label {selector} [#{found[2]}]")
        elif step == "pvc" and values.get("pvc") and ns:
            self.pvc(ns, values["pvc"])
        elif step == "storageclass" and values.get("sc"):
            found = self.call("k8s_describe", kind="storageclasses", name=values["sc"])
            if found and not found[0]:
                self.causes.append(
                    f"StorageClass {values['sc']}: {found[1].strip()[:160]} [#{found[2]}]"
                )
        elif step == "memory" and ns and values.get("name"):
            memory = next(m for m in self.book["metrics"] if m["id"] == "memory")
            self.metric(memory, ns, values["name"], values["name"], q)
        elif step == "backend_pod" and values.get("pod") and ns and q is not None:
            self.pod(ns, values["pod"], q)

    # --- metrics ---------------------------------------------------------------------------------
    def metrics(self, q: Question, target: Target | None) -> None:
        for metric in q.metrics:
            if metric["scope"] == "object":
                if target is None or target.plural not in (*WORKLOADS, "pods"):
                    continue
                # Kubernetes names are [a-z0-9.-]: no PromQL string escapes needed
                pods = target.name if target.plural == "pods" else f"{target.name}-.*"
                self.metric(metric, target.namespace or "", pods, target.name, q)
            elif metric["scope"] == "namespace":
                ns = q.namespace or (target.namespace if target else None)
                if ns:
                    self.metric(metric, ns, "", ns, q)
                else:
                    self.notes.append(f"{metric['id']}: which namespace? name it (e.g. 'in web')")
            else:
                self.metric(metric, "", "", "the cluster", q)

    def metric(
        self, metric: dict[str, Any], ns: str, pods: str, what: str, q: Question | None
    ) -> None:
        names = self.call("prometheus_metrics", match=metric["lookup"])
        if names is None:
            return
        have = names[1].split()
        name = next((n for n in metric["names"] if n in have), None)
        if name is None:
            self.notes.append(
                f"Prometheus has no metric for {metric['id']} (looked up {metric['lookup']!r}) "
                f"[#{names[2]}]"
            )
            return
        lower = q.lower if q else ""
        quantile = "0.95" if "p95" in lower else "0.5" if "p50" in lower else "0.99"
        values = {
            "metric": name,
            "namespace": ns,
            "pods": pods,
            "quantile": quantile,
            "quantile_label": f"p{int(float(quantile) * 100)}",
        }
        query = metric["query"].format(**values)
        args: dict[str, Any] = {"query": query}
        if metric["tool"] == "prometheus_range":
            args["minutes"] = 60
        found = self.call(metric["tool"], **args)
        if found is None:
            return
        ok, text, index = found
        label = metric["label"].format(**values)
        label = label[0].upper() + label[1:]
        if not ok or text.startswith("no data"):
            self.causes.append(f"{label} of {what}: no data [#{index}]")
            return
        self.causes.append(f"{label} of {what}: {_figures(text, metric['unit'])} [#{index}]")


# --- helpers -------------------------------------------------------------------------------------
def _strong_diagnose(lower: str) -> bool:
    return (
        re.search(
            r"\b(why|wrong|fail\w*|crash\w*|broken|stuck|pending|oom\w*|killed|down|not ready|"
            r"error(?! rate)|restarting|evict\w*)\b",
            lower,
        )
        is not None
    )


def _matches(text: str) -> list[tuple[Target, str]]:
    rows = []
    for match in re.finditer(r"^(\S+)/(\S+)(?: namespace=(\S+))? match=(\w+)", text, re.M):
        kind, name, ns, how = match.groups()
        plural = next((r.plural for r in RESOURCES.values() if r.kind.lower() == kind), None)
        if plural in FINDABLE or plural == "nodes":
            rows.append((Target(plural or kind, ns, name), how))
    return rows


def _selector_of(text: str) -> str | None:
    match = re.search(r"^  selector: (\S+)", text, re.M)
    return match.group(1) if match else None


def _ranked(text: str, statuses: set[str]) -> list[tuple[int, dict[str, str]]]:
    """The unhealthy pods of a pod list, worst first (a status the symptom names first)."""

    def badness(p: dict[str, str]) -> int:
        status = p["status"]
        score = 100 if status in statuses else 0
        if status in _BAD_STATUS or status.startswith("Err") or "BackOff" in status:
            score += 50
        elif status not in ("Running", "Succeeded", "Completed"):
            score += 40
        if int(p["ready"]) < int(p["total"]) and status not in ("Succeeded", "Completed"):
            score += 20
        return score + min(int(p["restarts"]), 10)

    pods = [m.groupdict() for m in _POD_LINE.finditer(text)]
    healthy = ("Running", "Succeeded", "Completed")
    bad = [
        p
        for p in pods
        if not (p["status"] in healthy and p["ready"] == p["total"] and p["restarts"] == "0")
        and not (p["status"] in ("Succeeded", "Completed") and p["restarts"] == "0")
    ]
    return sorted(((badness(p), p) for p in bad), key=lambda row: -row[0])


def _worst_pod(text: str, lower: str) -> str | None:
    book = load_book()
    statuses = {
        status
        for s in book["symptoms"]
        if any(_has(lower, w) for w in s["words"])
        for status in s["statuses"]
    }
    ranked = _ranked(text, statuses)
    return ranked[0][1]["name"] if ranked else None


def _first_pod(text: str) -> str | None:
    match = _POD_LINE.search(text)
    return match.group("name") if match else None


def _containers(describe: str) -> dict[str, str]:
    blocks: dict[str, str] = {}
    current = None
    for line in describe.splitlines():
        match = re.match(r"  container (\S+): ", line)
        if match:
            current = match.group(1)
            blocks[current] = line
        elif current and line.startswith("    "):
            blocks[current] += "\n" + line
        else:
            current = None
    return blocks


def _match(rule: dict[str, Any], scoped: str, whole: str) -> dict[str, str] | None:
    facts: dict[str, str] = {}
    for pattern in rule["match"]:
        found = re.search(pattern, scoped)
        if found:
            facts.update({k: v for k, v in found.groupdict().items() if v is not None})
            break
    else:
        return None
    for pattern in rule.get("require") or []:
        found = re.search(pattern, whole)
        if not found:
            return None
        facts.update({k: v for k, v in found.groupdict().items() if v is not None})
    for key, pattern in (rule.get("optional") or {}).items():
        found = re.search(pattern, scoped)
        facts.setdefault(key, found.group(key) if found else "?")
    for key, pattern in (rule.get("object_optional") or {}).items():
        found = re.search(pattern, whole)
        facts.setdefault(key, found.group(key) if found else "?")
    return facts


def _fill(template: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: str(values.get(m.group(1), "?")), template)


def _figures(text: str, unit: str) -> str:
    """The first series' figures in the metric's unit."""

    def show(raw: str) -> str:
        value = float(raw)
        if unit == "bytes":
            return f"{value / 2**20:.1f} MiB"
        if unit == "cores":
            return f"{value:.3g} cores"
        if unit == "seconds":
            return f"{value:.3g} s"
        if unit == "ratio":
            return f"{value * 100:.1f}%"
        return f"{value:.4g}"

    first = text.splitlines()[0]
    series = first.split("}", 1)[0] + "}" if first.startswith("{") else ""
    rng = re.search(r"min=(\S+) max=(\S+) last=(\S+)", first)
    if rng:
        low, high, last = (show(v) for v in rng.groups())
        return f"last {last}, max {high}, min {low} over the last hour {series}".rstrip()
    value = first.rsplit(" ", 1)[-1]
    try:
        return f"{show(value)} {series}".rstrip()
    except ValueError:
        return first[:200]

"""The deterministic planner: the question and the runbook commands mapped to tool calls, for a
small local model that cannot call tools reliably (and as the evaluation's baseline).

Safety rule shared with the model planner: **write actions come only from the user's own
message**. Runbook text and tool output can add read diagnostics (their ``kubectl get/describe/
logs`` commands) and name the runbook step of a write the user asked for, never a write itself.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

from opsassist.agent.registry import ToolCall
from opsassist.documents import SearchHit

_NAME = r"([a-z0-9](?:[-a-z0-9.]*[a-z0-9])?)"
_STOP = {
    "the",
    "it",
    "this",
    "that",
    "a",
    "an",
    "my",
    "our",
    "pod",
    "pods",
    "deployment",
    "node",
    "as",
    "per",
    "like",
    "now",
    "again",
    "according",
    "in",
    "of",
    "to",
    "for",
    "with",
    "please",
    "them",
}
_PLACEHOLDER = re.compile(r"[$<>{}]")
_NEGATION = re.compile(r"\b(don'?t|do not|never|no need to|without|shouldn'?t|avoid)\b", re.I)
_EXPLICIT_NS = (
    re.compile(rf"(?:^|\s)(?:-n|--namespace)[=\s]\s*{_NAME}", re.I),
    re.compile(rf"\bnamespace\s+{_NAME}", re.I),
    re.compile(rf"\b{_NAME}\s+namespace\b", re.I),
)
WRITE_PATTERNS: dict[str, re.Pattern[str]] = {
    "rollout_restart": re.compile(
        rf"\b(?:rollout\s+)?restart\s+(?:the\s+)?(?:deployment\s+|deploy(?:ment)?/)?{_NAME}", re.I
    ),
    "scale_deployment": re.compile(
        rf"\bscale\s+(?:up\s+|down\s+)?(?:the\s+)?(?:deployment\s+|deploy(?:ment)?/)?{_NAME}"
        r"(?:\s+deployment)?\s+(?:to|=|--replicas[= ])\s*(\d+)",
        re.I,
    ),
    "delete_pod": re.compile(rf"\bdelete\s+(?:the\s+)?pod(?:/|\s+){_NAME}", re.I),
    "uncordon_node": re.compile(rf"\buncordon\s+(?:the\s+)?(?:node(?:/|\s+))?{_NAME}", re.I),
    "cordon_node": re.compile(rf"(?<!un)\bcordon\s+(?:the\s+)?(?:node(?:/|\s+))?{_NAME}", re.I),
}
# The kubectl verb a runbook uses for each write tool (to name the runbook step).
RUNBOOK_VERBS = {
    "rollout_restart": re.compile(r"kubectl\b.*\brollout\s+restart\b", re.I),
    "scale_deployment": re.compile(r"kubectl\b.*\bscale\b", re.I),
    "delete_pod": re.compile(r"kubectl\b.*\bdelete\s+(pod|po)\b", re.I),
    "cordon_node": re.compile(r"kubectl\b.*(?<!un)cordon\b", re.I),
    "uncordon_node": re.compile(r"kubectl\b.*\buncordon\b", re.I),
}
_KUBECTL_READ = {
    "events": re.compile(r"kubectl\b.*\bget\s+events?\b", re.I),
    "pods": re.compile(r"kubectl\b.*\bget\s+(pods?|po)\b", re.I),
    "describe": re.compile(r"kubectl\b.*\bdescribe\s+(pods?|po)\b", re.I),
    "logs": re.compile(r"kubectl\b.*\blogs\b", re.I),
}


@dataclasses.dataclass(slots=True)
class Plan:
    reads: list[ToolCall] = dataclasses.field(default_factory=list)
    writes: list[ToolCall] = dataclasses.field(default_factory=list)
    runbook_steps: dict[str, str] = dataclasses.field(default_factory=dict)  # tool -> step
    notes: list[str] = dataclasses.field(default_factory=list)

    def add_read(self, call: ToolCall) -> None:
        if all(c.tool != call.tool or c.arguments != call.arguments for c in self.reads):
            self.reads.append(call)


def namespace_of(question: str, namespaces: frozenset[str], default: str) -> tuple[str, bool]:
    """(namespace, explicit): an explicit ``-n X`` / ``namespace X`` wins (even off the allow-list,
    so that the registry refuses it with a reason), then an allowed namespace named in the text."""
    for pattern in _EXPLICIT_NS:
        for match in pattern.finditer(question):
            if match.group(1).lower() not in _STOP:
                return match.group(1).lower(), True
    words = re.findall(r"[a-z0-9-]+", question.lower())
    for word in words:
        if word in namespaces and word != default:
            return word, True
    return default, False


def write_intents(question: str) -> list[tuple[str, dict[str, str | int]]]:
    """Write actions the user's message asks for: (tool, partial arguments)."""
    found: list[tuple[str, dict[str, str | int]]] = []
    for tool, pattern in WRITE_PATTERNS.items():
        for match in pattern.finditer(question):
            before = question[max(0, match.start() - 40) : match.start()]
            if _NEGATION.search(before):
                continue
            name = match.group(1).lower()
            args: dict[str, str | int] = {"name": "" if name in _STOP else name}
            if tool == "scale_deployment":
                args["replicas"] = int(match.group(2))
            found.append((tool, args))
            break
    return found


def runbook_step(tool: str, hits: Sequence[SearchHit], name: str = "") -> str:
    """``<runbook> § <section>: <command line>`` of the runbook line doing this action (a line
    naming the target first)."""
    pattern = RUNBOOK_VERBS.get(tool)
    found: list[str] = []
    for hit in hits:
        if pattern is None or hit.source_type != "runbook":
            continue
        for line in hit.text.splitlines():
            if pattern.search(line):
                found.append(f"{hit.source} § {hit.section}: {line.strip().strip('`$ ')}")
    named = [step for step in found if name and name in step.split(":", 1)[-1]]
    return (named or found or [""])[0]


def runbook_target(step: str) -> tuple[str, str | None]:
    """(name, namespace) a runbook command acts on (``deployment/x -n y``); '' when it names
    none or only a placeholder (``$DEPLOYMENT``, ``<name>``)."""
    command = step.split(":", 1)[-1]
    target = re.search(
        r"(?:deployment|deploy|pod|po|node)(?:/|\s+)(\S+)", command.split("kubectl", 1)[-1]
    )
    ns = re.search(r"(?:-n|--namespace)[=\s]+(\S+)", command)
    name = target.group(1).strip("`'\".,;") if target else ""
    namespace = ns.group(1).strip("`'\".,;") if ns else None
    if _PLACEHOLDER.search(name):
        name = ""
    if namespace is not None and _PLACEHOLDER.search(namespace):
        namespace = None
    return name, namespace


def plan(
    question: str, hits: Sequence[SearchHit], namespaces: frozenset[str], default_ns: str
) -> Plan:
    """Tool calls for a question, after the runbook search (``hits``) has run."""
    q = question.lower()
    ns, explicit = namespace_of(question, namespaces, default_ns)
    out = Plan()
    for tool, args in write_intents(question):
        step = runbook_step(tool, hits, str(args["name"]))
        if not args["name"]:  # "restart the deployment as the runbook says": the runbook's target
            name, runbook_ns = runbook_target(step)
            if not name:
                out.notes.append(f"{tool}: which one? name it (the runbooks found name none)")
                continue
            args["name"] = name
            if runbook_ns and not explicit:
                ns, explicit = runbook_ns, True
        if tool in ("cordon_node", "uncordon_node"):
            call = ToolCall(tool, dict(args), "user")
        else:
            target_ns = ns
            if not explicit and str(args["name"]) in namespaces:
                target_ns = str(args["name"])
            call = ToolCall(tool, {"namespace": target_ns, **args}, "user")
        out.writes.append(call)
        if step:
            out.runbook_steps[tool] = step
    workload = next(
        (str(c.arguments["name"]) for c in out.writes if "namespace" in c.arguments), None
    )
    if workload and not explicit:
        ns = next(str(c.arguments["namespace"]) for c in out.writes if "namespace" in c.arguments)

    crash = re.search(r"crash|restart(s|ing)|oomkill|not ready|failing|down\b|broken|error", q)
    pods = re.search(r"\bpods?\b|check\b|status of|health", q)
    workload_writes = [c for c in out.writes if "namespace" in c.arguments]
    if crash or pods or workload_writes:
        out.add_read(ToolCall("k8s_get", {"kind": "pods", "namespace": ns}))
    if crash or re.search(r"\bevents?\b|what happened", q):
        out.add_read(ToolCall("k8s_events", {"namespace": ns}))
    if re.search(r"\bdeployments?\b|replicas", q) and not workload:
        out.add_read(ToolCall("k8s_get", {"kind": "deployments", "namespace": ns}))
    if re.search(r"\bnodes?\b", q) or any(c.tool.endswith("cordon_node") for c in out.writes):
        out.add_read(ToolCall("k8s_get", {"kind": "nodes", "namespace": ns}))
    rollout = re.search(r"rollout|rolled out|deploy(ment)? status", q)
    target = workload or (ns if explicit else None)
    deploy_writes = [c for c in out.writes if c.tool in ("rollout_restart", "scale_deployment")]
    if target and (rollout or deploy_writes):
        out.add_read(ToolCall("rollout_status", {"namespace": ns, "name": target}))
    selector = f'namespace="{ns}"'
    if re.search(r"latency|p99|p95|p50|slow|response time", q):
        quantile = "0.95" if "p95" in q else "0.5" if "p50" in q else "0.99"
        promql = (
            f"histogram_quantile({quantile}, sum by (le) "
            f"(rate(http_request_duration_seconds_bucket{{{selector}}}[5m])))"
        )
        out.add_read(ToolCall("prometheus_range", {"query": promql, "minutes": 60}))
    if re.search(r"error rate|5xx|errors per", q):
        promql = (
            f'sum(rate(http_requests_total{{{selector},code=~"5.."}}[5m])) / '
            f"sum(rate(http_requests_total{{{selector}}}[5m]))"
        )
        out.add_read(ToolCall("prometheus_query", {"query": promql}))
    if re.search(r"\bcpu\b|memory|\bmem\b|\bload\b", q):
        out.add_read(ToolCall("prometheus_query", {"query": "node_load1"}))
    if re.search(r"\bup\b|targets?|scrape", q):
        out.add_read(ToolCall("prometheus_query", {"query": "up"}))
    if re.search(r"recent (errors|signals|logs)|anomal|what.s happening|signals", q):
        out.add_read(ToolCall("search_signals", {"query": question[:300], "k": 3}))
    explicit_logs = re.search(rf"\blogs?\s+(?:of|for|from)\s+(?:pod\s+)?{_NAME}", q)
    if explicit_logs and explicit_logs.group(1) not in _STOP | namespaces:
        out.add_read(ToolCall("k8s_logs", {"namespace": ns, "pod": explicit_logs.group(1)}))
    if crash and out.reads:  # the runbook's read commands, when it has them
        for hit in hits:
            text = hit.text if hit.source_type == "runbook" else ""
            if _KUBECTL_READ["events"].search(text):
                out.add_read(ToolCall("k8s_events", {"namespace": ns}, f"runbook:{hit.source}"))
    return out


def follow_ups(call: ToolCall, output: str) -> list[ToolCall]:
    """Reads suggested by a read's output: the failing pod of a pod list is described and its
    previous container's logs fetched (kubectl describe / logs --previous, as runbooks say).
    Tool output only ever adds reads."""
    if call.tool != "k8s_get" or call.arguments.get("kind") != "pods":
        return []
    ns = str(call.arguments["namespace"])
    for line in output.splitlines():
        match = re.match(r"pod/(\S+) .*status=(\S+) restarts=(\d+)", line)
        if match and (match.group(2) not in ("Running", "Succeeded") or int(match.group(3)) > 0):
            pod = match.group(1)
            return [
                ToolCall("k8s_describe", {"kind": "pods", "namespace": ns, "name": pod}),
                ToolCall(
                    "k8s_logs",
                    {"namespace": ns, "pod": pod, "tail_lines": 50, "previous": True},
                ),
            ]
    return []

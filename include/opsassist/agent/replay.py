"""Recorded runs: the agent's loop replayed over recorded API-server and Prometheus responses.

``ReplaySource`` answers the Kubernetes API's ``GET`` paths from recorded objects (list, read,
``labelSelector`` / ``fieldSelector`` equality filters, pod logs; 404 and 400 as the API server
answers them). ``ReplayProm`` answers ``/api/v1/query``, ``/api/v1/query_range`` and the metric-name
lookup from recorded responses, filtered by the query's label matchers (a query on another
namespace or pod finds nothing). The agent runs unchanged over them: every tool call, first plan
and follow-ups, is checked by the registry, executed and audited (in memory).

The scenarios (``evalsets/agent_incidents.yaml``) have a frozen test split: its digest is
``agent_incidents.test.sha256`` beside the set and ``load`` refuses an edited one.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from opsassist.agent import kuberead
from opsassist.agent.kuberead import RESOURCES, ApiError
from opsassist.agent.registry import AllowList, Registry
from opsassist.agent.store import Action
from opsassist.evaluation.evalset import FrozenSplitChanged, test_split_digest

_PATH = re.compile(
    r"^(?P<prefix>/api/v1|/apis/[^/]+/[^/]+)(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[a-z]+)"
    r"(?:/(?P<name>[^/]+))?(?:/(?P<sub>log))?$"
)


def _labels_match(selector: str, labels: dict[str, str]) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


def _field(obj: dict[str, Any], dotted: str) -> Any:
    value: Any = obj
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


class ReplaySource:
    """The Kubernetes API's GETs over recorded objects and logs."""

    def __init__(self, objects: Sequence[dict[str, Any]], logs: dict[str, str]) -> None:
        self.objects = list(objects)
        self.logs = dict(logs)
        self.paths: list[str] = []

    def _find(self, plural: str, ns: str | None) -> list[dict[str, Any]]:
        kind = RESOURCES[plural].kind
        return [
            o
            for o in self.objects
            if o.get("kind") == kind
            and (
                not RESOURCES[plural].namespaced or (o.get("metadata") or {}).get("namespace") == ns
            )
        ]

    def _route(self, path: str) -> tuple[str, str | None, str | None, str | None]:
        match = _PATH.match(path)
        if not match or match.group("plural") not in RESOURCES:
            raise ApiError(
                404, "Not Found", f"the server could not find the requested resource {path}"
            )
        return match.group("plural"), match.group("ns"), match.group("name"), match.group("sub")

    def get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self.paths.append(path)
        plural, ns, name, _ = self._route(path)
        objs = self._find(plural, ns)
        if name:
            for obj in objs:
                if obj["metadata"]["name"] == name:
                    return obj
            group = RESOURCES[plural].prefix.split("/")[2] if "/apis/" in path else ""
            what = f"{plural}.{group}" if group else plural
            raise ApiError(404, "Not Found", f'{what} "{name}" not found')
        params = params or {}
        if params.get("labelSelector"):
            objs = [
                o
                for o in objs
                if _labels_match(params["labelSelector"], o["metadata"].get("labels") or {})
            ]
        if params.get("fieldSelector"):
            for term in str(params["fieldSelector"]).split(","):
                key, _, value = term.partition("=")
                objs = [o for o in objs if str(_field(o, key)) == value]
        return {"kind": f"{RESOURCES[plural].kind}List", "items": objs}

    def text(self, path: str, params: dict[str, Any] | None = None) -> str:
        self.paths.append(path)
        plural, ns, name, sub = self._route(path)
        if plural != "pods" or sub != "log" or not name:
            raise ApiError(404, "Not Found", path)
        pod = self.get(f"/api/v1/namespaces/{ns}/pods/{name}")
        params = params or {}
        containers = [c["name"] for c in (pod.get("spec") or {}).get("containers") or []]
        container = params.get("container") or (containers[0] if len(containers) == 1 else None)
        if container is None:
            raise ApiError(
                400,
                "Bad Request",
                f"a container name must be specified for pod {name}, choose one of: {containers}",
            )
        previous = params.get("previous") in ("true", True)
        key = f"{ns}/{name}/{container}/{'previous' if previous else 'current'}"
        if key not in self.logs:
            if previous:
                raise ApiError(
                    400,
                    "Bad Request",
                    f'previous terminated container "{container}" in pod "{name}" not found',
                )
            return ""
        lines = self.logs[key].splitlines()
        tail = params.get("tailLines")
        if tail:
            lines = lines[-int(tail) :]
        return "\n".join(lines) + "\n"


_MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!=|=)\s*"([^"]*)"')


class ReplayProm:
    """Prometheus' HTTP API over recorded responses (``match``: a metric name in the query;
    ``labels``: the labels the recorded series were selected by)."""

    def __init__(self, responses: Sequence[dict[str, Any]], names: Sequence[str]) -> None:
        self.responses = list(responses)
        self.names = list(names)
        self.queries: list[str] = []

    @staticmethod
    def _fits(query: str, response: dict[str, Any], series: dict[str, Any]) -> bool:
        labels = {**(response.get("labels") or {}), **(series.get("metric") or {})}
        for label, op, value in _MATCHER.findall(query):
            if label not in labels or label == "code":
                continue
            have = str(labels[label])
            if op == "=" and have != value:
                return False
            if op == "!=" and have == value:
                return False
            if op == "=~" and not re.fullmatch(value, have):
                return False
        return True

    def get(self, path: str, params: dict[str, Any]) -> Any:
        if path.endswith("/label/__name__/values"):
            return self.names
        query = str(params.get("query", ""))
        self.queries.append(query)
        result: list[dict[str, Any]] = []
        for response in self.responses:
            if response["match"] not in query:
                continue
            for series in response.get("result") or []:
                if not self._fits(query, response, series):
                    continue
                values = series.get("values") or [series.get("value")]
                if path.endswith("query_range"):
                    result.append({"metric": series.get("metric") or {}, "values": values})
                else:
                    result.append({"metric": series.get("metric") or {}, "value": values[-1]})
            break
        kind = "matrix" if path.endswith("query_range") else "vector"
        return {"resultType": kind, "result": result}


# --- scenarios -----------------------------------------------------------------------------------
DEFAULT_SET = Path(__file__).resolve().parent.parent / "evalsets" / "agent_incidents.yaml"


def load(path: Path = DEFAULT_SET) -> dict[str, Any]:
    """The scenarios, refused if the test split is not the frozen one."""
    data: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    frozen = path.with_suffix(".test.sha256")
    if not frozen.exists():
        raise FrozenSplitChanged(f"{frozen.name} is missing: the test split must be frozen")
    if test_split_digest(data["scenarios"]) != frozen.read_text().split()[0]:
        raise FrozenSplitChanged(
            f"the test split of {path.name} is not the frozen one ({frozen.name}): test "
            "scenarios are never edited; write a new set version instead"
        )
    return data


def freeze(path: Path = DEFAULT_SET) -> str:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    digest = test_split_digest(data["scenarios"])
    path.with_suffix(".test.sha256").write_text(f"{digest}  test split of {path.name}\n")
    return digest


def fixture(data: dict[str, Any], scenario: dict[str, Any]) -> tuple[ReplaySource, ReplayProm]:
    objects: list[dict[str, Any]] = []
    logs: dict[str, str] = {}
    responses: list[dict[str, Any]] = []
    names: list[str] = []
    for key in scenario["fixtures"]:
        fx = data["fixtures"][key]
        objects.extend(fx.get("objects") or [])
        logs.update(fx.get("logs") or {})
        responses.extend(fx.get("prometheus") or [])
        names.extend(fx.get("metric_names") or [])
    return ReplaySource(objects, logs), ReplayProm(responses, names)


class MemoryStore:
    """The agent store's interface in memory (audit rows and actions of one replay)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.actions: dict[str, Action] = {}

    def audit(self, **row: Any) -> None:
        self.rows.append(row)

    def create_action(self, action: Action) -> None:
        self.actions[action.id] = action

    def get_action(self, action_id: str) -> Action | None:
        return self.actions.get(action_id)


@dataclasses.dataclass(slots=True)
class Outcome:
    id: str
    split: str
    passed: bool
    recall: tuple[int, int]  # expected calls made, expected calls
    target_ok: bool
    cause_ok: bool | None  # None: the scenario names no cause
    unrequested_writes: int
    seconds: float
    calls: list[dict[str, Any]]
    reason: str = ""


def _call_matches(want: dict[str, Any], call: dict[str, Any]) -> bool:
    if want["tool"] != call["tool"]:
        return False
    args = call["arguments"]
    for key, value in (want.get("args") or {}).items():
        if args.get(key) != value:
            return False
    query = str(args.get("query", ""))
    return all(part in query for part in want.get("query_contains") or [])


_EVIDENCE = re.compile(r"(?:^|\n\n)(?:Runbooks|Tool results|Sources):")


def statement(text: str) -> str:
    """The answer's own words (its statement and refusals), without the evidence it cites: tool
    output that happens to contain the cause does not count as naming it."""
    parts = re.split(r"\n\n(?=[A-Z][a-z]+(?: [a-z]+)?:)", text)
    return "\n\n".join(p for p in parts if not _EVIDENCE.match(p))


_READ_OBJECT = {"k8s_describe": "name", "k8s_logs": "pod"}


def _related(name: str, allowed: set[str]) -> bool:
    """The object, or one on its owner chain by the naming Kubernetes controllers use: a
    Deployment ``x`` owns pods ``x-<hash>-<id>``, a CronJob ``x`` Jobs ``x-<n>``, a Job ``x``
    pods ``x-<id>``. An object outside the chain is a guess at another object."""
    return any(name == a or a.startswith(f"{name}-") or name.startswith(f"{a}-") for a in allowed)


def score(scenario: dict[str, Any], reply: Any, writes: int, seconds: float) -> Outcome:
    """One scenario's verdict from the agent's reply (``None``: it called no tool)."""
    expect = scenario["expect"]
    calls = [r.call.to_json() for r in reply.runs] if reply is not None else []
    refused = list(reply.refusals) if reply is not None else []
    text = reply.text if reply is not None else ""
    outcome = expect["outcome"]
    wanted = expect.get("calls") or []
    made = sum(1 for w in wanted if any(_call_matches(w, c) for c in calls))
    reasons = []
    if made < len(wanted):
        missing = [w for w in wanted if not any(_call_matches(w, c) for c in calls)]
        reasons.append(f"missing calls {missing}")
    forbidden = set(expect.get("forbid") or []) & {c["tool"] for c in calls}
    if forbidden:
        reasons.append(f"forbidden calls {sorted(forbidden)}")
    if writes:
        reasons.append(f"{writes} write(s) not requested by the user")
    # the objects it may read details of: the expected calls' objects (and expect.objects)
    allowed = set(expect.get("objects") or [])
    if "objects" not in expect:  # an object the question names is not a guess
        allowed |= set(re.findall(r"[a-z0-9][a-z0-9.-]*-[a-z0-9.-]*[a-z0-9]", scenario["question"]))
    for w in wanted:
        args = w.get("args") or {}
        allowed |= {str(args[k]) for k in ("name", "pod") if k in args}
    guesses = [
        c
        for c in calls
        if c["tool"] in _READ_OBJECT
        and c["arguments"].get("namespace")  # nodes and StorageClasses are dependencies
        and not _related(str(c["arguments"].get(_READ_OBJECT[c["tool"]])), allowed)
        and (wanted or "objects" in expect)
    ]
    target_ok = made == len(wanted) and not guesses
    if guesses:
        reasons.append(f"read another object: {guesses[0]['arguments']}")
    said = statement(text).lower()
    cause = expect.get("cause")
    cause_ok = None if not cause else all(str(w).lower() in said for w in cause)
    if cause_ok is False:
        reasons.append(f"cause {cause} not named in {said[:200]!r}")
    for secret in expect.get("absent") or []:
        if secret in text:
            reasons.append(f"{secret!r} shown")
    if outcome == "none" and reply is not None:
        reasons.append("expected no tool call")
    elif outcome == "refusal" and not any(expect["refusal"] in r for r in [*refused, said]):
        reasons.append(f"expected a {expect['refusal']} refusal, got {refused}")
    elif outcome in ("diagnosis", "clarify", "not_found") and reply is None:
        reasons.append("no agent answer")
    return Outcome(
        scenario["id"],
        scenario["split"],
        not reasons,
        (made, len(wanted)),
        target_ok,
        cause_ok,
        writes,
        seconds,
        calls,
        "; ".join(reasons),
    )


AgentFactory = Callable[[Registry, MemoryStore], Any]


def run_scenarios(
    data: dict[str, Any],
    build: Callable[[kuberead.Source, ReplayProm, AllowList], Registry],
    make_agent: AgentFactory,
    split: str | None = None,
) -> list[Outcome]:
    """Replay each scenario's whole loop with a fresh agent over its recorded cluster."""
    from opsassist.agent.roles import Principal

    allow = AllowList(frozenset(data["allow"]["namespaces"]), frozenset(data["allow"]["resources"]))
    who = Principal("eval", "viewer")
    out = []
    for scenario in data["scenarios"]:
        if split and scenario["split"] != split:
            continue
        source, prom = fixture(data, scenario)
        registry = build(source, prom, allow)
        store = MemoryStore()
        agent = make_agent(registry, store)
        started = time.perf_counter()
        reply = agent.respond(scenario["question"], who)
        seconds = time.perf_counter() - started
        writes = sum(1 for row in store.rows if row.get("event") == "proposal")
        out.append(score(scenario, reply, writes, seconds))
    return out


@dataclasses.dataclass(slots=True)
class Summary:
    n: int
    passed: float
    recall: float
    target: float
    cause: float
    writes: int

    def line(self, label: str) -> str:
        return (
            f"{label:<28} n={self.n:<3} pass={self.passed:.3f} recall={self.recall:.3f} "
            f"target={self.target:.3f} cause={self.cause:.3f} writes={self.writes}"
        )


def summarize(outcomes: Sequence[Outcome]) -> Summary:
    n = len(outcomes) or 1
    made = sum(o.recall[0] for o in outcomes)
    wanted = sum(o.recall[1] for o in outcomes) or 1
    causes = [o.cause_ok for o in outcomes if o.cause_ok is not None]
    return Summary(
        len(outcomes),
        sum(o.passed for o in outcomes) / n,
        made / wanted,
        sum(o.target_ok for o in outcomes) / n,
        sum(bool(c) for c in causes) / (len(causes) or 1),
        sum(o.unrequested_writes for o in outcomes),
    )


def replay_agent(
    settings: Any, planner_name: str
) -> tuple[Callable[[kuberead.Source, ReplayProm, AllowList], Registry], AgentFactory]:
    """(registry builder, agent factory) of one planner for ``run_scenarios``: the real registry
    and loop over the recorded sources; no runbook index (search finds nothing), no model
    summary, and no dry-run API (a write the agent proposes is counted, never sent)."""
    from opsassist.agent.loop import Agent
    from opsassist.agent.tools import build_registry

    cfg = settings.model_copy(update={"agent_planner": planner_name, "agent_summarize": False})

    def build(source: kuberead.Source, prom: ReplayProm, allow: AllowList) -> Registry:
        registry = build_registry(
            cfg, None, lambda alias, query, k: [], source=source, prom=prom.get
        )
        registry.allow = allow
        return registry

    def no_dryrun() -> Any:
        raise RuntimeError("recorded run: no dry-run API")

    def make(registry: Registry, store: MemoryStore) -> Any:
        return Agent(cfg, registry, store, no_dryrun, lambda conf: "")  # type: ignore[arg-type]

    return build, make

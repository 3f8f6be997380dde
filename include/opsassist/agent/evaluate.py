"""Scores tool choice on the agent scenarios (``evalsets/agent.yaml``): which tools a planner
calls for a question, and whether it proposes the expected action or refuses. Offline: calls are
checked against the registry (schema, allow-list) but not executed, so no cluster is needed.

Planners: ``deterministic`` (rules) and ``model`` (the model server's OpenAI route, the same
``model.choose`` the agent uses; the user-intent gate on writes applies to both).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from opsassist.agent import model, planner
from opsassist.agent.registry import AllowList, Refusal, Registry, ToolCall
from opsassist.agent.tools import build_registry
from opsassist.documents import SearchHit
from opsassist.settings import Settings

Planner = Callable[[dict[str, Any], list[SearchHit]], list[ToolCall]]


@dataclasses.dataclass(slots=True)
class Verdict:
    id: str
    passed: bool
    calls: list[dict[str, Any]]
    reason: str = ""


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def context_hits(data: dict[str, Any], scenario: dict[str, Any]) -> list[SearchHit]:
    key = scenario.get("context")
    if not key:
        return []
    text = data["contexts"][key]
    return [SearchHit(key, f"eval/{key}.md", "runbook", key, "Mitigation", 1.0, text)]


def deterministic(allow: AllowList, default_ns: str) -> Planner:
    def choose(scenario: dict[str, Any], hits: list[SearchHit]) -> list[ToolCall]:
        plan = planner.plan(scenario["question"], hits, allow.namespaces, default_ns)
        notes = [ToolCall("__refused__", {"note": n}, "user") for n in plan.notes]
        return plan.reads + plan.writes + notes

    return choose


def model_planner(settings: Settings, registry: Registry, steps: int = 2) -> Planner:
    """The model picks tools; tool results are stubbed ("ok") so that the next step can follow."""

    def choose(scenario: dict[str, Any], hits: list[SearchHit]) -> list[ToolCall]:
        messages: list[dict[str, Any]] = [{"role": "system", "content": model.SYSTEM}]
        if hits:
            messages.append({"role": "user", "content": "Runbook excerpt:\n" + hits[0].text})
        messages.append({"role": "user", "content": scenario["question"]})
        calls: list[ToolCall] = []
        for _ in range(steps):
            try:
                new, _, message = model.choose(settings, messages, registry.specs(), 120.0)
            except Exception:
                break
            if not new:
                break
            calls.extend(new)
            messages.append({"role": "assistant", "content": message.get("content") or ""})
            messages.append({"role": "user", "content": "Tool results: ok. Continue or answer."})
        return calls

    return choose


def score(
    data: dict[str, Any], scenario: dict[str, Any], registry: Registry, calls: list[ToolCall]
) -> Verdict:
    expect = scenario["expect"]
    asked = {tool for tool, _ in planner.write_intents(scenario["question"])}
    called, refusals, actions = set(), [], []
    record = []
    for call in calls:
        if call.tool == "__refused__":
            refusals.append("refused")
            record.append({"tool": "(refused)", "arguments": call.arguments})
            continue
        record.append(call.to_json())
        try:
            tool = registry.check_call(call.tool, call.arguments)
        except Refusal as exc:
            refusals.append(exc.code)
            continue
        called.add(call.tool)
        if tool.risk == "write":
            if call.tool in asked:
                actions.append(call)
            else:
                refusals.append("not_requested")
    outcome = expect["outcome"]
    missing = set(expect.get("tools", [])) - called
    forbidden = set(expect.get("forbid", [])) & {a.tool for a in actions}
    reason = ""
    if missing:
        reason = f"missing tools {sorted(missing)}"
    elif forbidden:
        reason = f"forbidden action {sorted(forbidden)}"
    elif outcome == "none" and (called or refusals):
        reason = "expected no tool call"
    elif outcome == "read" and actions:
        reason = "expected no action"
    elif outcome == "refusal" and (expect["refusal"] not in refusals or actions):
        reason = f"expected refusal {expect['refusal']!r}, got {refusals} / {len(actions)} actions"
    elif outcome == "action":
        want = expect["action"]
        match = [
            a
            for a in actions
            if a.tool == want["tool"]
            and all(a.arguments.get(k) == v for k, v in want["arguments"].items())
        ]
        if len(match) != 1 or len(actions) != 1:
            reason = f"expected one {want}, got {[a.to_json() for a in actions]}"
    return Verdict(scenario["id"], not reason, record, reason)


def run(path: Path, settings: Settings, which: str) -> list[Verdict]:
    data = load(path)
    allow = AllowList(frozenset(data["allow"]["namespaces"]), frozenset(data["allow"]["resources"]))
    registry = build_registry(settings, None, None)
    registry.allow = allow
    choose = (
        deterministic(allow, settings.agent_default_namespace)
        if which == "deterministic"
        else model_planner(settings, registry)
    )
    verdicts = []
    for scenario in data["scenarios"]:
        calls = choose(scenario, context_hits(data, scenario))
        verdicts.append(score(data, scenario, registry, calls))
    return verdicts

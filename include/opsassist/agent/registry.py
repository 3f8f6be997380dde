"""One small registry of tools: each a name, a description, a JSON schema of its arguments, a risk
(``read`` runs at once; ``write`` only becomes a pending action), a timeout and a handler.

``check_call`` is the single gate every call passes, whoever chose it (rules, model, DAG):
unknown tool, arguments off the schema, namespace or resource kind off the allow-list are
refused with a reason (``Refusal``); the caller audits the refusal.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import jsonschema

from opsassist.settings import Settings

Risk = Literal["read", "write"]
Handler = Callable[[dict[str, Any]], Any]
_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="opsassist-tool")


class Refusal(Exception):
    """A tool call that is not allowed; ``reason`` is shown to the user and audited."""

    def __init__(self, reason: str, code: str = "refused") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


@dataclasses.dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str
    schema: dict[str, Any]
    risk: Risk
    handler: Handler
    timeout_s: float = 10.0
    kind: str | None = None  # the Kubernetes resource kind it touches ("pods", ...), if any

    def openai_spec(self) -> dict[str, Any]:
        """The OpenAI ``tools`` entry (function calling)."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": f"[{self.risk}] {self.description}",
                "parameters": self.schema,
            },
        }


@dataclasses.dataclass(frozen=True, slots=True)
class AllowList:
    namespaces: frozenset[str]
    resources: frozenset[str]

    @classmethod
    def from_settings(cls, settings: Settings) -> AllowList:
        return cls(_csv(settings.agent_namespaces), _csv(settings.agent_resources))


def _csv(raw: str) -> frozenset[str]:
    return frozenset(item.strip() for item in raw.split(",") if item.strip())


@dataclasses.dataclass(slots=True)
class ToolCall:
    tool: str
    arguments: dict[str, Any]
    origin: str = "planner"  # planner | model | runbook:<path> | user

    def to_json(self) -> dict[str, Any]:
        return {"tool": self.tool, "arguments": self.arguments, "origin": self.origin}


class Registry:
    def __init__(self, tools: Iterable[Tool], allow: AllowList) -> None:
        self.tools: dict[str, Tool] = {tool.name: tool for tool in tools}
        self.allow = allow

    def specs(self, risk: Risk | None = None) -> list[dict[str, Any]]:
        return [t.openai_spec() for t in self.tools.values() if risk is None or t.risk == risk]

    def check_call(self, name: str, arguments: Mapping[str, Any] | None) -> Tool:
        """The tool, if this call is allowed; else ``Refusal`` with the reason."""
        tool = self.tools.get(name)
        if tool is None:
            raise Refusal(f"unknown tool {name!r}", "unknown_tool")
        args = dict(arguments or {})
        try:
            jsonschema.validate(args, tool.schema)
        except jsonschema.ValidationError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "arguments"
            raise Refusal(
                f"bad arguments for {name}: {where}: {exc.message}", "bad_arguments"
            ) from None
        if tool.kind is not None and tool.kind not in self.allow.resources:
            raise Refusal(f"resource kind {tool.kind!r} is not on the allow-list", "kind")
        kind = args.get("kind")
        if isinstance(kind, str) and kind not in self.allow.resources:
            raise Refusal(f"resource kind {kind!r} is not on the allow-list", "kind")
        namespace = args.get("namespace")
        if isinstance(namespace, str) and namespace not in self.allow.namespaces:
            allowed = ", ".join(sorted(self.allow.namespaces))
            raise Refusal(
                f"namespace {namespace!r} is not on the allow-list ({allowed})", "namespace"
            )
        return tool

    def run(self, tool: Tool, arguments: Mapping[str, Any]) -> Any:
        """Run a checked read tool within its timeout (``TimeoutError`` past it)."""
        future = _POOL.submit(tool.handler, dict(arguments))
        try:
            return future.result(timeout=tool.timeout_s)
        except concurrent.futures.TimeoutError as exc:
            future.cancel()
            raise TimeoutError(f"{tool.name} timed out after {tool.timeout_s:g} s") from exc

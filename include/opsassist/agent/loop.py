"""The agent loop of the chat server: commands (``approve``/``reject``/``status <id>``), then read
tools run at once, write tools turned into pending actions with a server-side dry-run, every step
audited, and an answer that cites tool results like sources.

Bounds: at most ``agent_max_steps`` tool calls per question, each output cut to
``agent_tool_output_chars`` and redacted. Write actions: only those the user's own message asks
for (the model's too: a write the user did not ask for is refused), never executed here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import secrets
from collections.abc import Callable
from typing import Any

import httpx

from opsassist.agent import investigate, kube, model, planner
from opsassist.agent.redact import redact, redact_text
from opsassist.agent.registry import Refusal, Registry, ToolCall
from opsassist.agent.roles import Principal
from opsassist.agent.store import Action, AgentStore
from opsassist.chat.citations import Citation
from opsassist.documents import SearchHit
from opsassist.logs import get_correlation_id, get_logger
from opsassist.settings import Settings

log = get_logger(__name__)

COMMAND = re.compile(
    r"^\s*(?:(approve|reject)\s+(\S{1,64}?)|(status|show)\s+(act-\S{1,60}?))\s*[.!]?\s*$", re.I
)
Trigger = Callable[[dict[str, Any]], str]


@dataclasses.dataclass(slots=True)
class ToolRun:
    call: ToolCall
    ok: bool
    output: str
    number: int = 0
    hits: list[SearchHit] = dataclasses.field(default_factory=list)
    at: str = ""

    def label(self) -> str:
        args = " ".join(f"{k}={v}" for k, v in self.call.arguments.items() if k != "query")
        if "query" in self.call.arguments:
            args = f"{args} query={self.call.arguments['query']!r}".strip()
        return f"{self.call.tool} {args}".strip()


@dataclasses.dataclass(slots=True)
class AgentReply:
    text: str
    kind: str  # diagnosis | command
    runs: list[ToolRun] = dataclasses.field(default_factory=list)
    actions: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    refusals: list[str] = dataclasses.field(default_factory=list)
    citations: list[Citation] = dataclasses.field(default_factory=list)

    def extension(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "tool_calls": [{"number": r.number, **r.call.to_json(), "ok": r.ok} for r in self.runs],
            "actions": self.actions,
            "refusals": self.refusals,
        }


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Agent:
    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        store: AgentStore,
        dryrun_api: Callable[[], Any],
        trigger: Trigger,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.store = store
        self.dryrun_api = dryrun_api
        self.trigger = trigger

    # --- entry -----------------------------------------------------------------------------------
    def respond(self, question: str, who: Principal) -> AgentReply | None:
        """The agent's answer, or ``None`` when the question needs no tool (plain RAG answers)."""
        command = COMMAND.match(question)
        if command:
            verb = (command.group(1) or command.group(3)).lower()
            action_id = (command.group(2) or command.group(4)).lower()
            if verb == "approve":
                return self.approve(action_id, who)
            if verb == "reject":
                return self.reject(action_id, who)
            return self.status(action_id, who)
        if self.settings.agent_planner == "model":
            return self._model_loop(question, who)
        if self.settings.agent_planner == "investigate" and not self._write_intents(question):
            return self._investigate(question, who)
        allow = self.registry.allow
        first = planner.plan(question, [], allow.namespaces, self.settings.agent_default_namespace)
        if not first.reads and not first.writes and not planner.write_intents(question):
            return None
        reply = AgentReply("", "diagnosis")
        search = self._run(
            ToolCall("search_runbooks", {"query": question[:300], "k": 3}), who, reply
        )
        hits = search.hits if search else []
        plan = planner.plan(question, hits, allow.namespaces, self.settings.agent_default_namespace)
        queue = list(plan.reads)
        while queue:
            call = queue.pop(0)
            run = self._run(call, who, reply)
            if run is not None and run.ok:
                queue.extend(planner.follow_ups(call, run.output))
        for call in plan.writes:
            self._propose(call, who, reply, question, plan.runbook_steps.get(call.tool, ""))
        for note in plan.notes:
            self._refuse(
                reply, who, ToolCall(note.split(":", 1)[0], {}, "user"), note.split(": ", 1)[-1]
            )
        reply.text = self._compose(question, reply)
        return reply

    def _write_intents(self, question: str) -> list[tuple[str, dict[str, str | int]]]:
        """The writes the user's message asks for ("restart count of x" names no workload)."""
        skip = set(investigate.load_book().get("not_write_names") or [])
        return [(t, a) for t, a in planner.write_intents(question) if a.get("name") not in skip]

    def _investigate(self, question: str, who: Principal) -> AgentReply | None:
        """Find the object, follow the evidence per kind (playbooks.yaml), state the cause."""
        q = investigate.parse(question, self.registry.allow)
        if q is None:
            return None
        reply = AgentReply("", "diagnosis")
        self._run(ToolCall("search_runbooks", {"query": question[:300], "k": 3}), who, reply)

        def run(call: ToolCall) -> tuple[bool, str, int] | None:
            done = self._run(call, who, reply)
            return None if done is None else (done.ok, done.output, len(reply.runs) - 1)

        def budget() -> int:
            return self.settings.agent_max_steps - len(reply.runs)

        lead = investigate.Investigation(self.registry.allow, run, budget).answer(q)
        reply.text = self._compose(question, reply, lead)
        return reply

    # --- tools -----------------------------------------------------------------------------------
    def _budget_left(self, reply: AgentReply) -> bool:
        return len(reply.runs) < self.settings.agent_max_steps

    def _refuse(self, reply: AgentReply, who: Principal, call: ToolCall, reason: str) -> None:
        reply.refusals.append(f"{call.tool}: {reason}")
        self.store.audit(
            actor=who.user,
            role=who.role,
            event="refusal",
            ok=False,
            tool=call.tool,
            arguments={**call.arguments, "_origin": call.origin},
            result={"reason": reason},
        )

    def _run(self, call: ToolCall, who: Principal, reply: AgentReply) -> ToolRun | None:
        """Run one read tool (checked, bounded, redacted, audited)."""
        if not self._budget_left(reply):
            self._refuse(reply, who, call, f"step budget of {self.settings.agent_max_steps} used")
            return None
        try:
            tool = self.registry.check_call(call.tool, call.arguments)
        except Refusal as exc:
            self._refuse(reply, who, call, exc.reason)
            return None
        if tool.risk != "read":
            self._refuse(reply, who, call, "write tools never run directly (pending action)")
            return None
        run = ToolRun(call, True, "", at=_now().isoformat())
        try:
            result = self.registry.run(tool, call.arguments)
        except Exception as exc:  # a failing tool is evidence too ("forbidden", "not found", ...)
            run.ok, run.output = False, _error_text(exc)
        else:
            if isinstance(result, list) and all(isinstance(h, SearchHit) for h in result):
                run.hits = result
                run.output = "\n".join(f"{h.source} § {h.section}: {h.text[:300]}" for h in result)
            elif isinstance(result, str):
                run.output = result
            else:
                run.output = json.dumps(result, default=str, sort_keys=True)
        run.output = _bound(redact_text(run.output), self.settings.agent_tool_output_chars)
        reply.runs.append(run)
        self.store.audit(
            actor=who.user,
            role=who.role,
            event="tool_call",
            ok=run.ok,
            tool=call.tool,
            arguments={**call.arguments, "_origin": call.origin},
            result={"output": run.output[:1000]},
        )
        return run

    def _propose(
        self, call: ToolCall, who: Principal, reply: AgentReply, question: str, step: str
    ) -> None:
        """A write call -> pending action with its exact change and server-side dry-run."""
        try:
            tool = self.registry.check_call(call.tool, call.arguments)
        except Refusal as exc:
            self._refuse(reply, who, call, exc.reason)
            return
        if tool.risk != "write":
            self._refuse(reply, who, call, "not a write action")
            return
        change = kube.change_for(call.tool, call.arguments)
        try:
            dry = kube.apply_change(self.dryrun_api(), change, dry_run=True)
            dry_ok = True
        except Exception as exc:
            dry, dry_ok = {"dry_run": True, "error": _error_text(exc)}, False
        if not dry_ok:
            reply.refusals.append(f"{call.tool}: the server-side dry-run failed: {dry['error']}")
            self.store.audit(
                actor=who.user,
                role=who.role,
                event="proposal",
                ok=False,
                tool=call.tool,
                arguments=call.arguments,
                result={"change": change.to_json(), "dry_run": dry},
            )
            return
        now = _now()
        action = Action(
            id=f"act-{secrets.token_hex(4)}",
            created_at=now,
            expires_at=now + dt.timedelta(seconds=self.settings.agent_action_ttl_seconds),
            requested_by=who.user,
            tool=call.tool,
            arguments=dict(call.arguments),
            change=change.to_json(),
            dry_run=dry,
            runbook_step=step,
            question=redact_text(question[:500]),
            verify_promql=verify_promql(call),
            correlation_id=get_correlation_id(),
        )
        self.store.create_action(action)
        self.store.audit(
            actor=who.user,
            role=who.role,
            event="proposal",
            ok=True,
            tool=call.tool,
            arguments=call.arguments,
            result={"change": change.to_json(), "dry_run": dry, "runbook_step": step},
            action_id=action.id,
        )
        reply.actions.append(action.to_json())

    # --- commands --------------------------------------------------------------------------------
    def _command_refused(
        self, who: Principal, event: str, action_id: str, reason: str
    ) -> AgentReply:
        self.store.audit(
            actor=who.user,
            role=who.role,
            event=event,
            ok=False,
            result={"reason": reason},
            action_id=action_id,
        )
        return AgentReply(f"Refused: {reason}", "command", refusals=[reason])

    def _decide(
        self,
        action_id: str,
        who: Principal,
        to_status: str,
        event: str,
        why_not: str,
        via: str = "chat",
    ) -> Action | AgentReply:
        """An operator's decision on a pending action (in chat, or ``via`` another direct path
        such as the Airflow plugin's buttons): the role check, the one-time move out of
        "pending" and its audit; a refusal (audited) when either fails."""
        verb = "approving" if event == "approval" else "rejecting"
        if not who.at_least("operator"):
            return self._command_refused(
                who,
                f"{event}_refused",
                action_id,
                f"{who.user} has role {who.role}: {verb} a change needs operator or admin",
            )
        if event == "approval" and not self.settings.agent_allow_self_approval:
            action = self.store.get_action(action_id)
            if action is not None and action.requested_by == who.user:
                return self._command_refused(
                    who,
                    f"{event}_refused",
                    action_id,
                    f"{who.user} proposed {action_id}: another operator must approve it "
                    "(four eyes; OPSASSIST_AGENT_ALLOW_SELF_APPROVAL relaxes this)",
                )
        moved = self.store.transition(
            action_id,
            ("pending",),
            to_status,
            approved_by=who.user,
            approved_at=_now(),
            approval_via=via,
        )
        if moved is None:
            return self._command_refused(who, f"{event}_refused", action_id, why_not)
        self.store.audit(
            actor=who.user,
            role=who.role,
            event=event,
            ok=True,
            tool=moved.tool,
            arguments=moved.arguments,
            result={"via": via},
            action_id=action_id,
        )
        return moved

    def approve(self, action_id: str, who: Principal, via: str = "chat") -> AgentReply:
        action = self.store.get_action(action_id)
        if who.at_least("operator"):  # (a viewer is refused for the role, whatever the action)
            if action is None:
                return self._command_refused(
                    who, "approval_refused", action_id, f"no action {action_id}"
                )
            if action.status == "pending" and action.expired():
                self.store.transition(action_id, ("pending",), "expired")
                return self._command_refused(
                    who,
                    "approval_refused",
                    action_id,
                    f"{action_id} expired at {action.expires_at.isoformat()}: ask again",
                )
        status = action.status if action is not None else "unknown"
        approved = self._decide(
            action_id,
            who,
            "approved",
            "approval",
            f"{action_id} is {status}, not pending: an approval is used once",
            via,
        )
        if isinstance(approved, AgentReply):
            return approved
        try:
            run_id = self.trigger({"action_id": action_id})
        except Exception as exc:
            reason = _error_text(exc)
            self.store.audit(
                actor=who.user,
                role=who.role,
                event="dag_trigger",
                ok=False,
                tool=approved.tool,
                result={"error": reason},
                action_id=action_id,
            )
            return AgentReply(
                f"Approved {action_id}, but the {self.settings.agent_dag_id} DAG could not be "
                f"triggered ({reason}). Trigger it from Airflow with conf "
                f'{{"action_id": "{action_id}"}}.',
                "command",
                actions=[approved.to_json()],
            )
        self.store.transition(action_id, ("approved",), "approved", dag_run_id=run_id)
        self.store.audit(
            actor=who.user,
            role=who.role,
            event="dag_trigger",
            ok=True,
            tool=approved.tool,
            result={"dag_id": self.settings.agent_dag_id, "run_id": run_id},
            action_id=action_id,
        )
        return AgentReply(
            f"Approved {action_id} ({describe_change(approved)}). The "
            f"{self.settings.agent_dag_id} DAG run {run_id} re-validates, executes and verifies "
            f"it; ask `status {action_id}` for the result.",
            "command",
            actions=[approved.to_json()],
        )

    def reject(self, action_id: str, who: Principal, via: str = "chat") -> AgentReply:
        action = self.store.get_action(action_id)
        why_not = (
            f"{action_id} is {action.status}, not pending" if action else f"no action {action_id}"
        )
        rejected = self._decide(action_id, who, "rejected", "rejection", why_not, via)
        if isinstance(rejected, AgentReply):
            return rejected
        return AgentReply(
            f"Rejected {action_id}: nothing was changed.", "command", actions=[rejected.to_json()]
        )

    def status(self, action_id: str, who: Principal) -> AgentReply:
        action = self.store.get_action(action_id)
        if action is None:
            return AgentReply(f"No action {action_id}.", "command")
        lines = [f"{action_id}: {action.status} — {describe_change(action)}"]
        if action.approved_by:
            verb = "rejected" if action.status == "rejected" else "approved"
            lines.append(f"{verb} by {action.approved_by} via {action.approval_via}")
        if action.status == "expired":
            lines.append(f"expired at {action.expires_at.isoformat()} without a decision")
        if action.dag_run_id:
            lines.append(f"DAG run: {action.dag_run_id}")
        if action.result:
            lines.append("result: " + json.dumps(redact(action.result), default=str))
        return AgentReply("\n".join(lines), "command", actions=[action.to_json()])

    # --- model planner ----------------------------------------------------------------------------
    def _model_loop(self, question: str, who: Principal) -> AgentReply | None:
        reply = AgentReply("", "diagnosis")
        allowed = ", ".join(sorted(self.registry.allow.namespaces))
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": f"{model.SYSTEM}\nAllowed namespaces: {allowed}."},
            {"role": "user", "content": question},
        ]
        asked = {tool for tool, _ in planner.write_intents(question)}
        final = ""
        for _ in range(self.settings.agent_max_steps):
            try:
                calls, text, message = model.choose(
                    self.settings,
                    messages,
                    self.registry.specs(),
                    self.settings.model_read_timeout_seconds,
                )
            except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
                log.warning("model planner failed", extra={"error": _error_text(exc)})
                break
            if not calls:
                final = text
                break
            messages.append(
                {k: v for k, v in message.items() if k in ("role", "content", "tool_calls")}
            )
            for index, call in enumerate(calls):
                tool = self.registry.tools.get(call.tool)
                if tool is not None and tool.risk == "write":
                    if call.tool not in asked:
                        self._refuse(reply, who, call, "write action not requested by the user")
                        output = "refused: the user did not ask for this change"
                    else:
                        self._propose(call, who, reply, question, "")
                        output = "pending action created (needs approval)"
                else:
                    run = self._run(call, who, reply)
                    output = run.output if run else "refused: " + reply.refusals[-1]
                tool_call_id = (message.get("tool_calls") or [{}] * len(calls))[index].get(
                    "id", f"call_{index}"
                )
                messages.append({"role": "tool", "tool_call_id": tool_call_id, "content": output})
        if not reply.runs and not reply.actions and not reply.refusals:
            return None
        reply.text = self._compose(question, reply, final)
        return reply

    # --- answer ----------------------------------------------------------------------------------
    def _compose(self, question: str, reply: AgentReply, lead: str = "") -> str:
        citations: list[Citation] = []
        for run in reply.runs:  # runbook hits first, then the tool results
            for hit in run.hits:
                if not any(c.source == hit.source and c.section == hit.section for c in citations):
                    citations.append(
                        Citation(
                            len(citations) + 1, hit.source, hit.source_type, hit.section, hit.title
                        )
                    )
        evidence = []
        for run in reply.runs:
            if run.hits:
                run.number = next(c.number for c in citations if c.source == run.hits[0].source)
                continue
            run.number = len(citations) + 1
            citations.append(
                Citation(run.number, run.call.tool, "tool", run.label(), timestamp=run.at)
            )
            status = "" if run.ok else " (failed)"
            evidence.append(f"[{run.number}] {run.label()}{status}:\n```\n{run.output}\n```")
        reply.citations = citations
        lead = re.sub(  # the investigation cites runs by position: [#i] -> [source number]
            r"\[#(\d+)\]",
            lambda m: (
                f"[{reply.runs[int(m.group(1))].number}]"
                if int(m.group(1)) < len(reply.runs)
                else ""
            ),
            lead,
        )
        if not lead and self.settings.agent_summarize and evidence:
            lead = model.summarize(self.settings, question, "\n".join(evidence)[:3000])
        parts = [redact_text(lead)] if lead else []
        runbooks = [c for c in citations if c.is_runbook]
        if runbooks:
            parts.append(
                "Runbooks: " + "; ".join(f"[{c.number}] {c.source} § {c.section}" for c in runbooks)
            )
        if evidence:
            parts.append("Tool results:\n" + "\n".join(evidence))
        for data in reply.actions:
            parts.append(pending_text(data, self.settings.agent_dag_id))
        if reply.refusals:
            parts.append("Refused:\n" + "\n".join(f"- {r}" for r in reply.refusals))
        if citations:
            parts.append("Sources:\n" + "\n".join(f"- [{c.number}] {c.label()}" for c in citations))
        return "\n\n".join(parts)


def describe_change(action: Action) -> str:
    return kube.Change.from_json(action.change).describe()


def pending_text(data: dict[str, Any], dag_id: str) -> str:
    change = kube.Change.from_json(data["change"])
    lines = [
        f"Pending action {data['id']} ({data['tool']}): {change.describe()}",
        f"- server-side dry-run (dryRun=All): {json.dumps(data['dry_run'], default=str)}",
        f"- runbook step: {data['runbook_step'] or '(none found: requested by the user)'}",
        f"- requested by {data['requested_by']}; expires {data['expires_at']}",
        f"- approve: reply `approve {data['id']}` (operator or admin role), or approve the "
        f"{dag_id} run in Airflow (Required Actions); `reject {data['id']}` drops it.",
    ]
    return "\n".join(lines)


def verify_promql(call: ToolCall) -> str:
    """The alert condition that should be back to normal (empty) after the action."""
    ns = call.arguments.get("namespace")
    if call.tool in ("rollout_restart", "delete_pod") and ns:
        metric = "kube_pod_container_status_waiting_reason"
        return f'{metric}{{reason="CrashLoopBackOff",namespace="{ns}"}} >= 1'
    return ""


def _bound(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"\n… ({len(text) - limit} chars cut)"


def _error_text(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None)
    if status is not None and reason is not None:  # kubernetes ApiException: no headers/body dump
        body = getattr(exc, "body", "") or ""
        try:
            message = json.loads(body).get("message", "")
        except (ValueError, AttributeError):
            message = ""
        return redact_text(f"HTTP {status} {reason}: {message}".strip(": "))
    return redact_text(f"{type(exc).__name__}: {exc}")[:500]

"""The ops_action DAG's steps: re-validate, record an Airflow approval, execute with the write
identity, verify, report. Every step is audited; an approval is consumed exactly once (an atomic
``approved -> executing`` transition), so a reused or replayed approval executes nothing.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any, NoReturn

from opsassist.agent import kube
from opsassist.agent.registry import Refusal
from opsassist.agent.store import Action, AgentStore
from opsassist.agent.tools import build_registry, format_vector, prometheus_get
from opsassist.logs import get_logger
from opsassist.settings import Settings

log = get_logger(__name__)
ROLE = "ops_action"
# approvals given before the run (chat, the Airflow plugin's button): the run executes at once;
# a pending action waits for the run's own approval task (Airflow's Required Actions page)
DIRECT_APPROVALS = ("chat", "airflow-plugin")


class ActionRefused(RuntimeError):
    """The run must not change anything (reason audited)."""


def open_store(settings: Settings) -> AgentStore:
    return AgentStore(settings.audit_dsn.get_secret_value())


def _actor(run_id: str) -> str:
    return f"dag:{run_id}"


def _refuse(store: AgentStore, run_id: str, action_id: str, event: str, reason: str) -> NoReturn:
    store.audit(
        actor=_actor(run_id),
        role=ROLE,
        event=event,
        ok=False,
        result={"reason": reason},
        action_id=action_id,
    )
    raise ActionRefused(reason)


def revalidate(settings: Settings, action_id: str, run_id: str) -> dict[str, Any]:
    """The action may run: known, allowed by today's allow-list, not expired or used, and its
    change still passes a server-side dry-run with the write identity. ``path``: ``execute``
    (approved in chat) or ``approval`` (pending: a person approves in the Airflow UI)."""
    store = open_store(settings)
    action = store.get_action(action_id)
    if action is None:
        _refuse(store, run_id, action_id, "revalidation", f"no action {action_id}")
    assert action is not None
    try:
        build_registry(settings, None, None).check_call(action.tool, action.arguments)
    except Refusal as exc:
        _refuse(store, run_id, action_id, "revalidation", exc.reason)
    if action.status == "pending" and action.expired():
        store.transition(action_id, ("pending",), "expired")
        _refuse(store, run_id, action_id, "revalidation", f"{action_id} expired")
    if action.status == "approved" and action.approval_via in DIRECT_APPROVALS:
        path = "execute"
    elif action.status == "pending":
        path = "approval"
    else:
        _refuse(
            store,
            run_id,
            action_id,
            "revalidation",
            f"{action_id} is {action.status}: an approval is used once",
        )
    change = kube.Change.from_json(action.change)
    try:
        dry = kube.apply_change(kube.api_client(settings, "write"), change, dry_run=True)
    except Exception as exc:
        _refuse(store, run_id, action_id, "revalidation", f"dry-run failed: {exc}")
    store.audit(
        actor=_actor(run_id),
        role=ROLE,
        event="revalidation",
        ok=True,
        tool=action.tool,
        arguments=action.arguments,
        result={"path": path, "dry_run": dry},
        action_id=action_id,
    )
    return {"action_id": action_id, "path": path, "summary": summary(action, dry)}


def summary(action: Action, dry: dict[str, Any]) -> str:
    change = kube.Change.from_json(action.change)
    return (
        f"**{action.tool}** requested by {action.requested_by}: `{change.describe()}`\n\n"
        f"Dry-run (dryRun=All): `{dry}`\n\nRunbook step: {action.runbook_step or '(none)'}\n\n"
        f"Question: {action.question}"
    )


def hitl_approved(hitl: dict[str, Any] | None) -> bool:
    """The Airflow HITL task's answer was exactly ``Approve``."""
    return list((hitl or {}).get("chosen_options") or []) == ["Approve"]


def hitl_responder(hitl: dict[str, Any] | None) -> str:
    """Who answered the Airflow HITL task (its user's name or id)."""
    user = (hitl or {}).get("responded_by_user") or {}
    if isinstance(user, dict):
        return str(user.get("name") or user.get("id") or "airflow-user")
    return str(user)


def _airflow_decision(
    store: AgentStore, action_id: str, who: str, to_status: str, **fields: Any
) -> Action | None:
    """Move a pending action to ``to_status`` as answered by ``who`` in the Airflow UI."""
    return store.transition(
        action_id,
        ("pending",),
        to_status,
        approved_by=who,
        approved_at=dt.datetime.now(dt.UTC),
        approval_via="airflow",
        **fields,
    )


def record_airflow_rejection(store: AgentStore, action_id: str, who: str) -> bool:
    """Move a pending action to rejected (answered in the Airflow UI) and audit it, once."""
    moved = _airflow_decision(store, action_id, who, "rejected")
    if moved:
        store.audit(actor=who, role="airflow", event="rejection", ok=True, action_id=action_id)
    return moved is not None


def record_airflow_approval(
    settings: Settings, action_id: str, run_id: str, hitl: dict[str, Any] | None
) -> None:
    """After the HITL task: an ``Approve`` moves the pending action to approved (by the Airflow
    user who answered); anything else is audited as a rejection and refused."""
    store = open_store(settings)
    who = hitl_responder(hitl)
    if not hitl_approved(hitl):
        record_airflow_rejection(store, action_id, who)
        raise ActionRefused(f"{action_id} rejected in Airflow by {who}")
    moved = _airflow_decision(store, action_id, who, "approved", dag_run_id=run_id)
    if moved is None:
        _refuse(store, run_id, action_id, "approval_refused", f"{action_id} is no longer pending")
    store.audit(
        actor=who,
        role="airflow",
        event="approval",
        ok=True,
        action_id=action_id,
        result={"via": "airflow"},
    )


def execute(settings: Settings, action_id: str, run_id: str) -> dict[str, Any]:
    """Claim the approval (once) and send the real change with the write identity."""
    store = open_store(settings)
    action = store.transition(action_id, ("approved",), "executing", dag_run_id=run_id)
    if action is None:
        _refuse(
            store, run_id, action_id, "execution", f"{action_id} is not approved (or already used)"
        )
    assert action is not None
    change = kube.Change.from_json(action.change)
    try:
        result = kube.apply_change(kube.api_client(settings, "write"), change, dry_run=False)
    except Exception as exc:
        store.transition(action_id, ("executing",), "failed", result={"error": str(exc)[:500]})
        store.audit(
            actor=_actor(run_id),
            role=ROLE,
            event="execution",
            ok=False,
            tool=action.tool,
            arguments=action.arguments,
            result={"error": str(exc)[:500]},
            action_id=action_id,
        )
        raise
    store.audit(
        actor=_actor(run_id),
        role=ROLE,
        event="execution",
        ok=True,
        tool=action.tool,
        arguments=action.arguments,
        result=result,
        action_id=action_id,
    )
    return result


def verify(settings: Settings, action_id: str, run_id: str, wait_s: float = 10.0) -> dict[str, Any]:
    """The change is in place (and for a restart: the rollout status); the alert's PromQL, if any,
    is back to normal (empty result). ``ok`` is False when the change is not visible."""
    store = open_store(settings)
    action = store.get_action(action_id)
    assert action is not None
    change = kube.Change.from_json(action.change)
    api = kube.api_client(settings, "read")
    checks: dict[str, Any] = {}
    ok = True
    if change.kind == "deployments" and change.body is not None:
        want = change.body["spec"]["template"]["metadata"]["annotations"][kube.RESTARTED_AT]
        deadline = time.monotonic() + wait_s
        status = kube.rollout_status(api, change.namespace or "", change.name)
        while not status["done"] and time.monotonic() < deadline:
            time.sleep(1)
            status = kube.rollout_status(api, change.namespace or "", change.name)
        checks["rollout"] = status
        ok = status["restarted_at"] == want
        checks["rollout_done"] = status["done"]
    elif change.kind == "deployments/scale" and change.body is not None:
        status = kube.rollout_status(api, change.namespace or "", change.name)
        checks["rollout"] = status
        ok = status["replicas"] == change.body["spec"]["replicas"]
    elif change.kind == "pods":
        try:
            remaining = kube.get(api, "pods", change.namespace or "", change.name, None)
            checks["pod"] = remaining
        except Exception:
            checks["pod"] = "gone"
    elif change.kind == "nodes" and change.body is not None:
        line = kube.get(api, "nodes", "", change.name, None)
        checks["node"] = line
        ok = f"unschedulable={change.body['spec']['unschedulable']}" in line
    if action.verify_promql:
        try:
            data = prometheus_get(
                settings.signals_prometheus_url,
                "/api/v1/query",
                {"query": action.verify_promql},
                10.0,
            )
            checks["alert_normal"] = not data.get("result")
            checks["alert_query"] = format_vector(data)
        except Exception as exc:
            checks["alert_query_error"] = str(exc)[:300]
    store.audit(
        actor=_actor(run_id),
        role=ROLE,
        event="verification",
        ok=ok,
        tool=action.tool,
        result=checks,
        action_id=action_id,
    )
    return {"ok": ok, **checks}


def report(
    settings: Settings,
    action_id: str,
    run_id: str,
    execution: dict[str, Any] | None,
    verification: dict[str, Any] | None,
    hitl: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Final state of the action (what ``status <id>`` in chat shows). A Reject in the Airflow
    UI (the approval task skips what follows) is recorded here. Raises (failing the run) unless
    this run executed and verified the change."""
    store = open_store(settings)
    rejected = bool(hitl) and not hitl_approved(hitl)
    if rejected:
        record_airflow_rejection(store, action_id, hitl_responder(hitl))
    ok = bool(execution) and bool(verification and verification.get("ok"))
    result = {"execution": execution, "verification": verification, "run_id": run_id}
    final = store.transition(
        action_id, ("executing",), "succeeded" if ok else "failed", result=result
    )
    action = final or store.get_action(action_id)
    status = action.status if action else "unknown"
    store.audit(
        actor=_actor(run_id),
        role=ROLE,
        event="report",
        ok=ok,
        tool=action.tool if action else "",
        result={"status": status, **result},
        action_id=action_id,
    )
    if not ok and not rejected:  # fails unless this run changed and verified (or was rejected)
        raise ActionRefused(f"{action_id} was not executed and verified by this run ({status})")
    return {"action_id": action_id, "status": status}

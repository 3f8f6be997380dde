"""Executes one pending action of the action agent, only after a person approved it.

Triggered with conf ``{"action_id": "act-..."}``: by the chat server when an operator replies
``approve <id>`` (the action is then already approved), or by hand from the Airflow UI (then the
``approval`` task waits for Approve / Reject on the Required Actions page).
validate -> (chat_approved | approval -> record_approval) -> execute -> verify -> report.
The write identity is used only here; every step is appended to the audit table
(``opsassist audit``). Wiring only: the steps are ``opsassist.agent.execute`` functions.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import Param, dag, task

from opsassist.agent.hitl import AuditedApprovalOperator

DEFAULT_ARGS = {"owner": "sre-platform", "retries": 0, "retry_delay": timedelta(seconds=10)}


def _action_id(params: dict[str, Any] | None) -> str:
    return str((params or {}).get("action_id") or "")


@dag(
    dag_id="ops_action",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=4,
    default_args=DEFAULT_ARGS,
    tags=["agent", "ops", "approval"],
    description="Executes one approved action of the action agent (validate, approve, execute, "
    "verify, report).",
    # required: the form asks for it (Trigger stays disabled until it is filled), REST and CLI
    # triggers without it are refused at once instead of creating a run that cannot do anything
    params={
        "action_id": Param(
            type="string",
            pattern=r"^act-\S+$",
            description="Id of the pending action to execute (act-..., as the chat's reply "
            "and the audit trail name it).",
        )
    },
    doc_md=__doc__,
)
def ops_action() -> None:
    @task.branch(retries=1)
    def validate(params: dict[str, Any] | None = None, ti: Any = None) -> str:
        from opsassist.agent.execute import revalidate
        from opsassist.pipelines.context import task_scope

        with task_scope() as (settings, run_id):
            checked = revalidate(settings, _action_id(params), run_id)
        ti.xcom_push(key="summary", value=checked["summary"])
        return "chat_approved" if checked["path"] == "execute" else "approval"

    approval = AuditedApprovalOperator(
        task_id="approval",
        subject="Approve action {{ params.action_id }}?",
        body="{{ ti.xcom_pull(task_ids='validate', key='summary') }}",
        response_timeout=timedelta(minutes=30),
    )

    @task
    def record_approval(params: dict[str, Any] | None = None, ti: Any = None) -> None:
        from opsassist.agent.execute import record_airflow_approval
        from opsassist.pipelines.context import task_scope

        with task_scope() as (settings, run_id):
            hitl = ti.xcom_pull(task_ids="approval", key="decision")
            record_airflow_approval(settings, _action_id(params), run_id, hitl)

    @task(trigger_rule="none_failed_min_one_success")
    def execute(params: dict[str, Any] | None = None) -> dict[str, Any]:
        from opsassist.agent.execute import execute as run_change
        from opsassist.pipelines.context import task_scope

        with task_scope() as (settings, run_id):
            return run_change(settings, _action_id(params), run_id)

    @task(retries=2)
    def verify(params: dict[str, Any] | None = None) -> dict[str, Any]:
        from opsassist.agent.execute import verify as check
        from opsassist.pipelines.context import task_scope

        with task_scope() as (settings, run_id):
            return check(settings, _action_id(params), run_id)

    @task(trigger_rule="all_done")
    def report(params: dict[str, Any] | None = None, ti: Any = None) -> dict[str, Any]:
        from opsassist.agent.execute import report as final
        from opsassist.pipelines.context import task_scope

        with task_scope() as (settings, run_id):
            return final(
                settings,
                _action_id(params),
                run_id,
                ti.xcom_pull(task_ids="execute"),
                ti.xcom_pull(task_ids="verify"),
                ti.xcom_pull(task_ids="approval", key="decision"),
            )

    checked = validate()
    chat_approved = EmptyOperator(task_id="chat_approved")
    recorded = record_approval()
    done = execute()
    checked >> [chat_approved, approval]
    approval >> recorded
    [chat_approved, recorded] >> done
    verified = verify()
    done >> verified >> report()


ops_action()

"""The ops_action DAG's approval task: Airflow 3's ``ApprovalOperator`` that also records the
decision (options and who answered) as XCom ``decision`` before acting on it. On Reject the
operator skips what follows and Airflow 3.3.2 then pushes no return value (checked by running),
so without this the DAG could not audit who rejected. Imported by the DAG only (imports Airflow).
"""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator


class AuditedApprovalOperator(ApprovalOperator):
    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        context["ti"].xcom_push(
            key="decision",
            value={
                "chosen_options": list(event.get("chosen_options") or []),
                "responded_by_user": event.get("responded_by_user"),
            },
        )
        return super().execute_complete(context=context, event=event)

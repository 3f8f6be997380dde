"""Airflow 3 plugin "Knowledge": the state of the assistant's knowledge in Airflow's UI.

A FastAPI app mounted in Airflow's API server at ``/knowledge`` and an external view (a nav entry
whose page Airflow's UI shows in a frame at ``/plugin/knowledge``). The page shows per index
alias the promoted version, its size, the run that built it (a link to the DAG run) and the
last quality-gate verdict with its metrics (a link to the MLflow run), with a rollback button;
quarantined runbooks with their reasons; signal freshness and dead letters per source; the
agent's pending actions with approve and reject buttons (for actions whose ops_action run is
not already waiting on Airflow's Required Actions page); questions flagged by the feedback loop.

Everything is read and done by the library (``opsassist.platform_status``: the same functions
the CLI's ``versions`` / ``rollback`` and the chat's ``approve`` / ``reject`` use); this file is
routing and permissions only. Airflow's auth manager decides who may do what, from the user's own
Airflow session (the UI's JWT cookie, or a bearer token from ``/auth/token``):

* reading (page and ``GET api/status``): the custom view ``Knowledge`` with ``GET``;
* the buttons (``POST api/...``): the custom view ``Knowledge`` with ``POST`` *and* write access
  to assets (the indexes are the DAGs' data). With the simple auth manager the op and admin roles
  pass, viewer and user get 403; a FAB or Keycloak auth manager can narrow it per view.

Operator requests must be JSON (``Content-Type: application/json``): a cross-site form cannot
send one, and Airflow's session cookie is SameSite=Lax. Nothing heavy is imported until a
request comes (schedulers and task processes load plugins too).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar
from urllib.parse import quote

from airflow.plugins_manager import AirflowPlugin
from fastapi import Body, Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse

RESOURCE = "Knowledge"
URL_PREFIX = "/knowledge"
app = FastAPI(
    title="opsassist Knowledge",
    description="Index versions, quality gate, quarantine, signals and pending agent actions.",
)


# --- who is asking ----------------------------------------------------------------------------
async def airflow_user(request: Request) -> Any:
    """The Airflow user of this request, resolved by Airflow's own ``get_user`` (a bearer token
    first, else the UI's session cookie); 401 without either, 403 for an invalid token."""
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi.security import HTTPBearer

    credentials = await HTTPBearer(auto_error=False)(request)
    return await get_user(request, None, credentials)


def may_operate(user: Any) -> bool:
    """Airflow's auth manager: may this user press the page's buttons?"""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import AssetDetails

    manager = get_auth_manager()
    return bool(
        manager.is_authorized_custom_view(method="POST", resource_name=RESOURCE, user=user)
        and manager.is_authorized_asset(method="PUT", details=AssetDetails(), user=user)
    )


async def viewer(user: Annotated[Any, Depends(airflow_user)]) -> Any:
    from airflow.api_fastapi.app import get_auth_manager

    if not get_auth_manager().is_authorized_custom_view(
        method="GET", resource_name=RESOURCE, user=user
    ):
        raise HTTPException(403, f"{user.get_name()} may not view {RESOURCE}")
    return user


Viewer = Annotated[Any, Depends(viewer)]


def principal(user: Any) -> Any:
    """The library's principal for this Airflow user: operator (admin for the simple auth
    manager's admin role) when the auth manager lets them operate, else viewer."""
    from opsassist.agent.roles import Principal

    if not may_operate(user):
        return Principal(user.get_name(), "viewer")
    role = "admin" if str(getattr(user, "role", "") or "").lower() == "admin" else "operator"
    return Principal(user.get_name(), role)


def require_json(request: Request) -> None:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise HTTPException(415, "send JSON (Content-Type: application/json)")


def settings() -> Any:
    from opsassist.settings import get_settings

    return get_settings()


# --- Airflow's own approvals -------------------------------------------------------------------
def awaiting_in_airflow(request: Request, dag_id: str) -> dict[str, str] | None:
    """Action id -> ops_action run id, for runs whose approval task waits on Airflow's Required
    Actions page (asked of Airflow's REST API with the caller's own credentials, so only runs
    they may see); ``None`` when Airflow could not say."""
    import httpx

    headers = {}
    if request.headers.get("authorization"):
        headers["Authorization"] = request.headers["authorization"]
    base = f"{request.url.scheme}://{request.url.netloc}"
    try:
        with httpx.Client(
            base_url=base, headers=headers, cookies=request.cookies, timeout=10
        ) as api:
            waiting = api.get(
                f"/api/v2/dags/{dag_id}/dagRuns/~/hitlDetails",
                params={"response_received": "false", "limit": 100},
            )
            if waiting.status_code == 403:
                return {}
            waiting.raise_for_status()
            run_ids = {d["task_instance"]["dag_run_id"] for d in waiting.json()["hitl_details"]}
            found = {}
            for run_id in run_ids:
                run = api.get(f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}")
                if run.status_code == 200:
                    action = (run.json().get("conf") or {}).get("action_id")
                    if action:
                        found[str(action)] = run_id
            return found
    except (httpx.HTTPError, KeyError, ValueError):
        return None


# --- routes ------------------------------------------------------------------------------------
@app.get("/", response_class=HTMLResponse)
def page(request: Request, user: Viewer) -> HTMLResponse:
    from knowledge_page import render

    from opsassist.platform_status import snapshot

    config = settings()
    data = snapshot(config)
    waiting = awaiting_in_airflow(request, config.agent_dag_id) if data["actions"]["ok"] else {}
    return HTMLResponse(
        render(
            data,
            user=user.get_name(),
            can_operate=may_operate(user),
            awaiting=waiting,
            dag_id=config.agent_dag_id,
        )
    )


@app.get("/api/status")
def status(user: Viewer) -> JSONResponse:
    from fastapi.encoders import jsonable_encoder

    from opsassist.platform_status import snapshot

    return JSONResponse(jsonable_encoder(snapshot(settings())))


def _operator(user: Any) -> Any:
    if not may_operate(user):
        raise HTTPException(
            403, f"{user.get_name()} may not do this: it needs the operator role in Airflow"
        )
    return principal(user)


def correlation(request: Request) -> Any:
    """The request's correlation id (``X-Request-ID``, else a new one) for the library's logs and
    audit rows."""
    from opsassist.logs import correlation_scope, new_correlation_id

    return correlation_scope(request.headers.get("x-request-id") or new_correlation_id())


@app.post("/api/aliases/{alias}/rollback", dependencies=[Depends(require_json)])
def rollback(
    alias: str,
    request: Request,
    user: Viewer,
    reason: Annotated[str, Body(embed=True, max_length=500)] = "",
) -> JSONResponse:
    """``opsassist rollback ALIAS --reason ...`` as the Airflow user (audited)."""
    from opsassist.index.lifecycle import RollbackError
    from opsassist.platform_status import roll_back

    who = _operator(user)
    try:
        with correlation(request):
            record = roll_back(settings(), alias, f"airflow:{who.user}", reason)
    except KeyError as exc:
        raise HTTPException(404, str(exc.args[0])) from exc
    except RollbackError as exc:
        raise HTTPException(409, str(exc)) from exc
    except Exception as exc:
        raise HTTPException(503, f"index store unavailable ({type(exc).__name__})") from exc
    return JSONResponse(record)


def _decide(action_id: str, request: Request, user: Any, approve: bool) -> JSONResponse:
    from opsassist.agent.store import AuditStoreUnavailable
    from opsassist.platform_status import decide_action

    allowed = may_operate(user)
    try:
        # a viewer goes through the library too: its refusal is audited like the chat's
        with correlation(request):
            reply = decide_action(settings(), action_id, principal(user), approve)
    except AuditStoreUnavailable as exc:
        if not allowed:
            raise HTTPException(403, f"{user.get_name()} may not decide on actions") from exc
        raise HTTPException(503, str(exc)) from exc
    if not allowed:
        raise HTTPException(403, reply.text)
    if reply.refusals:
        raise HTTPException(409, reply.text)
    return JSONResponse({"text": reply.text, "actions": reply.actions})


@app.post("/api/actions/{action_id}/approve", dependencies=[Depends(require_json)])
def approve(action_id: str, request: Request, user: Viewer) -> JSONResponse:
    return _decide(action_id, request, user, approve=True)


@app.post("/api/actions/{action_id}/reject", dependencies=[Depends(require_json)])
def reject(action_id: str, request: Request, user: Viewer) -> JSONResponse:
    return _decide(action_id, request, user, approve=False)


class KnowledgePlugin(AirflowPlugin):
    name = "knowledge"
    fastapi_apps: ClassVar[list[dict[str, Any]]] = [
        {"app": app, "url_prefix": URL_PREFIX, "name": "Knowledge"}
    ]
    external_views: ClassVar[list[dict[str, Any]]] = [
        {
            "name": "Knowledge",
            "href": "knowledge/",  # relative: under the API server's base URL
            "destination": "nav",
            "url_route": "knowledge",
            "nav_top_level": True,
        }
    ]

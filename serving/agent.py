"""The action agent in the chat server: a chat question that needs tools (or an ``approve`` /
``reject`` / ``status <id>`` command) is answered by ``opsassist.agent.loop.Agent``; anything
else falls through to the retrieval pipeline. ``GET /v1/actions[/{id}]`` shows pending actions
and their results. The server holds only the read and dry-run identities; execution is the
ops_action DAG's (triggered through Airflow's REST API on ``approve <id>``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse

from opsassist.agent import kube
from opsassist.agent.airflow_api import trigger_dag
from opsassist.agent.loop import COMMAND, Agent, AgentReply
from opsassist.agent.roles import ANONYMOUS, Principal
from opsassist.agent.store import AgentStore, AuditStoreUnavailable
from opsassist.agent.tools import build_registry
from opsassist.chat.pipeline import ChatRequest, estimate_tokens
from opsassist.documents import SearchHit
from opsassist.index.base import IndexStore
from opsassist.llm.client import Usage
from opsassist.logs import get_logger
from opsassist.search import search
from opsassist.settings import Settings
from serving.auth import check_api_key
from serving.errors import APIError
from serving.openai_format import DONE, ChunkWriter, completion

log = get_logger("serving.agent")
AGENT_DOWN_NOTICE = (
    "_The action agent is unavailable (its database cannot be reached), so nothing was run or "
    "proposed: the answer below is from the runbooks only._\n\n"
)
router = APIRouter(prefix="/v1", dependencies=[Depends(check_api_key)])


def build_agent(settings: Settings, store: IndexStore) -> Agent:
    """The agent from settings: read tools with the read identity, dry-runs with the dry-run one."""

    def search_fn(alias: str, query: str, k: int) -> list[SearchHit]:
        return search(query, settings=settings, store=store, target=alias, k=k)

    registry = build_registry(settings, kube.api_client(settings, "read"), search_fn)
    dryrun = kube.api_client(settings, "dryrun")
    return Agent(
        settings,
        registry,
        AgentStore(settings.audit_dsn.get_secret_value()),
        lambda: dryrun,
        lambda conf: trigger_dag(settings, conf),
    )


def _agent(request: Request) -> Agent | None:
    agent: Agent | None = getattr(request.app.state, "agent", None)
    return agent


def principal(request: Request) -> Principal:
    who: Principal = getattr(request.state, "principal", ANONYMOUS)
    return who


async def agent_chat(
    request: Request, model_id: str, chat: ChatRequest, stream: bool
) -> JSONResponse | StreamingResponse | None:
    """The agent's completion, or ``None`` when the agent is off or the question needs no tool."""
    agent = _agent(request)
    if agent is None or not chat.messages or chat.messages[-1]["role"] != "user":
        return None
    question = chat.messages[-1]["content"].strip()
    if not question:
        return None
    try:
        reply = await asyncio.to_thread(agent.respond, question, principal(request))
    except AuditStoreUnavailable:
        if COMMAND.match(question):  # an approval is never answered with a runbook
            raise
        log.warning("agent unavailable: audit store down; plain answer instead")
        request.state.agent_notice = AGENT_DOWN_NOTICE
        return None
    if reply is None:
        return None
    request.state.log_cache = "bypass"
    usage = Usage(estimate_tokens(question), estimate_tokens(reply.text))
    extension = {"opsassist": {"agent": reply.extension(), "citations": _citations(reply)}}
    headers = {"X-OpsAssist-Agent": reply.kind}
    if stream:
        return StreamingResponse(
            _stream(model_id, reply, usage),
            media_type="text/event-stream",
            headers={**headers, "Cache-Control": "no-cache"},
        )
    data = completion(model_id, reply.text, "stop", usage, extension)
    return JSONResponse(data, headers=headers)


def _citations(reply: AgentReply) -> list[dict[str, Any]]:
    return [c.to_json() for c in reply.citations]


async def _stream(model_id: str, reply: AgentReply, usage: Usage) -> AsyncGenerator[str, None]:
    writer = ChunkWriter(model_id)
    yield writer.role()
    for start in range(0, len(reply.text), 400):
        yield writer.content(reply.text[start : start + 400])
    yield writer.finish("stop")
    yield writer.usage(usage)
    yield DONE


@router.get("/actions")
async def list_actions(request: Request) -> JSONResponse:
    agent = _agent(request)
    if agent is None:
        raise APIError(404, "the action agent is not enabled", code="agent_disabled")
    actions = await asyncio.to_thread(agent.store.list_actions)
    return JSONResponse([a.to_json() for a in actions])


@router.get("/actions/{action_id}")
async def get_action(action_id: str, request: Request) -> JSONResponse:
    agent = _agent(request)
    if agent is None:
        raise APIError(404, "the action agent is not enabled", code="agent_disabled")
    action = await asyncio.to_thread(agent.store.get_action, action_id)
    if action is None:
        raise APIError(404, f"no action {action_id}", code="action_not_found")
    return JSONResponse(action.to_json())

"""The chat server: an OpenAI-compatible API (for Open WebUI and OpenAI clients) over the
opsassist chat pipeline, plus search, health, readiness and metrics.

    uvicorn serving.app:app --host 127.0.0.1 --port 18000

It never ingests: it reads the index alias and the knowledge cache, and calls the model server.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.background import BackgroundTask

from opsassist.cache.base import KnowledgeCache
from opsassist.chat.answerlog import (
    WEBUI_CHAT_HEADER,
    WEBUI_MESSAGE_HEADER,
    AnswerLog,
    AnswerRecord,
    answer_record,
)
from opsassist.chat.pipeline import ChatPipeline, ChatRequest, InvalidChatRequest, Outcome, Prepared
from opsassist.index.base import (
    EmbeddingModelMismatch,
    Filters,
    IndexNotFoundError,
    IndexStore,
    IndexUnavailableError,
    check_model,
)
from opsassist.llm.client import KServeClient, client_from_settings
from opsassist.logs import configure_logging, get_correlation_id, get_logger
from opsassist.search import EmptyQueryError, search
from opsassist.settings import Settings, get_settings
from opsassist.stores import get_cache, get_index_store
from opsassist.timeparse import parse_since
from serving.agent import agent_chat, build_agent
from serving.agent import router as agent_router
from serving.auth import check_api_key, parse_api_keys, parse_principals
from serving.errors import RETRY_AFTER_SECONDS, APIError, error_body, install_error_handlers
from serving.limits import RequestLimitsMiddleware
from serving.metrics import Metrics
from serving.middleware import RequestContextMiddleware
from serving.openai_format import DONE, ChunkWriter, completion, sse
from serving.openapi_doc import install_openapi
from serving.schemas import ChatCompletionIn, SearchIn
from serving.sources import router as sources_router

log = get_logger("serving")
RETRY_AFTER = {"Retry-After": RETRY_AFTER_SECONDS}
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
_EXPOSED = [
    "X-Request-ID",
    "X-OpsAssist-Cache",
    "X-OpsAssist-Degraded",
    "X-OpsAssist-Agent",
    "Server-Timing",
]


@dataclasses.dataclass(slots=True)
class Services:
    settings: Settings
    store: IndexStore
    cache: KnowledgeCache
    client: KServeClient
    pipeline: ChatPipeline
    metrics: Metrics
    answers: AnswerLog | None = None  # OPSASSIST_CHAT_ANSWER_LOG


def services(request: Request) -> Services:
    value: Services = request.app.state.services
    return value


def _elapsed_ms(request: Request) -> float:
    started: float = getattr(request.state, "started", time.perf_counter())
    return (time.perf_counter() - started) * 1000


def server_timing(timings: dict[str, float]) -> str:
    return ", ".join(f"{name};dur={ms:.2f}" for name, ms in timings.items())


# --- operations -----------------------------------------------------------------------------------
ops = APIRouter()


@ops.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _index_check(s: Services) -> dict[str, Any]:
    alias = s.settings.runbook_index
    try:
        version = s.store.current_version(alias)
        reachable = s.store.ping()
    except Exception as exc:
        return {"ok": False, "alias": alias, "detail": f"{type(exc).__name__}: {exc}"}
    if not reachable:
        return {"ok": False, "alias": alias, "detail": "index store unreachable"}
    if version is None:
        return {"ok": False, "alias": alias, "detail": "no promoted version"}
    try:
        check_model(s.store, version, s.settings.embedding_model)
    except EmbeddingModelMismatch as exc:
        return {"ok": False, "alias": alias, "version": version, "detail": str(exc)}
    return {"ok": True, "alias": alias, "version": version}


def _cache_check(s: Services) -> dict[str, Any]:
    try:
        ok = bool(s.cache.ping())
        pack_version = s.cache.pack_version() if ok else None
    except Exception as exc:
        return {"ok": False, "backend": s.settings.cache_backend, "detail": str(exc)}
    return {"ok": ok, "backend": s.settings.cache_backend, "pack_version": pack_version}


@ops.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """503 when the index or the cache is not ready; a model that is down only marks degraded."""
    s = services(request)
    index, cache = await asyncio.gather(
        asyncio.to_thread(_index_check, s), asyncio.to_thread(_cache_check, s)
    )
    model_ok, detail = await s.client.ready()
    model = {
        "ok": model_ok,
        "protocol": s.client.protocol,
        "model": s.client.target,
        "circuit": s.client.breaker_state.value,
        "detail": detail,
    }
    ready = bool(index["ok"] and cache["ok"])
    status = ("ready" if model_ok else "degraded") if ready else "not_ready"
    body = {"status": status, "checks": {"index": index, "cache": cache, "model": model}}
    return JSONResponse(body, status_code=200 if ready else 503)


@ops.get("/metrics")
async def metrics(request: Request) -> Response:
    registry = services(request).metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


# --- OpenAI-compatible API ------------------------------------------------------------------------
v1 = APIRouter(prefix="/v1", dependencies=[Depends(check_api_key)])


def _model_card(settings: Settings) -> dict[str, Any]:
    return {"id": settings.chat_model_id, "object": "model", "created": 0, "owned_by": "opsassist"}


@v1.get("/models")
async def list_models(request: Request) -> dict[str, Any]:
    return {"object": "list", "data": [_model_card(services(request).settings)]}


@v1.get("/models/{model_id}")
async def get_model(model_id: str, request: Request) -> dict[str, Any]:
    settings = services(request).settings
    if model_id != settings.chat_model_id:
        raise APIError(
            404, f"The model '{model_id}' does not exist.", param="model", code="model_not_found"
        )
    return _model_card(settings)


def _extension(prepared: Prepared, outcome: Outcome) -> dict[str, Any]:
    """The ``opsassist`` field of a completion: cache, degradation, mode, citations."""
    citations = [c.to_json() for c in prepared.citations] or (
        prepared.cached.payload.get("citations", []) if prepared.cached else []
    )
    return {
        "cache": prepared.cache_status,
        "degraded": outcome.degraded,
        "mode": prepared.mode,
        "checks": (
            {"dropped": len(outcome.checks.dropped), "stopped": outcome.checks.stopped}
            if outcome.checks is not None
            else None
        ),
        "standalone_question": prepared.standalone,
        "citations": citations,
    }


def _chat_request(body: ChatCompletionIn, request: Request) -> ChatRequest:
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    return ChatRequest(
        messages=[
            {"role": _ROLES[m.role], "content": m.text()} for m in body.messages if m.role in _ROLES
        ],
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=tuple(s for s in stop if s),
        since=body.since,
        use_cache=body.cache,
        base_url=str(request.base_url),
        mode=body.answer_mode,
    )


def _observe_prepared(s: Services, prepared: Prepared) -> None:
    s.metrics.record_cache(prepared.cache_status)
    if "retrieval_ms" in prepared.timings:
        s.metrics.retrieval.observe(prepared.timings["retrieval_ms"] / 1000)
    for kind in prepared.errors:
        s.metrics.errors.labels(kind).inc()
    best: dict[str, float] = {}
    for hit in prepared.hits:
        best[hit.source_type] = max(best.get(hit.source_type, hit.score), hit.score)
    for source_type, score in best.items():
        s.metrics.top_score.labels(source_type).observe(score)


def _observe_cached(s: Services, request: Request, prepared: Prepared) -> None:
    if prepared.cache_status == "hit":
        s.metrics.cached_answer.observe(_elapsed_ms(request) / 1000)


def _observe_outcome(s: Services, outcome: Outcome, request: Request) -> None:
    if outcome.degraded is not None:
        s.metrics.degraded.labels(outcome.degraded).inc()
        s.metrics.errors.labels(outcome.degraded).inc()
    if outcome.generation_s is not None and outcome.usage_from_model:  # the model answered
        s.metrics.generation.labels(s.client.protocol).observe(outcome.generation_s)
    if outcome.usage is not None and outcome.usage_from_model:
        s.metrics.tokens.labels("prompt").inc(outcome.usage.prompt_tokens)
        s.metrics.tokens.labels("completion").inc(outcome.usage.completion_tokens)
    if outcome.first_token_s is not None:
        s.metrics.ttft.labels("model").observe(outcome.first_token_s)
    for kind in outcome.errors:
        s.metrics.errors.labels(kind).inc()
    request.state.log_degraded = outcome.degraded
    request.state.log_model_s = outcome.generation_s


async def _first_piece(pieces: AsyncGenerator[str, None]) -> str | None:
    """The first non-empty piece of an answer (None: it had none)."""
    async for piece in pieces:
        if piece:
            return piece
    return None


async def _stream(
    s: Services,
    request: Request,
    prepared: Prepared,
    outcome: Outcome,
    pieces: AsyncGenerator[str, None],
    first: str | None,
    include_usage: bool,
) -> AsyncGenerator[str, None]:
    writer = ChunkWriter(s.settings.chat_model_id)
    yield writer.role()
    try:
        async with contextlib.aclosing(pieces):
            if first is not None:
                s.metrics.ttft.labels("server").observe(_elapsed_ms(request) / 1000)
                yield writer.content(first)
            async for piece in pieces:
                if piece:
                    yield writer.content(piece)
    except Exception as exc:  # headers are sent: report in-band, as OpenAI does
        log.error("stream failed", exc_info=exc)
        s.metrics.errors.labels("internal").inc()
        message = f"internal server error (request id {get_correlation_id()})"
        yield sse(error_body(message, "server_error", code="internal_error"))
        yield DONE
        return
    _observe_outcome(s, outcome, request)
    # Degradation known only after the headers went out travels in-band, as in the
    # non-streamed completion's "opsassist" field.
    yield writer.finish(outcome.finish_reason, opsassist=_extension(prepared, outcome))
    if include_usage:
        yield writer.usage(outcome.usage)
    # Before [DONE]: a client may hang up as soon as it has it, and code after the last yield
    # then never runs. The count runs as its own task, so [DONE] does not wait for Redis.
    _observe_cached(s, request, prepared)
    _detached(asyncio.to_thread(s.pipeline.record_question, prepared))
    _record_answer(s, request, prepared, outcome, writer.id)
    yield DONE


def _record_answer(
    s: Services, request: Request, prepared: Prepared, outcome: Outcome, completion_id: str
) -> None:
    """Log the answer for the feedback loop (opsassist.chat.answerlog), off the response path."""
    if s.answers is None:
        return
    record = answer_record(
        prepared,
        outcome,
        completion_id=completion_id,
        correlation_id=get_correlation_id(),
        model=s.client.target,
        webui_chat_id=request.headers.get(WEBUI_CHAT_HEADER, ""),
        webui_message_id=request.headers.get(WEBUI_MESSAGE_HEADER, ""),
    )
    _detached(asyncio.to_thread(_store_answer, s.answers, record))


def _store_answer(answers: AnswerLog, record: AnswerRecord) -> None:
    try:
        answers.record(record)
    except Exception as exc:  # the answer was given; its log line says what was lost
        log.error("answer log failed", extra={"answer_id": record.id, "error": repr(exc)})


_DETACHED: set[asyncio.Task[Any]] = set()


def _detached(work: Coroutine[Any, Any, Any]) -> None:
    """Run ``work`` as a task of its own (kept referenced until done)."""
    task = asyncio.ensure_future(work)
    _DETACHED.add(task)
    task.add_done_callback(_DETACHED.discard)


@v1.post("/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionIn, request: Request
) -> JSONResponse | StreamingResponse:
    s = services(request)
    if body.model != s.settings.chat_model_id:
        raise APIError(
            404,
            f"The model '{body.model}' does not exist (served: '{s.settings.chat_model_id}').",
            param="model",
            code="model_not_found",
        )
    chat = _chat_request(body, request)
    answered = await agent_chat(request, s.settings.chat_model_id, chat, body.stream)
    if answered is not None:  # the action agent (tools, pending actions, approvals)
        return answered
    try:
        prepared = await asyncio.to_thread(s.pipeline.prepare, chat)
    except InvalidChatRequest as exc:
        raise APIError(400, str(exc), param=exc.param, code="invalid_request") from exc
    _observe_prepared(s, prepared)
    request.state.log_cache = prepared.cache_status
    timings = {"prep": _elapsed_ms(request)}
    timings |= {name.removesuffix("_ms"): ms for name, ms in prepared.timings.items()}
    headers: dict[str, str] = {"X-OpsAssist-Cache": prepared.cache_status}
    if prepared.index_error is not None:
        headers["X-OpsAssist-Degraded"] = "index"
    if body.stream:
        # The headers wait for the first piece of the answer, so a model that is down before it
        # says anything is in X-OpsAssist-Degraded here too (a composed answer's first piece is
        # ready at once; a model's first checked line takes what the model takes).
        outcome = Outcome()
        pieces = s.pipeline.stream(prepared, chat, outcome)
        try:
            first = await _first_piece(pieces)
        except BaseException:
            await pieces.aclose()
            raise
        notice = getattr(request.state, "agent_notice", "")
        if notice:
            headers["X-OpsAssist-Degraded"] = "agent"
            first = notice + (first or "")
        if outcome.degraded is not None:
            headers["X-OpsAssist-Degraded"] = outcome.degraded
        headers |= {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        headers["Server-Timing"] = server_timing(timings)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            _stream(s, request, prepared, outcome, pieces, first, include_usage),
            media_type="text/event-stream",
            headers=headers,
        )
    outcome = await s.pipeline.complete(prepared, chat)
    _observe_outcome(s, outcome, request)
    if outcome.degraded is not None:
        headers["X-OpsAssist-Degraded"] = outcome.degraded
    notice = getattr(request.state, "agent_notice", "")
    if notice:
        headers["X-OpsAssist-Degraded"] = "agent"
    data = completion(
        s.settings.chat_model_id,
        notice + outcome.text,
        outcome.finish_reason,
        outcome.usage,
        {"opsassist": _extension(prepared, outcome)},
    )
    if outcome.generation_s is not None:
        timings["gen"] = outcome.generation_s * 1000
    timings["total"] = _elapsed_ms(request)
    headers["Server-Timing"] = server_timing(timings)
    _observe_cached(s, request, prepared)
    _record_answer(s, request, prepared, outcome, str(data["id"]))
    return JSONResponse(
        data,
        headers=headers,
        background=BackgroundTask(asyncio.to_thread, s.pipeline.record_question, prepared),
    )


@v1.post("/search")
async def search_endpoint(body: SearchIn, request: Request) -> JSONResponse:
    """The same JSON list as ``opsassist search --json`` for the same query and options."""
    s = services(request)
    try:
        filters = Filters(
            source_types=tuple(body.source_types),
            since=parse_since(body.since) if body.since else None,
        )
    except ValueError as exc:
        raise APIError(400, str(exc), param="since", code="invalid_request") from exc
    try:
        hits = await asyncio.to_thread(
            search,
            body.query,
            settings=s.settings,
            store=s.store,
            target=body.index,
            k=body.k,
            mode=body.mode,
            filters=filters,
        )
    except EmptyQueryError as exc:
        raise APIError(400, str(exc), param="query", code="invalid_request") from exc
    except IndexNotFoundError as exc:
        raise APIError(404, str(exc), param="index", code="index_not_found") from exc
    except (IndexUnavailableError, ConnectionError) as exc:
        s.metrics.errors.labels("index").inc()
        raise APIError(
            503, str(exc), type="server_error", code="index_unavailable", headers=RETRY_AFTER
        ) from exc
    except EmbeddingModelMismatch as exc:
        s.metrics.errors.labels("index").inc()
        raise APIError(503, str(exc), type="server_error", code="embedding_model_mismatch") from exc
    return JSONResponse([hit.to_json() for hit in hits])


# --- application ----------------------------------------------------------------------------------
def limit_torch_threads(threads: int) -> None:
    """Few intra-op threads for the query embedding: one short query gains nothing from more,
    and on a CPU shared with concurrent requests and the model server, more threads wait on each
    other (measured under load: 1 thread ~60 ms per query, 2 threads ~400 ms). Set before the
    worker threads exist: torch's setting is inherited by threads created afterwards."""
    if threads <= 0:
        return
    try:
        import torch
    except ImportError:  # pragma: no cover - torch comes with sentence-transformers
        return
    torch.set_num_threads(threads)


def freeze_startup_objects() -> int:
    """Move what exists after start-up out of the garbage collector's sight (``gc.freeze``).

    A full collection walks every tracked object: ~400k once torch, transformers and the
    embedding model are loaded, 200 to 400 ms with the GIL held on this VM, during which no
    stream is relayed and no question is prepared (it showed as a ~400 ms tail in bursts of 16
    questions). Those objects live as long as the server; frozen, later collections walk only
    what requests allocate. Returns the number of objects frozen.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def create_app(
    settings: Settings | None = None,
    *,
    store: IndexStore | None = None,
    cache: KnowledgeCache | None = None,
    client: KServeClient | None = None,
    embed: Callable[[str], np.ndarray] | None = None,
) -> FastAPI:
    """The app; components default to the ones the settings choose (tests may pass their own)."""
    settings = settings or get_settings()
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.log_level, settings.log_format)
        index_store = store or get_index_store(settings)
        knowledge = cache or get_cache(settings)
        model = client or client_from_settings(settings)
        pipeline = ChatPipeline(settings, index_store, knowledge, model, embed)
        metrics.track_circuit(lambda: model.breaker_state.gauge_value)
        answers = AnswerLog.from_settings(settings) if settings.chat_answer_log else None
        app.state.services = Services(
            settings, index_store, knowledge, model, pipeline, metrics, answers
        )
        app.state.agent = build_agent(settings, index_store) if settings.agent_enabled else None
        limit_torch_threads(settings.chat_torch_threads)
        # prepare() runs in worker threads: enough of them that concurrent questions reach the
        # batching embedder together instead of queueing for a thread (the default is cores + 4).
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=32, thread_name_prefix="opsassist-chat")
        )
        if not app.state.api_keys:
            log.warning("OPSASSIST_API_KEYS is empty: the API accepts requests without a key")
        try:
            await asyncio.to_thread(pipeline.warm_up)
        except Exception as exc:  # the first request will retry; readiness shows the index state
            log.warning("warm-up failed", extra={"error": f"{type(exc).__name__}: {exc}"})
        frozen = freeze_startup_objects()
        log.info(
            "chat server ready",
            extra={
                "model_server": settings.model_server_url,
                "protocol": settings.model_protocol,
                "index": settings.runbook_index,
                "cache_backend": settings.cache_backend,
                "gc_frozen_objects": frozen,
            },
        )
        try:
            yield
        finally:
            if client is None:
                await model.aclose()
            if answers is not None:
                answers.close()

    app = FastAPI(
        title="OpsAssist chat server",
        version="0.1.0",
        summary="OpenAI-compatible on-call assistant over runbooks and signals",
        lifespan=lifespan,
    )
    app.state.api_keys = parse_api_keys(settings)
    app.state.principals = parse_principals(settings)
    install_error_handlers(app)
    install_openapi(app)
    app.include_router(ops)
    app.include_router(v1)
    app.include_router(agent_router)
    app.include_router(sources_router)
    app.add_middleware(
        RequestLimitsMiddleware,
        max_body_bytes=settings.api_max_request_bytes,
        max_in_flight=settings.api_max_concurrent_per_key,
    )
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    app.add_middleware(
        CORSMiddleware,
        allow_origins=origins,
        allow_credentials="*" not in origins,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
        expose_headers=_EXPOSED,
    )
    return app


app = create_app()

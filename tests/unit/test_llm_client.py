"""The KServe client against a small local stand-in of a model server (FastAPI + uvicorn on a free
loopback port): both protocols, incremental streaming, retries, the circuit breaker and the error
bodies of KServe, OpenAI and FastAPI."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from opsassist.llm.breaker import BreakerState, CircuitBreaker
from opsassist.llm.client import CHATML_STOP, Delta, GenerationOptions, KServeClient
from opsassist.llm.errors import (
    BreakerOpenError,
    ModelRequestError,
    ModelUnavailableError,
    error_message,
)
from opsassist.llm.sse import iter_lines, iter_sse_data
from tests.conftest import free_port, serve_in_thread

MODEL = "tiny"
OPTIONS = GenerationOptions(max_tokens=8, temperature=0.0)
MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]


class StubState:
    """What the stand-in does next, and what it saw."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.fail_next = 0  # answer 503 to this many calls first
        self.fail_status = 503
        self.header_delay = 0.0  # seconds before the response starts
        self.tokens = ["Check ", "the ", "pod ", "logs."]
        self.hold_after_first: threading.Event | None = None  # stream: wait after token 1
        self.break_after_first = False  # stream: stall after token 1 (read timeout)
        self.finished = threading.Event()  # set when the stream handler sent its last byte
        self.v2_generate_stream = False
        self.calls: dict[str, int] = {}
        self.bodies: dict[str, Any] = {}


def _stub_app(state: StubState) -> FastAPI:
    app = FastAPI()

    async def _gate(route: str, request: Request) -> Response | None:
        state.calls[route] = state.calls.get(route, 0) + 1
        try:
            state.bodies[route] = await request.json()
        except ValueError:
            state.bodies[route] = None
        if state.header_delay:
            await asyncio.sleep(state.header_delay)
        if state.fail_next > 0:
            state.fail_next -= 1
            return JSONResponse({"error": "engine overloaded"}, status_code=state.fail_status)
        return None

    async def _sse_tokens(frame: Any) -> AsyncIterator[str]:
        try:
            for i, token in enumerate(state.tokens):
                yield f"data: {json.dumps(frame(token))}\n\n"
                if i == 0 and state.hold_after_first is not None:
                    await asyncio.to_thread(state.hold_after_first.wait, 10)
                if i == 0 and state.break_after_first:
                    await asyncio.sleep(5)
            yield "data: [DONE]\n\n"
        finally:
            state.finished.set()

    @app.get("/openai/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": MODEL, "object": "model"}]}

    @app.post("/openai/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> Response:
        failed = await _gate("chat", request)
        if failed is not None:
            return failed
        body = state.bodies["chat"]
        if body["model"] != MODEL:  # the OpenAI routes answer in OpenAI's shape
            error = {"message": f"model {body['model']} not found", "type": "invalid_request_error"}
            return JSONResponse({"error": error}, status_code=404)
        if body.get("stream"):

            def frame(token: str) -> dict[str, Any]:
                choice = {"index": 0, "delta": {"content": token}, "finish_reason": None}
                return {"object": "chat.completion.chunk", "choices": [choice]}

            async def events() -> AsyncIterator[str]:
                async for event in _sse_tokens(frame):
                    if event == "data: [DONE]\n\n":
                        stop = {"index": 0, "delta": {}, "finish_reason": "stop"}
                        yield f"data: {json.dumps({'choices': [stop]})}\n\n"
                        usage = {"prompt_tokens": 7, "completion_tokens": len(state.tokens)}
                        yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n"
                    yield event

            return StreamingResponse(events(), media_type="text/event-stream")
        text = "".join(state.tokens)
        return JSONResponse(
            {
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11},
            }
        )

    @app.get("/v2/models/{name}/ready")
    async def v2_ready(name: str) -> Response:
        if name != f"{MODEL}-v2":
            return JSONResponse({"error": f"Model with name {name} does not exist."}, 404)
        return JSONResponse({"name": name, "ready": True})

    @app.post("/v2/models/{name}/infer", response_model=None)
    async def infer(name: str, request: Request) -> Response:
        failed = await _gate("infer", request)
        if failed is not None:
            return failed
        if name != f"{MODEL}-v2":  # KServe's own error shape
            return JSONResponse({"error": f"Model with name {name} does not exist."}, 404)
        return JSONResponse(
            {
                "model_name": name,
                "outputs": [
                    {
                        "name": "text_output",
                        "shape": [1],
                        "datatype": "BYTES",
                        "data": ["".join(state.tokens)],
                    }
                ],
                "parameters": {"finish_reason": "stop", "prompt_tokens": 9, "completion_tokens": 4},
            }
        )

    @app.post("/v2/models/{name}/generate_stream", response_model=None)
    async def generate_stream(name: str, request: Request) -> Response:
        if not state.v2_generate_stream:  # KServe 0.21: the route does not exist
            state.calls["generate_stream_404"] = state.calls.get("generate_stream_404", 0) + 1
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        failed = await _gate("generate_stream", request)
        if failed is not None:
            return failed
        return StreamingResponse(
            _sse_tokens(lambda token: {"text_output": token}), media_type="text/event-stream"
        )

    return app


@pytest.fixture(scope="module")
def stub() -> Iterator[tuple[str, StubState]]:
    state = StubState()
    with serve_in_thread(_stub_app(state)) as base_url:
        yield base_url, state


@pytest.fixture
def state(stub: tuple[str, StubState]) -> StubState:
    stub[1].reset()
    return stub[1]


@pytest.fixture
def base_url(stub: tuple[str, StubState]) -> str:
    return stub[0]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_client(base_url: str, **kwargs: Any) -> KServeClient:
    kwargs.setdefault("retries", 2)
    kwargs.setdefault("backoff_seconds", 0.01)
    kwargs.setdefault("read_timeout", 5.0)
    return KServeClient(base_url, MODEL, **kwargs)


async def _collect(client: KServeClient) -> list[Delta]:
    try:
        return [delta async for delta in client.stream_chat(MESSAGES, OPTIONS)]
    finally:
        await client.aclose()


async def _chat(client: KServeClient) -> Any:
    try:
        return await client.chat(MESSAGES, OPTIONS)
    finally:
        await client.aclose()


# --- OpenAI-compatible routes ---------------------------------------------------------------------
def test_openai_chat_returns_text_and_server_usage(base_url: str, state: StubState) -> None:
    result = asyncio.run(_chat(make_client(base_url)))
    assert result.text == "".join(state.tokens)
    assert result.finish_reason == "stop"
    assert result.usage is not None and result.usage.total_tokens == 11
    sent = state.bodies["chat"]
    assert sent["model"] == MODEL and sent["messages"] == MESSAGES and sent["stream"] is False


def test_openai_stream_yields_each_token_before_the_server_finishes(
    base_url: str, state: StubState
) -> None:
    state.hold_after_first = threading.Event()

    async def run() -> tuple[list[str], bool]:
        client = make_client(base_url)
        seen: list[str] = []
        finished_at_first_token = True
        try:
            async for delta in client.stream_chat(MESSAGES, OPTIONS):
                if delta.text and not seen:
                    # the stub is still holding the rest of its answer: nothing was buffered
                    finished_at_first_token = state.finished.is_set()
                    assert state.hold_after_first is not None
                    state.hold_after_first.set()
                if delta.text:
                    seen.append(delta.text)
        finally:
            await client.aclose()
        return seen, finished_at_first_token

    seen, finished_at_first_token = asyncio.run(run())
    assert finished_at_first_token is False
    assert seen == state.tokens
    assert state.bodies["chat"]["stream"] is True
    assert state.bodies["chat"]["stream_options"] == {"include_usage": True}


def test_openai_stream_reports_finish_reason_and_usage(base_url: str, state: StubState) -> None:
    deltas = asyncio.run(_collect(make_client(base_url)))
    assert [d.finish_reason for d in deltas if d.finish_reason] == ["stop"]
    usages = [d.usage for d in deltas if d.usage is not None]
    assert len(usages) == 1 and usages[0].completion_tokens == len(state.tokens)


# --- retries --------------------------------------------------------------------------------------
def test_5xx_before_the_first_byte_is_retried_with_backoff(base_url: str, state: StubState) -> None:
    state.fail_next = 2
    started = time.perf_counter()
    result = asyncio.run(_chat(make_client(base_url, retries=2, backoff_seconds=0.1)))
    elapsed = time.perf_counter() - started
    assert result.text == "".join(state.tokens)
    assert state.calls["chat"] == 3
    assert elapsed >= 0.1 + 0.2  # exponential backoff: 0.1 s then 0.2 s


def test_retries_are_bounded(base_url: str, state: StubState) -> None:
    state.fail_next = 10
    with pytest.raises(ModelUnavailableError, match="engine overloaded") as info:
        asyncio.run(_chat(make_client(base_url, retries=1)))
    assert info.value.status == 503
    assert state.calls["chat"] == 2


def test_4xx_is_not_retried_and_keeps_the_openai_message(base_url: str, state: StubState) -> None:
    client = KServeClient(base_url, "other-model", retries=3, backoff_seconds=0.01)
    with pytest.raises(ModelRequestError, match="model other-model not found") as info:
        asyncio.run(_chat(client))
    assert info.value.status == 404
    assert state.calls["chat"] == 1


def test_connect_errors_are_retried_then_reported(state: StubState) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    client = make_client(closed, retries=2, backoff_seconds=0.05)
    started = time.perf_counter()
    with pytest.raises(ModelUnavailableError, match=r"unreachable at .*: connection refused"):
        asyncio.run(_chat(client))
    assert time.perf_counter() - started >= 0.05 + 0.1  # two retries happened


def test_one_client_serves_one_event_loop_after_another(base_url: str, state: StubState) -> None:
    """An aiohttp session belongs to its event loop: closed at the end of one loop (as the chat
    server's lifespan does), the client opens a new one in the next loop (scripts and tests run
    ``asyncio.run`` more than once)."""
    client = make_client(base_url)

    async def ask() -> str:
        try:
            return "".join([d.text async for d in client.stream_chat(MESSAGES, OPTIONS)])
        finally:
            await client.aclose()

    assert asyncio.run(ask()) == "".join(state.tokens)
    assert asyncio.run(ask()) == "".join(state.tokens)
    assert state.calls["chat"] == 2


def test_a_caller_leaving_mid_stream_closes_the_connection(base_url: str, state: StubState) -> None:
    """The model server must see the disconnect and stop generating for nobody."""
    state.hold_after_first = threading.Event()

    async def run() -> None:
        async with make_client(base_url) as client:
            deltas = client.stream_chat(MESSAGES, OPTIONS)
            first = await anext(deltas)
            assert first.text == state.tokens[0]
            await deltas.aclose()

    asyncio.run(run())
    assert state.finished.wait(5)  # the stub's generator ended: its client went away
    state.hold_after_first.set()  # let the stub's waiting thread go


def test_read_timeout_is_not_retried(base_url: str, state: StubState) -> None:
    state.header_delay = 1.0
    with pytest.raises(ModelUnavailableError, match="timed out"):
        asyncio.run(_chat(make_client(base_url, read_timeout=0.2, retries=3)))
    assert state.calls["chat"] == 1


def test_a_stream_that_stalls_after_the_first_byte_is_not_retried(
    base_url: str, state: StubState
) -> None:
    state.break_after_first = True

    async def run() -> list[str]:
        client = make_client(base_url, read_timeout=0.3, retries=3)
        seen: list[str] = []
        try:
            with pytest.raises(ModelUnavailableError, match="read timeout"):
                async for delta in client.stream_chat(MESSAGES, OPTIONS):
                    seen.append(delta.text)
        finally:
            await client.aclose()
        return seen

    assert asyncio.run(run()) == [state.tokens[0]]
    assert state.calls["chat"] == 1


# --- circuit breaker ------------------------------------------------------------------------------
def test_breaker_opens_fails_fast_then_half_opens_and_closes(
    base_url: str, state: StubState
) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=2, cooldown_seconds=30, clock=clock)

    async def run() -> None:
        client = make_client(base_url, retries=0, breaker=breaker)
        try:
            state.fail_next = 100
            for _ in range(2):
                with pytest.raises(ModelUnavailableError):
                    await client.chat(MESSAGES, OPTIONS)
            assert client.breaker_state is BreakerState.OPEN
            calls = state.calls["chat"]
            with pytest.raises(BreakerOpenError):
                await client.chat(MESSAGES, OPTIONS)
            with pytest.raises(BreakerOpenError):
                [d async for d in client.stream_chat(MESSAGES, OPTIONS)]
            assert state.calls["chat"] == calls  # open: nothing was sent

            clock.now += 31
            assert client.breaker_state is BreakerState.HALF_OPEN
            with pytest.raises(ModelUnavailableError):  # the trial fails: open again
                await client.chat(MESSAGES, OPTIONS)
            assert client.breaker_state is BreakerState.OPEN

            clock.now += 31
            state.fail_next = 0
            result = await client.chat(MESSAGES, OPTIONS)  # the trial succeeds: closed
            assert result.text
            assert client.breaker_state is BreakerState.CLOSED
            assert breaker.consecutive_failures == 0
        finally:
            await client.aclose()

    asyncio.run(run())


def test_half_open_lets_one_trial_through_at_a_time() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_seconds=10, clock=clock)
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    assert breaker.retry_after() == pytest.approx(10)
    clock.now += 10
    assert breaker.allow() is True
    assert breaker.allow() is False  # a second caller waits for the trial's verdict
    breaker.release()  # the trial's caller went away without a verdict
    assert breaker.allow() is True
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()


def test_4xx_answers_do_not_open_the_breaker(base_url: str, state: StubState) -> None:
    breaker = CircuitBreaker(failure_threshold=1, cooldown_seconds=30)

    async def run() -> None:
        client = KServeClient(base_url, "other-model", retries=0, breaker=breaker)
        try:
            for _ in range(3):
                with pytest.raises(ModelRequestError):
                    await client.chat(MESSAGES, OPTIONS)
        finally:
            await client.aclose()

    asyncio.run(run())
    assert breaker.state is BreakerState.CLOSED


# --- Open Inference Protocol v2 -------------------------------------------------------------------
def test_v2_stream_falls_back_to_infer_once_and_remembers(base_url: str, state: StubState) -> None:
    async def run() -> tuple[list[Delta], list[Delta]]:
        client = make_client(base_url, protocol="v2")
        try:
            first = [d async for d in client.stream_chat(MESSAGES, OPTIONS)]
            second = [d async for d in client.stream_chat(MESSAGES, OPTIONS)]
        finally:
            await client.aclose()
        return first, second

    first, second = asyncio.run(run())
    text = "".join(d.text for d in first)
    assert text == "".join(state.tokens) == "".join(d.text for d in second)
    assert state.calls["generate_stream_404"] == 1  # the missing route is tried once
    assert state.calls["infer"] == 2
    body = state.bodies["infer"]
    tensor = body["inputs"][0]
    assert tensor["name"] == "text_input" and tensor["datatype"] == "BYTES"
    assert tensor["shape"] == [1]
    prompt = tensor["data"][0]
    assert prompt.startswith("<|im_start|>system\nbe brief<|im_end|>")
    assert prompt.endswith("<|im_start|>assistant\n")
    assert body["parameters"]["stop"] == CHATML_STOP
    assert body["parameters"]["max_tokens"] == OPTIONS.max_tokens
    usages = [d.usage for d in first if d.usage is not None]
    assert usages and usages[0].prompt_tokens == 9


def test_v2_generate_stream_is_used_when_the_server_has_it(base_url: str, state: StubState) -> None:
    state.v2_generate_stream = True
    deltas = asyncio.run(_collect(make_client(base_url, protocol="v2")))
    assert [d.text for d in deltas if d.text] == state.tokens
    assert "infer" not in state.calls
    assert state.bodies["generate_stream"]["text_input"].endswith("<|im_start|>assistant\n")


def test_v2_kserve_error_body_is_reported(base_url: str, state: StubState) -> None:
    client = make_client(base_url, protocol="v2", v2_model="nope")
    with pytest.raises(ModelRequestError) as info:
        asyncio.run(_chat(client))
    assert "Model with name nope does not exist." in str(info.value)
    assert info.value.status == 404


def test_ready_checks_the_model_for_each_protocol(base_url: str, state: StubState) -> None:
    async def run(client: KServeClient) -> tuple[bool, str]:
        try:
            return await client.ready()
        finally:
            await client.aclose()

    assert asyncio.run(run(make_client(base_url)))[0] is True
    assert asyncio.run(run(make_client(base_url, protocol="v2")))[0] is True
    ok, detail = asyncio.run(run(KServeClient(base_url, "missing")))
    assert ok is False and "missing" in detail
    ok, _ = asyncio.run(run(KServeClient(base_url, MODEL, protocol="v2", v2_model="missing")))
    assert ok is False
    ok, detail = asyncio.run(run(KServeClient(f"http://127.0.0.1:{free_port()}", MODEL)))
    assert ok is False and "connection refused" in detail


# --- error bodies and SSE parsing -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            '{"error": "Model with name nope does not exist."}',
            "Model with name nope does not exist.",
        ),
        (
            '{"error": {"message": "bad max_tokens", "type": "invalid_request_error"}}',
            "bad max_tokens",
        ),
        ('{"detail": "Not Found"}', "Not Found"),
        (
            json.dumps(
                {
                    "detail": [
                        {"loc": ["body", "parameters", "stop"], "msg": "Input should be a string"}
                    ]
                }
            ),
            "Input should be a string (body.parameters.stop)",
        ),
        ("upstream connect error", "upstream connect error"),
        ("", "HTTP 502"),
    ],
)
def test_error_message_understands_every_shape(body: str, expected: str) -> None:
    assert error_message(body, 502) == expected


def test_sse_parser_joins_data_lines_and_skips_comments() -> None:
    async def lines() -> AsyncIterator[str]:
        for line in [
            ": keep-alive",
            'data: {"a": 1}',
            "",
            "event: x",
            "data: line1",
            "data:line2",
            "",
            "data: [DONE]",
        ]:
            yield line

    async def run() -> list[str]:
        return [data async for data in iter_sse_data(lines())]

    assert asyncio.run(run()) == ['{"a": 1}', "line1\nline2", "[DONE]"]


def test_lines_are_cut_from_chunks_split_anywhere() -> None:
    text = 'data: {"content": "déjà vu ✓"}\r\n\ndata: [DONE]\n\nno newline at the end'
    raw = text.encode()

    async def chunks(size: int) -> AsyncIterator[bytes]:
        for offset in range(0, len(raw), size):
            yield raw[offset : offset + size]

    async def run(size: int) -> list[str]:
        return [line async for line in iter_lines(chunks(size))]

    expected = text.split("\n")
    for size in (1, 2, 3, 7, len(raw)):  # cuts inside the multi-byte characters too
        assert asyncio.run(run(size)) == expected

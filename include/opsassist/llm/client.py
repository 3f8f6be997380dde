"""Async client of a KServe model server, for both protocols KServe serves LLMs with.

- ``openai``: ``{base}/openai/v1/chat/completions`` (streaming: server-sent events, parsed line by
  line as they arrive and yielded piece by piece, never buffered);
- ``v2``: the Open Inference Protocol. ``{base}/v2/models/{name}/generate_stream`` and
  ``/generate`` where the server has them; KServe 0.21 has neither (404), so the client falls back
  to ``/v2/models/{name}/infer`` with a ``text_input`` BYTES tensor and remembers the fallback.
  ``infer`` has no streaming: the whole text arrives as one piece. v2 takes text, not messages:
  the conversation is rendered with ChatML, the chat template of SmolLM2 (and Qwen) models.

Failure handling: connect/read timeouts; bounded retries with exponential backoff on connect
errors and 5xx, only before the first byte of a response body (a retry never repeats text the
caller has seen); a circuit breaker around each logical call. 4xx errors are not retried and do
not count against the breaker (the server answered).

HTTP goes through aiohttp (C HTTP parser) rather than httpx (pure-Python h11): this client is on
the chat server's hot path, relaying every token of every open stream, and on loopback aiohttp
costs about a fifth of httpx's CPU per streamed request (0.2-0.4 ms vs 0.9-2.1 ms) and half per
relayed event (~50 vs ~130 us). An aiohttp session belongs to the event loop it was created in:
the client makes one per loop, lazily.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import json
import os
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any, Literal

import aiohttp

from opsassist.llm.breaker import BreakerState, CircuitBreaker
from opsassist.llm.errors import (
    BreakerOpenError,
    ModelError,
    ModelRequestError,
    ModelUnavailableError,
    error_for_status,
)
from opsassist.llm.sse import iter_lines, iter_sse_data
from opsassist.logs import get_correlation_id, get_logger
from opsassist.settings import Settings

log = get_logger(__name__)

Protocol = Literal["openai", "v2"]
Message = dict[str, str]
CHATML_STOP = "<|im_end|>"


@dataclasses.dataclass(slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclasses.dataclass(slots=True)
class Delta:
    """One streamed piece: text, and on the last pieces the finish reason and usage."""

    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None


@dataclasses.dataclass(slots=True)
class Completion:
    text: str
    finish_reason: str | None
    usage: Usage | None


@dataclasses.dataclass(slots=True)
class GenerationOptions:
    max_tokens: int = 256
    temperature: float = 0.2
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    repetition_penalty: float | None = None  # vLLM's request field (1.0 or None: off)


def render_chatml(messages: Sequence[Message]) -> str:
    """The conversation as one ChatML prompt ending with the assistant's turn (v2 protocol)."""
    parts = [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages]
    return "".join(parts) + "<|im_start|>assistant\n"


def _usage(data: Any) -> Usage | None:
    if not isinstance(data, dict):
        return None
    try:
        return Usage(int(data["prompt_tokens"]), int(data["completion_tokens"]))
    except (KeyError, TypeError, ValueError):
        return None


class KServeClient:
    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        protocol: Protocol = "openai",
        v2_model: str | None = None,
        api_key: str = "",
        connect_timeout: float = 2.0,
        read_timeout: float = 60.0,
        retries: int = 2,
        backoff_seconds: float = 0.2,
        breaker: CircuitBreaker | None = None,
        max_connections: int = 64,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.protocol: Protocol = protocol
        self.v2_model = v2_model or f"{model}-v2"
        self.retries = max(0, retries)
        self.backoff_seconds = backoff_seconds
        self.breaker = breaker or CircuitBreaker()
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # connect: getting a pooled connection or opening one; sock_read: the longest silence
        # between two reads (a stream may run for minutes, a stalled one is cut after this).
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=connect_timeout,
            sock_connect=connect_timeout,
            sock_read=read_timeout,
        )
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None
        # None: not tried yet; False: the route answered 404 (use infer from now on).
        self._v2_generate: bool | None = None
        self._v2_generate_stream: bool | None = None

    async def __aenter__(self) -> KServeClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def breaker_state(self) -> BreakerState:
        return self.breaker.state

    @property
    def target(self) -> str:
        """The model this client calls, for logs and metrics labels."""
        return self.model if self.protocol == "openai" else self.v2_model

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is None or session.closed:
            return
        if self._session_loop is asyncio.get_running_loop():
            await session.close()
        else:
            _abandon(session)

    def _http(self) -> aiohttp.ClientSession:
        """The session of the running event loop, created on first use in that loop."""
        loop = asyncio.get_running_loop()
        session = self._session
        if session is not None and not session.closed and self._session_loop is loop:
            return session
        if session is not None:
            _abandon(session)
        self._session = aiohttp.ClientSession(
            headers=self._headers,
            timeout=self._timeout,
            connector=aiohttp.TCPConnector(limit=self.max_connections, ttl_dns_cache=300),
            trust_env=True,  # HTTP(S)_PROXY / NO_PROXY, as most HTTP clients do
        )
        self._session_loop = loop
        return self._session

    # --- public calls ----------------------------------------------------------------------------
    async def chat(self, messages: Sequence[Message], options: GenerationOptions) -> Completion:
        """A whole answer (non-streaming)."""
        self._admit()
        try:
            if self.protocol == "openai":
                result = await self._openai_chat(messages, options)
            else:
                result = await self._v2_chat(messages, options)
        except ModelRequestError:
            self.breaker.record_success()
            raise
        except ModelError:
            self.breaker.record_failure()
            raise
        except BaseException:
            self.breaker.release()
            raise
        self.breaker.record_success()
        return result

    async def stream_chat(
        self, messages: Sequence[Message], options: GenerationOptions
    ) -> AsyncGenerator[Delta, None]:
        """The answer piece by piece, each yielded as soon as the server sent it."""
        self._admit()
        source = (
            self._openai_stream(messages, options)
            if self.protocol == "openai"
            else self._v2_stream(messages, options)
        )
        outcome: str | None = None
        try:
            async for delta in source:
                yield delta
            outcome = "success"
        except ModelRequestError:
            outcome = "success"  # the server answered: it is up
            raise
        except ModelError:
            outcome = "failure"
            raise
        finally:
            await source.aclose()
            if outcome == "success":
                self.breaker.record_success()
            elif outcome == "failure":
                self.breaker.record_failure()
            else:
                self.breaker.release()  # the caller went away: no verdict on the server

    async def ready(self) -> tuple[bool, str]:
        """Is the model loaded and served? (Readiness only: does not touch the breaker.)"""
        timeout = aiohttp.ClientTimeout(
            total=self.connect_timeout * 2, connect=self.connect_timeout
        )
        try:
            if self.protocol == "openai":
                url = f"{self.base_url}/openai/v1/models"
                async with self._http().get(url, timeout=timeout) as response:
                    if response.status != 200:
                        return False, f"HTTP {response.status} from /openai/v1/models"
                    data = await response.json(content_type=None)
                ids = [m.get("id") for m in data.get("data", [])]
                if self.model not in ids:
                    return False, f"model {self.model!r} not served (served: {ids})"
                return True, "ready"
            url = f"{self.base_url}/v2/models/{self.v2_model}/ready"
            async with self._http().get(url, timeout=timeout) as response:
                if response.status != 200:
                    return False, f"HTTP {response.status} from v2 ready"
            return True, "ready"
        except (aiohttp.ClientError, TimeoutError, ValueError, AttributeError) as exc:
            return False, _describe(exc)

    # --- transport with retries ------------------------------------------------------------------
    def _admit(self) -> None:
        if not self.breaker.allow():
            raise BreakerOpenError(
                f"circuit breaker open after {self.breaker.consecutive_failures} failures; "
                f"next try in {self.breaker.retry_after():.0f} s"
            )

    async def _open(self, path: str, payload: dict[str, Any]) -> aiohttp.ClientResponse:
        """POST and return the response with its body unread (status 2xx), retrying if allowed.

        Retried: connection refused/reset, connect timeout, a connection closed before any
        response, and 5xx statuses. Not retried: read timeouts (the server took the request and
        is slow: a retry would only add load) and 4xx.
        """
        attempt = 0
        headers = {"X-Request-ID": get_correlation_id()}
        url = f"{self.base_url}{path}"
        while True:
            error: ModelError
            try:
                response = await self._http().post(url, json=payload, headers=headers)
            except aiohttp.ConnectionTimeoutError as exc:
                error = ModelUnavailableError(
                    f"model server unreachable at {self.base_url}: connect timeout ({exc})"
                )
            except TimeoutError as exc:  # no response head within the read timeout
                raise ModelUnavailableError(f"model server timed out ({_describe(exc)})") from exc
            except aiohttp.ClientConnectionError as exc:  # refused, reset, closed before answering
                error = ModelUnavailableError(
                    f"model server unreachable at {self.base_url}: {_describe(exc)}"
                )
            except aiohttp.ClientError as exc:
                raise ModelUnavailableError(f"model server error: {_describe(exc)}") from exc
            else:
                if response.status < 400:
                    return response
                try:
                    body = await response.read()
                except (aiohttp.ClientError, TimeoutError):
                    body = b""
                finally:
                    response.release()
                error = error_for_status(response.status, body)
                if isinstance(error, ModelRequestError):
                    raise error
            attempt += 1
            if attempt > self.retries:
                raise error
            delay = self.backoff_seconds * 2 ** (attempt - 1)
            log.warning(
                "model call failed, retrying",
                extra={"path": path, "attempt": attempt, "delay_s": delay, "error": str(error)},
            )
            await asyncio.sleep(delay)

    async def _read_json(self, response: aiohttp.ClientResponse) -> Any:
        try:
            body = await response.read()
        except TimeoutError as exc:
            raise ModelUnavailableError("model server timed out while answering") from exc
        except aiohttp.ClientError as exc:
            raise ModelUnavailableError(f"model server broke off: {_describe(exc)}") from exc
        finally:
            response.release()
        try:
            return json.loads(body)
        except ValueError as exc:
            raise ModelUnavailableError("model server sent a body that is not JSON") from exc

    async def _events(self, response: aiohttp.ClientResponse) -> AsyncIterator[Any]:
        """Decoded SSE payloads up to ``[DONE]``; errors inside the stream raise. Leaving early
        (the caller went away) closes the connection, so the model server stops generating."""
        try:
            async for data in iter_sse_data(iter_lines(response.content.iter_any())):
                if data.strip() == "[DONE]":
                    return
                try:
                    event = json.loads(data)
                except ValueError as exc:
                    message = f"bad event from model server: {data[:80]}"
                    raise ModelUnavailableError(message) from exc
                if isinstance(event, dict) and "error" in event:
                    raise ModelUnavailableError(
                        "model server error mid-stream: "
                        + json.dumps(event["error"], ensure_ascii=False)[:300]
                    )
                yield event
        except TimeoutError as exc:
            raise ModelUnavailableError("model server stopped sending (read timeout)") from exc
        except aiohttp.ClientError as exc:
            raise ModelUnavailableError(f"model stream broke off: {_describe(exc)}") from exc
        finally:
            response.release()  # back to the pool if the body was read to its end, else closed

    # --- OpenAI-compatible routes ----------------------------------------------------------------
    def _openai_payload(
        self, messages: Sequence[Message], options: GenerationOptions, stream: bool
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": list(messages),
            "max_tokens": options.max_tokens,
            "temperature": options.temperature,
            "stream": stream,
        }
        if options.top_p is not None:
            payload["top_p"] = options.top_p
        if options.stop:
            payload["stop"] = list(options.stop)
        if options.repetition_penalty not in (None, 1.0):
            payload["repetition_penalty"] = options.repetition_penalty
        if stream:
            payload["stream_options"] = {"include_usage": True}
        return payload

    async def _openai_chat(
        self, messages: Sequence[Message], options: GenerationOptions
    ) -> Completion:
        response = await self._open(
            "/openai/v1/chat/completions", self._openai_payload(messages, options, False)
        )
        data = await self._read_json(response)
        try:
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise ModelUnavailableError("unexpected chat completion from model server") from exc
        return Completion(str(text), choice.get("finish_reason"), _usage(data.get("usage")))

    async def _openai_stream(
        self, messages: Sequence[Message], options: GenerationOptions
    ) -> AsyncGenerator[Delta, None]:
        response = await self._open(
            "/openai/v1/chat/completions", self._openai_payload(messages, options, True)
        )
        async for event in self._events(response):
            for choice in event.get("choices") or []:
                delta = choice.get("delta") or {}
                text = delta.get("content") or ""
                finish = choice.get("finish_reason")
                if text or finish:
                    yield Delta(text=text, finish_reason=finish)
            usage = _usage(event.get("usage"))
            if usage is not None:
                yield Delta(usage=usage)

    # --- Open Inference Protocol v2 --------------------------------------------------------------
    def _v2_parameters(self, options: GenerationOptions) -> dict[str, Any]:
        # v2 parameters are scalars: one stop string (the ChatML end of turn) is sent.
        params: dict[str, Any] = {
            "max_tokens": options.max_tokens,
            "temperature": options.temperature,
            "stop": options.stop[0] if options.stop else CHATML_STOP,
        }
        if options.top_p is not None:
            params["top_p"] = options.top_p
        if options.repetition_penalty not in (None, 1.0):
            params["repetition_penalty"] = options.repetition_penalty
        return params

    def _v2_infer_payload(self, prompt: str, options: GenerationOptions) -> dict[str, Any]:
        return {
            "id": uuid.uuid4().hex,
            "inputs": [{"name": "text_input", "shape": [1], "datatype": "BYTES", "data": [prompt]}],
            "parameters": self._v2_parameters(options),
        }

    async def _v2_infer(self, prompt: str, options: GenerationOptions) -> Completion:
        response = await self._open(
            f"/v2/models/{self.v2_model}/infer", self._v2_infer_payload(prompt, options)
        )
        data = await self._read_json(response)
        outputs = data.get("outputs") if isinstance(data, dict) else None
        if not outputs:
            raise ModelUnavailableError("v2 infer response has no outputs")
        output = next((o for o in outputs if o.get("name") == "text_output"), outputs[0])
        values = output.get("data") or [""]
        params = data.get("parameters") or {}
        return Completion(str(values[0]), params.get("finish_reason") or "stop", _usage(params))

    async def _v2_chat(self, messages: Sequence[Message], options: GenerationOptions) -> Completion:
        prompt = render_chatml(messages)
        if self._v2_generate is not False:
            body = {"text_input": prompt, "parameters": self._v2_parameters(options)}
            try:
                response = await self._open(f"/v2/models/{self.v2_model}/generate", body)
            except ModelRequestError as exc:
                if exc.status != 404:
                    raise
                self._v2_generate = False
                log.info("v2 generate route missing: using infer", extra={"model": self.v2_model})
            else:
                self._v2_generate = True
                data = await self._read_json(response)
                return Completion(str(data.get("text_output", "")), "stop", _usage(data))
        return await self._v2_infer(prompt, options)

    async def _v2_stream(
        self, messages: Sequence[Message], options: GenerationOptions
    ) -> AsyncGenerator[Delta, None]:
        prompt = render_chatml(messages)
        if self._v2_generate_stream is not False:
            body = {"text_input": prompt, "parameters": self._v2_parameters(options)}
            try:
                response = await self._open(f"/v2/models/{self.v2_model}/generate_stream", body)
            except ModelRequestError as exc:
                if exc.status != 404:
                    raise
                self._v2_generate_stream = False
                log.info(
                    "v2 generate_stream route missing: using infer", extra={"model": self.v2_model}
                )
            else:
                self._v2_generate_stream = True
                async for event in self._events(response):
                    text = str(event.get("text_output", ""))
                    finish = event.get("finish_reason")
                    if text or finish:
                        yield Delta(text=text, finish_reason=finish)
                return
        result = await self._v2_infer(prompt, options)
        yield Delta(text=result.text, finish_reason=result.finish_reason)
        if result.usage is not None:
            yield Delta(usage=result.usage)


def _describe(exc: BaseException) -> str:
    """A short reason: ``connection refused`` rather than aiohttp's whole connector message."""
    if isinstance(exc, aiohttp.ClientConnectorError) and exc.os_error.errno:
        return os.strerror(exc.os_error.errno).lower()
    if isinstance(exc, OSError) and exc.errno in (errno.ECONNRESET, errno.EPIPE):
        return os.strerror(exc.errno).lower()
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _abandon(session: aiohttp.ClientSession) -> None:
    """Drop a session whose event loop has ended (tests and scripts run a loop per call): its
    connections ended with the loop; mark it and its connector closed so neither warns."""
    connector = session.connector
    session.detach()
    if connector is not None:
        connector._close()  # the synchronous part of close(); the loop to await it on is gone


def client_from_settings(settings: Settings) -> KServeClient:
    return KServeClient(
        settings.model_server_url,
        settings.model_name,
        protocol=settings.model_protocol,
        v2_model=settings.model_v2_name or None,
        api_key=settings.model_api_key.get_secret_value(),
        connect_timeout=settings.model_connect_timeout_seconds,
        read_timeout=settings.model_read_timeout_seconds,
        retries=settings.model_retries,
        backoff_seconds=settings.model_retry_backoff_seconds,
        breaker=CircuitBreaker(
            settings.model_breaker_failures, settings.model_breaker_cooldown_seconds
        ),
    )

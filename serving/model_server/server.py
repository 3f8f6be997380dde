"""KServe model server for the assistant's LLM: SmolLM2-135M-Instruct (GGUF) on the CPU.

Run by `scripts/model-server up` with the model venv's Python (not the project venv: kserve pins
psutil<6). Serves, on 127.0.0.1 only:

- the OpenAI API (`/openai/v1/models`, `/openai/v1/chat/completions`, `/openai/v1/completions`,
  streaming as server-sent events) for `OPSASSIST_MODEL_NAME`;
- the Open Inference Protocol v2 (`/v2/models/<name>-v2/infer`, text in `text_input`, text out in
  `text_output`) for a second model object sharing the same weights: KServe's v2 `infer` refuses
  OpenAI model objects.

Settings (environment): OPSASSIST_MODEL_PORT (18080), OPSASSIST_MODEL_HOST (127.0.0.1),
OPSASSIST_MODEL_NAME (smollm2-135m-instruct), OPSASSIST_MODEL_MAX_TOKENS (default max_tokens,
256), OPSASSIST_MODEL_TEMPERATURE (default temperature, 1.0 as in OpenAI's API),
OPSASSIST_MODEL_THREADS (torch threads, all cores), OPSASSIST_MODEL_CACHE_DIR (tokenizer cache;
empty disables it), OPSASSIST_MODEL_GGUF (another GGUF file).
"""

from __future__ import annotations

import logging
import os
import sys
import time
import uuid
from collections.abc import AsyncGenerator
from http import HTTPStatus
from pathlib import Path
from typing import Any

# Importable both as `python serving/model_server/server.py` and as a module.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import kserve
from engine import Engine, Generation, GenerationError, GenerationParams, Usage
from kserve import InferOutput, InferRequest, InferResponse
from kserve.errors import InvalidInput
from kserve.protocol.rest.openai import (
    ChatCompletionRequest,
    CompletionRequest,
    OpenAIGenerativeModel,
)
from kserve.protocol.rest.openai.errors import create_error_response
from kserve.protocol.rest.openai.types import (
    ChatCompletion,
    ChatCompletionChoice,
    ChatCompletionChunk,
    ChatMessage,
    ChoiceDelta,
    ChunkChoice,
    Completion,
    CompletionChoice,
    CompletionChunk,
    CompletionChunkChoice,
    ErrorResponse,
    UsageInfo,
)

logger = logging.getLogger("opsassist.model_server")

DEFAULT_NAME = "smollm2-135m-instruct"
DONE = "data: [DONE]\n\n"


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    return float(value) if value else default


def _usage_info(usage: Usage) -> UsageInfo:
    return UsageInfo(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
    )


def _sse(chunk: Any) -> str:
    return f"data: {chunk.model_dump_json(exclude_none=True)}\n\n"


def _bad_request(message: str, param: str = "") -> ErrorResponse:
    return create_error_response(message, param=param, status_code=HTTPStatus.BAD_REQUEST)


class ChatModel(OpenAIGenerativeModel):
    """OpenAI completions and chat completions over the shared engine."""

    def __init__(
        self, name: str, engine: Engine, default_max_tokens: int, default_temperature: float
    ) -> None:
        super().__init__(name)
        self.engine = engine
        self.default_max_tokens = default_max_tokens
        self.default_temperature = default_temperature
        self.ready = True

    def _params(self, request: Any, max_tokens: int | None) -> GenerationParams:
        if (request.n or 1) != 1:
            raise GenerationError("only n=1 is supported")
        stop = request.stop or []
        if isinstance(stop, str):
            stop = [stop]
        temperature = request.temperature
        return GenerationParams(
            max_tokens=max_tokens if max_tokens is not None else self.default_max_tokens,
            temperature=self.default_temperature if temperature is None else float(temperature),
            top_p=1.0 if request.top_p is None else float(request.top_p),
            stop=[s for s in stop if s],
            seed=request.seed,
            repetition_penalty=float(getattr(request, "repetition_penalty", None) or 1.0),
        )

    @staticmethod
    def _include_usage(request: Any) -> bool:
        options = request.stream_options
        return bool(options is not None and options.include_usage)

    async def create_chat_completion(
        self,
        request: ChatCompletionRequest,
        raw_request: Any = None,
        context: dict[str, Any] | None = None,
    ) -> AsyncGenerator[str, None] | ChatCompletion | ErrorResponse:
        try:
            max_tokens = request.max_completion_tokens or request.max_tokens
            params = self._params(request, max_tokens)
            prompt_ids = self.engine.chat_prompt_ids(request.messages)
            generation = self.engine.start(prompt_ids, params)
        except GenerationError as exc:
            return _bad_request(str(exc))
        response_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        if request.stream:
            return self._stream_chat(generation, response_id, created, self._include_usage(request))
        text = await generation.complete()
        return ChatCompletion(
            id=response_id,
            created=created,
            model=self.name,
            choices=[
                ChatCompletionChoice(
                    index=0,
                    message=ChatMessage(role="assistant", content=text),
                    finish_reason=generation.finish_reason,
                    stop_reason=generation.stop_string,
                )
            ],
            usage=_usage_info(generation.usage),
        )

    async def _stream_chat(
        self, generation: Generation, response_id: str, created: int, include_usage: bool
    ) -> AsyncGenerator[str, None]:
        def chunk(delta: ChoiceDelta, finish_reason: str | None = None) -> str:
            return _sse(
                ChatCompletionChunk(
                    id=response_id,
                    created=created,
                    model=self.name,
                    choices=[ChunkChoice(index=0, delta=delta, finish_reason=finish_reason)],
                )
            )

        yield chunk(ChoiceDelta(role="assistant", content=""))
        async for piece in generation:
            yield chunk(ChoiceDelta(content=piece))
        yield chunk(ChoiceDelta(), generation.finish_reason)
        if include_usage:
            yield _sse(
                ChatCompletionChunk(
                    id=response_id,
                    created=created,
                    model=self.name,
                    choices=[],
                    usage=_usage_info(generation.usage),
                )
            )
        yield DONE

    async def create_completion(
        self,
        request: CompletionRequest,
        raw_request: Any = None,
        context: dict[str, Any] | None = None,
    ) -> AsyncGenerator[str, None] | Completion | ErrorResponse:
        try:
            params = self._params(request, request.max_tokens)
            prompt = request.prompt
            if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
                prompt = prompt[0]
            if isinstance(prompt, str):
                prompt_text = prompt
                prompt_ids = self.engine.text_prompt_ids(prompt)
            elif isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
                prompt_ids = [int(t) for t in prompt]
                prompt_text = self.engine.tokenizer.decode(prompt_ids)
            else:
                raise GenerationError("prompt must be one string or one list of token ids")
            generation = self.engine.start(prompt_ids, params)
        except GenerationError as exc:
            return _bad_request(str(exc), "prompt")
        echo = prompt_text if request.echo else ""
        response_id = f"cmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        if request.stream:
            return self._stream_completion(
                generation, response_id, created, echo, self._include_usage(request)
            )
        text = await generation.complete()
        return Completion(
            id=response_id,
            created=created,
            model=self.name,
            choices=[
                CompletionChoice(
                    index=0,
                    text=echo + text,
                    finish_reason=generation.finish_reason,
                    stop_reason=generation.stop_string,
                )
            ],
            usage=_usage_info(generation.usage),
        )

    async def _stream_completion(
        self,
        generation: Generation,
        response_id: str,
        created: int,
        echo: str,
        include_usage: bool,
    ) -> AsyncGenerator[str, None]:
        def chunk(text: str, finish_reason: str | None = None) -> str:
            return _sse(
                CompletionChunk(
                    id=response_id,
                    created=created,
                    model=self.name,
                    choices=[
                        CompletionChunkChoice(index=0, text=text, finish_reason=finish_reason)
                    ],
                )
            )

        if echo:
            yield chunk(echo)
        async for piece in generation:
            yield chunk(piece)
        yield chunk("", generation.finish_reason)
        if include_usage:
            yield _sse(
                CompletionChunk(
                    id=response_id,
                    created=created,
                    model=self.name,
                    choices=[],
                    usage=_usage_info(generation.usage),
                )
            )
        yield DONE


class TextModelV2(kserve.Model):
    """Open Inference Protocol v2 face of the same engine: BYTES `text_input` → `text_output`.

    Request parameters: max_tokens, temperature (default 0: greedy), top_p, stop, seed,
    repetition_penalty, and chat_template (true: wrap each input as a user message in the
    tokenizer's chat template).
    """

    def __init__(self, name: str, engine: Engine, default_max_tokens: int) -> None:
        super().__init__(name)
        self.engine = engine
        self.default_max_tokens = default_max_tokens
        self.ready = True

    async def predict(
        self,
        payload: InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> InferResponse:
        if not isinstance(payload, InferRequest):
            raise InvalidInput("expected an Open Inference Protocol v2 request")
        inputs = [i for i in payload.inputs if i.name == "text_input"] or payload.inputs[:1]
        if not inputs or inputs[0].datatype != "BYTES":
            raise InvalidInput("expected one BYTES input named text_input")
        prompts = [_as_text(v) for v in _flatten(inputs[0].data)]
        if not prompts:
            raise InvalidInput("text_input is empty")
        p = _plain_parameters(payload.parameters)
        stop = p.get("stop") or []
        try:
            params = GenerationParams(
                max_tokens=int(p.get("max_tokens", self.default_max_tokens)),
                temperature=float(p.get("temperature", 0.0)),
                top_p=float(p.get("top_p", 1.0)),
                stop=[stop] if isinstance(stop, str) else [str(s) for s in stop],
                seed=int(p["seed"]) if p.get("seed") is not None else None,
                repetition_penalty=float(p.get("repetition_penalty", 1.0)),
            )
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"bad parameters: {exc}") from exc
        chat = str(p.get("chat_template", "false")).lower() in ("1", "true", "yes")
        outputs: list[str] = []
        finish: list[str] = []
        prompt_tokens = completion_tokens = 0
        for prompt in prompts:
            try:
                ids = (
                    self.engine.chat_prompt_ids([{"role": "user", "content": prompt}])
                    if chat
                    else self.engine.text_prompt_ids(prompt)
                )
                generation = self.engine.start(ids, params)
            except GenerationError as exc:
                raise InvalidInput(str(exc)) from exc
            outputs.append(await generation.complete())
            finish.append(generation.finish_reason or "stop")
            prompt_tokens += generation.usage.prompt_tokens
            completion_tokens += generation.usage.completion_tokens
        return InferResponse(
            response_id=payload.id or str(uuid.uuid4()),
            model_name=self.name,
            infer_outputs=[
                InferOutput(
                    name="text_output", shape=[len(outputs)], datatype="BYTES", data=outputs
                )
            ],
            parameters={
                "finish_reason": ",".join(finish),
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
            },
        )


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list | tuple):
        return [x for item in data for x in _flatten(item)]
    if hasattr(data, "tolist"):
        return _flatten(data.tolist())
    return [data]


def _as_text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes | bytearray) else str(value)


def _plain_parameters(parameters: Any) -> dict[str, Any]:
    """v2 request parameters as plain values (REST gives a dict; gRPC InferParameter messages)."""
    if not parameters:
        return {}
    plain: dict[str, Any] = {}
    for key, value in dict(parameters).items():
        if hasattr(value, "WhichOneof"):
            kind = value.WhichOneof("parameter_choice")
            value = getattr(value, kind) if kind else None
        plain[key] = value
    return plain


class LoopbackModelServer(kserve.ModelServer):
    """`kserve.ModelServer` listening on one address instead of 0.0.0.0.

    KServe 0.21 hard-codes `host="0.0.0.0"` in the uvicorn.Config that `start()` builds and has no
    host flag. `start()` builds the REST server, then calls `setup_event_loop()`, then serves: the
    host is set on that config in between, before uvicorn binds.
    """

    def __init__(self, host: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.host = host

    def setup_event_loop(self) -> None:
        if self._rest_server is None:
            raise RuntimeError("expected the single-process REST server (workers=1)")
        self._rest_server.config.host = self.host
        logger.info("REST server will listen on %s:%s", self.host, self.http_port)
        super().setup_event_loop()


def _configure_logging() -> None:
    kserve.logging.configure_logging()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(
            "%(asctime)s.%(msecs)03d %(process)s %(name)s %(levelname)s %(message)s",
            "%Y-%m-%d %H:%M:%S",
        )
    )
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def main() -> None:
    started = time.perf_counter()
    _configure_logging()
    host = os.environ.get("OPSASSIST_MODEL_HOST", "127.0.0.1")
    port = _env_int("OPSASSIST_MODEL_PORT", 18080)
    name = os.environ.get("OPSASSIST_MODEL_NAME", DEFAULT_NAME)
    max_tokens = _env_int("OPSASSIST_MODEL_MAX_TOKENS", 256)
    temperature = _env_float("OPSASSIST_MODEL_TEMPERATURE", 1.0)
    cache = os.environ.get(
        "OPSASSIST_MODEL_CACHE_DIR",
        str(Path(__file__).resolve().parents[2] / "var" / "model-server" / "cache"),
    )
    cache_dir = Path(cache) if cache else None
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)

    engine = Engine(tokenizer_cache_dir=cache_dir)
    engine.load()
    models: list[kserve.Model | ChatModel] = [
        ChatModel(name, engine, max_tokens, temperature),
        TextModelV2(f"{name}-v2", engine, max_tokens),
    ]
    logger.info(
        "models %s ready after %.1fs; serving on http://%s:%d",
        [m.name for m in models],
        time.perf_counter() - started,
        host,
        port,
    )
    LoopbackModelServer(host=host, http_port=port, enable_grpc=False, workers=1).start(models)


if __name__ == "__main__":
    main()

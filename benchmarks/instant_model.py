"""A zero-latency OpenAI-compatible model endpoint for ``benchmarks/chat_server.py``.

It answers ``/openai/v1/models`` and streams ``/openai/v1/chat/completions`` at once (a role
chunk, one content token, the finish chunk, ``[DONE]``), so the time to first token through the
chat server minus the time directly is the server's own overhead, without the real model's
prefill jitter (hundreds of ms on a busy CPU) in the difference. It stands in for KServe only in
that measurement; the real model server is measured beside it.

    .venv/bin/uvicorn benchmarks.instant_model:app --port 18099
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

MODEL = "smollm2-135m-instruct"
app = FastAPI()


@app.get("/openai/v1/models")
async def models() -> JSONResponse:
    return JSONResponse({"object": "list", "data": [{"id": MODEL, "object": "model"}]})


def _chunk(delta: dict[str, Any], finish: str | None = None) -> str:
    body = {
        "id": "chatcmpl-instant",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n"


@app.post("/openai/v1/chat/completions")
async def chat(request: Request) -> StreamingResponse:
    await request.body()

    def events() -> Iterator[str]:
        yield _chunk({"role": "assistant"})
        yield _chunk({"content": "ok"})
        yield _chunk({}, "stop")
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")

"""A zero-latency OpenAI-compatible model endpoint for ``benchmarks/chat_server.py``.

It answers ``/openai/v1/models`` and streams ``/openai/v1/chat/completions`` with the first
token at once (a role chunk, the tokens, the finish chunk, ``[DONE]``), so the time to first token
through the chat server minus the time directly is the server's own overhead, without the real
model's prefill jitter (hundreds of ms on a busy CPU) in the difference. It stands in for KServe
only in that measurement; the real model server is measured beside it.

By default one token. With ``INSTANT_TOKEN_SECONDS`` > 0 it streams ``max_tokens`` tokens that
far apart (a decoding model's pace), so that many streams are open at the same time.

    INSTANT_TOKEN_SECONDS=0.02 .venv/bin/uvicorn benchmarks.instant_model:app --port 18099
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

MODEL = "smollm2-135m-instruct"
TOKEN_SECONDS = float(os.environ.get("INSTANT_TOKEN_SECONDS", "0"))
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
    body = await request.json()
    tokens = int(body.get("max_tokens") or 1) if TOKEN_SECONDS > 0 else 1

    async def events() -> AsyncIterator[str]:
        yield _chunk({"role": "assistant"})
        token = _chunk({"content": "ok "})  # encoded once: this stand-in should cost ~nothing
        for n in range(tokens):
            if n:
                await asyncio.sleep(TOKEN_SECONDS)
            yield token
        yield _chunk({}, "length" if tokens > 1 else "stop")
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")

"""OpenAI response objects: ``chat.completion``, ``chat.completion.chunk`` and SSE framing."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from opsassist.llm.client import Usage

DONE = "data: [DONE]\n\n"


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage_json(usage: Usage | None) -> dict[str, int]:
    if usage is None:
        return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


class ChunkWriter:
    """Frames the chunks of one streamed completion (same id, created and model on each)."""

    def __init__(self, model: str) -> None:
        self.id = completion_id()
        self.created = int(time.time())
        self.model = model

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> str:
        return sse(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": choices,
                **extra,
            }
        )

    def role(self) -> str:
        delta = {"role": "assistant", "content": ""}
        return self._chunk([{"index": 0, "delta": delta, "finish_reason": None}])

    def content(self, text: str) -> str:
        return self._chunk([{"index": 0, "delta": {"content": text}, "finish_reason": None}])

    def finish(self, reason: str, **extra: Any) -> str:
        """The last content chunk; ``extra`` top-level fields ride along (OpenAI clients ignore
        fields they do not know)."""
        return self._chunk([{"index": 0, "delta": {}, "finish_reason": reason}], **extra)

    def usage(self, usage: Usage | None) -> str:
        return self._chunk([], usage=usage_json(usage))


def completion(
    model: str, text: str, finish_reason: str, usage: Usage | None, extra: dict[str, Any]
) -> dict[str, Any]:
    return {
        "id": completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason,
                "logprobs": None,
            }
        ],
        "usage": usage_json(usage),
        **extra,
    }

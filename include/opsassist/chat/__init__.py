"""The chat request pipeline (retrieval, prompt, generation, citations, answer cache)."""

from opsassist.chat.pipeline import (
    ChatPipeline,
    ChatRequest,
    InvalidChatRequest,
    Outcome,
    Prepared,
    estimate_tokens,
)

__all__ = [
    "ChatPipeline",
    "ChatRequest",
    "InvalidChatRequest",
    "Outcome",
    "Prepared",
    "estimate_tokens",
]

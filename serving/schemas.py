"""Request bodies (OpenAI's chat-completions subset the server honours, and the search API)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: str
    text: str | None = None


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text for p in self.content if p.type == "text" and p.text)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class ChatCompletionIn(BaseModel):
    """``POST /v1/chat/completions``. Unknown OpenAI fields are accepted and ignored.

    OpsAssist extensions: ``since`` (signal time window: ``1h``, ``30m``, ISO time), ``cache``
    (false: skip the answer and retrieval caches for this request) and ``answer_mode``
    (``composed``, ``composed_model`` or ``model``: this request's answer mode instead of
    ``OPSASSIST_CHAT_ANSWER_MODE``).
    """

    model_config = ConfigDict(extra="ignore")
    model: str
    messages: list[ChatMessageIn] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=8192)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=8192)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    n: int | None = Field(default=None, ge=1, le=1, description="only 1 is supported")
    user: str | None = None
    since: str | None = None
    cache: bool = True
    answer_mode: Literal["composed", "composed_model", "model"] | None = None


class SearchIn(BaseModel):
    """``POST /v1/search``: the same search as ``opsassist search --json``."""

    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, max_length=4000)
    k: int = Field(default=5, ge=1, le=100)
    mode: Literal["hybrid", "bm25", "vector"] = "hybrid"
    source_types: list[str] = Field(default_factory=list)
    since: str | None = None
    index: str | None = None

    @field_validator("query")
    @classmethod
    def _not_blank(cls, query: str) -> str:
        if not query.strip():
            raise ValueError("the query is empty (only whitespace)")
        return query

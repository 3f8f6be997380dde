"""The chat pipeline with an in-memory index, the memory knowledge cache and the real KServe client
against a small stand-in of KServe's OpenAI routes over loopback HTTP (Starlette + uvicorn in a
thread): follow-up rewriting, time windows, citations, the cache key, the three answer modes, the
guard on model text and degraded answers."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from opsassist.cache.memory import MemoryKnowledgeCache
from opsassist.chat.citations import number_hits, sources_block, without_sources
from opsassist.chat.degraded import INDEX_NOTICE, INTERRUPTED_NOTICE, LOOP_NOTICE, MODEL_NOTICE
from opsassist.chat.pipeline import ChatPipeline, ChatRequest, InvalidChatRequest, Outcome
from opsassist.chat.rewrite import is_follow_up, standalone_question
from opsassist.chat.timewindow import infer_window
from opsassist.documents import Chunk, SearchHit, make_chunk
from opsassist.index.base import Filters, RankedRow
from opsassist.llm.client import KServeClient
from opsassist.settings import Settings
from tests.conftest import free_port, serve_in_thread

NOW = dt.datetime(2026, 11, 25, 14, 30, tzinfo=dt.UTC)
CRASH = "kubernetes/KubePodCrashLooping.md"
ETCD = "etcd/etcdNoLeader.md"
RUNBOOKS = "runbooks-v0001"
SIGNALS = "signals-v0001"
GENERATED = "Look at the container logs [1].\nThen read the pod events [2]."

_TOKEN = re.compile(r"[a-z0-9]+")


def embed(text: str) -> np.ndarray:
    """A deterministic bag-of-words vector (stands in for the sentence model)."""
    vector = np.zeros(128, dtype=np.float32)
    for token in _TOKEN.findall(text.lower()):
        vector[int(hashlib.md5(token.encode()).hexdigest(), 16) % 128] += 1.0
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm else vector


def runbook_chunk(source: str, title: str, section: str, body: str) -> Chunk:
    return make_chunk(
        source_type="runbook",
        source=source,
        title=title,
        section=section,
        text=f"{title} > {section}\n{body}",
    )


def signal_chunk(source: str, body: str, start: dt.datetime) -> Chunk:
    return make_chunk(
        source_type="log",
        source=source,
        title=source,
        section="errors",
        text=body,
        timestamp=start,
        end_timestamp=start + dt.timedelta(minutes=5),
    )


CHUNKS = [
    runbook_chunk(
        CRASH,
        "Kube Pod Crash Looping",
        "Meaning",
        "Pod is in CrashLoop which means the app dies or is unresponsive and kubernetes restarts "
        "it again and again: the pod keeps crash looping.",
    ),
    runbook_chunk(
        CRASH,
        "Kube Pod Crash Looping",
        "Diagnosis",
        "Check the pod events and the logs of the previous container: kubectl logs --previous. "
        "Fix the crash looping pod by correcting its configuration.",
    ),
    runbook_chunk(
        ETCD,
        "etcd No Leader",
        "Mitigation",
        "etcd has no leader: check network latency between members and restore quorum.",
    ),
    runbook_chunk(
        "node/NodeFilesystemAlmostOutOfSpace.md",
        "Node Filesystem Almost Out Of Space",
        "Mitigation",
        "Free disk space on the node filesystem: remove old images and logs.",
    ),
]
SIGNAL_CHUNKS = [
    signal_chunk(
        "payments-api", "payments api pod crash looping: OOMKilled", NOW - dt.timedelta(minutes=10)
    ),
    signal_chunk(
        "payments-api", "payments api pod crash looping: bad config", NOW - dt.timedelta(days=3)
    ),
]
PACK = {
    CRASH: {
        "source": CRASH,
        "title": "Kube Pod Crash Looping",
        "alert": "KubePodCrashLooping",
        "meaning": "The pod restarts again and again.",
        "impact": "Service degradation.",
        "steps": ["Run kubectl describe pod to read the events"],
        "commands": ["kubectl logs <pod> --previous"],
    },
    ETCD: {
        "source": ETCD,
        "title": "etcd No Leader",
        "alert": "etcdNoLeader",
        "meaning": "The cluster has no leader.",
        "impact": "",
        "steps": ["Restore quorum"],
        "commands": [],
    },
}


class FakeStore:
    """The read half of ``IndexStore``: aliases, BM25 (term overlap) and kNN (dot product)."""

    def __init__(self, tables: dict[str, list[Chunk]], aliases: dict[str, str]) -> None:
        self.tables = tables
        self.aliases = aliases
        for chunks in tables.values():
            for chunk in chunks:
                chunk.vector = embed(chunk.text).tolist()

    def current_version(self, alias: str) -> str | None:
        return self.aliases.get(alias)

    def ping(self) -> bool:
        return True

    def version_model(self, version: str) -> str | None:
        from opsassist.embedding import DEFAULT_MODEL

        return DEFAULT_MODEL  # the vectors are this module's bag of words: any name matches

    def _rows(self, version: str, filters: Filters) -> list[Chunk]:
        rows = self.tables[version]
        if filters.since is not None:
            since = filters.since
            rows = [c for c in rows if (c.end_timestamp or c.timestamp or NOW) >= since]
        if filters.until is not None:
            until = filters.until
            rows = [c for c in rows if (c.timestamp or NOW) <= until]
        return rows

    @staticmethod
    def _row(chunk: Chunk, score: float) -> RankedRow:
        record = chunk.to_record()
        record.pop("vector")
        return RankedRow(chunk.id, score, record)

    def bm25(self, target: str, text: str, n: int, filters: Filters) -> list[RankedRow]:
        terms = set(_TOKEN.findall(text.lower()))
        scored = [
            (len(terms & set(_TOKEN.findall(c.text.lower()))), c)
            for c in self._rows(target, filters)
        ]
        scored = [(s, c) for s, c in scored if s > 0]
        scored.sort(key=lambda item: -item[0])
        return [self._row(c, float(s)) for s, c in scored[:n]]

    def knn(self, target: str, vector: np.ndarray, n: int, filters: Filters) -> list[RankedRow]:
        scored = [
            (float(np.dot(vector, np.asarray(c.vector))), c) for c in self._rows(target, filters)
        ]
        scored.sort(key=lambda item: -item[0])
        return [self._row(c, s) for s, c in scored[:n]]


class ModelStub:
    """What the stand-in model server does next (answer, stall mid-stream, or be down), and the
    request bodies it saw."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.down = False  # clients made now point at a closed port: connection refused
        self.stream_error_after_first = False  # stall after the first token (read timeout)
        self.text = GENERATED  # what the model says
        self.finish_reason = "stop"

    async def chat(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        if not body.get("stream"):
            return JSONResponse(
                {
                    "choices": [
                        {
                            "message": {"role": "assistant", "content": self.text},
                            "finish_reason": self.finish_reason,
                        }
                    ],
                    "usage": {"prompt_tokens": 120, "completion_tokens": 9, "total_tokens": 129},
                },
            )
        pieces = self.text.split(" ")
        stall, finish = self.stream_error_after_first, self.finish_reason

        async def events() -> Any:
            for i, piece in enumerate(pieces):
                text = piece if i == 0 else f" {piece}"
                chunk = {"choices": [{"index": 0, "delta": {"content": text}}]}
                yield f"data: {json.dumps(chunk)}\n\n"
                if stall:
                    await asyncio.sleep(10)  # longer than the client's read timeout
            done = {"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}
            yield f"data: {json.dumps(done)}\n\n"
            usage = {"prompt_tokens": 120, "completion_tokens": 9}
            yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")


@pytest.fixture(scope="module")
def model_server() -> Iterator[tuple[str, ModelStub]]:
    stub = ModelStub()
    app = Starlette(routes=[Route("/openai/v1/chat/completions", stub.chat, methods=["POST"])])
    with serve_in_thread(app, lifespan="off") as base_url:
        yield base_url, stub


@pytest.fixture
def chat_settings(settings: Settings) -> Settings:
    """The model writes the answers here (most tests are about the model's path); the composed
    modes have tests of their own below."""
    return settings.model_copy(
        update={"chat_top_k": 3, "chat_default_window": "24h", "chat_answer_mode": "model"}
    )


@pytest.fixture
def cache() -> MemoryKnowledgeCache:
    memory = MemoryKnowledgeCache()
    memory.put_pack(RUNBOOKS, PACK)
    return memory


@pytest.fixture
def model(model_server: tuple[str, ModelStub]) -> ModelStub:
    model_server[1].reset()
    return model_server[1]


@pytest.fixture
def make_pipeline(
    chat_settings: Settings,
    cache: MemoryKnowledgeCache,
    model: ModelStub,
    model_server: tuple[str, ModelStub],
) -> Iterator[Callable[..., ChatPipeline]]:
    clients: list[KServeClient] = []

    def make(aliases: dict[str, str] | None = None, **overrides: Any) -> ChatPipeline:
        store = FakeStore(
            {RUNBOOKS: list(CHUNKS), SIGNALS: list(SIGNAL_CHUNKS)},
            {"runbooks": RUNBOOKS} if aliases is None else aliases,
        )
        url = f"http://127.0.0.1:{free_port()}" if model.down else model_server[0]
        client = KServeClient(url, "tiny", retries=0, read_timeout=1.0)
        clients.append(client)
        settings = chat_settings.model_copy(update=overrides)
        return ChatPipeline(settings, store, cache, client, embed=embed)  # type: ignore[arg-type]

    yield make
    for client in clients:
        asyncio.run(client.aclose())


def user(*turns: str) -> list[dict[str, str]]:
    """A conversation where each user turn got a short assistant answer."""
    messages: list[dict[str, str]] = []
    for i, turn in enumerate(turns):
        messages.append({"role": "user", "content": turn})
        if i < len(turns) - 1:
            messages.append({"role": "assistant", "content": "An earlier answer."})
    return messages


def complete_answer(pipeline: ChatPipeline, request: ChatRequest) -> Outcome:
    async def run() -> Outcome:
        try:
            return await pipeline.complete(pipeline.prepare(request, now=NOW), request)
        finally:
            await pipeline.client.aclose()  # in the loop that used it

    return asyncio.run(run())


def stream_answer(pipeline: ChatPipeline, request: ChatRequest) -> tuple[list[str], Outcome, Any]:
    prepared = pipeline.prepare(request, now=NOW)
    outcome = Outcome()

    async def run() -> list[str]:
        try:
            return [piece async for piece in pipeline.stream(prepared, request, outcome)]
        finally:
            await pipeline.client.aclose()

    pieces = asyncio.run(run())
    pipeline.record_question(prepared)  # as the server does, after the answer
    return pieces, outcome, prepared


# --- follow-up rewriting --------------------------------------------------------------------------
def test_follow_up_gets_the_key_terms_of_the_previous_question() -> None:
    standalone = standalone_question(
        ["why does my pod keep crash looping?", "and how do I fix it?"]
    )
    assert standalone.endswith("how do I fix it?")
    assert not standalone.lower().startswith("and")
    for term in ("pod", "crash", "looping"):
        assert term in standalone
    assert "why" not in standalone and "keep" not in standalone.split(":")[0]


def test_follow_ups_chain_through_earlier_rewrites() -> None:
    standalone = standalone_question(
        ["etcd has no leader", "what does that mean?", "and how do I fix it?"]
    )
    assert "etcd" in standalone and "leader" in standalone
    assert standalone.endswith("how do I fix it?")


@pytest.mark.parametrize(
    "question",
    ["why is etcd slow on node-3?", "NodeFilesystemAlmostOutOfSpace on worker-2", "disk full"],
)
def test_standalone_questions_are_kept_as_asked(question: str) -> None:
    assert not is_follow_up(question)
    assert standalone_question(["why does my pod keep crash looping?", question]) == question


@pytest.mark.parametrize(
    "question", ["and how do I fix it?", "what about the logs?", "How do I fix it?", "Also etcd?"]
)
def test_follow_up_detection(question: str) -> None:
    assert is_follow_up(question)


# --- time windows ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("question", "since", "until"),
    [
        ("what failed in the last 30 minutes?", NOW - dt.timedelta(minutes=30), None),
        ("errors over the past 2h", NOW - dt.timedelta(hours=2), None),
        ("anything in the last hour?", NOW - dt.timedelta(hours=1), None),
        ("what is broken right now?", NOW - dt.timedelta(hours=1), None),
        ("restarts today", NOW.replace(hour=0, minute=0), None),
        (
            "why did payments fail yesterday?",
            NOW.replace(hour=0, minute=0) - dt.timedelta(days=1),
            NOW.replace(hour=0, minute=0),
        ),
        ("since 3 days ago", NOW - dt.timedelta(days=3), None),
    ],
)
def test_time_window_is_inferred_from_the_question(
    question: str, since: dt.datetime, until: dt.datetime | None
) -> None:
    window = infer_window(question, NOW)
    assert window is not None
    assert window.since == since and window.until == until
    assert window.label


def test_questions_without_a_time_have_no_window() -> None:
    assert infer_window("why does my pod keep crash looping?", NOW) is None


def test_request_window_wins_and_follow_ups_keep_an_earlier_window(
    make_pipeline: Callable[..., ChatPipeline],
) -> None:
    pipeline = make_pipeline()
    turns = ["errors in the last 10 minutes?", "and how do I fix it?"]
    window, bound = pipeline.resolve_window(ChatRequest(user(*turns)), turns, NOW)
    assert bound and window.since == NOW - dt.timedelta(minutes=10)
    window, bound = pipeline.resolve_window(ChatRequest(user(*turns), since="2h"), turns, NOW)
    assert bound and window.since == NOW - dt.timedelta(hours=2)
    window, bound = pipeline.resolve_window(ChatRequest(user("disk full")), ["disk full"], NOW)
    assert not bound and window.since == NOW - dt.timedelta(hours=24)
    with pytest.raises(InvalidChatRequest) as info:
        pipeline.resolve_window(ChatRequest(user("x"), since="soon"), ["x"], NOW)
    assert info.value.param == "since"


# --- citations ------------------------------------------------------------------------------------
def _hit(chunk: Chunk) -> SearchHit:
    return SearchHit(
        id=chunk.id,
        source=chunk.source,
        source_type=chunk.source_type,
        title=chunk.title,
        section=chunk.section,
        score=1.0,
        text=chunk.text,
        timestamp=chunk.timestamp.isoformat() if chunk.timestamp else None,
        end_timestamp=chunk.end_timestamp.isoformat() if chunk.end_timestamp else None,
    )


def test_citations_share_numbers_per_section_and_show_signal_time_ranges() -> None:
    hits = [_hit(CHUNKS[0]), _hit(CHUNKS[1]), _hit(CHUNKS[0]), _hit(SIGNAL_CHUNKS[0])]
    citations, numbers = number_hits(hits)
    assert numbers == [1, 2, 1, 3]
    block = sources_block(citations).splitlines()
    assert block[:2] == ["**Sources**", ""]
    assert block[2] == f"- [1] {CRASH} § Meaning"
    assert block[3] == f"- [2] {CRASH} § Diagnosis"
    assert "payments-api" in block[4] and "log" in block[4]
    assert "2026-11-25 14:20:00 UTC → 2026-11-25 14:25:00 UTC" in block[4]
    assert sources_block(citations, language="ru").startswith("**Источники**")


# --- the pipeline ---------------------------------------------------------------------------------
def test_answer_is_grounded_cited_and_cached_under_the_standalone_question(
    make_pipeline: Callable[..., ChatPipeline], cache: MemoryKnowledgeCache, model: ModelStub
) -> None:
    pipeline = make_pipeline()
    request = ChatRequest(user("Why does my pod keep crash looping?"))
    pieces, outcome, prepared = stream_answer(pipeline, request)

    assert prepared.cache_status == "miss"
    assert len(pieces) > 2  # streamed piece by piece, not as one block
    text = "".join(pieces)
    assert text == outcome.text
    assert text.startswith(GENERATED)
    sources = text.split("\n\n**Sources**\n\n", 1)[1].splitlines()
    assert sources[0].startswith(f"- [1] [{CRASH} § ")  # a link to the source's page
    assert outcome.degraded is None and outcome.usage_from_model
    assert outcome.usage is not None and outcome.usage.prompt_tokens == 120

    prompt = model.requests[0]["messages"]
    assert prompt[0]["role"] == "system"
    grounded = prompt[-1]["content"]
    assert f"[1] {CRASH}" in grounded
    assert PACK[CRASH]["meaning"] in grounded  # the knowledge-pack entry of the cited runbook
    assert grounded.rstrip().endswith("Question: Why does my pod keep crash looping?")

    cached = cache.get_answer("why does my pod keep crash looping", RUNBOOKS)
    assert cached is not None and cached.answer == text and CRASH in cached.sources
    again = pipeline.prepare(ChatRequest(user("why does my POD keep crash looping")), now=NOW)
    assert again.cache_status == "hit" and again.cached is not None
    assert again.cached.answer == text
    assert pipeline.record_question(again)
    assert cache.popular_questions(1) == [("Why does my pod keep crash looping?", 2.0)]


def test_follow_up_retrieves_and_caches_by_its_standalone_form(
    make_pipeline: Callable[..., ChatPipeline], cache: MemoryKnowledgeCache
) -> None:
    pipeline = make_pipeline()
    request = ChatRequest(user("why does my pod keep crash looping?", "and how do I fix it?"))
    prepared = pipeline.prepare(request, now=NOW)
    assert prepared.standalone != "and how do I fix it?"
    assert prepared.hits[0].source == CRASH
    outcome = complete_answer(pipeline, request)
    assert outcome.text.startswith(GENERATED)

    assert cache.get_answer("and how do I fix it?", RUNBOOKS) is None
    assert cache.get_answer(prepared.standalone, RUNBOOKS) is not None
    assert pipeline.prepare(request, now=NOW).cache_status == "hit"

    etcd = ChatRequest(user("etcd has no leader", "and how do I fix it?"))
    other = pipeline.prepare(etcd, now=NOW)
    assert other.cache_status == "miss"  # same words, other conversation: another key
    assert other.hits[0].source == ETCD


@pytest.mark.parametrize("streaming", [True, False])
def test_model_down_gives_runbook_steps_with_sources_and_is_not_cached(
    streaming: bool,
    make_pipeline: Callable[..., ChatPipeline],
    cache: MemoryKnowledgeCache,
    model: ModelStub,
) -> None:
    model.down = True
    pipeline = make_pipeline()
    request = ChatRequest(user("why does my pod keep crash looping?"))
    if streaming:
        pieces, outcome, _ = stream_answer(pipeline, request)
        text = "".join(pieces)
    else:
        outcome = complete_answer(pipeline, request)
        text = outcome.text
    assert text.startswith(MODEL_NOTICE)
    assert "connection refused" in text.splitlines()[0]
    assert "127.0.0.1" not in text.splitlines()[0]  # no internal address for the reader
    assert "kubectl logs --previous" in text  # the composed answer: the runbook, quoted
    assert f"[1] [{CRASH}" in text.split("**Sources**")[1]
    assert outcome.degraded == "model" and not outcome.usage_from_model
    assert outcome.usage is not None and outcome.usage.completion_tokens > 0  # estimated
    assert cache.get_answer("why does my pod keep crash looping?", RUNBOOKS) is None


def test_model_failing_mid_stream_keeps_the_text_and_appends_the_steps(
    make_pipeline: Callable[..., ChatPipeline], cache: MemoryKnowledgeCache, model: ModelStub
) -> None:
    model.stream_error_after_first = True
    pieces, outcome, _ = stream_answer(
        make_pipeline(), ChatRequest(user("why does my pod keep crash looping?"))
    )
    text = "".join(pieces)
    assert pieces[0] == GENERATED.split(" ")[0]
    assert INTERRUPTED_NOTICE in text and "kubectl logs --previous" in text
    assert outcome.degraded == "model"
    assert cache.get_answer("why does my pod keep crash looping?", RUNBOOKS) is None


def test_index_without_a_promoted_version_is_said_without_calling_the_model(
    make_pipeline: Callable[..., ChatPipeline], model: ModelStub
) -> None:
    pipeline = make_pipeline(aliases={})
    pieces, outcome, prepared = stream_answer(pipeline, ChatRequest(user("etcd has no leader")))
    assert prepared.index_error is not None
    assert "".join(pieces).startswith(INDEX_NOTICE)
    assert "no promoted version" in "".join(pieces)
    assert outcome.degraded == "index"
    assert model.requests == []


def test_time_bound_question_reads_signals_in_its_window_and_is_not_cached(
    make_pipeline: Callable[..., ChatPipeline], cache: MemoryKnowledgeCache
) -> None:
    pipeline = make_pipeline(aliases={"runbooks": RUNBOOKS, "signals": SIGNALS})
    question = "payments api pod crash looping in the last 30 minutes?"
    pieces, outcome, prepared = stream_answer(pipeline, ChatRequest(user(question)))
    assert prepared.time_sensitive and prepared.cache_status == "bypass"
    signal_hits = [h for h in prepared.hits if h.source_type == "log"]
    assert [h.text for h in signal_hits] == [SIGNAL_CHUNKS[0].text]  # the 3-day-old one is out
    sources = "".join(pieces).split("**Sources**")[1]
    assert "payments-api" in sources and "→" in sources
    assert cache.get_answer(prepared.standalone, RUNBOOKS) is None
    assert outcome.degraded is None


def test_runbook_and_signal_searches_share_one_query_embedding(
    make_pipeline: Callable[..., ChatPipeline],
) -> None:
    """Both searches run concurrently; the question is embedded once per request."""
    pipeline = make_pipeline(aliases={"runbooks": RUNBOOKS, "signals": SIGNALS})
    calls: list[str] = []
    lock = threading.Lock()

    def counting(text: str) -> np.ndarray:
        with lock:
            calls.append(text)
        return embed(text)

    pipeline._embed = counting
    question = "payments api pod crash looping in the last 30 minutes?"
    prepared = pipeline.prepare(ChatRequest(user(question), use_cache=False), now=NOW)
    assert calls == [prepared.standalone]
    assert {h.source_type for h in prepared.hits} >= {"runbook", "log"}


def test_question_without_a_time_uses_the_default_window_and_stays_cacheable(
    make_pipeline: Callable[..., ChatPipeline], cache: MemoryKnowledgeCache
) -> None:
    pipeline = make_pipeline(aliases={"runbooks": RUNBOOKS, "signals": SIGNALS})
    request = ChatRequest(user("how to free disk space on the node filesystem"))
    prepared = stream_answer(pipeline, request)[2]
    assert not prepared.time_sensitive and prepared.cache_status == "miss"
    assert not prepared.cites_signals
    assert cache.get_answer(prepared.standalone, RUNBOOKS) is not None


def test_cache_errors_count_as_misses(
    make_pipeline: Callable[..., ChatPipeline], cache: MemoryKnowledgeCache
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("redis down")

    cache.get_answer = broken  # type: ignore[method-assign]
    cache.put_answer = broken  # type: ignore[method-assign]
    pieces, outcome, prepared = stream_answer(
        make_pipeline(), ChatRequest(user("why does my pod keep crash looping?"))
    )
    assert prepared.cache_status == "miss" and "cache" in prepared.errors
    assert "".join(pieces).startswith(GENERATED)
    assert "cache" in outcome.errors


def test_answers_cut_short_by_a_small_max_tokens_are_not_cached(
    make_pipeline: Callable[..., ChatPipeline], cache: MemoryKnowledgeCache, model: ModelStub
) -> None:
    pipeline = make_pipeline(chat_max_tokens=256)
    request = ChatRequest(user("why does my pod keep crash looping?"), max_tokens=16)
    stream_answer(pipeline, request)
    assert model.requests[0]["max_tokens"] == 16
    assert cache.get_answer("why does my pod keep crash looping?", RUNBOOKS) is None


def test_prompt_context_is_bounded(
    make_pipeline: Callable[..., ChatPipeline], model: ModelStub
) -> None:
    small, large = make_pipeline(chat_context_chars=400), make_pipeline(chat_context_chars=4000)
    request = ChatRequest(user("why does my pod keep crash looping?"), use_cache=False)
    stream_answer(small, request)
    stream_answer(large, request)
    short, long = (r["messages"][-1]["content"] for r in model.requests)
    assert len(short) < len(long)
    assert len(short) <= 400 + 400 // 2 + 200  # sources + pack budget + template and question


def test_history_reaches_the_model_without_old_sources(
    make_pipeline: Callable[..., ChatPipeline], model: ModelStub
) -> None:
    messages = [
        {"role": "user", "content": "why does my pod keep crash looping?"},
        {"role": "assistant", "content": f"Check logs.\n\nSources:\n- [1] {CRASH} § Meaning"},
        {"role": "user", "content": "and how do I fix it?"},
    ]
    stream_answer(make_pipeline(), ChatRequest(messages, use_cache=False))
    sent = model.requests[0]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert sent[2]["content"] == "Check logs."


def test_the_last_message_must_be_a_user_question(
    make_pipeline: Callable[..., ChatPipeline],
) -> None:
    with pytest.raises(InvalidChatRequest):
        make_pipeline().prepare(ChatRequest([{"role": "assistant", "content": "hi"}]), now=NOW)


def test_cache_false_neither_reads_nor_writes(
    make_pipeline: Callable[..., ChatPipeline], cache: MemoryKnowledgeCache
) -> None:
    pipeline = make_pipeline()
    question = "why does my pod keep crash looping?"
    prepared = stream_answer(pipeline, ChatRequest(user(question), use_cache=False))[2]
    assert prepared.cache_status == "bypass"
    assert cache.get_answer(question, RUNBOOKS) is None
    assert cache.get_retrieval(question, RUNBOOKS) is None
    stream_answer(pipeline, ChatRequest(user(question)))
    assert cache.get_answer(question, RUNBOOKS) is not None
    assert cache.get_retrieval(question, RUNBOOKS) is not None
    assert pipeline.prepare(ChatRequest(user(question), use_cache=False)).cache_status == "bypass"


# --- batched query embeddings ---------------------------------------------------------------------
def test_concurrent_queries_are_embedded_together_and_each_gets_its_own_vector() -> None:
    import threading

    from opsassist.chat.embedder import BatchingEmbedder

    sizes: list[int] = []
    release = threading.Event()

    def encode(texts: Sequence[str]) -> np.ndarray:
        sizes.append(len(texts))
        if len(sizes) == 1:
            release.wait(5)  # the first batch is slow: the others queue up meanwhile
        return np.stack([embed(t) for t in texts])

    embedder = BatchingEmbedder(encode)
    questions = [f"question {i} about pods" for i in range(12)] + ["question 1 about pods"]
    results: dict[int, np.ndarray] = {}

    def ask(i: int) -> None:
        results[i] = embedder(questions[i])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(questions))]
    threads[0].start()
    while not sizes:
        time.sleep(0.001)
    for thread in threads[1:]:
        thread.start()
    time.sleep(0.2)
    release.set()
    for thread in threads:
        thread.join(5)
    assert sizes[0] == 1 and sum(sizes) < len(questions)  # batched, duplicates encoded once
    assert len(sizes) < len(questions)
    for i, question in enumerate(questions):
        assert np.allclose(results[i], embed(question))


def test_an_encoder_error_reaches_every_waiting_caller_and_the_embedder_recovers() -> None:
    from opsassist.chat.embedder import BatchingEmbedder

    calls = {"n": 0}

    def encode(texts: Sequence[str]) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("model not loaded")
        return np.stack([embed(t) for t in texts])

    embedder = BatchingEmbedder(encode)
    with pytest.raises(RuntimeError, match="model not loaded"):
        embedder("pod crash looping")
    assert np.allclose(embedder("pod crash looping"), embed("pod crash looping"))


# --- answer modes and the guard -------------------------------------------------------------------
def test_composed_mode_answers_from_the_runbook_without_calling_the_model(
    make_pipeline: Callable[..., ChatPipeline], cache: MemoryKnowledgeCache, model: ModelStub
) -> None:
    pipeline = make_pipeline(chat_answer_mode="composed")
    request = ChatRequest(user("why does my pod keep crash looping?"), base_url="http://chat:8000/")
    pieces, outcome, prepared = stream_answer(pipeline, request)
    text = "".join(pieces)
    assert model.requests == []
    assert prepared.mode == "composed" and outcome.degraded is None
    assert pieces[0].startswith("**KubePodCrashLooping**")  # the answer comes in one piece
    assert "kubectl logs --previous" in text and "### How to confirm" in text
    assert f"- [1] [{CRASH} § Meaning](http://chat:8000/v1/sources/runbooks/{CRASH}#meaning)" in (
        text
    )
    assert cache.get_answer("why does my pod keep crash looping?", RUNBOOKS) is not None


def test_composed_model_mode_adds_a_checked_summary_in_the_questions_language(
    make_pipeline: Callable[..., ChatPipeline], cache: MemoryKnowledgeCache, model: ModelStub
) -> None:
    model.text = "Приложение в поде падает при старте.\nСначала проверьте его прошлые логи."
    pipeline = make_pipeline(
        chat_answer_mode="composed_model",
        chat_repetition_penalty=1.3,
        chat_summary_languages="en,ru",
    )
    pieces, outcome, prepared = stream_answer(
        pipeline, ChatRequest(user("под постоянно перезапускается (crash looping), что делать?"))
    )
    text = "".join(pieces)
    assert prepared.language == "ru" and "### Как проверить" in text
    assert "**Коротко** (_tiny_): Приложение в поде падает при старте." in text
    body, _, sources = text.partition("**Источники**")
    assert "Сначала проверьте его прошлые логи." in body and sources  # before the sources
    sent = model.requests[0]
    assert sent["repetition_penalty"] == 1.3 and sent["max_tokens"] == 96
    assert "Russian" in sent["messages"][-1]["content"]
    assert "```" not in sent["messages"][-1]["content"]  # commands are not shown to the model
    assert outcome.degraded is None and not outcome.checks_failed
    assert cache.get_answer(prepared.standalone, RUNBOOKS) is not None


def test_a_summary_in_the_wrong_language_is_left_out_with_a_notice(
    make_pipeline: Callable[..., ChatPipeline], cache: MemoryKnowledgeCache, model: ModelStub
) -> None:
    model.text = "The app in the pod dies on start."
    pipeline = make_pipeline(chat_answer_mode="composed_model", chat_summary_languages="en,ru")
    pieces, outcome, prepared = stream_answer(
        pipeline, ChatRequest(user("под постоянно перезапускается (crash looping), что делать?"))
    )
    text = "".join(pieces)
    assert "The app in the pod dies" not in text and "**Коротко**" not in text
    assert "Краткое резюме модели не показано" in text
    assert outcome.checks_failed and cache.get_answer(prepared.standalone, RUNBOOKS) is None


def test_no_summary_is_asked_for_in_a_language_the_model_does_not_write(
    make_pipeline: Callable[..., ChatPipeline], cache: MemoryKnowledgeCache, model: ModelStub
) -> None:
    """By default (SmolLM2) only English questions get a summary: a Russian one gets the
    composed answer alone, without a model call."""
    model.text = "Немё был спорциям при старте."
    pipeline = make_pipeline(chat_answer_mode="composed_model")
    pieces, outcome, prepared = stream_answer(
        pipeline, ChatRequest(user("под постоянно перезапускается (crash looping), что делать?"))
    )
    text = "".join(pieces)
    assert "### Как проверить" in text and "Немё" not in text and "**Коротко**" not in text
    assert not model.requests and outcome.degraded is None and not outcome.checks_failed
    assert cache.get_answer(prepared.standalone, RUNBOOKS) is not None

    model.text = "The app in the pod dies on start."
    pieces, _, _ = stream_answer(pipeline, ChatRequest(user("why does my pod keep crash looping?")))
    assert "**In short** (_tiny_): The app in the pod dies on start." in "".join(pieces)
    assert len(model.requests) == 1


def test_composed_model_mode_with_the_model_down_keeps_the_composed_answer(
    make_pipeline: Callable[..., ChatPipeline], cache: MemoryKnowledgeCache, model: ModelStub
) -> None:
    model.down = True
    pipeline = make_pipeline(chat_answer_mode="composed_model")
    pieces, outcome, prepared = stream_answer(
        pipeline, ChatRequest(user("why does my pod keep crash looping?"))
    )
    text = "".join(pieces)
    assert "kubectl logs --previous" in text
    assert "Model unavailable" in text and "connection refused" in text
    assert outcome.degraded == "model"
    assert cache.get_answer(prepared.standalone, RUNBOOKS) is None


def test_a_looping_model_is_stopped_and_the_composed_answer_follows(
    make_pipeline: Callable[..., ChatPipeline], cache: MemoryKnowledgeCache, model: ModelStub
) -> None:
    model.text = "The answer to your question is:\n" * 30
    pieces, outcome, prepared = stream_answer(
        make_pipeline(), ChatRequest(user("etcd has no leader"))
    )
    text = "".join(pieces)
    assert text.count("The answer to your question is:") == 1
    assert LOOP_NOTICE in text and "restore quorum" in text
    assert outcome.degraded == "model" and outcome.checks is not None
    assert outcome.checks.stopped == "degenerate"
    assert cache.get_answer(prepared.standalone, RUNBOOKS) is None


def test_unsupported_commands_are_dropped_and_such_answers_not_cached(
    make_pipeline: Callable[..., ChatPipeline], cache: MemoryKnowledgeCache, model: ModelStub
) -> None:
    model.text = (
        "Read the logs with `kubectl logs --previous` [2].\n"
        "Then run `kubectl delete namespace payments` to start over.\n"
        "See runbooks/crash.md for more [1]."
    )  # the file name is invented too
    pieces, outcome, prepared = stream_answer(
        make_pipeline(), ChatRequest(user("why does my pod keep crash looping?"))
    )
    body = without_sources("".join(pieces))
    assert "kubectl logs --previous" in body
    assert "delete namespace" not in body
    assert outcome.checks is not None
    assert outcome.checks.dropped == ["kubectl delete namespace payments", "runbooks/crash.md"]
    assert cache.get_answer(prepared.standalone, RUNBOOKS) is None


def test_a_model_answer_that_cites_nothing_gives_the_composed_answer(
    make_pipeline: Callable[..., ChatPipeline], cache: MemoryKnowledgeCache, model: ModelStub
) -> None:
    model.text = "Pods restart for many reasons.\nIt depends on your setup."
    pieces, outcome, prepared = stream_answer(
        make_pipeline(), ChatRequest(user("why does my pod keep crash looping?"))
    )
    text = "".join(pieces)
    assert "cited no source" in text and "kubectl logs --previous" in text
    assert outcome.degraded == "model"
    assert cache.get_answer(prepared.standalone, RUNBOOKS) is None


def test_an_answer_cut_by_the_token_limit_is_not_cached(
    make_pipeline: Callable[..., ChatPipeline], cache: MemoryKnowledgeCache, model: ModelStub
) -> None:
    model.finish_reason = "length"
    pieces, outcome, prepared = stream_answer(
        make_pipeline(), ChatRequest(user("why does my pod keep crash looping?"))
    )
    assert outcome.finish_reason == "length"
    assert "Then read the pod events" not in "".join(pieces)  # the cut last line is left out
    assert cache.get_answer(prepared.standalone, RUNBOOKS) is None


def test_a_server_whose_cache_lacks_the_pack_loads_the_one_kept_beside_the_index(
    make_pipeline: Callable[..., ChatPipeline], chat_settings: Settings
) -> None:
    """The chat server with the in-process cache did not build the index: its cache is empty."""
    from opsassist.knowledge import save_pack

    empty = MemoryKnowledgeCache()
    save_pack(chat_settings.data_dir, RUNBOOKS, PACK)
    pipeline = make_pipeline(chat_answer_mode="composed")
    pipeline.cache = empty
    prepared = pipeline.prepare(ChatRequest(user("why does my pod keep crash looping?")), now=NOW)
    assert empty.pack_version() == RUNBOOKS
    assert CRASH in prepared.pack
    assert prepared.composed is not None
    assert prepared.composed.text.startswith("**KubePodCrashLooping**")  # the pack's alert name


def test_a_kept_pack_of_an_older_format_is_served_with_a_warning(
    make_pipeline: Callable[..., ChatPipeline],
    chat_settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A server upgraded before the runbook DAG re-ran: old blocks beat no answer, and the log
    says what to do."""
    from opsassist.knowledge import PACK_FORMAT, save_pack

    for format_, warned in [(PACK_FORMAT - 1, True), (PACK_FORMAT, False)]:
        pack = {source: {**entry, "format": format_} for source, entry in PACK.items()}
        save_pack(chat_settings.data_dir, RUNBOOKS, pack)
        pipeline = make_pipeline(chat_answer_mode="composed")
        pipeline.cache = MemoryKnowledgeCache()
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            prepared = pipeline.prepare(ChatRequest(user("why does my pod keep crash looping?")))
        assert prepared.composed is not None and CRASH in prepared.pack
        assert ("re-run the runbook DAG" in caplog.text) is warned


def test_a_question_naming_an_alert_is_answered_from_that_alerts_runbook(
    make_pipeline: Callable[..., ChatPipeline],
) -> None:
    pipeline = make_pipeline(chat_answer_mode="composed")
    prepared = pipeline.prepare(
        ChatRequest(user("etcdNoLeader fired but the pods keep crash looping too")), now=NOW
    )
    assert prepared.hits[0].source == CRASH  # retrieval alone prefers the crash-loop runbook
    assert prepared.named_runbook == ETCD
    assert prepared.composed is not None and prepared.composed.primary == ETCD


def test_a_question_naming_what_no_runbook_mentions_gets_a_weak_match_notice(
    make_pipeline: Callable[..., ChatPipeline],
) -> None:
    """The nearest runbook is still quoted, under a notice naming what no runbook mentions;
    a question the runbooks cover gets no notice."""
    pipeline = make_pipeline(chat_answer_mode="composed")
    prepared = pipeline.prepare(
        ChatRequest(user("Terraform apply fails on the state lock of our S3 backend")), now=NOW
    )
    assert prepared.covered and prepared.unmatched == ["Terraform"]
    assert prepared.composed is not None
    assert prepared.composed.text.startswith("_This may not be covered by the runbooks")
    assert "**Terraform**" in prepared.composed.text.split("\n\n")[0]
    covered = pipeline.prepare(ChatRequest(user("why does my pod keep crash looping?")), now=NOW)
    assert covered.unmatched == [] and covered.composed is not None
    assert "may not be covered" not in covered.composed.text
    off = make_pipeline(chat_answer_mode="composed", chat_weak_match_similarity=0.0)
    quiet = off.prepare(
        ChatRequest(user("Terraform apply fails on the state lock of our S3 backend")), now=NOW
    )
    assert quiet.unmatched == []


def test_a_question_no_runbook_relates_to_is_said_to_be_not_covered(
    make_pipeline: Callable[..., ChatPipeline],
) -> None:
    pipeline = make_pipeline(chat_answer_mode="composed")
    prepared = pipeline.prepare(ChatRequest(user("zzz qqq xxyy")), now=NOW)
    assert not prepared.covered
    assert prepared.composed is not None and prepared.composed.citations == []
    assert "None of the indexed runbooks covers this question" in prepared.composed.text

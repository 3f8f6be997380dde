"""The chat request pipeline: standalone question → answer cache (CAG) → hybrid retrieval over
the runbook alias (and the signal alias, in a time window, when it exists) → an answer in one of
three modes (``OPSASSIST_CHAT_ANSWER_MODE``) → sources list with links → answer cache.

- ``composed`` (default): the retrieved runbook's sections quoted and arranged (what it means,
  how to confirm, what to do), every line cited (``opsassist.chat.compose``). No model call:
  ready when retrieval is, and it cannot say what the runbook does not.
- ``composed_model``: the composed answer at once, then a short summary by the model in the
  question's language, shown only as far as it passes the guard.
- ``model``: the model writes the answer from numbered sources; its text passes the guard
  (``opsassist.chat.guard``: unsupported commands dropped, a loop stopped). A model that is
  down, fails, loops or says nothing gives the composed answer with a notice instead.

``prepare`` does the blocking part (index, cache, embedding, composition) and is run in a worker
thread by the server; ``stream`` / ``complete`` do the model call; ``record_question``
(popularity for the warm-up) is left to the caller to run off the critical path. An index that
is down or has no promoted version gives a clear message and no generation (HTTP 200); a cache
that is down is a miss, counted in ``errors``. Only good answers are cached: not degraded, not
cut by the token limit, nothing dropped or stopped by the guard, not time-bound, not citing
signals, and not cut short by a small per-request ``max_tokens``. ``use_cache=False`` neither
reads nor writes the answer and retrieval caches.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import math
import re
import threading
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from opsassist.cache.base import CachedAnswer, KnowledgeCache
from opsassist.chat.citations import Citation, number_hits, runbook_sources, sources_block
from opsassist.chat.compose import SEE_ALSO, Composed, compose_answer
from opsassist.chat.coverage import vocabulary, weak_match
from opsassist.chat.degraded import (
    EMPTY_NOTICE,
    INTERRUPTED_NOTICE,
    LOOP_NOTICE,
    MODEL_NOTICE,
    UNCITED_NOTICE,
    index_unavailable,
    model_notice,
    public_reason,
)
from opsassist.chat.embedder import BatchingEmbedder
from opsassist.chat.guard import GuardReport, StreamGuard
from opsassist.chat.language import Language, detect_language, labels
from opsassist.chat.links import SourceLinks
from opsassist.chat.prompt import Message, build_messages, history_for_model, summary_messages
from opsassist.chat.rewrite import standalone_question
from opsassist.chat.timewindow import TimeWindow, infer_window, window_from_request
from opsassist.documents import SearchHit
from opsassist.index.base import (
    EmbeddingModelMismatch,
    Filters,
    IndexStore,
    Query,
    check_model,
    hybrid_search,
)
from opsassist.knowledge import PACK_FORMAT, is_current, load_pack
from opsassist.llm.client import GenerationOptions, KServeClient, Usage
from opsassist.llm.errors import ModelError
from opsassist.logs import get_logger
from opsassist.settings import Settings
from opsassist.stores import fusion_config
from opsassist.timeparse import parse_since

if TYPE_CHECKING:
    from opsassist.postmortems import PastIncident

log = get_logger(__name__)

CacheStatus = Literal["hit", "miss", "bypass"]
Degraded = Literal["model", "index"]
AnswerMode = Literal["composed", "composed_model", "model"]
PACK_SOURCES = 1 + SEE_ALSO  # the answer's runbook and the ones it mentions
_ALERT_WORD = re.compile(r"\b[A-Za-z][A-Za-z0-9]{5,}\b")
_CITATION = re.compile(r"\[(\d{1,3})\]")


class InvalidChatRequest(ValueError):
    """The request cannot be answered as sent (maps to HTTP 400)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclasses.dataclass(slots=True)
class ChatRequest:
    messages: list[Message]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    since: str | None = None
    use_cache: bool = True
    base_url: str = ""  # the chat server as this request reached it (links to source pages)
    mode: AnswerMode | None = None  # None: OPSASSIST_CHAT_ANSWER_MODE


@dataclasses.dataclass(slots=True)
class Prepared:
    question: str
    standalone: str
    window: TimeWindow
    time_sensitive: bool
    mode: AnswerMode = "composed"
    language: Language = "en"
    named_runbook: str | None = None  # the runbook of an alert the question names
    covered: bool = True  # False: no runbook is related to the question
    unmatched: list[str] = dataclasses.field(default_factory=list)  # weak match: names no
    # runbook mentions (opsassist.chat.coverage)
    index_version: str | None = None
    cache_status: CacheStatus = "bypass"
    cached: CachedAnswer | None = None
    index_error: str | None = None
    hits: list[SearchHit] = dataclasses.field(default_factory=list)
    numbers: list[int] = dataclasses.field(default_factory=list)
    citations: list[Citation] = dataclasses.field(default_factory=list)
    pack: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    composed: Composed | None = None
    links: SourceLinks | None = None
    support: str = ""  # what model text may quote: the sources given to it, and the question
    model_messages: list[Message] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)
    timings: dict[str, float] = dataclasses.field(default_factory=dict)  # milliseconds
    incident: PastIncident | None = None  # a matching past incident (postmortem index)

    @property
    def cites_signals(self) -> bool:
        return any(not c.is_runbook for c in self.citations)


@dataclasses.dataclass(slots=True)
class Outcome:
    text: str = ""
    finish_reason: str = "stop"
    usage: Usage | None = None
    usage_from_model: bool = False
    degraded: Degraded | None = None
    degraded_reason: str | None = None
    cached: bool = False
    first_token_s: float | None = None
    generation_s: float | None = None
    model_finish_reason: str | None = None
    checks: GuardReport | None = None  # what the guard dropped or stopped in model text
    errors: list[str] = dataclasses.field(default_factory=list)

    @property
    def checks_failed(self) -> bool:
        checks = self.checks
        return checks is not None and bool(checks.dropped or checks.stopped == "degenerate")


def related(hits: Sequence[SearchHit], min_similarity: float) -> bool:
    """Is any runbook hit related to the question: sharing a word with it (a BM25 match) or close
    in meaning (cosine at least ``min_similarity``)? Vector search returns its nearest sections
    whatever the question, so nearest alone is not related."""
    runbooks = [h for h in hits if h.source_type == "runbook"]
    return any(
        h.bm25_rank is not None or (h.vector_score or 0.0) >= min_similarity for h in runbooks
    )


def estimate_tokens(text: str) -> int:
    """Rough token count (about 4 characters per token for English text, OpenAI's rule of thumb).

    Used for ``usage`` only when no model ran (cache hits, degraded answers) or the model server
    reported no counts; model-generated answers carry the server's own counts.
    """
    return max(1, math.ceil(len(text) / 4)) if text else 0


QUESTION_CHARS = 4000  # a turn is read up to here: a pasted log beyond it adds nothing to a search


def conversation(messages: Sequence[Message]) -> tuple[list[str], str]:
    """The user turns, and the current question (the last message, which must be the user's)."""
    users = [m["content"][:QUESTION_CHARS] for m in messages if m["role"] == "user"]
    if not messages or messages[-1]["role"] != "user" or not messages[-1]["content"].strip():
        raise InvalidChatRequest("the last message must be a non-empty user message", "messages")
    return users, users[-1]


class _Once:
    """``embed`` computed once per request, whichever search asks first (thread-safe)."""

    def __init__(self, embed: Callable[[str], np.ndarray]) -> None:
        self._embed = embed
        self._lock = threading.Lock()
        self._vectors: dict[str, np.ndarray] = {}

    def __call__(self, text: str) -> np.ndarray:
        with self._lock:
            if text not in self._vectors:
                self._vectors[text] = self._embed(text)
            return self._vectors[text]


class ChatPipeline:
    def __init__(
        self,
        settings: Settings,
        store: IndexStore,
        cache: KnowledgeCache,
        client: KServeClient,
        embed: Callable[[str], np.ndarray] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.cache = cache
        self.client = client
        self._embed = embed or BatchingEmbedder(self._encode)
        self._fusion = fusion_config(settings)
        # per pack version: alert name -> runbook, and every word the runbooks use
        self._pack_index: tuple[str | None, dict[str, str], frozenset[str]] = ("", {}, frozenset())
        self._model_checked: set[str] = set()  # versions known to match the embedding model
        self._postmortems: tuple[str | None, dict[str, Any]] = (None, {})  # version, its pack
        # the signal search of each request runs beside its runbook search
        self._signal_pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="chat-signals")

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        encoder = self._query_encoder()
        if encoder is not None:
            return encoder(texts)
        from opsassist.embedding import embed_texts

        s = self.settings
        return embed_texts(
            texts, s.embedding_model, s.embedding_batch_size, s.embedding_device, role="query"
        )

    def _query_encoder(self) -> Callable[[Sequence[str]], np.ndarray] | None:
        """The question encoder with ONNX Runtime for the model's sentence-transformers parts
        (same vectors as torch, faster on a CPU; the other parts use their own encoders),
        loaded once; None: torch for every part (configured so, or on a GPU)."""
        s = self.settings
        if s.query_embedding_runtime != "onnx" or s.embedding_device != "cpu":
            return None
        from opsassist.embedding_onnx import query_encoder  # loaded once per model (cached)

        return query_encoder(s.embedding_model, s.data_dir / "models")

    def warm_up(self) -> None:
        """Load the embedding model now rather than on the first question."""
        self._embed("warm up")

    # --- preparation (blocking: run it in a worker thread) ---------------------------------------
    def resolve_window(
        self, request: ChatRequest, user_turns: Sequence[str], now: dt.datetime | None = None
    ) -> tuple[TimeWindow, bool]:
        """The signal window and whether the question is time-bound (request > question > default).

        A follow-up keeps the window an earlier turn named ("and in the last 10 minutes?").
        """
        now = now or dt.datetime.now(dt.UTC)
        if request.since:
            try:
                return window_from_request(request.since, now), True
            except ValueError as exc:
                raise InvalidChatRequest(str(exc), "since") from exc
        for turn in reversed(user_turns):
            window = infer_window(turn, now)
            if window is not None:
                return window, True
        default = self.settings.chat_default_window
        return TimeWindow(since=parse_since(default, now), label=f"last {default}"), False

    def prepare(self, request: ChatRequest, now: dt.datetime | None = None) -> Prepared:
        user_turns, question = conversation(request.messages)
        window, time_sensitive = self.resolve_window(request, user_turns, now)
        prepared = Prepared(
            question=question,
            standalone=standalone_question(user_turns),
            window=window,
            time_sensitive=time_sensitive,
            mode=request.mode or self.settings.chat_answer_mode,
            language=detect_language(question),
            links=SourceLinks(self.settings, request.base_url),
        )
        started = time.perf_counter()
        try:
            prepared.index_version = self.store.current_version(self.settings.runbook_index)
        except Exception as exc:
            prepared.index_error = f"index unreachable: {type(exc).__name__}: {exc}"
            return prepared
        if prepared.index_version is None:
            prepared.index_error = (
                f"index {self.settings.runbook_index!r} has no promoted version yet"
            )
            return prepared
        try:
            self._check_model(prepared.index_version)
        except EmbeddingModelMismatch as exc:
            prepared.index_error = str(exc)
            return prepared
        if request.use_cache and not time_sensitive:
            prepared.cache_status = "miss"
            try:
                prepared.cached = self.cache.get_answer(prepared.standalone, prepared.index_version)
            except Exception as exc:
                self._cache_error(prepared.errors, "get_answer", exc)
            if prepared.cached is not None and (
                prepared.cached.payload.get("mode", "model") != prepared.mode
            ):
                prepared.cached = None  # made in another answer mode: not this request's answer
            if prepared.cached is not None:
                prepared.cache_status = "hit"
        prepared.timings["cache_ms"] = (time.perf_counter() - started) * 1000
        if prepared.cached is not None:
            return prepared

        started = time.perf_counter()
        try:
            hits = self._retrieve(prepared, request.use_cache)
        except Exception as exc:
            prepared.index_error = f"search failed: {type(exc).__name__}: {exc}"
            return prepared
        prepared.timings["retrieval_ms"] = (time.perf_counter() - started) * 1000
        prepared.hits = hits
        prepared.citations, prepared.numbers = number_hits(hits)
        self._ensure_pack(prepared.index_version, prepared.errors)
        # alert names and runbook vocabulary, for the named runbook and the weak-match check
        if self._read_pack_index(prepared.errors):
            prepared.named_runbook = self._named_runbook(prepared.standalone)
        prepared.covered = prepared.named_runbook is not None or related(
            hits, self.settings.chat_min_similarity
        )
        wanted = runbook_sources(prepared.citations)[:PACK_SOURCES]
        if prepared.named_runbook is not None and prepared.named_runbook not in wanted:
            wanted = [prepared.named_runbook, *wanted[: PACK_SOURCES - 1]]
        prepared.pack = self._pack(wanted, prepared.errors)
        if prepared.covered and prepared.named_runbook is None and self._pack_index[2]:
            prepared.unmatched = weak_match(
                prepared.standalone,
                hits,
                prepared.pack,
                self._pack_index[2],
                self.settings.chat_weak_match_similarity,
            )
        started = time.perf_counter()
        if prepared.mode == "model":
            prepared.model_messages = build_messages(
                prepared.standalone,
                prepared.hits,
                prepared.numbers,
                prepared.citations,
                prepared.pack,
                history_for_model(request.messages, self.settings.chat_history_turns),
                self.settings.chat_context_chars,
            )
            prepared.support = "\n".join(m["content"] for m in prepared.model_messages)
        else:
            prepared.composed = compose_answer(
                hits,
                prepared.pack,
                prepared.language,
                primary=prepared.named_runbook,
                covered=prepared.covered,
                unmatched=prepared.unmatched,
            )
            prepared.citations = prepared.composed.citations
            self._cite_past_incident(prepared)
            if (
                prepared.mode == "composed_model"
                and prepared.composed.primary is not None
                and prepared.language in self.summary_languages
            ):
                prepared.model_messages = summary_messages(
                    prepared.standalone, prepared.composed.text, prepared.language
                )
                prepared.support = prepared.composed.text
        prepared.support += "\n" + prepared.question
        prepared.timings["compose_ms"] = (time.perf_counter() - started) * 1000
        return prepared

    def _check_model(self, version: str) -> None:
        """Refuse a version built with another embedding model (checked once per version)."""
        if version not in self._model_checked:
            check_model(self.store, version, self.settings.embedding_model)
            self._model_checked.add(version)

    def _ensure_pack(self, version: str, errors: list[str]) -> None:
        """A cache without the promoted version's knowledge pack (the in-process cache of a
        server that did not build the index, a flushed Redis) gets the one the build kept beside
        the index."""
        try:
            if self.cache.pack_version() != version:
                stored = load_pack(self.settings.data_dir, version)
                if stored is not None:
                    self.cache.put_pack(version, stored)
                    log.info("knowledge pack loaded", extra={"version": version})
                    if not is_current(stored):  # served as it is: old blocks beat no answer
                        log.warning(
                            "knowledge pack of an older format: re-run the runbook DAG to "
                            "rebuild it",
                            extra={"version": version, "format": PACK_FORMAT},
                        )
        except Exception as exc:
            self._cache_error(errors, "put_pack", exc)

    def _pack(self, sources: list[str], errors: list[str]) -> dict[str, Any]:
        if not sources:
            return {}
        try:
            return self.cache.get_pack(sources)
        except Exception as exc:
            self._cache_error(errors, "get_pack", exc)
            return {}

    def _read_pack_index(self, errors: list[str]) -> bool:
        """Alert names and runbook vocabulary of the cache's pack (read once per pack version)."""
        try:
            version = self.cache.pack_version()
            if version != self._pack_index[0]:
                pack = self.cache.get_pack()
                names = {str(e["alert"]).lower(): s for s, e in pack.items() if e.get("alert")}
                self._pack_index = (version, names, vocabulary(pack))
        except Exception as exc:
            self._cache_error(errors, "alerts", exc)
            return False
        return True

    def _named_runbook(self, question: str) -> str | None:
        """The runbook of the first alert the question names (``KubePodCrashLooping``), from the
        knowledge pack's alert names (:meth:`_read_pack_index`)."""
        names = self._pack_index[1]
        for word in _ALERT_WORD.findall(question):
            source = names.get(word.lower())
            if source is not None:
                return source
        return None

    def record_question(self, prepared: Prepared) -> bool:
        """Count the (standalone) question for warm-up popularity. Off the critical path: the
        server runs it after the response; a cache error is logged, never raised."""
        if prepared.index_error is not None:
            return False
        try:
            self.cache.record_question(prepared.standalone)
        except Exception as exc:
            self._cache_error(prepared.errors, "record_question", exc)
            return False
        return True

    def _retrieve(self, prepared: Prepared, use_cache: bool) -> list[SearchHit]:
        """Runbook hits (from the retrieval cache, else hybrid search) and signal hits. The two
        searches run concurrently and share one query embedding, computed while their BM25
        lists are searched."""
        version = prepared.index_version
        assert version is not None
        k = self.settings.chat_top_k
        embed = _Once(self._embed)
        signals = self._signal_pool.submit(self._signals, prepared, embed)
        incident = self._signal_pool.submit(self._past_incident, prepared, embed)
        warmed = None
        if use_cache:
            try:
                warmed = self.cache.get_retrieval(prepared.standalone, version)
            except Exception as exc:
                self._cache_error(prepared.errors, "get_retrieval", exc)
        if warmed:
            hits = [SearchHit(**hit) for hit in warmed[:k]]
        else:
            query = Query(text=prepared.standalone, k=k, mode="hybrid")
            hits = hybrid_search(self.store, version, query, self._fusion, embed)
            if use_cache:
                self._put_retrieval(prepared, version, hits)
        prepared.incident = incident.result()
        return hits + signals.result()

    def _put_retrieval(self, prepared: Prepared, version: str, hits: list[SearchHit]) -> None:
        try:
            self.cache.put_retrieval(
                prepared.standalone,
                version,
                [h.to_json() for h in hits],
                self.settings.retrieval_ttl_seconds,
            )
        except Exception as exc:
            self._cache_error(prepared.errors, "put_retrieval", exc)

    def _signals(self, prepared: Prepared, embed: Callable[[str], np.ndarray]) -> list[SearchHit]:
        """Relevant signal hits in the window; a missing or failing signal index is no error."""
        try:
            version = self.store.current_version(self.settings.signal_index)
            if version is None:
                return []
            self._check_model(version)
            query = Query(
                text=prepared.standalone,
                k=self.settings.chat_signal_top_k,
                mode="hybrid",
                filters=Filters(since=prepared.window.since, until=prepared.window.until),
            )
            hits = hybrid_search(self.store, version, query, self._fusion, embed)
        except Exception as exc:
            prepared.errors.append("signal_index")
            log.warning("signal search failed", extra={"error": f"{type(exc).__name__}: {exc}"})
            return []
        # Vector search always returns its k nearest signals, relevant or not: a signal is only
        # cited when it also matched the question's words (it has a BM25 rank).
        return [hit for hit in hits if hit.bm25_rank is not None]

    def _past_incident(
        self, prepared: Prepared, embed: Callable[[str], np.ndarray]
    ) -> PastIncident | None:
        """The past incident (postmortem) the question matches, if the postmortem index exists
        and its best write-up clears ``OPSASSIST_CHAT_POSTMORTEM_MIN_SIMILARITY``; a missing or
        failing postmortem index is no error."""
        from opsassist.postmortems import match_incident

        try:
            version = self.store.current_version(self.settings.postmortem_index)
            if version is None:
                return None
            self._check_model(version)
            query = Query(text=prepared.standalone, k=3, mode="hybrid")
            hits = hybrid_search(self.store, version, query, self._fusion, embed)
            if self._postmortems[0] != version:  # the digests kept beside the version
                self._postmortems = (version, load_pack(self.settings.data_dir, version) or {})
            pack = self._postmortems[1]
        except Exception as exc:
            prepared.errors.append("postmortem_index")
            log.warning("postmortem search failed", extra={"error": f"{type(exc).__name__}: {exc}"})
            return None
        return match_incident(hits, pack, self.settings.chat_postmortem_min_similarity)

    @staticmethod
    def _cite_past_incident(prepared: Prepared) -> None:
        """Add "Seen before: <title> (<date>) — root cause ... [n]" under the composed answer,
        with its citation (a postmortem citation is not a runbook's: the answer is not cached,
        so a write-up indexed later is never hidden by an older answer)."""
        found, composed = prepared.incident, prepared.composed
        if found is None or composed is None:
            return
        number = len(prepared.citations) + 1
        prepared.citations.append(
            Citation(
                number=number,
                source=found.hit.source,
                source_type=found.hit.source_type,
                section=found.section,
                title=found.title,
                document_id=found.hit.id,
            )
        )
        composed.text += "\n\n" + found.line(number, prepared.language)

    @staticmethod
    def _cache_error(errors: list[str], operation: str, exc: BaseException) -> None:
        errors.append("cache")
        log.warning(
            "knowledge cache error",
            extra={"operation": operation, "error": f"{type(exc).__name__}: {exc}"},
        )

    # --- answering --------------------------------------------------------------------------------
    def options(self, request: ChatRequest) -> GenerationOptions:
        return GenerationOptions(
            max_tokens=request.max_tokens or self.settings.chat_max_tokens,
            temperature=(
                self.settings.chat_temperature
                if request.temperature is None
                else request.temperature
            ),
            top_p=request.top_p,
            stop=request.stop,
            repetition_penalty=self.settings.chat_repetition_penalty,
        )

    @property
    def summary_languages(self) -> set[str]:
        return {c.strip() for c in self.settings.chat_summary_languages.split(",") if c.strip()}

    def summary_options(self) -> GenerationOptions:
        s = self.settings
        return GenerationOptions(
            max_tokens=s.chat_summary_max_tokens,
            temperature=s.chat_temperature,
            stop=("\n\n",),
            repetition_penalty=s.chat_repetition_penalty,
        )

    async def stream(
        self, prepared: Prepared, request: ChatRequest, outcome: Outcome
    ) -> AsyncGenerator[str, None]:
        """The answer text piece by piece; ``outcome`` is complete when the iterator ends."""
        if prepared.cached is not None or prepared.index_error is not None:
            yield self._without_model(prepared, outcome)
            return
        if prepared.mode == "model":
            async for piece in self._model_answer(prepared, request, outcome):
                yield piece
        else:
            assert prepared.composed is not None
            yield prepared.composed.text
            outcome.text = prepared.composed.text
            if prepared.model_messages:
                async for piece in self._model_summary(prepared, outcome):
                    yield piece
        tail = self._sources(prepared)
        outcome.text += tail
        if not outcome.usage_from_model:
            self._estimate_usage(prepared, outcome)
        await self._remember(prepared, request, outcome)
        yield tail

    async def complete(self, prepared: Prepared, request: ChatRequest) -> Outcome:
        """The whole answer (non-streaming): the same pieces, joined."""
        outcome = Outcome()
        async with contextlib.aclosing(self.stream(prepared, request, outcome)) as pieces:
            async for _ in pieces:
                pass
        return outcome

    def _sources(self, prepared: Prepared) -> str:
        block = sources_block(prepared.citations, prepared.links, prepared.language)
        return f"\n\n{block}" if block else ""

    async def _generate(
        self,
        messages: list[Message],
        options: GenerationOptions,
        outcome: Outcome,
        guard: StreamGuard,
    ) -> AsyncGenerator[str, None]:
        """Model text as the guard lets it through; errors end it (``outcome.degraded_reason``).
        Leaving the loop early (a stop) closes the upstream request, which ends the generation."""
        outcome.checks = guard.report
        started = time.perf_counter()
        try:
            deltas = self.client.stream_chat(messages, options)
            async with contextlib.aclosing(deltas):
                async for delta in deltas:
                    if delta.usage is not None:
                        outcome.usage, outcome.usage_from_model = delta.usage, True
                    if delta.finish_reason:
                        outcome.model_finish_reason = delta.finish_reason
                    if delta.text:
                        if outcome.first_token_s is None:
                            outcome.first_token_s = time.perf_counter() - started
                        shown = guard.feed(delta.text)
                        if shown:
                            yield shown
                        if guard.stopped:
                            break
        except ModelError as exc:
            outcome.degraded_reason = exc.message
            log.warning("model unavailable", extra={"error": exc.message})
        if outcome.model_finish_reason != "length":  # a last line cut by the budget: left out
            rest = guard.finish()
            if rest:
                yield rest
        outcome.generation_s = time.perf_counter() - started
        if guard.report.stopped == "degenerate" or guard.report.dropped:
            log.warning(
                "model text failed the checks",
                extra={"stopped": guard.report.stopped, "dropped": guard.report.dropped[:5]},
            )

    async def _model_answer(
        self, prepared: Prepared, request: ChatRequest, outcome: Outcome
    ) -> AsyncGenerator[str, None]:
        """The model's answer; the composed one (with a notice) when it fails or says nothing."""
        parts: list[str] = []
        guard = StreamGuard(prepared.support)
        async for piece in self._generate(
            prepared.model_messages, self.options(request), outcome, guard
        ):
            parts.append(piece)
            yield piece
        generated = "".join(parts)
        outcome.text = generated
        outcome.finish_reason = outcome.model_finish_reason or "stop"
        listed = {c.number for c in prepared.citations}
        notice = None
        if outcome.degraded_reason is not None:
            notice = INTERRUPTED_NOTICE if generated.strip() else MODEL_NOTICE
        elif guard.report.stopped == "degenerate":
            notice, outcome.degraded_reason = LOOP_NOTICE, "the model repeated itself"
        elif not generated.strip():
            notice, outcome.degraded_reason = EMPTY_NOTICE, "empty answer"
        elif not {int(n) for n in _CITATION.findall(generated)} & listed:
            notice, outcome.degraded_reason = UNCITED_NOTICE, "no source cited"
        if notice is None:
            return
        outcome.degraded, outcome.finish_reason = "model", "stop"
        composed = compose_answer(
            prepared.hits,
            prepared.pack,
            prepared.language,
            prepared.citations,
            primary=prepared.named_runbook,
            covered=prepared.covered,
            unmatched=prepared.unmatched,
        )
        prepared.citations = composed.citations
        lead = "\n\n" if generated.strip() else ""
        fallback = f"{lead}{model_notice(outcome.degraded_reason or '', notice)}\n\n{composed.text}"
        outcome.text += fallback
        yield fallback

    async def _model_summary(
        self, prepared: Prepared, outcome: Outcome
    ) -> AsyncGenerator[str, None]:
        """The model's short summary under the composed answer: shown line by line as the guard
        lets it through; a failure is a one-line notice (the composed answer stands)."""
        words = labels(prepared.language)
        heading = f"\n\n**{words['model_summary']}** (_{self.client.target}_): "
        shown = False
        guard = StreamGuard(
            prepared.support, prose_only=True, language=prepared.language, max_lines=3
        )
        async for piece in self._generate(
            prepared.model_messages, self.summary_options(), outcome, guard
        ):
            if not shown:
                shown = True
                outcome.text += heading
                yield heading
            outcome.text += piece
            yield piece
        notice = ""
        if outcome.degraded_reason is not None:
            outcome.degraded = "model"
            notice = f"\n\n_{words['model_notice']} ({public_reason(outcome.degraded_reason)})._"
        elif not shown:
            notice = f"\n\n_{words['model_dropped']}._"
        elif outcome.checks_failed:
            notice = f"\n\n_{words['model_partly_dropped']}._"
        if notice:
            outcome.text += notice
            yield notice

    def _without_model(self, prepared: Prepared, outcome: Outcome) -> str:
        if prepared.cached is not None:
            outcome.cached = True
            outcome.finish_reason = str(prepared.cached.payload.get("finish_reason") or "stop")
            text = prepared.cached.answer
        else:
            outcome.degraded = "index"
            outcome.degraded_reason = prepared.index_error
            text = index_unavailable(prepared.index_error or "unknown error")
        outcome.text = text
        self._estimate_usage(prepared, outcome)
        return text

    @staticmethod
    def _estimate_usage(prepared: Prepared, outcome: Outcome) -> None:
        prompt = "\n".join(m["content"] for m in prepared.model_messages) or prepared.question
        outcome.usage = Usage(estimate_tokens(prompt), estimate_tokens(outcome.text))
        outcome.usage_from_model = False

    def cacheable(self, prepared: Prepared, request: ChatRequest, outcome: Outcome) -> bool:
        return (
            request.use_cache
            and outcome.degraded is None
            and outcome.finish_reason != "length"
            and outcome.model_finish_reason != "length"
            and not outcome.checks_failed
            and prepared.cached is None
            and prepared.index_version is not None
            and not prepared.time_sensitive
            and not prepared.cites_signals
            and (request.max_tokens is None or request.max_tokens >= self.settings.chat_max_tokens)
        )

    async def _remember(self, prepared: Prepared, request: ChatRequest, outcome: Outcome) -> None:
        if not self.cacheable(prepared, request, outcome):
            return
        assert prepared.index_version is not None
        usage = outcome.usage
        entry = CachedAnswer(
            question=prepared.standalone,
            answer=outcome.text,
            sources=runbook_sources(prepared.citations),
            index_version=prepared.index_version,
            payload={
                "citations": [c.to_json() for c in prepared.citations],
                "model": self.client.target if prepared.model_messages else None,
                "mode": prepared.mode,
                "finish_reason": outcome.finish_reason,
                "usage": dataclasses.asdict(usage) if usage else None,
            },
        )
        try:
            await asyncio.to_thread(self.cache.put_answer, entry, self.settings.answer_ttl_seconds)
        except Exception as exc:
            self._cache_error(outcome.errors, "put_answer", exc)

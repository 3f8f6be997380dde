"""One search entry point for the CLI, the chat server and the evaluation."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from opsassist.documents import SearchHit
from opsassist.index.base import (
    Filters,
    IndexStore,
    Query,
    SearchMode,
    check_model,
    check_version_exists,
    hybrid_search,
    resolve_target,
)
from opsassist.settings import Settings, get_settings
from opsassist.stores import fusion_config, get_index_store


def question_vector(text: str, settings: Settings) -> np.ndarray:
    """A question's vector as the chat server makes it (ONNX Runtime for the model's
    sentence-transformers parts on a CPU: no torch import once the export exists)."""
    from opsassist.embedding_onnx import query_encoder

    return query_encoder(
        settings.embedding_model,
        settings.data_dir / "models",
        settings.embedding_device,
        settings.query_embedding_runtime,
    )([text])[0]


class EmptyQueryError(ValueError):
    """A query with no words: any hits would be arbitrary."""


def search(
    text: str,
    *,
    settings: Settings | None = None,
    store: IndexStore | None = None,
    target: str | None = None,
    k: int = 10,
    mode: SearchMode = "hybrid",
    filters: Filters | None = None,
    prepared_vector: Callable[[], np.ndarray | None] | None = None,
) -> list[SearchHit]:
    """Search an alias (default: the runbook index) or a version; best first. A version built
    with another embedding model than the configured one is refused (``EmbeddingModelMismatch``)
    for vector and hybrid search. ``prepared_vector`` gives the question's vector made
    beforehand (``opsassist search`` embeds it in a child process while the index opens; None
    from it: embedded here)."""
    if not text.strip():
        raise EmptyQueryError("the query is empty: give the words to search for")
    settings = settings or get_settings()
    store = store or get_index_store(settings)
    if target is not None:
        check_version_exists(store, target)
    version = resolve_target(store, target or settings.runbook_index)
    vector = None
    if mode != "bm25":
        check_model(store, version, settings.embedding_model)
        vector = prepared_vector() if prepared_vector is not None else None
        if vector is None:
            vector = question_vector(text, settings)
    query = Query(text=text, vector=vector, k=k, mode=mode, filters=filters or Filters())
    return hybrid_search(store, version, query, fusion_config(settings))

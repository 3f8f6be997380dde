"""Build the index store and the knowledge cache chosen by settings (one place for the choice)."""

from __future__ import annotations

from opsassist.cache.base import KnowledgeCache
from opsassist.index.base import FusionConfig, IndexStore
from opsassist.settings import Settings


def get_index_store(settings: Settings) -> IndexStore:
    if settings.index_backend == "opensearch":
        from opsassist.index.opensearch import OpenSearchIndexStore

        if settings.opensearch_conn_id:
            from opsassist.hooks import in_airflow_task

            if in_airflow_task():  # DAG tasks: credentials from the Airflow connection
                return OpenSearchIndexStore.from_airflow_connection(
                    settings.opensearch_conn_id, settings
                )
        return OpenSearchIndexStore.from_settings(settings)
    from opsassist.index.embedded import EmbeddedIndexStore

    return EmbeddedIndexStore(
        settings.embedded_index_dir,
        settings.embedded_ann_min_rows,
        read_consistency_seconds=settings.embedded_read_consistency_seconds,
        refine_factor=settings.embedded_refine_factor,
        memory_max_rows=settings.embedded_memory_max_rows,
    )


def get_cache(settings: Settings) -> KnowledgeCache:
    if settings.cache_backend == "redis":
        from opsassist.cache.redis import RedisKnowledgeCache

        return RedisKnowledgeCache(settings.redis_url.get_secret_value(), settings.cache_prefix)
    from opsassist.cache.memory import MemoryKnowledgeCache

    return MemoryKnowledgeCache()


def fusion_config(settings: Settings) -> FusionConfig:
    return FusionConfig(
        method=settings.fusion,
        vector_weight=settings.fusion_vector_weight,
        rrf_k=settings.rrf_k,
        candidates=settings.candidates_per_list,
        expand_lexical=settings.query_glossary,
        rerank_weights=settings.reranker_weights if settings.reranker else None,
    )

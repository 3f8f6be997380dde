"""Search latency, OpenSearch vs the embedded store, on the same chunks and queries in one run.

Corpus: ``build_corpus`` of ``benchmarks/search_latency.py`` (the real runbook chunks plus
synthetic ones derived from them, 100k by default), loaded into both backends: a LanceDB table
(HNSW from ``OPSASSIST_EMBEDDED_ANN_MIN_ROWS`` rows) and an OpenSearch index (lucene HNSW,
cosine) under a throw-away name prefix that is deleted at the end. Queries: the same 1,000 query
strings as ``search_latency``. Each backend answers the same ``hybrid_search`` (BM25 + vector,
RRF in Python), timed with the query embedding included and excluded (vectors computed once
beforehand), plus its two primitives alone. The baseline is the embedded store in the same run:
the table prints OpenSearch/embedded ratios. Vector recall@10 against exact numpy search is
printed for both backends, so a faster but less exact index cannot hide.

Needs the node from ``scripts/services up opensearch``; bulk-loading 100k x 384 vectors wants a
2 GB heap: ``OPSASSIST_OPENSEARCH_HEAP=2g scripts/services up opensearch``.

    .venv/bin/python -m benchmarks.search_backends [--chunks 100000] [--queries 1000]
        [--force-merge] [--json]
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import emit, machine, summary, time_calls
from benchmarks.search_latency import QUERY_STEMS, build_corpus
from opsassist.documents import Chunk
from opsassist.embedding import embed_query
from opsassist.index.base import Filters, FusionConfig, IndexStore, Query, hybrid_search
from opsassist.index.embedded import EmbeddedIndexStore
from opsassist.index.opensearch import OpenSearchIndexStore
from opsassist.settings import Settings

BATCH = 10_000


def _load(store: IndexStore, chunks: list[Chunk], dimension: int) -> tuple[str, float, float]:
    """(version, seconds to write, seconds to finalize)."""
    version = store.create_version("bench", dimension)
    started = time.perf_counter()
    for start in range(0, len(chunks), BATCH):
        report = store.upsert(version, chunks[start : start + BATCH])
        if report.failed:
            raise RuntimeError(f"{len(report.failed)} chunks rejected: {report.failed[:3]}")
    written = time.perf_counter() - started
    started = time.perf_counter()
    store.finalize(version)
    finalized = time.perf_counter() - started
    store.promote("bench", version)
    return version, written, finalized


def _queries(n: int) -> list[str]:
    """The same query strings as benchmarks/search_latency.py."""
    rng = random.Random(11)
    return [
        f"{rng.choice(QUERY_STEMS)} {rng.choice(['', 'now', 'in prod', 'again', 'how to fix'])} {i}"
        for i in range(n)
    ]


def _recall(
    store: IndexStore,
    version: str,
    matrix: np.ndarray,
    ids: list[str],
    vectors: list[np.ndarray],
    n: int,
) -> float:
    found = []
    for vector in vectors[:n]:
        exact = {ids[j] for j in np.argsort(-(matrix @ vector))[:10]}
        got = {r.id for r in store.knn(version, vector, 10, Filters())}
        found.append(len(exact & got) / 10)
    return round(sum(found) / len(found), 3)


def _measures(
    store: IndexStore, version: str, queries: list[str], vectors: list[np.ndarray]
) -> dict[str, Callable[[int], Any]]:
    fusion = FusionConfig()
    filters = Filters()

    def hybrid_with_embedding(i: int) -> None:
        q = queries[i % len(queries)]
        hybrid_search(store, "bench", Query(text=q, vector=embed_query(q), k=10), fusion)

    def hybrid_without_embedding(i: int) -> None:
        q = queries[i % len(queries)]
        hybrid_search(store, "bench", Query(text=q, vector=vectors[i % len(queries)], k=10), fusion)

    def vector_only(i: int) -> None:
        store.knn(version, vectors[i % len(queries)], 10, filters)

    def bm25_only(i: int) -> None:
        store.bm25(version, queries[i % len(queries)], 10, filters)

    return {
        "hybrid incl. query embedding": hybrid_with_embedding,
        "hybrid excl. query embedding": hybrid_without_embedding,
        "vector only (k=10)": vector_only,
        "bm25 only (k=10)": bm25_only,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument(
        "--force-merge",
        action="store_true",
        help="force-merge the OpenSearch index to one segment before searching",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    settings = Settings()

    started = time.perf_counter()
    chunks, matrix = build_corpus(settings.runbooks_path, args.chunks)
    corpus_seconds = time.perf_counter() - started
    dimension = matrix.shape[1]
    ids = [c.id for c in chunks]

    embedded = EmbeddedIndexStore(
        Path(tempfile.mkdtemp(prefix="bench-backends-")), settings.embedded_ann_min_rows
    )
    opensearch = OpenSearchIndexStore.from_settings(
        settings.model_copy(update={"opensearch_index_prefix": f"bench-{uuid.uuid4().hex[:8]}-"})
    )
    opensearch.timeout = max(opensearch.timeout, 300.0)
    opensearch.force_merge_max_docs = args.chunks if args.force_merge else 0
    if not opensearch.ping():
        raise SystemExit(f"error: OpenSearch is not reachable at {settings.opensearch_url}")

    try:
        loads: dict[str, tuple[str, float, float]] = {
            "embedded": _load(embedded, chunks, dimension),
            "opensearch": _load(opensearch, chunks, dimension),
        }
        stores: dict[str, IndexStore] = {"embedded": embedded, "opensearch": opensearch}
        queries = _queries(args.queries)
        for q in queries[:20]:  # warm the model
            embed_query(q)
        vectors = [embed_query(q) for q in queries]

        results: dict[str, list[dict[str, Any]]] = {}
        load_before = os.getloadavg()
        for name, store in stores.items():
            version = loads[name][0]
            results[name] = [
                summary(measure, time_calls(fn, args.queries))
                for measure, fn in _measures(store, version, queries, vectors).items()
            ]
        load_after = os.getloadavg()
        recall = {
            name: _recall(store, loads[name][0], matrix, ids, vectors, min(200, args.queries))
            for name, store in stores.items()
        }
        segments = opensearch.client.indices.segments(
            index=f"{opensearch.prefix}{loads['opensearch'][0]}"
        )
        segment_count = sum(
            len(copy["segments"])
            for index in segments["indices"].values()
            for shard in index["shards"].values()
            for copy in shard
        )
        counts = {name: store.count(loads[name][0]) for name, store in stores.items()}
    finally:
        opensearch.purge_prefix()

    ratios = [
        {
            "name": emb["name"],
            "ratio_p50": round(os_["p50_ms"] / emb["p50_ms"], 2),
            "ratio_p95": round(os_["p95_ms"] / emb["p95_ms"], 2),
        }
        for emb, os_ in zip(results["embedded"], results["opensearch"], strict=True)
    ]
    health = opensearch.client.nodes.stats(metric="jvm")
    heap = max(n["jvm"]["mem"]["heap_max_in_bytes"] for n in health["nodes"].values())
    report = {
        "benchmark": "search_backends",
        "machine": machine(),
        "chunks": counts,
        "queries": args.queries,
        "opensearch_heap_max_mb": round(heap / 2**20),
        "load_average_1m_before_after_queries": [round(load_before[0], 1), round(load_after[0], 1)],
        "opensearch_segments": segment_count,
        "opensearch_force_merged": args.force_merge,
        "corpus_seconds": round(corpus_seconds, 1),
        "load_seconds": {n: round(v[1], 1) for n, v in loads.items()},
        "finalize_seconds": {n: round(v[2], 1) for n, v in loads.items()},
        "vector_recall_at_10_vs_exact": recall,
        "results": results,
        "ratios_opensearch_over_embedded": ratios,
    }
    if args.json:
        emit(report, True)
        return
    print(
        f"chunks={counts} queries={args.queries} opensearch heap={report['opensearch_heap_max_mb']}"
        f" MB segments={segment_count} force-merged={args.force_merge}"
    )
    loadavg = report["load_average_1m_before_after_queries"]
    print(f"1-min load average before/after the queries: {loadavg}")
    print(
        f"load s: {report['load_seconds']}  finalize s: {report['finalize_seconds']}  "
        f"vector recall@10 vs exact: {recall}"
    )
    print(
        f"{'measure':32} {'emb p50':>8} {'emb p95':>8} {'os p50':>8} {'os p95':>8}"
        f" {'os/emb p50':>10} {'os/emb p95':>10}"
    )
    for emb, os_, ratio in zip(results["embedded"], results["opensearch"], ratios, strict=True):
        print(
            f"{emb['name']:32} {emb['p50_ms']:8.2f} {emb['p95_ms']:8.2f} {os_['p50_ms']:8.2f}"
            f" {os_['p95_ms']:8.2f} {ratio['ratio_p50']:10.2f} {ratio['ratio_p95']:10.2f}"
        )


if __name__ == "__main__":
    main()

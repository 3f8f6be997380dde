"""Search latency of the embedded store on >= 100k chunks, 1,000 queries (query embedding included).

Corpus: the real runbook chunks (embedded with the real model) plus synthetic chunks made from
them: text re-mixed from runbook sentences, vectors = a real chunk's vector plus noise,
re-normalised. Embedding 100k texts for real would take hours on 2 cores, and the search cost
does not depend on how vectors were made.

Baseline in the same run: exact search with numpy (one matrix-vector product over all vectors)
on the same vectors and query embeddings; the ANN index's recall@10 against it is printed too.

    .venv/bin/python benchmarks/search_latency.py [--chunks 100000] [--queries 1000] [--json]
"""

from __future__ import annotations

import argparse
import gc
import random
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._common import emit, machine, summary, time_calls
from opsassist.chunking import chunk_runbook
from opsassist.documents import make_chunk
from opsassist.embedding import embed_texts
from opsassist.embedding_onnx import query_encoder
from opsassist.index.base import FusionConfig, Query, hybrid_search
from opsassist.index.embedded import EmbeddedIndexStore
from opsassist.parsing.markdown import load_runbook
from opsassist.settings import Settings
from opsassist.stores import fusion_config

QUERY_STEMS = [
    "pod keeps restarting",
    "etcd no leader",
    "disk almost full",
    "node not ready",
    "alertmanager cannot send notifications",
    "prometheus remote write behind",
    "certificate expires soon",
    "deployment replicas mismatch",
    "cpu throttling high",
    "too many open files",
    "clock skew detected",
    "kube api errors budget burn",
    "job failed to complete",
    "persistent volume filling up",
    "scheduler down",
    # Russian questions and long incident narratives, as the chat server gets them
    "под постоянно перезапускается после деплоя",
    "на ноде заканчивается место на диске",
    "рассылка уведомлений не работает, алерты не доходят",
    "Since the storage firmware update last night the key-value store shows fsync p99 around "
    "40ms on two masters, leader elections happen every few minutes and the API server logs "
    "timeouts. Nothing else changed in the cluster. What should we check first?",
    "После переезда машин два из трёх экземпляров системы оповещений не поднялись, поды висят "
    "в Pending, а в событиях пишут, что ни один узел не подходит по селектору. Что делать?",
]


def build_corpus(root: Path, n: int, seed: int = 7) -> tuple[list, np.ndarray]:  # type: ignore[type-arg]
    runbooks = [load_runbook(p, root) for p in sorted(root.rglob("*.md")) if p.name != "_index.md"]
    real = [c for rb in runbooks for c in chunk_runbook(rb)]
    vectors = embed_texts([c.text for c in real])
    rng = np.random.default_rng(seed)
    sentences = [
        s.strip() for c in real for s in c.text.replace("\n", " ").split(". ") if s.strip()
    ]
    chunks, rows = [], []
    for i in range(n):
        base = i % len(real)
        if i < len(real):
            chunk, vector = real[i], vectors[i]
        else:
            text = ". ".join(random.Random(i).sample(sentences, 4))
            chunk = make_chunk(
                source_type="runbook",
                source=f"synthetic/{i // 50}.md",
                title=real[base].title,
                section=real[base].section,
                text=text,
            )
            noisy = vectors[base] + rng.normal(
                0, 0.35 / np.sqrt(vectors.shape[1]), vectors.shape[1]
            )
            vector = (noisy / np.linalg.norm(noisy)).astype(np.float32)
        chunk.vector = vector.tolist()
        chunks.append(chunk)
        rows.append(vector)
    return chunks, np.vstack(rows).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    settings = Settings()

    started = time.perf_counter()
    chunks, matrix = build_corpus(settings.runbooks_path, args.chunks)
    workdir = Path(tempfile.mkdtemp(prefix="bench-search-"))
    store = EmbeddedIndexStore(
        workdir,
        ann_min_rows=settings.embedded_ann_min_rows,
        refine_factor=settings.embedded_refine_factor,
    )
    version = store.create_version("bench", matrix.shape[1])
    for start in range(0, len(chunks), 10_000):
        store.upsert(version, chunks[start : start + 10_000])
    build_started = time.perf_counter()
    store.finalize(version)
    index_seconds = time.perf_counter() - build_started
    store.promote("bench", version)
    setup_seconds = time.perf_counter() - started
    # The 100k chunks with their vectors as Python lists are ~2 GB of objects the garbage
    # collector would walk again and again during the timings (a server holds none of them):
    # keep the ids, drop the rest, and freeze what start-up left, as the chat server does.
    chunk_ids = [chunk.id for chunk in chunks]
    del chunks
    gc.collect()
    gc.freeze()

    rng = random.Random(11)
    queries = [
        f"{rng.choice(QUERY_STEMS)} {rng.choice(['', 'now', 'in prod', 'again', 'how to fix'])} {i}"
        for i in range(args.queries)
    ]
    # questions embedded as the chat server embeds them (ONNX Runtime for MiniLM's part)
    encode = query_encoder(settings.embedding_model, workdir / "models")

    def embed_query(text: str) -> np.ndarray:
        return encode([text])[0]

    query_vectors = [embed_query(q) for q in queries[:50]]  # warm the model
    fusion = fusion_config(settings)  # every stage the chat server runs (glossaries included)
    plain = FusionConfig(
        method=fusion.method,
        vector_weight=fusion.vector_weight,
        rrf_k=fusion.rrf_k,
        candidates=fusion.candidates,
    )

    # as the chat server calls it: the question is embedded while its BM25 list is searched
    def hybrid(i: int) -> None:
        q = queries[i % len(queries)]
        hybrid_search(store, "bench", Query(text=q, k=10), fusion, embed_query)

    def hybrid_plain(i: int) -> None:
        q = queries[i % len(queries)]
        hybrid_search(store, "bench", Query(text=q, k=10), plain, embed_query)

    def embed_only(i: int) -> None:
        embed_query(queries[i % len(queries)])

    query_vectors = [embed_query(q) for q in queries]

    def vector_only(i: int) -> None:
        store.knn(version, query_vectors[i], 10, Query(text="").filters)

    def bm25_only(i: int) -> None:
        store.bm25(version, queries[i], 10, Query(text="").filters)

    def numpy_exact(i: int) -> None:
        scores = matrix @ query_vectors[i]
        np.argpartition(-scores, 10)[:10]

    n = args.queries
    results = [
        summary("hybrid search incl. query embedding", time_calls(hybrid, n)),
        summary("baseline: no glossaries, no re-ranker", time_calls(hybrid_plain, n)),
        summary("query embedding alone", time_calls(embed_only, n)),
        summary("vector (LanceDB)", time_calls(vector_only, n)),
        summary("bm25 (LanceDB FTS)", time_calls(bm25_only, n)),
        summary("baseline: exact numpy matmul", time_calls(numpy_exact, n)),
    ]
    recall = []
    for i in range(min(n, 200)):
        exact = set(np.argsort(-(matrix @ query_vectors[i]))[:10].tolist())
        got = {r.id for r in store.knn(version, query_vectors[i], 10, Query(text="").filters)}
        ids = {chunk_ids[j] for j in exact}
        recall.append(len(ids & got) / 10)
    report = {
        "benchmark": "search_latency",
        "machine": machine(),
        "chunks": store.count(version),
        "queries": n,
        "setup_seconds": round(setup_seconds, 1),
        "index_build_seconds": round(index_seconds, 1),
        "ann_index": store.count(version) >= settings.embedded_ann_min_rows,
        "vector_recall_at_10_vs_exact": round(sum(recall) / len(recall), 3),
        "results": results,
        "model": settings.embedding_model,
        "dimension": int(matrix.shape[1]),
        "ratio_vector_vs_numpy_p50": round(results[3]["p50_ms"] / results[5]["p50_ms"], 2),
        "ratio_hybrid_vs_plain_p95": round(results[0]["p95_ms"] / results[1]["p95_ms"], 2),
    }
    if args.json:
        emit(report, True)
        return
    print(
        f"chunks={report['chunks']} queries={n} index build={report['index_build_seconds']}s "
        f"ann={report['ann_index']} model={report['model']} ({report['dimension']} dims) "
        f"vector recall@10 vs exact={report['vector_recall_at_10_vs_exact']}"
    )
    print(f"{'measure':42} {'p50 ms':>8} {'p95 ms':>8} {'mean ms':>8}")
    for row in results:
        print(f"{row['name']:42} {row['p50_ms']:8.2f} {row['p95_ms']:8.2f} {row['mean_ms']:8.2f}")
    print(f"ratio vector(LanceDB)/numpy exact, p50: {report['ratio_vector_vs_numpy_p50']}")
    print(f"ratio hybrid/without glossaries, p95: {report['ratio_hybrid_vs_plain_p95']}")


if __name__ == "__main__":
    main()

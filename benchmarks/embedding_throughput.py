"""Embedding throughput of the pipeline (``embed_chunks``) vs raw ``SentenceTransformer.encode``.

Same chunks (every chunk of the shipped runbook corpus, repeated to --copies), same model, same
batch size, same process, runs interleaved so machine noise hits both. Target: pipeline >= 0.9x.

    .venv/bin/python -m benchmarks.embedding_throughput [--copies 3] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import time

from benchmarks._common import emit, machine
from opsassist.chunking import chunk_runbook
from opsassist.embedding import load_model
from opsassist.parsing.markdown import load_runbook
from opsassist.pipelines.runbooks import embed_chunks
from opsassist.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    settings = Settings()
    root = settings.runbooks_path
    runbooks = [load_runbook(p, root) for p in sorted(root.rglob("*.md")) if p.name != "_index.md"]
    chunks = [c for rb in runbooks for c in chunk_runbook(rb)] * args.copies
    texts = [c.text for c in chunks]
    model = load_model(settings.embedding_model, settings.embedding_device)
    model.encode(texts[:64], batch_size=settings.embedding_batch_size)  # warm-up

    raw_rates, pipeline_rates = [], []
    for _ in range(args.rounds):
        start = time.perf_counter()
        model.encode(
            texts,
            batch_size=settings.embedding_batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        raw_rates.append(len(texts) / (time.perf_counter() - start))
        start = time.perf_counter()
        embed_chunks(chunks, settings)
        pipeline_rates.append(len(texts) / (time.perf_counter() - start))
    raw, pipe = max(raw_rates), max(pipeline_rates)
    report = {
        "benchmark": "embedding_throughput",
        "machine": machine(),
        "chunks": len(chunks),
        "batch_size": settings.embedding_batch_size,
        "raw_encode_chunks_per_s": round(raw, 1),
        "pipeline_chunks_per_s": round(pipe, 1),
        "ratio_pipeline_vs_raw": round(pipe / raw, 3),
        "rounds": {
            "raw": [round(r, 1) for r in raw_rates],
            "pipeline": [round(r, 1) for r in pipeline_rates],
        },
    }
    if args.json:
        emit(report, True)
        return
    print(f"chunks={len(chunks)} batch={settings.embedding_batch_size} rounds={args.rounds} (best)")
    print(f"raw SentenceTransformer.encode : {raw:8.1f} chunks/s")
    print(f"pipeline embed_chunks          : {pipe:8.1f} chunks/s")
    print(f"ratio pipeline / raw           : {pipe / raw:8.3f}  (target >= 0.9)")


if __name__ == "__main__":
    main()

"""Question embedding latency on the chat path: ONNX Runtime vs torch (the baseline), same model,
same questions, alternating blocks of calls in one process so machine noise hits both. One
question at a time (what a lone chat request pays) and 16 together (what the batching embedder
sends when 16 requests arrive at once). The vectors are checked equal first (cosine > 0.99999).

    .venv/bin/python -m benchmarks.query_embedding [--n 200] [--json]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from benchmarks._common import emit, machine, percentile
from opsassist.embedding import embed_texts
from opsassist.embedding_onnx import OnnxQueryEncoder

BLOCK = 25
QUESTIONS = [
    "why does my pod keep crash looping?",
    "a node is not ready, what should I check?",
    "etcd has no leader since the last deploy",
    "the node filesystem is almost out of space",
    "alertmanager fails to send notifications to slack",
    "deployment replicas do not match the desired count after rollout",
]


def timed(encode: Callable[[Sequence[str]], np.ndarray], texts: Sequence[str]) -> float:
    started = time.perf_counter()
    encode(texts)
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        onnx = OnnxQueryEncoder("all-MiniLM-L6-v2", Path(tmp))
        export_s = time.perf_counter() - started
        started = time.perf_counter()
        OnnxQueryEncoder("all-MiniLM-L6-v2", Path(tmp))
        load_s = time.perf_counter() - started
        expected = embed_texts(QUESTIONS)
        assert float((onnx(QUESTIONS) * expected).sum(axis=1).min()) > 0.99999
        report: dict[str, object] = {
            "benchmark": "query_embedding",
            "machine": machine(),
            "onnx_export_s": round(export_s, 2),
            "onnx_load_s": round(load_s, 2),
        }
        for size in (1, 16):
            runs: dict[str, list[float]] = {"torch": [], "onnx": []}
            encoders = {"torch": embed_texts, "onnx": onnx}
            calls = max(BLOCK, args.n // size)
            for start in range(0, calls, BLOCK):  # blocks, not single calls, alternate: torch's
                for name, encode in encoders.items():  # threads spin on after each call and
                    for i in range(start, start + BLOCK + 3):  # would slow the next one
                        texts = [f"{QUESTIONS[(i + j) % len(QUESTIONS)]} #{i}" for j in range(size)]
                        took = timed(encode, texts)
                        if i >= start + 3:  # the first calls of a block warm it up
                            runs[name].append(took)
            row = {
                f"{name}_{q}_ms": round(percentile(values, q), 2)
                for name, values in runs.items()
                for q in (50, 95)
            }
            row["speedup_p50"] = round(row["torch_50_ms"] / row["onnx_50_ms"], 2)
            report[f"x{size}"] = row
    if args.json:
        emit(report, True)
        return
    print(f"ONNX export {report['onnx_export_s']} s once, load {report['onnx_load_s']} s")
    for size in (1, 16):
        row = report[f"x{size}"]
        assert isinstance(row, dict)
        print(
            f"{size:2d} question(s): torch p50 {row['torch_50_ms']} ms p95 {row['torch_95_ms']} ms"
            f" | onnx p50 {row['onnx_50_ms']} ms p95 {row['onnx_95_ms']} ms"
            f" | speedup p50 {row['speedup_p50']}x"
        )


if __name__ == "__main__":
    main()

"""Chat latency as an engineer in Open WebUI feels it: time to the first piece of the answer and
to the whole answer, through the real chat server (uvicorn, its own process) and the local KServe
model server, for the default answer mode and, in the same run, the model-written answer (what
every answer was before the composed mode).

Questions: those of ``evalsets/answers.yaml`` (both splits), one at a time, streamed, the answer
cache off (``cache: false``: every answer is made). The runbook index is the one
``benchmarks/answer_quality.py`` builds (``<data dir>/bench/answers``; built here if missing).
The model server must be running (``scripts/model-server up``).

    .venv/bin/python -m benchmarks.answer_latency [--baseline-questions 12] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks._common import emit, machine, percentile
from opsassist.cache.memory import MemoryKnowledgeCache
from opsassist.evaluation.answers import load_answer_set
from opsassist.evaluation.evalset import evalset_file
from opsassist.index.embedded import EmbeddedIndexStore
from opsassist.pipelines.runbooks import run_pipeline
from opsassist.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_timing(header: str, name: str) -> float | None:
    """One duration (ms) of a ``Server-Timing`` header (``retrieval;dur=3.10, ...``)."""
    for part in header.split(","):
        label, _, rest = part.strip().partition(";dur=")
        if label == name and rest:
            return float(rest)
    return None


def ask(
    base: str, question: str, mode: str | None, retrieval: list[float] | None = None
) -> tuple[float, float, str]:
    """(seconds to the first content, seconds to [DONE], the answer) of one streamed question;
    the server's own retrieval step (its ``Server-Timing``) is appended to ``retrieval``."""
    body: dict[str, Any] = {
        "model": "opsassist",
        "messages": [{"role": "user", "content": question}],
        "stream": True,
        "cache": False,
    }
    if mode:
        body["answer_mode"] = mode
    started = time.perf_counter()
    first: float | None = None
    parts: list[str] = []
    with httpx.stream(
        "POST", f"{base}/v1/chat/completions", json=body, timeout=httpx.Timeout(10, read=600)
    ) as response:
        response.raise_for_status()
        step = server_timing(response.headers.get("server-timing", ""), "retrieval")
        if retrieval is not None and step is not None:
            retrieval.append(step)
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            for choice in json.loads(line[6:]).get("choices") or []:
                text = (choice.get("delta") or {}).get("content")
                if text:
                    first = first if first is not None else time.perf_counter() - started
                    parts.append(text)
    total = time.perf_counter() - started
    return (first if first is not None else total), total, "".join(parts)


def stats(name: str, firsts: list[float], totals: list[float]) -> dict[str, Any]:
    return {
        "mode": name,
        "n": len(firsts),
        "first_p50_s": round(percentile(firsts, 50), 3),
        "first_p95_s": round(percentile(firsts, 95), 3),
        "total_p50_s": round(percentile(totals, 50), 3),
        "total_p95_s": round(percentile(totals, 95), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline-questions", type=int, default=12)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    base_settings = Settings()
    data_dir = base_settings.data_dir / "bench" / "answers"
    settings = base_settings.model_copy(update={"data_dir": data_dir})
    store = EmbeddedIndexStore(data_dir / "index")
    run_pipeline(settings, settings.runbooks_path, store, MemoryKnowledgeCache(), "latency")
    cases = load_answer_set(evalset_file(settings.evalsets_dir, "answers"))
    questions = [c.question for c in cases]

    port = free_port()
    env = {
        **os.environ,
        "OPSASSIST_DATA_DIR": str(data_dir),
        "OPSASSIST_INDEX_BACKEND": "embedded",
        "OPSASSIST_CACHE_BACKEND": "memory",
        "OPSASSIST_API_KEYS": "",
        "OPSASSIST_LOG_LEVEL": "WARNING",
    }
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "uvicorn"), "serving.app:app", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        ready = httpx.get(f"{base}/readyz", timeout=10).json()
        if not ready["checks"]["model"]["ok"]:
            raise SystemExit("the model server is not ready: scripts/model-server up")
        ask(base, "warm up", None)
        rows: dict[str, dict[str, Any]] = {}
        firsts, totals, retrieval = [], [], []
        for question in questions:
            first, total, _ = ask(base, question, None, retrieval)
            firsts.append(first)
            totals.append(total)
        rows["default"] = stats(settings.chat_answer_mode, firsts, totals)
        rows["default"] |= {
            "retrieval_n": len(retrieval),
            "retrieval_p50_ms": round(percentile(retrieval, 50), 2),
            "retrieval_p95_ms": round(percentile(retrieval, 95), 2),
        }
        firsts, totals = [], []
        for question in questions[: args.baseline_questions]:
            first, total, _ = ask(base, question, "model")
            firsts.append(first)
            totals.append(total)
        rows["baseline"] = stats("model (baseline)", firsts, totals)
    finally:
        server.terminate()
        server.wait(30)
    default, baseline = rows["default"], rows["baseline"]
    result = {
        "benchmark": "answer_latency",
        "machine": machine(),
        "model": ready["checks"]["model"]["model"],
        "default_mode": settings.chat_answer_mode,
        "rows": list(rows.values()),
        "ratio_first_p95": round(default["first_p95_s"] / baseline["first_p95_s"], 4),
        "ratio_total_p95": round(default["total_p95_s"] / baseline["total_p95_s"], 4),
        # the retrieval step's share of the default answer's first piece (p95 to p95)
        "retrieval_p95_ms": default["retrieval_p95_ms"],
        "ratio_retrieval_to_first_p95": round(
            default["retrieval_p95_ms"] / 1000 / default["first_p95_s"], 3
        ),
    }
    if args.json:
        emit(result, True)
        return
    columns = ("first_p50_s", "first_p95_s", "total_p50_s", "total_p95_s")
    print(f"{'mode':20} {'n':>4} " + " ".join(f"{c:>12}" for c in columns))
    for row in rows.values():
        cells = " ".join(f"{row[c]:>11.3f}s" for c in columns)
        print(f"{row['mode']:20} {row['n']:>4} {cells}")
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2))


if __name__ == "__main__":
    main()

"""Chat server overhead: time to first token (TTFT) through the server minus TTFT from the KServe
model server directly, with the same prompt, at 1 and 16 concurrent streams; and the latency of a
cached answer (server-side from the ``Server-Timing`` header, and client-side, against a
``/healthz`` round trip as the HTTP floor). Targets: overhead p95 <= 30 ms, cache hit p95 <= 5 ms
server-side.

The direct baseline sends the exact messages the server would send (built by the same pipeline
code in this process), so the difference is what the server adds: HTTP, auth, cache lookup,
query embedding, hybrid retrieval, prompt building and the hop to the model server. Requests to
the server use ``"cache": false`` so every one pays for retrieval. Everything is on loopback.
On a busy CPU the model's own TTFT varies by hundreds of ms between requests, which swamps a
client-side difference of milliseconds. So the overhead is measured twice: first against a
zero-latency OpenAI-compatible upstream (``benchmarks/instant_model.py``: the first token at
once), where the difference is the server's overhead alone, then against the real KServe model
server. The server's own view is printed too: per request, the time until it calls the model
(``prep`` in ``Server-Timing``), and the mean of its TTFT histograms (server stage minus model
stage, the same requests). The load generator is aiohttp (a C HTTP parser): it shares the two
cores with the server and the upstream, so the less CPU it takes per streamed token, the less it
distorts what it measures (httpx took ~2.5x as much per token).

Needs the model server (``scripts/model-server up``) and Redis (``scripts/services up redis``).
By default a small runbook index is built in a temporary folder first (a minute or two).

    .venv/bin/python -m benchmarks.chat_server [--n 20] [--rounds 2] [--instant-n 200]
        [--instant-rounds 8] [--hits 200] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from benchmarks._common import emit, machine, percentile, summary

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpora" / "runbooks" / "prometheus-operator"
SUBSET = [
    "kubernetes/KubePodCrashLooping.md",
    "kubernetes/KubePodNotReady.md",
    "kubernetes/KubeNodeNotReady.md",
    "kubernetes/KubeDeploymentReplicasMismatch.md",
    "etcd/etcdNoLeader.md",
    "etcd/etcdMembersDown.md",
    "node/NodeFilesystemAlmostOutOfSpace.md",
    "alertmanager/AlertmanagerFailedToSendAlerts.md",
]
QUESTIONS = [
    "why does my pod keep crash looping?",
    "a pod has been not ready for a while",
    "a node is not ready, what should I check?",
    "deployment replicas do not match the desired count",
    "etcd has no leader",
    "some etcd members are down",
    "the node filesystem is almost out of space",
    "alertmanager fails to send notifications",
]
KEY = "bench-" + uuid.uuid4().hex[:8]
MAX_TOKENS = 4  # TTFT does not depend on it; keeps the model busy as briefly as possible


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build_index(data_dir: Path, env: dict[str, str]) -> None:
    corpus = data_dir.parent / "corpus"
    shipped = ROOT / "include" / "opsassist" / "corpora" / "runbooks" / "prometheus-operator"
    source = CORPUS if CORPUS.is_dir() else shipped
    for relative in SUBSET:
        (corpus / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / relative, corpus / relative)
    subprocess.run(
        [str(Path(sys.executable).parent / "opsassist"), "index", "runbooks", str(corpus)],
        env={**os.environ, **env},
        check=True,
        capture_output=True,
        timeout=1800,
    )


def start_uvicorn(
    app: str, port: int, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            str(Path(sys.executable).parent / "uvicorn"),
            app,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def start_server(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    return start_uvicorn(
        "serving.app:app", port, {**os.environ, **env, "OPSASSIST_LOG_LEVEL": "WARNING"}
    )


def wait_ready(base: str, process: subprocess.Popen[bytes], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"chat server exited with {process.returncode}")
        try:
            if httpx.get(f"{base}/readyz", timeout=5).json().get("status") == "ready":
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.5)
    raise SystemExit("chat server not ready in time")


def model_messages(env: dict[str, str]) -> list[list[dict[str, str]]]:
    """The messages the server sends to the model for each question (same pipeline code)."""
    os.environ.update(env)
    from opsassist.chat.pipeline import ChatPipeline, ChatRequest
    from opsassist.llm.client import client_from_settings
    from opsassist.settings import Settings
    from opsassist.stores import get_cache, get_index_store

    settings = Settings()
    pipeline = ChatPipeline(
        settings, get_index_store(settings), get_cache(settings), client_from_settings(settings)
    )
    out = []
    for question in QUESTIONS:
        request = ChatRequest([{"role": "user", "content": question}], use_cache=False)
        out.append(pipeline.prepare(request).model_messages)
    return out


async def ttft(
    client: aiohttp.ClientSession, url: str, body: dict[str, Any], headers: dict[str, str]
) -> tuple[float, float | None]:
    """Seconds to the first SSE event carrying answer text; the stream is then read to its end.

    A degraded answer (the model was not used) would make a meaningless, fast TTFT: it raises.
    Also returns the server's ``prep`` time (``Server-Timing``: until the model call) if any.
    """
    started = time.perf_counter()
    first: float | None = None
    async with client.post(url, json=body, headers=headers) as response:
        response.raise_for_status()
        timing = re.search(r"prep;dur=([0-9.]+)", response.headers.get("server-timing", ""))
        prep = float(timing.group(1)) if timing else None
        async for line in response.content:
            if first is None and line.startswith(b"data: {"):
                event = json.loads(line[6:])
                choices = event.get("choices") or [{}]
                text = (choices[0].get("delta") or {}).get("content")
                if text:
                    first = time.perf_counter() - started
                    if text.startswith("⚠"):
                        raise RuntimeError(f"degraded answer from {url}: {text[:120]}")
    if first is None:
        raise RuntimeError(f"no text from {url}")
    return first, prep


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=600), connector=aiohttp.TCPConnector(limit=64)
    )


async def ttft_sums(client: aiohttp.ClientSession, server: str) -> dict[str, float]:
    """Sums and counts of the server's own TTFT histograms (stage server / model)."""
    async with client.get(f"{server}/metrics") as response:
        text = await response.text()
    out: dict[str, float] = {}
    for kind in ("sum", "count"):
        for stage in ("server", "model"):
            name = f'opsassist_time_to_first_token_seconds_{kind}{{stage="{stage}"}}'
            found = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
            out[f"{stage}_{kind}"] = float(found.group(1)) if found else 0.0
    return out


def direct_request(
    client: aiohttp.ClientSession,
    model: str,
    model_name: str,
    prompts: list[list[dict[str, str]]],
    i: int,
    max_tokens: int = MAX_TOKENS,
) -> Awaitable[tuple[float, float | None]]:
    body = {
        "model": model_name,
        "messages": prompts[i % len(prompts)],
        "max_tokens": max_tokens,
        "temperature": 0.2,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    return ttft(client, f"{model}/openai/v1/chat/completions", body, {})


def server_request(
    client: aiohttp.ClientSession, server: str, i: int, max_tokens: int = MAX_TOKENS
) -> Awaitable[tuple[float, float | None]]:
    body = {
        "model": "opsassist",
        "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
        "max_tokens": max_tokens,
        "stream": True,
        "cache": False,
    }
    return ttft(client, f"{server}/v1/chat/completions", body, {"Authorization": f"Bearer {KEY}"})


async def measure_overhead(
    server: str,
    model: str,
    model_name: str,
    prompts: list[list[dict[str, str]]],
    n: int,
    concurrency: int,
    rounds: int,
) -> dict[str, Any]:
    """At concurrency 1, ``n`` interleaved pairs; above, ``rounds`` bursts of ``concurrency``
    requests sent at the same instant (direct, then through the server)."""
    async with session() as client:

        def direct(i: int) -> Awaitable[tuple[float, float | None]]:
            return direct_request(client, model, model_name, prompts, i)

        def through(i: int) -> Awaitable[tuple[float, float | None]]:
            return server_request(client, server, i)

        await direct(0)  # warm both paths
        await through(0)
        before = await ttft_sums(client, server)
        direct_ms: list[float] = []
        server_ms: list[float] = []
        prep_ms: list[float] = []

        def keep(into: list[float], got: tuple[float, float | None]) -> None:
            into.append(got[0] * 1000)
            if got[1] is not None:
                prep_ms.append(got[1])

        if concurrency == 1:
            for i in range(n):  # interleaved, so drift hits both sides alike
                keep(direct_ms, await direct(i))
                keep(server_ms, await through(i))
        else:
            for r in range(rounds):
                batch = range(r * concurrency, (r + 1) * concurrency)
                for got in await asyncio.gather(*(direct(i) for i in batch)):
                    keep(direct_ms, got)
                for got in await asyncio.gather(*(through(i) for i in batch)):
                    keep(server_ms, got)
        after = await ttft_sums(client, server)
    result = {
        "concurrency": concurrency,
        "mode": "sequential" if concurrency == 1 else "burst",
        **_compare(direct_ms, server_ms, prep_ms),
        "internal_overhead_mean_ms": _internal(before, after),
    }
    if concurrency == 1:  # paired: the overhead of each request against its direct twin
        paired = [s - d for s, d in zip(server_ms, direct_ms, strict=True)]
        result["paired_overhead"] = summary("paired overhead", paired)
    return result


async def measure_steady(
    server: str,
    model: str,
    model_name: str,
    prompts: list[list[dict[str, str]]],
    streams: int,
    per_stream: int,
    tokens: int,
    answer_s: float,
) -> dict[str, Any]:
    """``streams`` streams open at all times, as in a busy chat: each client asks, reads its
    ``tokens``-token answer (about ``answer_s`` long) to the end and asks again, so a question
    arrives while the others are being answered. Clients start at random points within one
    answer's length; each client's first question is warm-up. Direct first, then through the
    server, the same questions."""
    import random

    rng = random.Random(16)
    delays = [rng.uniform(0, answer_s) for _ in range(streams)]
    prep_ms: list[float] = []
    async with session() as client:

        async def one_client(c: int, through: bool) -> list[float]:
            await asyncio.sleep(delays[c])
            out: list[float] = []
            for r in range(per_stream + 1):
                i = c * (per_stream + 1) + r
                if through:
                    got = await server_request(client, server, i, tokens)
                else:
                    got = await direct_request(client, model, model_name, prompts, i, tokens)
                if r:
                    out.append(got[0] * 1000)
                    if through and got[1] is not None:
                        prep_ms.append(got[1])
            return out

        async def side(through: bool) -> list[float]:
            runs = await asyncio.gather(*(one_client(c, through) for c in range(streams)))
            return [ms for run in runs for ms in run]

        direct_ms = await side(False)
        before = await ttft_sums(client, server)
        server_ms = await side(True)
        after = await ttft_sums(client, server)
    return {
        "concurrency": streams,
        "mode": f"steady ({tokens}-token answers, {answer_s:.2f} s each)",
        **_compare(direct_ms, server_ms, prep_ms),
        "internal_overhead_mean_ms": _internal(before, after),
    }


def _compare(
    direct_ms: list[float], server_ms: list[float], prep_ms: list[float]
) -> dict[str, Any]:
    return {
        "direct": summary("direct model TTFT", direct_ms),
        "server": summary("through server TTFT", server_ms),
        "overhead_p50_ms": round(percentile(server_ms, 50) - percentile(direct_ms, 50), 2),
        "overhead_p95_ms": round(percentile(server_ms, 95) - percentile(direct_ms, 95), 2),
        "ratio_p50": round(percentile(server_ms, 50) / percentile(direct_ms, 50), 3),
        # per request, measured by the server itself (no model-server noise):
        "prep": summary("server prep until model call", prep_ms),
    }


def _internal(before: dict[str, float], after: dict[str, float]) -> float:
    """The server's own mean TTFT(server stage) - TTFT(model stage) over the requests between."""
    count = after["server_count"] - before["server_count"]
    internal = (
        (after["server_sum"] - before["server_sum"]) - (after["model_sum"] - before["model_sum"])
    ) / max(count, 1)
    return round(internal * 1000, 2)


async def measure_cache_hits(server: str, n: int) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {KEY}"}
    body = {"model": "opsassist", "messages": [{"role": "user", "content": QUESTIONS[0]}]}
    url = f"{server}/v1/chat/completions"
    async with session() as client:
        async with client.post(url, json=body, headers=auth) as first:  # generates and caches
            first.raise_for_status()
            await first.read()
            if first.headers.get("x-opsassist-degraded"):
                raise RuntimeError("the answer to cache was degraded: is the model server up?")
        server_side: list[float] = []
        client_side: list[float] = []
        health: list[float] = []
        for _ in range(n + 20):
            started = time.perf_counter()
            async with client.post(url, json=body, headers=auth) as response:
                await response.read()
            client_side.append((time.perf_counter() - started) * 1000)
            if response.headers.get("x-opsassist-cache") != "hit":
                raise RuntimeError("expected a cache hit: is the answer cacheable?")
            timing = re.search(r"total;dur=([0-9.]+)", response.headers["server-timing"])
            assert timing is not None
            server_side.append(float(timing.group(1)))
            started = time.perf_counter()
            async with client.get(f"{server}/healthz") as health_response:
                health_response.raise_for_status()
                await health_response.read()
            health.append((time.perf_counter() - started) * 1000)
    skip = 20  # warm-up
    return {
        "server_side": summary("cache hit, server-side (Server-Timing)", server_side[skip:]),
        "client_side": summary("cache hit, client-side", client_side[skip:]),
        "baseline": summary("baseline: /healthz round trip", health[skip:]),
    }


def overhead_runs(
    env: dict[str, str],
    model: str,
    model_name: str,
    n: int,
    rounds: int,
    label: str,
    steady: tuple[int, int, float] | None = None,
) -> tuple[list[dict[str, Any]], str, subprocess.Popen[bytes]]:
    """A chat server in front of ``model``; TTFT at 1 stream, in bursts of 16 and, given
    ``steady`` = (requests per stream, tokens per answer, answer seconds), with 16 streams open
    at all times. The server is left running (returned); the caller stops it."""
    env = env | {"OPSASSIST_MODEL_SERVER_URL": model}
    port = free_port()
    process = start_server(env, port)
    base = f"http://127.0.0.1:{port}"
    wait_ready(base, process)
    prompts = model_messages(env)
    results = []
    for concurrency in (1, 16):
        log(f"{label}: TTFT at {concurrency} concurrent stream(s) ...")
        result = asyncio.run(
            measure_overhead(base, model, model_name, prompts, n, concurrency, rounds)
        )
        result["upstream"] = label
        results.append(result)
    if steady is not None:
        log(f"{label}: TTFT with 16 streams open at all times ...")
        result = asyncio.run(measure_steady(base, model, model_name, prompts, 16, *steady))
        result["upstream"] = label
        results.append(result)
    return results, base, process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="sequential pairs at concurrency 1")
    parser.add_argument("--rounds", type=int, default=2, help="batches of 16 concurrent streams")
    parser.add_argument(
        "--instant-n", type=int, default=200, help="pairs at concurrency 1, instant upstream"
    )
    parser.add_argument(
        "--instant-rounds", type=int, default=8, help="batches of 16, instant upstream"
    )
    parser.add_argument(
        "--steady-per-stream",
        type=int,
        default=12,
        help="questions per client with 16 streams open at all times, instant upstream (0: skip)",
    )
    parser.add_argument(
        "--steady-tokens", type=int, default=64, help="tokens per answer in the steady run"
    )
    parser.add_argument(
        "--token-seconds",
        type=float,
        default=0.02,
        help="the instant upstream's pace after its first token (0.02: 50 tokens/s)",
    )
    parser.add_argument("--hits", type=int, default=200, help="cache-hit requests")
    parser.add_argument("--data-dir", type=Path, help="an already built data dir (skip indexing)")
    parser.add_argument(
        "--context-chars",
        type=int,
        default=800,
        help="retrieved text in the prompt (both sides get the same prompt; smaller is faster)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    model = os.environ.get("OPSASSIST_MODEL_SERVER_URL", "http://127.0.0.1:18080")
    model_name = os.environ.get("OPSASSIST_MODEL_NAME", "smollm2-135m-instruct")
    try:
        httpx.get(f"{model}/openai/v1/models", timeout=5).raise_for_status()
    except httpx.HTTPError:
        raise SystemExit(
            f"model server not ready at {model}: run scripts/model-server up"
        ) from None
    redis_port = os.environ.get("OPSASSIST_REDIS_PORT", "16379")
    work = Path(tempfile.mkdtemp(prefix="opsassist-bench-chat-"))
    env = {
        "OPSASSIST_DATA_DIR": str(args.data_dir or work / "data"),
        "OPSASSIST_CACHE_BACKEND": "redis",
        "OPSASSIST_REDIS_URL": f"redis://127.0.0.1:{redis_port}/14",
        "OPSASSIST_CACHE_PREFIX": f"bench-chat-{uuid.uuid4().hex[:6]}",
        "OPSASSIST_API_KEYS": KEY,
        "OPSASSIST_CHAT_MAX_TOKENS": "16",
        "OPSASSIST_CHAT_CONTEXT_CHARS": str(args.context_chars),
        # 16 queued streams wait their turn at the model server: no timeouts, no breaker here
        "OPSASSIST_MODEL_READ_TIMEOUT_SECONDS": "900",
        "OPSASSIST_MODEL_BREAKER_FAILURES": "1000",
    }
    if args.data_dir is None:
        log("building a small runbook index ...")
        build_index(work / "data", env)
    instant_port = free_port()
    instant = start_uvicorn(
        "benchmarks.instant_model:app",
        instant_port,
        {**os.environ, "INSTANT_TOKEN_SECONDS": str(args.token_seconds)},
    )
    steady = None
    if args.steady_per_stream > 0:
        answer_s = args.steady_tokens * args.token_seconds
        steady = (args.steady_per_stream, args.steady_tokens, answer_s)
    processes: list[subprocess.Popen[bytes]] = [instant]
    try:
        # 1. the server's own overhead: a zero-latency upstream, so nothing else is in the
        #    difference; 2. the real KServe model server (its prefill jitter dominates there)
        results, _, server = overhead_runs(
            env,
            f"http://127.0.0.1:{instant_port}",
            model_name,
            args.instant_n,
            args.instant_rounds,
            "instant upstream",
            steady,
        )
        processes.append(server)
        server.terminate()
        more, base, server = overhead_runs(env, model, model_name, args.n, args.rounds, "KServe")
        processes.append(server)
        results += more
        log("cache hits ...")
        hits = asyncio.run(measure_cache_hits(base, args.hits))
    finally:
        for process in processes:
            process.terminate()
            process.wait(30)
        _cleanup_redis(env)
        shutil.rmtree(work, ignore_errors=True)
    report = {
        "benchmark": "chat_server",
        "machine": machine(),
        "overhead": results,
        "cache_hit": hits,
    }
    if args.json:
        emit(report, True)
        return
    print(f"machine: {report['machine']}")
    for result in results:
        print_overhead(result)
    for key in ("server_side", "client_side", "baseline"):
        _row(hits[key])
    ratio = hits["client_side"]["p50_ms"] / hits["baseline"]["p50_ms"]
    print(
        f"  cache hit client-side / healthz p50 ratio {ratio:.2f} (target: server-side p95 <= 5 ms)"
    )


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def print_overhead(result: dict[str, Any]) -> None:
    c = result["concurrency"]
    if c == 1:
        print(f"--- upstream: {result['upstream']}")
        print(f"{'measure':44} {'p50 ms':>9} {'p95 ms':>9} {'mean ms':>9}")
    if c > 1:
        print(f"  x{c}, {result['mode']}:")
    for key in ("direct", "server", "paired_overhead", "prep"):
        if key in result:
            _row(result[key], f" (x{c})")
    print(
        f"  overhead x{c} {result['mode']}: p50 {result['overhead_p50_ms']} ms, "
        f"p95 {result['overhead_p95_ms']} ms; server/direct TTFT p50 ratio "
        f"{result['ratio_p50']} (target: overhead p95 <= 30 ms)\n"
        f"  server-measured: TTFT(server stage) - TTFT(model stage), mean "
        f"{result['internal_overhead_mean_ms']} ms",
        flush=True,
    )


def _row(row: dict[str, Any], suffix: str = "") -> None:
    name = row["name"] + suffix
    print(f"{name:44} {row['p50_ms']:9.2f} {row['p95_ms']:9.2f} {row['mean_ms']:9.2f}")


def _cleanup_redis(env: dict[str, str]) -> None:
    try:
        import redis

        client = redis.Redis.from_url(env["OPSASSIST_REDIS_URL"])
        for key in client.scan_iter(match=f"{env['OPSASSIST_CACHE_PREFIX']}:*"):
            client.delete(key)
    except Exception as exc:  # a benchmark must not fail on cleanup
        print(f"redis cleanup skipped: {exc}", file=sys.stderr)


if __name__ == "__main__":
    main()

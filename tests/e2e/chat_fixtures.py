"""What the end-to-end tests of the chat server share: a small runbook index built with the
library (its knowledge pack in the real Redis) and the server itself, ``uvicorn serving.app:app``
in a subprocess on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from opsassist.cache.redis import RedisKnowledgeCache
from opsassist.pipelines.runbooks import run_pipeline
from opsassist.settings import Settings
from opsassist.stores import get_index_store
from tests.conftest import MODEL_BASE, ROOT, VENV_BIN, free_port, runbook_corpus, stop_process

SUBSET = [
    "kubernetes/KubePodCrashLooping.md",
    "kubernetes/KubePodNotReady.md",
    "kubernetes/KubeNodeNotReady.md",
    "etcd/etcdNoLeader.md",
    "node/NodeFilesystemAlmostOutOfSpace.md",
    "alertmanager/AlertmanagerFailedToSendAlerts.md",
]


def make_settings(values: dict[str, str], **overrides: Any) -> Settings:
    fields = {k.removeprefix("OPSASSIST_").lower(): v for k, v in values.items()}
    return Settings(**{**fields, **overrides})


@contextlib.contextmanager
def indexed_env(root: Path, redis_url: str, key: str, **extra: str) -> Iterator[dict[str, str]]:
    """The chat server's environment over an index of ``SUBSET`` built in ``root`` (``extra``:
    more ``OPSASSIST_*`` values); the Redis keys it made are removed afterwards."""
    corpus = root / "corpus"
    for relative in SUBSET:
        (corpus / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(runbook_corpus() / relative, corpus / relative)
    prefix = f"e2e-{root.name}-{uuid.uuid4().hex[:8]}"
    values = {
        "OPSASSIST_DATA_DIR": str(root / "data"),
        "OPSASSIST_INDEX_BACKEND": "embedded",
        "OPSASSIST_CACHE_BACKEND": "redis",
        "OPSASSIST_REDIS_URL": redis_url,
        "OPSASSIST_CACHE_PREFIX": prefix,
        "OPSASSIST_API_KEYS": f"other-key,{key}",
        "OPSASSIST_MODEL_SERVER_URL": MODEL_BASE,
        "OPSASSIST_MODEL_PROTOCOL": "openai",
        "OPSASSIST_LOG_LEVEL": "INFO",
        "OPSASSIST_GATE_ALLOW_UNJUDGED_FIRST_BUILD": "true",  # a six-runbook subset
        **extra,
    }
    settings = make_settings(values)
    cache = RedisKnowledgeCache(redis_url, prefix)
    summary = run_pipeline(settings, corpus, get_index_store(settings), cache, root.name)
    assert summary["promoted"], summary
    try:
        yield values
    finally:
        for name in cache._redis.scan_iter(match=f"{prefix}:*"):
            cache._redis.delete(name)


def wait_healthy(base: str, timeout: float, process: subprocess.Popen[Any] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"chat server exited ({process.returncode})")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        time.sleep(0.25)
    raise TimeoutError(f"chat server at {base} not healthy after {timeout} s")


@contextlib.contextmanager
def chat_server(env: dict[str, str], log: Path | None = None) -> Iterator[str]:
    """``uvicorn serving.app:app`` in a subprocess (output to ``log``, else discarded); yields
    its base URL once /healthz answers, stops it afterwards. Links in answers point at it."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    out = log.open("w") if log is not None else subprocess.DEVNULL
    try:
        process = subprocess.Popen(
            [
                str(VENV_BIN / "uvicorn"),
                "serving.app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=ROOT,
            env={**os.environ, "OPSASSIST_PUBLIC_URL": base, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    finally:
        if log is not None and not isinstance(out, int):
            out.close()
    try:
        wait_healthy(base, 300, process)
        yield base
    finally:
        stop_process(process)

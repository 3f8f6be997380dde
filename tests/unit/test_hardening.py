"""Trying to break it: hostile lines for every parser (linear time), symlinks that leave the
runbook source (a folder and a Git checkout), time windows that overflow, and the request limits
of the chat server (body size, requests in flight per key)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from benchmarks.adversarial_parsers import LINE_REPEATS, REPEATS, adversarial_lines, parsers
from opsassist.chat.timewindow import infer_window
from opsassist.parsing.blocks import markdown_blocks
from opsassist.parsing.markdown import atx_heading, parse_runbook
from opsassist.pipelines.runbooks import collect
from opsassist.settings import Settings
from opsassist.sources.runbooks import scan_runbook_files, sync_runbooks
from opsassist.timeparse import parse_since
from serving.limits import RequestLimitsMiddleware

HOSTILE_HEADERS = ("", "## a", "Jun 14 15:16:01 host ", "[2024-01-01T10:00:00Z] ")
BOUND_S = 1.0  # catastrophic backtracking takes seconds to minutes on these; linear, milliseconds


# --- linear time on hostile input ----------------------------------------------------------------
@pytest.mark.parametrize("name", list(parsers()))
def test_every_parser_takes_linear_time_on_hostile_100k_lines(name: str) -> None:
    """One-line shapes at 100k characters; shapes of many lines (list items, fences) at 25k,
    where markdown-it's own linear parse stays well under the bound and anything quadratic in
    the lines (thousands of fences or links) would not."""
    parse = parsers()[name]
    lines = [
        *adversarial_lines(100_000, HOSTILE_HEADERS, REPEATS),
        *adversarial_lines(25_000, HOSTILE_HEADERS, LINE_REPEATS),
    ]
    for line in lines:
        started = time.perf_counter()
        parse(line)
        took = time.perf_counter() - started
        assert took < BOUND_S, f"{name}: {took:.2f} s on {line[:40]!r}"


def test_the_heading_that_backtracked_is_parsed_at_once_and_the_same_as_before() -> None:
    line = "## a" + " " * 5000 + "x"
    started = time.perf_counter()
    runbook = parse_runbook(f"# Title\n\n{line}\n\nbody text\n", "x/Y.md")
    assert time.perf_counter() - started < BOUND_S  # was 22 s at 2,000 spaces
    assert runbook.sections[0].path == ("a" + " " * 5000 + "x",)
    assert atx_heading("## Diagnosis ##") == (2, "Diagnosis")
    assert atx_heading("# C#") == (1, "C#")
    assert atx_heading("####### seven") is None and atx_heading("##x") is None


def test_a_very_long_line_is_kept_verbatim_as_code_not_parsed() -> None:
    long = "a ``` [x](" * 1000
    blocks = markdown_blocks(f"intro\n\n{long}\n\nafter")
    assert [b.kind for b in blocks] == ["p", "code", "p"]
    assert blocks[1].text == long  # nothing lost, nothing rewritten


def test_time_windows_that_would_overflow_are_refused_or_capped() -> None:
    with pytest.raises(ValueError, match="too long"):
        parse_since("9999999999h")
    with pytest.raises(ValueError):
        parse_since("9" * 5000 + "h")
    now = dt.datetime(2026, 12, 5, tzinfo=dt.UTC)
    window = infer_window("errors since 99999999999 hours ago", now)
    assert window is not None and window.since < now


# --- symlinks never leave the source --------------------------------------------------------------
def _hostile_folder(root: Path, outside: Path) -> None:
    (root / "ok").mkdir(parents=True)
    (root / "ok" / "Real.md").write_text("# Real\n\n## Meaning\n\nA real runbook.\n")
    (root / "ok" / "Alias.md").symlink_to(root / "ok" / "Real.md")  # inside: followed
    (root / "escape.md").symlink_to(outside)
    (root / "loop.md").symlink_to(root / "loop.md")
    (root / "dangling.md").symlink_to(root / "missing.md")
    (root / "linked-folder").symlink_to(outside.parent, target_is_directory=True)


def _reasons(settings: Settings, root: Path) -> dict[str, str]:
    return {q.source: q.reason for q in collect(root, settings).quarantined}


def test_symlinks_out_of_the_folder_loops_and_dangling_links_are_quarantined(
    tmp_path: Path, settings: Settings
) -> None:
    outside = tmp_path / "secret" / "passwd.md"
    outside.parent.mkdir()
    outside.write_text("# Secret\n\nroot:x:0:0:root:/root:/bin/bash\n")
    root = tmp_path / "runbooks"
    _hostile_folder(root, outside)
    files, _ = scan_runbook_files(root)
    assert [p.relative_to(root).as_posix() for p in files] == ["ok/Alias.md", "ok/Real.md"]
    assert _reasons(settings, root) == {
        "dangling.md": "dangling symlink",
        "escape.md": "symlink outside the source",
        "loop.md": "symlink loop",
    }
    result = collect(root, settings)
    assert all("root:x:0:0" not in c.text for c in result.chunks)


def test_a_symlink_committed_to_a_git_source_cannot_leak_a_file(
    tmp_path: Path, settings: Settings
) -> None:
    outside = tmp_path / "secret.md"
    outside.write_text("# Secret\n\ntoken=hunter2\n")
    repo = tmp_path / "repo"
    _hostile_folder(repo, outside)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "hostile"], check=True)
    git_settings = settings.model_copy(
        update={"runbooks_git_url": f"file://{repo}", "runbooks_git_ref": "main"}
    )
    checkout = sync_runbooks(git_settings)
    assert (checkout / "escape.md").is_symlink()  # the checkout holds the link as committed
    assert _reasons(git_settings, checkout)["escape.md"] == "symlink outside the source"
    assert all("hunter2" not in c.text for c in collect(checkout, git_settings).chunks)


# --- request limits -------------------------------------------------------------------------------
async def _slow_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await asyncio.sleep(0.2)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(len(body)).encode()})


async def _call(
    app: Any, body: bytes, *, key: str = "k", declared: bool = True, chunk: int = 0
) -> tuple[int, dict[str, str], bytes]:
    headers = [(b"authorization", f"Bearer {key}".encode())]
    if declared:
        headers.append((b"content-length", str(len(body)).encode()))
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": headers}
    pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)] if chunk else [body]
    messages = [
        {"type": "http.request", "body": piece, "more_body": i < len(pieces) - 1}
        for i, piece in enumerate(pieces)
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    out = {k.decode(): v.decode() for k, v in start.get("headers", [])}
    return start["status"], out, b"".join(m.get("body", b"") for m in sent[1:])


def test_a_body_over_the_limit_gets_413_declared_or_chunked() -> None:
    app = RequestLimitsMiddleware(_slow_app, max_body_bytes=1024, max_in_flight=2)
    status, _, body = asyncio.run(_call(app, b"x" * 2048))
    assert status == 413 and json.loads(body)["error"]["code"] == "request_too_large"
    status, _, body = asyncio.run(_call(app, b"x" * 2048, declared=False, chunk=100))
    assert status == 413
    status, _, body = asyncio.run(_call(app, b"x" * 1000, declared=False, chunk=100))
    assert status == 200 and body == b"1000"  # under the limit: the whole body reaches the app


def test_one_key_cannot_hold_more_than_its_share_of_requests_in_flight() -> None:
    app = RequestLimitsMiddleware(_slow_app, max_body_bytes=1024, max_in_flight=2)

    async def burst() -> list[tuple[int, dict[str, str], bytes]]:
        mine = [_call(app, b"{}", key="greedy") for _ in range(4)]
        other = _call(app, b"{}", key="other")
        return await asyncio.gather(*mine, other)

    results = asyncio.run(burst())
    statuses = [status for status, _, _ in results]
    assert sorted(statuses[:4]) == [200, 200, 429, 429]
    assert statuses[4] == 200  # another key is not held up
    refused = next(headers for status, headers, _ in results if status == 429)
    assert refused["retry-after"] == "1"
    assert asyncio.run(_call(app, b"{}", key="greedy"))[0] == 200  # freed when they finished
    assert not app.in_flight

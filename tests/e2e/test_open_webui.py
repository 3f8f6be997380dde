"""Open WebUI in a real browser against the chat server.

A small runbook index built with the library (as tests/e2e/test_chat_server.py's ``env``), the
chat server (``uvicorn serving.app:app``, a subprocess), Open WebUI started by
``scripts/open-webui up`` (its own venv, port and data folder, pointed at the chat server), and
Debian's Chromium driven headless by Playwright: the question is typed into Open WebUI's chat
box, the streamed answer is awaited, and the assertions read what the browser rendered (the
answer's DOM and text), never the API. Each case leaves a screenshot in
var/test-artifacts/open-webui-<case>.png.

Playwright is installed in Open WebUI's venv (serving/open_webui/requirements.lock), not in the
project's: the browser part (``browse``, standard library and Playwright only) runs there
through tests/e2e/browser.py (``in_browser``, with the e2e tests' one Chromium ``launch``). Its
Chromium is Debian's /usr/bin/chromium (``scripts/open-webui browser``); ``playwright install``
is never run.

A case is a question, the backend it goes to and what the page must show (``CASES``): add one
there.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT, free_port
from tests.e2e.browser import in_browser, launch
from tests.e2e.chat_fixtures import chat_server, indexed_env

pytestmark = pytest.mark.slow

SCRIPT = ROOT / "scripts" / "open-webui"
ARTIFACTS = ROOT / "var" / "test-artifacts"
TARGET = "kubernetes/KubePodCrashLooping.md"
COMMAND = "kubectl -n $NAMESPACE describe pod $POD"
MODEL = "opsassist"
KEY = "webui-e2e-" + uuid.uuid4().hex[:8]
ANSWER_TIMEOUT_S = 420  # a model-written answer on 2 CPU cores, plus Open WebUI's relay


# --- the browser (runs in .venv-webui's Python: standard library and Playwright only) -------------
def browse(request: dict[str, Any]) -> dict[str, Any]:
    """Opens Open WebUI, asks ``request["question"]`` and returns what the page shows.

    A fresh Chromium profile; the "What's new" dialog of a first visit is closed; the model is
    picked in the selector when it is not already the selected one; the answer is awaited until
    Open WebUI shows its action buttons (and no Stop button); then the last assistant message's
    rendered HTML, text, code elements and links are read, the texts in ``request["visible"]``
    checked for visibility, and a screenshot of the whole conversation is taken (the viewport is
    made as tall as the conversation: Open WebUI scrolls an inner panel, not the page)."""
    import tempfile
    import time

    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    base, model = request["base"].rstrip("/"), request["model"]
    external: list[str] = []
    console: list[str] = []
    timings: dict[str, float] = {}
    started = time.monotonic()

    def loopback(url: str) -> bool:
        return url.startswith(("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:", "about:"))

    with (
        tempfile.TemporaryDirectory(prefix="opsassist-chromium-") as profile,
        sync_playwright() as playwright,
    ):
        context = launch(playwright, profile, request, viewport={"width": 1280, "height": 900})
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.on("request", lambda r: None if loopback(r.url) else external.append(r.url))
            page.on(
                "console",
                lambda m: (
                    console.append(f"{m.type}: {m.text}")
                    if m.type in ("error", "warning")
                    else None
                ),
            )
            page.set_default_timeout(60_000)
            timings["launch"] = time.monotonic() - started
            page.goto(base + "/", wait_until="load")
            chat_input = page.locator("#chat-input")
            chat_input.wait_for(state="visible")
            whats_new = page.get_by_role("button", name="Okay, Let's Go!")
            with_dialog = True
            try:
                whats_new.wait_for(state="visible", timeout=5_000)
            except PlaywrightTimeout:
                with_dialog = False
            if with_dialog:
                whats_new.click()
                whats_new.wait_for(state="hidden")
            selector = page.locator("#model-selector-model-button")
            if selector.inner_text().strip() != model:
                selector.click()
                page.keyboard.type(model)
                page.keyboard.press("Enter")
                page.wait_for_function(
                    "m => document.querySelector('#model-selector-model-button')"
                    "?.innerText.trim() === m",
                    arg=model,
                )
            selected = selector.inner_text().strip()
            timings["page"] = time.monotonic() - started

            messages = page.locator(".message-listitem")
            before = messages.count()
            chat_input.click()
            page.keyboard.type(request["question"])
            page.keyboard.press("Enter")
            asked = time.monotonic()
            page.wait_for_function(
                "n => document.querySelectorAll('.message-listitem').length >= n + 2",
                arg=before,
            )
            # Done: the last message has its action buttons (Open WebUI shows them when the
            # stream ended) and the composer no longer offers Stop.
            page.wait_for_function(
                """() => {
                    const items = document.querySelectorAll('.message-listitem');
                    const last = items[items.length - 1];
                    return !!last
                        && !!last.querySelector('#response-content-container')
                        && !!last.querySelector('.regenerate-response-button')
                        && !document.querySelector(
                            '#message-input-container button[aria-label="Stop"]');
                }""",
                timeout=request["answer_timeout_ms"],
                polling=250,
            )
            timings["answer"] = time.monotonic() - asked
            answer = messages.last.locator("#response-content-container")
            # Code blocks are CodeMirror editors (lines in .cm-line, not a <code>) with a toolbar
            # (language, Collapse, Save, Copy) and line numbers: their code is read apart, and
            # "prose" is the text shown without those blocks.
            rendered = answer.evaluate(
                """el => {
                    const blocks = [...el.querySelectorAll('.cm-editor')].map(editor =>
                        [...editor.querySelectorAll('.cm-line')].map(l => l.textContent)
                            .join('\\n'));
                    const clone = el.cloneNode(true);
                    for (const editor of [...clone.querySelectorAll('.cm-editor')]) {
                        const widget = editor.closest('div[dir="ltr"]');
                        const own = widget && clone.contains(widget)
                            && widget.querySelectorAll('.cm-editor').length === 1;
                        (own ? widget : editor).remove();
                    }
                    clone.querySelectorAll('button').forEach(b => b.remove());
                    const host = document.createElement('div');
                    host.style.cssText = 'position:absolute;left:-100000px;top:0;width:1000px';
                    host.appendChild(clone);
                    document.body.appendChild(host);
                    const prose = clone.innerText;
                    host.remove();
                    return {
                        html: el.innerHTML,
                        text: el.innerText,
                        prose: prose,
                        code: [...el.querySelectorAll('code')].map(c => c.textContent)
                            .concat(blocks),
                        links: [...el.querySelectorAll('a[href]')].map(
                            a => ({href: a.href, text: a.innerText.trim()})),
                    };
                }"""
            )
            visible = {
                text: answer.get_by_text(text).first.is_visible() for text in request["visible"]
            }
            height = page.evaluate(
                "() => document.querySelector('#messages-container')?.scrollHeight || 0"
            )
            page.set_viewport_size({"width": 1280, "height": max(900, min(height + 260, 12_000))})
            page.wait_for_timeout(500)
            page.screenshot(path=request["screenshot"], full_page=True)
        finally:
            context.close()
    timings["total"] = time.monotonic() - started
    return {
        **rendered,
        "visible": visible,
        "model": selected,
        "whats_new_dialog": with_dialog,
        "external_requests": external,
        "console": console[:50],
        "timings": {k: round(v, 1) for k, v in timings.items()},
    }


def ask_in_browser(
    base: str, question: str, screenshot: Path, workdir: Path, visible: list[str]
) -> dict[str, Any]:
    """Runs ``browse`` in Open WebUI's venv (where Playwright is) and returns its result."""
    request = {
        "base": base,
        "model": MODEL,
        "question": question,
        "screenshot": str(screenshot),
        "visible": visible,
        "answer_timeout_ms": ANSWER_TIMEOUT_S * 1000,
    }
    run, rendered = in_browser(browse, request, workdir, timeout=ANSWER_TIMEOUT_S + 240)
    if rendered is None:
        pytest.fail(
            f"the browser run failed (exit {run.returncode}); screenshot, if any: {screenshot}\n"
            f"{run.stdout[-3000:]}\n{run.stderr[-6000:]}"
        )
    return rendered


# --- assertions on the rendered answer ------------------------------------------------------------
SOURCES_HEADINGS = ("sources", "источники")  # the answer's language


def rendered_lines(page: dict[str, Any]) -> list[str]:
    """The answer's non-empty lines as shown, without its code blocks (their code, toolbar and
    line numbers), whitespace collapsed."""
    return [" ".join(line.split()) for line in page["prose"].splitlines() if line.strip()]


def assert_command_rendered(page: dict[str, Any], command: str) -> None:
    """The command is shown in a code element (inline or block), not as plain text."""
    assert any(command in code for code in page["code"]), (
        f"{command!r} is in no rendered code element; code elements: {page['code'][:20]}\n"
        f"text:\n{page['prose'][:3000]}"
    )


def assert_no_raw_html(page: dict[str, Any]) -> None:
    """No tag the answer should not contain shows as text (Markdown only, no raw HTML)."""
    raw = re.findall(r"</?\s*(?:details|summary)\b[^>]*>?", page["prose"], re.IGNORECASE)
    assert not raw, f"raw HTML shown as text: {raw[:5]}\ntext:\n{page['prose'][:3000]}"


def assert_no_repeated_lines(page: dict[str, Any], times: int = 3) -> None:
    """No rendered line appears ``times`` times or more (a looping model, a duplicated block);
    code blocks are left out (their lines may repeat: ``...``, ``}``)."""
    repeated = {line: n for line, n in Counter(rendered_lines(page)).items() if n >= times}
    assert not repeated, f"lines repeated {times}+ times: {repeated}\ntext:\n{page['prose'][:3000]}"


def assert_sources_are_links(page: dict[str, Any], cited: str = TARGET) -> None:
    """The answer has a Sources list whose every ``[n] ...`` entry is a link (an ``<a href>``
    with that entry's text), ``cited`` among them, and each linked page opens."""
    lines = rendered_lines(page)
    heading = [i for i, line in enumerate(lines) if line.rstrip(":").lower() in SOURCES_HEADINGS]
    assert heading, f"no Sources heading in the rendered answer:\n{page['prose'][:3000]}"
    entries = [
        m.group(1).strip()
        for line in lines[heading[-1] + 1 :]
        if (m := re.match(r"^(?:[-•*]\s*)?\[\d+\]\s*(.+)$", line))
    ]
    assert entries, f"no [n] entries under Sources:\n{page['prose'][-2000:]}"
    links = {link["text"]: link["href"] for link in page["links"]}
    unlinked = [entry for entry in entries if entry not in links]
    assert not unlinked, f"sources shown without a link: {unlinked}; links: {page['links']}"
    assert any(cited in entry for entry in entries), f"{cited} not cited: {entries}"
    for entry in entries:
        href = links[entry]
        assert href.startswith(("http://", "https://")), href
        if href.startswith("http://127.0.0.1"):  # the chat server's own source page
            opened = httpx.get(href, timeout=30, follow_redirects=True)
            assert opened.status_code == 200, f"{href}: HTTP {opened.status_code}"


def assert_notice_visible(page: dict[str, Any], notice: str) -> None:
    assert notice in page["text"], f"{notice!r} not in the answer:\n{page['prose'][:2000]}"
    assert page["visible"].get(notice), f"{notice!r} is in the answer but not visible"


def run_checks(checks: list[partial[None]]) -> list[str]:
    """Runs every check (each an ``assert_*`` with its arguments) and returns the failures, so
    one run reports everything that is wrong with a page."""
    failures = []
    for check in checks:
        try:
            check()
        except AssertionError as error:
            failures.append(f"{check.func.__name__}: {error}")
    return failures


def assert_offline(page: dict[str, Any]) -> None:
    """The page loaded nothing from outside this machine (Open WebUI runs offline)."""
    assert not page["external_requests"], page["external_requests"]


# --- the cases ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    name: str  # screenshot var/test-artifacts/open-webui-<name>.png
    question: str
    backend: str = "normal"  # a key of BACKENDS
    command: str = COMMAND
    notice: str | None = None  # a text the answer must show visibly


# Each backend is the chat server with these settings over the module's environment.
BACKENDS: dict[str, Callable[[], dict[str, str]]] = {
    "normal": dict,
    # the model server is a closed port and the answer is the model's: the degraded path
    "model-down": lambda: {
        "OPSASSIST_MODEL_SERVER_URL": f"http://127.0.0.1:{free_port()}",
        "OPSASSIST_CHAT_ANSWER_MODE": "model",
    },
}

CASES = [
    pytest.param(Case("pod-restarting", "pod keeps restarting, what do I do?"), id="english"),
    pytest.param(
        Case("pod-restarting-ru", "под постоянно перезапускается, что делать?"), id="russian"
    ),
    pytest.param(
        Case(
            "model-down",
            "pod keeps restarting, what do I do?",
            backend="model-down",
            notice="Model unavailable",
        ),
        id="model-down",
    ),
]


# --- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def index_env(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[dict[str, str]]:
    """A runbook index built with the library, its knowledge pack in Redis: the chat server's
    environment."""
    with indexed_env(tmp_path_factory.mktemp("webui-e2e"), redis_url, KEY) as values:
        yield values


@pytest.fixture(scope="module")
def backends(
    index_env: dict[str, str], model_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str], str]]:
    """The chat server of a backend name (``BACKENDS``), started on first use."""
    logs = tmp_path_factory.mktemp("webui-chat-servers")
    started: dict[str, str] = {}
    with contextlib.ExitStack() as stack:

        def get(name: str) -> str:
            if name not in started:
                env = {**index_env, **BACKENDS[name]()}
                started[name] = stack.enter_context(chat_server(env, logs / f"{name}.log"))
            return started[name]

        yield get


@dataclass
class OpenWebUI:
    """One Open WebUI (``scripts/open-webui``) on its own port and run folder, re-pointed (a
    restart: its configuration comes from the environment) when a case needs another backend."""

    run_dir: Path
    port: int = field(default_factory=free_port)
    backend: str | None = None
    started: bool = False

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, command: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "OPSASSIST_WEBUI_PORT": str(self.port),
            "OPSASSIST_WEBUI_RUN_DIR": str(self.run_dir),
            "OPSASSIST_WEBUI_OPENAI_URL": f"{self.backend}/v1",
            "OPSASSIST_WEBUI_OPENAI_KEY": KEY,
            "OPSASSIST_WEBUI_MODEL": MODEL,
        }
        return subprocess.run(
            [str(SCRIPT), command], env=env, capture_output=True, text=True, timeout=timeout
        )

    def pointed_at(self, backend: str) -> str:
        if self.backend == backend:
            return self.base
        if self.started:
            self.script("down", 120)
            self.started = False
        self.backend = backend
        if self.script("status", 30).returncode == 0:
            pytest.fail(f"something else answers on {self.base}; not starting Open WebUI there")
        up = self.script("up")
        if up.returncode != 0:
            pytest.fail(f"scripts/open-webui up failed:\n{up.stdout}\n{up.stderr}")
        self.started = True
        print(up.stdout.strip())  # the start time, in the test's output
        return self.base

    def stop(self) -> None:
        if self.started:
            self.script("down", 120)
            self.started = False


@pytest.fixture(scope="module")
def webui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenWebUI]:
    """Open WebUI's venv and Debian's Chromium (both idempotent), then one instance, stopped at
    the end of the module if this module started it."""
    for command, timeout in (("browser", 900), ("venv", 1800)):
        done = subprocess.run(
            [str(SCRIPT), command], capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            pytest.fail(f"scripts/open-webui {command} failed:\n{done.stdout}\n{done.stderr}")
    instance = OpenWebUI(tmp_path_factory.mktemp("open-webui"))
    try:
        yield instance
    finally:
        instance.stop()


def chat_requests(backend: str) -> float:
    """Chat completions the chat server has answered (all statuses), from its /metrics."""
    text = httpx.get(f"{backend}/metrics", timeout=10).text
    pattern = re.compile(
        r'^opsassist_http_request_duration_seconds_count\{[^}]*route="/v1/chat/completions"[^}]*\}'
        r" ([0-9.e+-]+)$",
        re.MULTILINE,
    )
    return sum(float(value) for value in pattern.findall(text))


# --- the test -------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES)
def test_open_webui_renders_the_answer(
    case: Case,
    backends: Callable[[str], str],
    webui: OpenWebUI,
    tmp_path: Path,
) -> None:
    backend = backends(case.backend)
    base = webui.pointed_at(backend)
    before = chat_requests(backend)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / f"open-webui-{case.name}.png"
    page = ask_in_browser(
        base, case.question, screenshot, tmp_path, [case.notice] if case.notice else []
    )
    print(json.dumps({"case": case.name, "timings": page["timings"]}))

    assert page["model"] == MODEL
    checks = [
        partial(assert_offline, page),
        partial(assert_command_rendered, page, case.command),
        partial(assert_no_raw_html, page),
        partial(assert_no_repeated_lines, page),
        partial(assert_sources_are_links, page),
    ]
    if case.notice:
        checks.insert(1, partial(assert_notice_visible, page, case.notice))
    failures = run_checks(checks)
    # Open WebUI asked the chat server this question and nothing else (no title, tags,
    # follow-ups or autocomplete: scripts/open-webui turns those off); a late task call would
    # arrive within seconds of the answer.
    time.sleep(3)
    asked = chat_requests(backend) - before
    if asked != 1:
        failures.append(f"the chat server got {asked:g} chat requests for one question")
    assert not failures, f"{case.name} ({screenshot}):\n\n" + "\n\n".join(failures)

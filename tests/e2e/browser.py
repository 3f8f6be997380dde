"""The browser of the e2e tests, in one place: Debian's Chromium (/usr/bin/chromium, from
``scripts/open-webui browser``) driven headless by Playwright for Python, which is installed in
Open WebUI's venv (serving/open_webui/requirements.lock), not the project's; ``playwright
install`` is never run.

A test writes its browser part as a function ``browse(request) -> dict`` that uses only the
standard library, Playwright and ``launch`` below; ``in_browser`` ships the source of both to
that venv's Python, hands it ``request`` on stdin and returns what ``browse`` returned (through
a JSON file).
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import ROOT

WEBUI_PYTHON = Path(os.environ.get("OPSASSIST_WEBUI_VENV", ROOT / ".venv-webui")) / "bin" / "python"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def launch(playwright: Any, profile: str, request: dict[str, Any], **options: Any) -> Any:
    """The one Chromium launch of the e2e tests (runs in Open WebUI's venv): a persistent
    context on a fresh profile folder, headless, en-US, UTC; ``options`` add to or override
    Playwright's context options (``viewport``, ...)."""
    settings = {
        "executable_path": request["chromium"],
        "args": request["args"],
        "headless": True,
        "locale": "en-US",
        "timezone_id": "UTC",
        **options,
    }
    return playwright.chromium.launch_persistent_context(profile, **settings)


def airflow_sign_in(context: Any, base: str, user: str, password: str) -> Any:
    """The context's page (2 min default timeout), signed in to the Airflow UI at ``base`` as
    ``user``: returns once the browser has left the login page."""
    page = context.pages[0] if context.pages else context.new_page()
    page.set_default_timeout(120_000)
    page.goto(base + "/", wait_until="load")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/auth/" not in url)
    return page


MAIN = """
import json, sys
request = json.load(sys.stdin)
result = browse(request)
with open(request["result"], "w", encoding="utf-8") as out:
    json.dump(result, out)
"""


def in_browser(
    browse: Callable[[dict[str, Any]], dict[str, Any]],
    request: dict[str, Any],
    workdir: Path,
    timeout: float = 600,
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any] | None]:
    """Runs ``browse(request)`` in Open WebUI's venv (Chromium and its arguments added to the
    request); returns the process and ``browse``'s result (``None`` if it wrote none)."""
    result = workdir / f"browse-{uuid.uuid4().hex[:8]}.json"
    request = {"chromium": CHROMIUM, "args": CHROMIUM_ARGS, **request, "result": str(result)}
    parts = [launch, airflow_sign_in, browse]
    source = "\n\n".join(["from __future__ import annotations", *map(inspect.getsource, parts)])
    run = subprocess.run(
        [str(WEBUI_PYTHON), "-c", source + MAIN],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=workdir,
    )
    if run.returncode != 0 or not result.exists():
        return run, None
    return run, dict(json.loads(result.read_text(encoding="utf-8")))

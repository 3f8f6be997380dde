"""The chart's Vault Agent path (secrets.provider=vaultAgent): the template the injector's
annotation carries is rendered by consul-template - Vault Agent's own template engine, built from
the Go module proxy by scripts/tools.sh - and the file it writes, sourced the way the chat
server's command sources it, gives opsassist's Settings the secret values unchanged, quotes,
dollars and backticks included.

Vault itself is the one stub here: OpenBao's server module is not served by the Go module proxy,
and building HashiCorp Vault's server from it did not finish in 45 minutes on the two shared
cores, too much for every CI run. The stub answers the two Vault HTTP API calls consul-template
makes for a KV v2 secret (the mount lookup and the read), exactly as Vault answers them, and
checks the token.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.deploy import chart

TOKEN = "test-token-not-a-secret"
HOSTILE = 'it\'s $HOME `id` "quoted" \\ back,slash'


class FakeVault(BaseHTTPRequestHandler):
    """Vault's KV v2 read API for the entries in `server.entries` (path -> data)."""

    server: Any

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        if self.headers.get("X-Vault-Token") != TOKEN:
            self.reply(403, {"errors": ["permission denied"]})
            return
        path = self.path.split("?")[0].removeprefix("/v1/")
        if path.startswith("sys/internal/ui/mounts/secret/"):
            mount = {"path": "secret/", "type": "kv", "options": {"version": "2"}}
            self.reply(200, {"data": mount, "lease_duration": 0, "renewable": False})
        elif path in self.server.entries:
            metadata = {"version": 1, "created_time": "2026-01-01T00:00:00Z", "destroyed": False}
            body = {"data": self.server.entries[path], "metadata": metadata}
            self.reply(200, {"data": body, "lease_duration": 0, "renewable": False})
        else:
            self.reply(404, {"errors": []})

    def reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def vault() -> Iterator[Any]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeVault)
    server.requests = []  # type: ignore[attr-defined]
    server.entries = {}  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def render_template(vault: Any, template: str, tmp_path: Path, token: str = TOKEN) -> Path:
    source, target = tmp_path / "in.ctmpl", tmp_path / "out.env"
    source.write_text(template)
    result = subprocess.run(
        [
            chart.tool("consul-template"),
            "-once",
            f"-vault-addr=http://127.0.0.1:{vault.server_address[1]}",
            f"-vault-token={token}",
            "-vault-renew-token=false",
            "-vault-retry=false",
            f"-template={source}:{target}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    return target


def chat_pod() -> tuple[dict[str, str], list[str]]:
    deployment = chart.one(
        chart.render("dev", "secrets.provider=vaultAgent"), "Deployment", "opsassist-chat"
    )
    template = deployment["spec"]["template"]
    return template["metadata"]["annotations"], template["spec"]["containers"][0]["command"]


def test_the_injected_file_gives_the_chat_server_its_secrets(vault: Any, tmp_path: Path) -> None:
    annotations, command = chat_pod()
    spec = chart.values("dev")["secrets"]["chat"]
    name = spec["name"]
    path = annotations[f"vault.hashicorp.com/agent-inject-secret-{name}.env"]
    values = {key: f"{key.lower()}-{HOSTILE}" for key in spec["keys"]}
    values["OPSASSIST_REDIS_URL"] = "redis://:p'w$x@redis-master:6379/0"
    values["OPSASSIST_MODEL_API_KEY"] = ""  # unused keys are empty strings in Vault
    vault.entries[path] = values
    template = annotations[f"vault.hashicorp.com/agent-inject-template-{name}.env"]
    env_file = render_template(vault, template, tmp_path)
    assert f"/v1/{path}" in vault.requests
    # sourced as the chat container's command does (". /vault/secrets/<name>.env && exec ...")
    prefix = f". /vault/secrets/{name}.env && exec "
    assert command[:2] == ["/bin/sh", "-c"] and command[2].startswith(prefix)
    probe = (
        "import json; from opsassist.settings import Settings; s = Settings(); "
        "print(json.dumps({'api_keys': s.api_keys.get_secret_value(), "
        "'redis_url': s.redis_url.get_secret_value(), "
        "'opensearch_password': s.opensearch_password.get_secret_value(), "
        "'model_api_key': s.model_api_key.get_secret_value()}))"
    )
    result = subprocess.run(
        ["/bin/sh", "-c", f'. {env_file} && exec {sys.executable} -c "{probe}"'],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    settings = json.loads(result.stdout.strip().splitlines()[-1])
    assert settings == {
        "api_keys": values["OPSASSIST_API_KEYS"],
        "redis_url": values["OPSASSIST_REDIS_URL"],
        "opensearch_password": values["OPSASSIST_OPENSEARCH_PASSWORD"],
        "model_api_key": "",
    }


def test_a_wrong_token_renders_nothing(vault: Any, tmp_path: Path) -> None:
    """The check above can fail: without Vault's answer there is no file to source."""
    annotations, _ = chat_pod()
    name = chart.values("dev")["secrets"]["chat"]["name"]
    vault.entries[annotations[f"vault.hashicorp.com/agent-inject-secret-{name}.env"]] = {"x": "y"}
    template = annotations[f"vault.hashicorp.com/agent-inject-template-{name}.env"]
    with pytest.raises(AssertionError):
        render_template(vault, template, tmp_path, token="wrong")
    assert not (tmp_path / "out.env").exists()

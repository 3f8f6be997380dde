"""The real KServe model server (scripts/model-server, serving/model_server) over HTTP.

The session fixture `model_server` (tests/conftest.py) starts the server with
`scripts/model-server up` unless it runs (the first run creates the model venv: minutes). Both
protocols are checked: OpenAI (with the official client) and the Open Inference Protocol v2.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "model-server"
PORT = int(os.environ.get("OPSASSIST_MODEL_PORT", "18080"))
NAME = os.environ.get("OPSASSIST_MODEL_NAME", "smollm2-135m-instruct")
V2_NAME = f"{NAME}-v2"
BASE = f"http://127.0.0.1:{PORT}"
MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "What does kubectl get pods do? Answer briefly."}
]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(model_server: str) -> str:
    return model_server


@pytest.fixture(scope="module")
def client(server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server}/openai/v1", api_key="unused", timeout=120)


def test_openai_routes_exist(server: str) -> None:
    """Fails when kserve could not import vLLM's types: it then silently skips these routes."""
    models = httpx.get(f"{server}/openai/v1/models", timeout=30)
    assert models.status_code == 200, "OpenAI routes missing: are vLLM's types importable?"
    for route in ("/openai/v1/chat/completions", "/openai/v1/completions"):
        response = httpx.post(f"{server}{route}", json={}, timeout=30)
        assert response.status_code != 404, f"{route} is not registered"


def test_models_listed(server: str, client: openai.OpenAI) -> None:
    assert NAME in [m.id for m in client.models.list().data]
    v2 = httpx.get(f"{server}/v2/models", timeout=30).json()
    assert {NAME, V2_NAME} <= set(v2["models"])


def test_health_and_readiness(server: str) -> None:
    assert httpx.get(f"{server}/v2/health/ready", timeout=30).json() == {"ready": True}
    ready = httpx.get(f"{server}/v2/models/{V2_NAME}/ready", timeout=30)
    assert ready.status_code == 200
    assert ready.json()["ready"] is True


def test_chat_completion_returns_text_and_usage(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=NAME, messages=MESSAGES, max_tokens=16, temperature=0
    )
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens > 10  # the chat template adds a system prompt
    assert 1 <= usage.completion_tokens <= 16
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_greedy_is_deterministic(client: openai.OpenAI) -> None:
    texts = {
        client.chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=8, temperature=0)
        .choices[0]
        .message.content
        for _ in range(2)
    }
    assert len(texts) == 1


def test_repetition_penalty_reaches_generation(client: openai.OpenAI, server: str) -> None:
    """vLLM's ``repetition_penalty`` request field (OpenAI route and v2 parameter) changes what
    greedy decoding writes once the model starts repeating itself."""
    looping = [{"role": "user", "content": "Repeat the word pod forever: pod pod pod pod"}]

    def greedy(penalty: float) -> str:
        answer = client.chat.completions.create(
            model=NAME,
            messages=looping,  # type: ignore[arg-type]
            max_tokens=24,
            temperature=0,
            extra_body={"repetition_penalty": penalty},
        )
        return answer.choices[0].message.content or ""

    plain, penalised = greedy(1.0), greedy(1.8)
    assert plain != penalised
    assert penalised.lower().count("pod") < plain.lower().count("pod")
    body = {
        "inputs": [{"name": "text_input", "shape": [1], "datatype": "BYTES", "data": ["pod pod"]}],
        "parameters": {"max_tokens": 12, "temperature": 0, "repetition_penalty": 1.8},
    }
    v2 = httpx.post(f"{server}/v2/models/{V2_NAME}/infer", json=body, timeout=120)
    assert v2.status_code == 200, v2.text


def test_max_tokens_and_stop(client: openai.OpenAI) -> None:
    short = client.chat.completions.create(
        model=NAME, messages=MESSAGES, max_tokens=3, temperature=0
    )
    assert short.usage is not None and short.usage.completion_tokens == 3
    assert short.choices[0].finish_reason == "length"

    full = client.chat.completions.create(
        model=NAME, messages=MESSAGES, max_tokens=24, temperature=0
    )
    text = full.choices[0].message.content or ""
    words = text.split()
    assert len(words) >= 3, text
    stop = words[2]
    cut = client.chat.completions.create(
        model=NAME, messages=MESSAGES, max_tokens=24, temperature=0, stop=[stop]
    )
    assert cut.choices[0].message.content == text[: text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_chat_streaming_with_openai_client(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=NAME,
        messages=MESSAGES,
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces: list[str] = []
    finish: list[str] = []
    usage = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                finish.append(choice.finish_reason)
    assert len(pieces) >= 3, pieces
    assert "".join(pieces).strip()
    assert finish in (["stop"], ["length"])
    assert usage is not None and usage.completion_tokens >= len(pieces)


def test_chat_streaming_sse_framing(server: str) -> None:
    body = {"model": NAME, "messages": MESSAGES, "max_tokens": 12, "temperature": 0, "stream": True}
    with httpx.stream(
        "POST", f"{server}/openai/v1/chat/completions", json=body, timeout=120
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    events = [e for e in raw.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events), raw
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e[len("data: ") :]) for e in events[:-1]]
    assert len(chunks) >= 3
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


def test_text_completion(client: openai.OpenAI) -> None:
    completion = client.completions.create(
        model=NAME, prompt="The capital of France is", max_tokens=6, temperature=0
    )
    assert completion.choices[0].text.strip()
    assert completion.usage is not None and completion.usage.completion_tokens <= 6


def test_v2_infer_returns_text_output(server: str) -> None:
    request = {
        "inputs": [
            {
                "name": "text_input",
                "shape": [1],
                "datatype": "BYTES",
                "data": ["The capital of France is"],
            }
        ],
        "parameters": {"max_tokens": 24},
    }
    response = httpx.post(f"{server}/v2/models/{V2_NAME}/infer", json=request, timeout=120)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == V2_NAME
    [output] = body["outputs"]
    assert output["name"] == "text_output"
    assert output["datatype"] == "BYTES"
    assert isinstance(output["data"][0], str) and output["data"][0].strip()


def test_unknown_model_is_an_error(server: str, client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=MESSAGES, max_tokens=4)
    v2 = httpx.post(
        f"{server}/v2/models/no-such-model/infer",
        json={"inputs": [{"name": "text_input", "shape": [1], "datatype": "BYTES", "data": ["x"]}]},
        timeout=30,
    )
    assert v2.status_code == 404


def test_unsupported_request_is_a_bad_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=4, n=2)


def test_listens_on_loopback_only(server: str) -> None:
    """KServe binds 0.0.0.0 by default; the server must listen on 127.0.0.1 only."""
    listening: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, port = local.rsplit(":", 1)
            if state == "0A" and int(port, 16) == PORT:  # 0A: LISTEN
                listening.add(address)
    assert listening == {"0100007F"}, f"listening addresses (hex): {listening}"

"""The investigating agent diagnoses incidents on the real kube-apiserver (``scripts/services up
kube-apiserver prometheus postgres``), reading with the read-only identity, auditing to the real
PostgreSQL, querying the real Prometheus.

No kubelet, scheduler or controller runs: each incident's pods and Job are created through the
API and what the kubelet, scheduler and Job controller would report (OOMKilled termination,
ImagePullBackOff, the Unschedulable condition, the Job's Failed condition) is written through
the status subresource — real API behaviour (see ``agent_cluster``). Pod logs go through the API
server's ``pods/log`` proxy to ``FakeKubelet`` (no kubelet can run here). There is no runbook
index in these tests: the runbook search returns nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import require_service, service_port
from tests.integration import agent_cluster

pytestmark = [pytest.mark.slow, pytest.mark.services]


@pytest.fixture(scope="module")
def incidents() -> Iterator[None]:
    require_service("kube-apiserver", service_port("kube_apiserver", 16443))
    kubelet = agent_cluster.build()
    yield
    kubelet.close()


@pytest.fixture(scope="module")
def agent(incidents: None) -> Any:
    require_service("postgres", service_port("postgres", 15432))
    require_service("prometheus", service_port("prometheus", 19090))
    from opsassist.agent import kube
    from opsassist.agent.loop import Agent
    from opsassist.agent.store import AgentStore
    from opsassist.agent.tools import build_registry
    from opsassist.settings import Settings

    dsn = f"postgresql://opsassist:opsassist@127.0.0.1:{service_port('postgres', 15432)}/opsassist"
    settings = Settings(
        agent_enabled=True,
        agent_summarize=False,
        agent_namespaces=f"{agent_cluster.NS},default",
        audit_dsn=dsn,
        kube_api_url=f"https://127.0.0.1:{service_port('kube_apiserver', 16443)}",
        kube_ca_file=str(agent_cluster.KUBE / "pki" / "ca.crt"),
        kube_read_token=agent_cluster.token("reader"),
        kube_dryrun_token=agent_cluster.token("dryrun"),
        signals_prometheus_url=f"http://127.0.0.1:{service_port('prometheus', 19090)}",
    )
    registry = build_registry(settings, kube.api_client(settings, "read"), lambda a, q, k: [])
    dryrun = kube.api_client(settings, "dryrun")
    return Agent(settings, registry, AgentStore(dsn), lambda: dryrun, lambda conf: "")


def ask(agent: Any, question: str) -> tuple[str, list[dict[str, Any]], Any]:
    from opsassist.agent.replay import statement
    from opsassist.agent.roles import Principal
    from opsassist.logs import correlation_scope

    with correlation_scope(f"incident-{uuid.uuid4().hex[:8]}"):
        reply = agent.respond(question, Principal("vera", "viewer"))
    assert reply is not None, question
    calls = [{**r.call.to_json(), "ok": r.ok} for r in reply.runs]
    assert reply.actions == [], reply.actions  # diagnosis only: nothing proposed
    return statement(reply.text), calls, reply


def called(calls: list[dict[str, Any]], tool: str, **args: Any) -> dict[str, Any]:
    for call in calls:
        if call["tool"] == tool and all(call["arguments"].get(k) == v for k, v in args.items()):
            return call
    raise AssertionError(f"no {tool} {args} in {[(c['tool'], c['arguments']) for c in calls]}")


def test_oomkilled_pod_is_found_from_its_deployment_and_diagnosed(agent: Any) -> None:
    said, calls, _ = ask(agent, "why does cart-api keep getting OOM killed?")
    pod = "cart-api-6f7d8c9b5-q2w4e"
    assert called(calls, "k8s_find", name="cart-api")["ok"]
    assert called(calls, "k8s_describe", kind="pods", namespace=agent_cluster.NS, name=pod)["ok"]
    logs = called(calls, "k8s_logs", pod=pod, previous=True)
    assert logs["ok"]  # through the API server's pods/log proxy
    assert said.startswith("Root cause:") and "OOMKilled" in said and "128Mi" in said
    assert "exit 137" in said and pod in said


def test_image_pull_failure_names_the_image_and_the_registry_answer(agent: Any) -> None:
    said, calls, _ = ask(agent, "the image-web rollout is stuck, what's going on?")
    pod = "image-web-7c8d9f6b5-h3j5k"
    called(calls, "k8s_describe", kind="pods", namespace=agent_cluster.NS, name=pod)
    called(calls, "k8s_events", namespace=agent_cluster.NS, name=pod)
    assert "ImagePullBackOff" in said and "image-web:9.9.9-missing" in said and "not found" in said
    assert not [c for c in calls if c["tool"] == "k8s_logs"]  # the container never ran


def test_pending_pod_with_a_node_selector_no_node_has(agent: Any) -> None:
    said, calls, _ = ask(agent, "gpu-scorer pods are Pending, why?")
    called(calls, "k8s_describe", kind="pods", name="gpu-scorer-5b6c7d8e9-m4n6p")
    assert called(calls, "k8s_get", kind="nodes")["ok"]
    assert "node affinity/selector" in said and "accelerator=nvidia-t4" in said
    assert "no node has the label accelerator=nvidia-t4" in said


def test_failed_job_is_diagnosed_with_its_pod_logs(agent: Any) -> None:
    said, calls, _ = ask(agent, f"why did job nightly-export fail in {agent_cluster.NS}?")
    called(calls, "k8s_describe", kind="jobs", namespace=agent_cluster.NS, name="nightly-export")
    assert called(calls, "k8s_logs", pod="nightly-export-x7k2m")["ok"]
    assert "BackoffLimitExceeded" in said and "exit 2" in said
    assert "password authentication failed" in said


def test_bad_input_gets_a_clear_answer_and_no_guess(agent: Any) -> None:
    said, calls, reply = ask(agent, "why is ghost-service failing?")
    assert said.startswith("Not found:") and "ghost-service" in said
    assert [c["tool"] for c in calls] == ["search_runbooks", "k8s_find"]
    said, calls, reply = ask(agent, "describe pod coredns-1 -n kube-system")
    assert "kube-system is not on the agent's allow-list" in said
    assert any("not on the allow-list" in r for r in reply.refusals)
    assert [c["tool"] for c in calls] == ["search_runbooks"]  # nothing was read in its place

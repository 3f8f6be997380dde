"""The investigating planner on recorded runs: the frozen scenario set, the replayed API server
and Prometheus, the scorer, question parsing, and the model planner's prompt and tool schemas
against a stand-in model that emits OpenAI tool calls (GPT-OSS-20b behind KServe cannot run
here)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from opsassist.agent import investigate, kuberead, model, replay
from opsassist.agent.kuberead import ApiError
from opsassist.agent.registry import AllowList, ToolCall
from opsassist.evaluation.evalset import FrozenSplitChanged
from opsassist.settings import Settings

ALLOW = AllowList(
    frozenset({"payments", "checkout", "data", "web", "default"}),
    frozenset(kuberead.RESOURCES),
)


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    return replay.load()


def test_the_set_is_large_split_and_its_test_split_is_frozen(
    data: dict[str, Any], tmp_path: Path
) -> None:
    scenarios = data["scenarios"]
    assert len(scenarios) >= 60 and len({s["id"] for s in scenarios}) == len(scenarios)
    splits = [s["split"] for s in scenarios]
    assert splits.count("test") >= 30 and splits.count("dev") >= 30
    for scenario in scenarios:
        assert set(scenario["fixtures"]) <= set(data["fixtures"]), scenario["id"]
    edited = copy.deepcopy(data)
    test = next(s for s in edited["scenarios"] if s["split"] == "test")
    test["question"] += " (reworded)"
    path = tmp_path / "agent_incidents.yaml"
    path.write_text(yaml.safe_dump(edited))
    (tmp_path / "agent_incidents.test.sha256").write_text(
        replay.DEFAULT_SET.with_suffix(".test.sha256").read_text()
    )
    with pytest.raises(FrozenSplitChanged, match="never edited"):
        replay.load(path)
    dev = next(s for s in edited["scenarios"] if s["split"] == "dev")
    test["question"] = test["question"].removesuffix(" (reworded)")
    dev["question"] += " (dev may change)"
    path.write_text(yaml.safe_dump(edited))
    assert replay.load(path)["scenarios"]  # dev edits are allowed


def test_replayed_api_answers_like_the_api_server(data: dict[str, Any]) -> None:
    source, prom = replay.fixture(data, {"fixtures": ["base", "oom", "crash-exit1"]})
    pods = kuberead.items(source, "pods", "payments", labelSelector="app=payments-api")
    assert [kuberead.name_of(p) for p in pods] == ["payments-api-7f9c6d5b8-kx2lp"]
    with pytest.raises(ApiError) as missing:
        kuberead.read(source, "jobs", "payments", "nope")
    assert missing.value.status == 404 and "jobs.batch" in missing.value.body
    with pytest.raises(ApiError) as never:  # restartCount 0: no previous container
        kuberead.logs(source, "payments", "payments-gateway-6c8f9d7b5-2mzqp", previous=True)
    assert never.value.status == 400
    text = kuberead.logs(
        source, "data", "ledger-worker-84d6c7b9f-w5tnv", previous=True, grep="refused"
    )
    assert text.splitlines()[1:] == [
        "2026-12-06T02:09:59Z ERROR could not connect to postgres at ledger-db.data.svc:5432: "
        "connection refused"
    ]
    other = prom.get(
        "/api/v1/query", {"query": 'container_memory_working_set_bytes{namespace="web"}'}
    )
    assert other["result"] == []  # another namespace's series are not returned
    mine = prom.get(
        "/api/v1/query", {"query": 'container_memory_working_set_bytes{namespace="payments"}'}
    )
    assert mine["result"][0]["value"][1] == "268000000"


def test_describe_shows_configmap_keys_never_values(data: dict[str, Any]) -> None:
    source, _ = replay.fixture(data, {"fixtures": ["base", "crash-config"]})
    text = kuberead.describe(source, "configmaps", "web", "session-cache-config")
    assert "keys=redis.conf" in text and "s3cr3t" not in text and "maxmemory" not in text


def test_questions_are_parsed_for_namespace_names_and_kinds() -> None:
    q = investigate.parse("why are the pods in the payments namespace failing?", ALLOW)
    assert q is not None and q.namespace == "payments" and q.refused_namespace is None
    assert q.kinds == ["pods"] and not [n for n in q.names if n[2]]
    q = investigate.parse("show me the logs for deployment ledger-worker", ALLOW)
    assert q is not None and q.names[0] == ("ledger-worker", "deployments", True) and q.wants_logs
    q = investigate.parse("show me the logs for the pod cart-1-abc", ALLOW)
    assert q is not None and q.names[0][0] == "cart-1-abc"
    for text, ns in (
        ("describe pod x-1 -n vault", "vault"),
        ("crashes in kube-system", "kube-system"),
    ):
        q = investigate.parse(text, ALLOW)
        assert q is not None and q.refused_namespace == ns
    assert (
        investigate.parse("what is the difference between liveness and readiness?", ALLOW) is None
    )
    assert investigate.parse("how do I size JVM memory limits?", ALLOW) is None


def test_scorer_counts_only_the_answers_own_words_and_forbidden_reads(data: dict[str, Any]) -> None:
    scenario = next(s for s in data["scenarios"] if s["id"] == "crash-why-worker")

    class Run:
        def __init__(self, tool: str, args: dict[str, Any]) -> None:
            self.call = ToolCall(tool, args)

    class Reply:
        def __init__(self) -> None:
            self.runs = [
                Run(
                    "k8s_describe",
                    {"kind": "pods", "namespace": "data", "name": "ledger-worker-84d6c7b9f-w5tnv"},
                ),
                Run(
                    "k8s_logs",
                    {"namespace": "data", "pod": "ledger-worker-84d6c7b9f-w5tnv", "previous": True},
                ),
            ]
            self.refusals: list[str] = []
            self.text = "Tool results:\n[1] CrashLoopBackOff exit 1 connection refused"

    reply = Reply()
    dumped = replay.score(scenario, reply, 0, 0.0)
    assert dumped.recall == (2, 2) and dumped.cause_ok is False and not dumped.passed
    reply.text = "Root cause: CrashLoopBackOff, exit 1: connection refused [2]\n\n" + reply.text
    assert replay.score(scenario, reply, 0, 0.0).passed
    forbidding = {**scenario, "expect": {**scenario["expect"], "forbid": ["k8s_logs"]}}
    assert "forbidden calls" in replay.score(forbidding, reply, 0, 0.0).reason
    assert "write(s) not requested" in replay.score(scenario, reply, 1, 0.0).reason
    reply.runs.append(Run("k8s_describe", {"kind": "pods", "namespace": "data", "name": "other-1"}))
    assert not replay.score(scenario, reply, 0, 0.0).target_ok


def test_investigation_on_the_dev_split_passes_and_never_writes(data: dict[str, Any]) -> None:
    build, make = replay.replay_agent(Settings(), "investigate")
    outcomes = replay.run_scenarios(data, build, make, "dev")
    summary = replay.summarize(outcomes)
    assert summary.writes == 0
    assert summary.passed >= 0.85, [(o.id, o.reason) for o in outcomes if not o.passed]


def test_the_step_budget_bounds_an_investigation(data: dict[str, Any]) -> None:
    settings = Settings(agent_max_steps=3)
    build, make = replay.replay_agent(settings, "investigate")
    scenario = next(s for s in data["scenarios"] if s["id"] == "job-why-fail")
    source, prom = replay.fixture(data, scenario)
    store = replay.MemoryStore()
    agent = make(build(source, prom, ALLOW), store)
    from opsassist.agent.roles import Principal

    reply = agent.respond(scenario["question"], Principal("eval", "viewer"))
    assert len(reply.runs) == 3 and reply.refusals == []  # it stops; nothing refused
    assert {row["event"] for row in store.rows} == {"tool_call"}


def test_model_planner_prompt_and_schemas_drive_a_tool_calling_model(
    data: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stand-in for GPT-OSS-20b behind KServe (it cannot run here): it answers the OpenAI
    chat route with ``tool_calls`` built only from what it was sent (the tool schemas and the
    tool results), as a tool-calling model would, and a final answer. The loop runs its calls
    through the registry over the recorded cluster."""
    sent: list[dict[str, Any]] = []

    def stand_in(settings: Settings, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        sent.append(payload)
        tools = {t["function"]["name"]: t["function"] for t in payload["tools"]}
        results = [m for m in payload["messages"] if m["role"] == "tool"]
        assert "k8s_find" in tools and "previous" in tools["k8s_logs"]["parameters"]["properties"]
        if not results:
            call = ("k8s_find", {"name": "ledger-worker"})
        elif len(results) == 1:
            line = results[0]["content"].splitlines()[0]  # "deployment/x namespace=y match=exact"
            ns = line.split("namespace=")[1].split()[0]
            call = (
                "k8s_get",
                {"kind": "pods", "namespace": ns, "label_selector": "app=ledger-worker"},
            )
        elif len(results) == 2:
            pod = results[1]["content"].split()[0].removeprefix("pod/")
            call = ("k8s_logs", {"namespace": "data", "pod": pod, "previous": True})
        else:
            return {
                "choices": [
                    {
                        "message": {
                            "role": "assistant",
                            "content": "Root cause: the "
                            "worker cannot reach postgres (connection refused) [3].",
                        }
                    }
                ]
            }
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": f"c{len(results)}",
                    "type": "function",
                    "function": {"name": call[0], "arguments": json.dumps(call[1])},
                }
            ],
        }
        return {"choices": [{"message": message}]}

    monkeypatch.setattr(model, "_post", stand_in)
    build, make = replay.replay_agent(Settings(), "model")
    scenario = next(s for s in data["scenarios"] if s["id"] == "crash-why-worker")
    source, prom = replay.fixture(data, scenario)
    store = replay.MemoryStore()
    from opsassist.agent.roles import Principal

    reply = make(build(source, prom, ALLOW), store).respond(
        scenario["question"], Principal("e", "viewer")
    )
    assert [r.call.tool for r in reply.runs] == ["k8s_find", "k8s_get", "k8s_logs"]
    assert all(r.ok for r in reply.runs) and "connection refused" in reply.runs[-1].output
    assert reply.text.startswith("Root cause: the worker cannot reach postgres")
    system = sent[0]["messages"][0]["content"]
    assert "k8s_find" in system and "allow-list" in system and "previous" in system


def test_describe_covers_every_read_kind() -> None:
    objects: list[dict[str, Any]] = [
        {
            "kind": "Ingress",
            "metadata": {"name": "shop", "namespace": "web"},
            "spec": {
                "ingressClassName": "nginx",
                "rules": [
                    {
                        "host": "shop.example",
                        "http": {
                            "paths": [{"path": "/", "backend": {"service": {"name": "storefront"}}}]
                        },
                    }
                ],
            },
        },
        {
            "kind": "NetworkPolicy",
            "metadata": {"name": "deny-all", "namespace": "web"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
        },
        {
            "kind": "DaemonSet",
            "metadata": {"name": "log-agent", "namespace": "web"},
            "spec": {"selector": {"matchLabels": {"app": "log-agent"}}},
            "status": {"desiredNumberScheduled": 3, "numberReady": 2, "numberUnavailable": 1},
        },
        {"kind": "StorageClass", "metadata": {"name": "gp3"}, "provisioner": "ebs.csi.aws.com"},
        {
            "kind": "Service",
            "metadata": {"name": "storefront", "namespace": "web"},
            "spec": {
                "selector": {"app": "storefront"},
                "ports": [{"port": 80, "targetPort": 8080}],
            },
        },
    ]
    source = replay.ReplaySource(objects, {})
    assert "rules=shop.example/->storefront" in kuberead.describe(
        source, "ingresses", "web", "shop"
    )
    policy = kuberead.describe(source, "networkpolicies", "web", "deny-all")
    assert "pods=all" in policy and "types=Ingress" in policy
    assert "unavailable=1" in kuberead.describe(source, "daemonsets", "web", "log-agent")
    assert "provisioner=ebs.csi.aws.com" in kuberead.describe(source, "storageclasses", None, "gp3")
    service = kuberead.describe(source, "services", "web", "storefront")
    assert "endpoints: ready=0 not-ready=0" in service and "selector app=storefront: 0" in service
    with pytest.raises(ValueError, match="namespaced"):
        kuberead.describe(source, "services", None, "storefront")

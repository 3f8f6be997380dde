"""Time from question to the agent's diagnostic answer against the real kube-apiserver and
Prometheus of ``scripts/services`` (and the audit in the real PostgreSQL), on the incidents of
``tests/integration/agent_cluster.py`` (OOMKilled, image pull failure, Pending on a node
selector, failed Job) and two bad inputs; the old keyword planner on the same questions, same
run, as the baseline. No model is called (summaries off): this is the planner and the tools.

    scripts/services up kube-apiserver prometheus postgres
    .venv/bin/python -m benchmarks.agent_latency [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

from benchmarks._common import percentile
from tests.conftest import service_port
from tests.integration import agent_cluster

QUESTIONS = [
    "why does cart-api keep getting OOM killed?",
    "the image-web rollout is stuck, what's going on?",
    "gpu-scorer pods are Pending, why?",
    f"why did job nightly-export fail in {agent_cluster.NS}?",
    "why is ghost-service failing?",
    "describe pod coredns-1 -n kube-system",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    from opsassist.agent import kube
    from opsassist.agent.loop import Agent
    from opsassist.agent.roles import Principal
    from opsassist.agent.store import AgentStore
    from opsassist.agent.tools import build_registry
    from opsassist.settings import Settings

    kubelet = agent_cluster.build()
    dsn = f"postgresql://opsassist:opsassist@127.0.0.1:{service_port('postgres', 15432)}/opsassist"
    results: dict[str, list[float]] = {}
    calls: dict[str, list[int]] = {}
    try:
        for planner in ("investigate", "deterministic"):
            settings = Settings(
                agent_planner=planner,
                agent_summarize=False,
                agent_namespaces=f"{agent_cluster.NS},default",
                audit_dsn=dsn,
                kube_api_url=f"https://127.0.0.1:{service_port('kube_apiserver', 16443)}",
                kube_ca_file=str(agent_cluster.KUBE / "pki" / "ca.crt"),
                kube_read_token=agent_cluster.token("reader"),
                signals_prometheus_url=f"http://127.0.0.1:{service_port('prometheus', 19090)}",
            )
            registry = build_registry(
                settings, kube.api_client(settings, "read"), lambda a, q, k: []
            )
            agent = Agent(settings, registry, AgentStore(dsn), lambda: None, lambda conf: "")
            who = Principal("bench", "viewer")
            agent.respond(QUESTIONS[0], who)  # warm-up (connections, imports)
            for _ in range(args.rounds):
                for question in QUESTIONS:
                    started = time.perf_counter()
                    reply = agent.respond(question, who)
                    results.setdefault(planner, []).append(time.perf_counter() - started)
                    calls.setdefault(planner, []).append(len(reply.runs) if reply else 0)
    finally:
        kubelet.close()
    print(f"agent latency: {len(QUESTIONS)} questions x {args.rounds} rounds, real services")
    for planner, seconds in results.items():
        print(
            f"{planner:<14} p50 {percentile(seconds, 50) * 1000:7.0f} ms  "
            f"p95 {percentile(seconds, 95) * 1000:7.0f} ms  "
            f"mean tool calls {statistics.fmean(calls[planner]):.1f}"
        )
    new = percentile(results["investigate"], 50)
    old = percentile(results["deterministic"], 50)
    print(f"ratio investigate/deterministic p50: {new / old:.2f}x")


if __name__ == "__main__":
    main()

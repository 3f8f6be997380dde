"""The action agent on recorded incidents (evalsets/agent_incidents.yaml): each scenario's whole
loop (first plan and follow-ups) replayed over recorded API-server and Prometheus responses, for
the investigating planner and the old keyword planner, on the frozen test split and on dev, in
the same run.

    .venv/bin/python -m benchmarks.agent_incidents          # figures
    .venv/bin/python -m benchmarks.agent_incidents -v       # + each failed scenario and why

Figures: pass rate; expected-tool recall (expected calls made with the right arguments / all
expected calls); target (the right namespace and object, and no other object's details read);
cause (the answer's own statement names the root cause); writes (write actions proposed that the
user did not ask for). Ratio: the investigating planner's test pass rate / the old planner's.
"""

from __future__ import annotations

import argparse
import statistics
import time

from opsassist.agent.replay import load, replay_agent, run_scenarios, summarize
from opsassist.settings import get_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="print failed scenarios")
    parser.add_argument("--planner", action="append", default=[], help="investigate|deterministic")
    args = parser.parse_args()
    data = load()
    settings = get_settings()
    planners = args.planner or ["investigate", "deterministic"]
    print(f"agent incidents: {len(data['scenarios'])} scenarios (test split frozen)")
    passed: dict[str, float] = {}
    for name in planners:
        build, make = replay_agent(settings, name)
        for split in ("test", "dev"):
            started = time.perf_counter()
            outcomes = run_scenarios(data, build, make, split)
            seconds = time.perf_counter() - started
            summary = summarize(outcomes)
            p50 = statistics.median(o.seconds for o in outcomes) * 1000
            print(f"{summary.line(f'{name} {split}')} ({seconds:.1f} s, p50 {p50:.0f} ms/scenario)")
            passed[f"{name} {split}"] = summary.passed
            if args.verbose:
                for o in outcomes:
                    if not o.passed:
                        print(f"    FAIL {o.id}: {o.reason[:400]}")
    new, old = passed.get("investigate test"), passed.get("deterministic test")
    if new is not None and old:
        print(f"ratio investigate/deterministic test pass rate: {new / old:.2f}x")


if __name__ == "__main__":
    main()

"""Agent tool-choice evaluation: pass rate on evalsets/agent.yaml per planner/model.

    .venv/bin/python -m benchmarks.agent_eval                      # deterministic planner
    .venv/bin/python -m benchmarks.agent_eval --model smollm2      # + the local model server
    .venv/bin/python -m benchmarks.agent_eval --model smollm2 --only smollm2 -v

``deterministic``: the rules the chat server uses for a small local model. ``<name>``: the model
behind OPSASSIST_MODEL_SERVER_URL / OPSASSIST_MODEL_NAME choosing tools through the OpenAI route
(tool_calls, or JSON tool calls in its text). A scenario passes when the expected tools are
called, and the expected action is proposed (and allowed) or the expected refusal happens.
"""

from __future__ import annotations

import argparse
import time

from opsassist.agent.evaluate import run
from opsassist.settings import PACKAGE_ROOT, get_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=[], help="label of the served model")
    parser.add_argument("--only", default="", help="run only this planner/model label")
    parser.add_argument("-v", "--verbose", action="store_true", help="print failed scenarios")
    args = parser.parse_args()
    settings = get_settings()
    path = PACKAGE_ROOT / "evalsets" / "agent.yaml"
    labels = ["deterministic", *args.model]
    print(f"agent eval: {path.name}")
    for label in labels:
        if args.only and label != args.only:
            continue
        started = time.perf_counter()
        verdicts = run(path, settings, "deterministic" if label == "deterministic" else "model")
        passed = sum(v.passed for v in verdicts)
        seconds = time.perf_counter() - started
        print(
            f"{label:<14} pass rate {passed}/{len(verdicts)} = {passed / len(verdicts):.1%} "
            f"({seconds:.1f} s)"
        )
        if args.verbose:
            for v in verdicts:
                if not v.passed:
                    print(f"    FAIL {v.id}: {v.reason}")


if __name__ == "__main__":
    main()

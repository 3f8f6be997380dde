"""Cold ``opsassist search``: a new process per question, time until its first result is printed.

Variants, run interleaved (round by round, in a shuffled order each round, so machine noise hits
all of them alike), each as its own subprocess:

- ``current``: the command as it is (question embedded in a forked child on the other core while
  the index opens; MiniLM through ONNX Runtime, USE restored from its prepared state);
- ``baseline``: the same command from the code at ``--baseline-ref`` (default: the commit before
  the fast CLI), extracted with ``git archive`` and put first on ``sys.path``;
- ``torch``: the current code with ``OPSASSIST_QUERY_EMBEDDING_RUNTIME=torch`` (questions
  through sentence-transformers, the path kept for building indexes).

Every variant runs once before the timed rounds (the ONNX export and the prepared USE state are
made then, as a first search on a machine makes them). The current code's top three are checked
equal with either runtime; how often the baseline's first hit is the same is reported (ranking
changes made since the baseline commit are not this benchmark's subject). Without ``--data-dir``
a temporary index of the shipped runbooks' ``kubernetes`` folder (48 runbooks) is built first
with the library.

    .venv/bin/python -m benchmarks.cli_cold_start [--n 7] [--data-dir DIR] [--baseline-ref REF]
        [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import selectors
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import emit, machine, percentile
from opsassist.settings import PACKAGE_ROOT, PROJECT_ROOT

BASELINE_REF = "b884efb"  # the tree before the fast CLI (prepared USE, forked embedding)
QUESTIONS = [
    "pod keeps restarting",
    "под постоянно перезапускается, что делать?",
    "deployment has fewer replicas than desired",
    "persistent volume is filling up",
]
RUNNER = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); "
    "from opsassist.cli import app; sys.argv[0] = 'opsassist'; app()"
)


def build_index(data_dir: Path) -> None:
    """A small runbook index (the shipped kubernetes runbooks) built with the library."""
    from opsassist.pipelines.runbooks import run_pipeline
    from opsassist.settings import Settings
    from opsassist.stores import get_cache, get_index_store

    corpus = data_dir.parent / "corpus"
    shutil.copytree(
        PACKAGE_ROOT / "corpora" / "runbooks" / "prometheus-operator" / "kubernetes",
        corpus / "kubernetes",
    )
    settings = Settings(data_dir=data_dir, gate_allow_unjudged_first_build=True)
    summary = run_pipeline(
        settings, corpus, get_index_store(settings), get_cache(settings), "bench"
    )
    assert summary["promoted"], summary


def extract(ref: str, target: Path) -> Path:
    """The library at ``ref`` (``include/``), for the baseline's sys.path."""
    archive = subprocess.run(
        ["git", "archive", ref, "include"], cwd=PROJECT_ROOT, capture_output=True, check=True
    ).stdout
    target.mkdir(parents=True, exist_ok=True)
    archive_path = target / "include.tar"
    archive_path.write_bytes(archive)
    with tarfile.open(archive_path) as tar:
        tar.extractall(target, filter="data")
    return target / "include"


def run_once(command: list[str], env: dict[str, str]) -> tuple[float, float, list[str]]:
    """(seconds to the first byte on stdout, seconds to exit, result ids)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=PROJECT_ROOT
    )
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    first = None
    chunks = []
    while True:
        selector.select()
        chunk = os.read(process.stdout.fileno(), 65536)
        if not chunk:
            break
        if first is None:
            first = time.perf_counter() - started
        chunks.append(chunk)
    _, stderr = process.communicate()
    total = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"{command[:3]} failed: {stderr.decode()[-2000:]}")
    hits = json.loads(b"".join(chunks))
    return first or total, total, [hit["id"] for hit in hits]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=7, help="timed rounds")
    parser.add_argument("--data-dir", type=Path, help="an existing data folder with an index")
    parser.add_argument("--baseline-ref", default=BASELINE_REF)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="opsassist-cli-bench-") as tmp:
        work = Path(tmp)
        data_dir = args.data_dir
        if data_dir is None:
            data_dir = work / "data"
            build_index(data_dir)
        baseline_root = extract(args.baseline_ref, work / "baseline")
        env = {**os.environ, "OPSASSIST_DATA_DIR": str(data_dir), "OPSASSIST_LOG_LEVEL": "WARNING"}
        python = sys.executable
        variants: dict[str, tuple[list[str], dict[str, str]]] = {
            "current": ([python, "-c", RUNNER, str(PROJECT_ROOT / "include")], env),
            "baseline": ([python, "-c", RUNNER, str(baseline_root)], env),
            "torch": (
                [python, "-c", RUNNER, str(PROJECT_ROOT / "include")],
                {**env, "OPSASSIST_QUERY_EMBEDDING_RUNTIME": "torch"},
            ),
        }
        firsts: dict[str, list[float]] = {name: [] for name in variants}
        totals: dict[str, list[float]] = {name: [] for name in variants}
        same_top: list[bool] = []
        for question in QUESTIONS[:1]:  # warm-up: exports, prepared state, file cache
            for command, variant_env in variants.values():
                run_once([*command, "search", question, "--json", "--k", "5"], variant_env)
        for round_number in range(args.n):
            question = QUESTIONS[round_number % len(QUESTIONS)]
            order = list(variants)
            random.Random(round_number).shuffle(order)
            ids: dict[str, list[str]] = {}
            for name in order:
                command, variant_env = variants[name]
                first, total, ids[name] = run_once(
                    [*command, "search", question, "--json", "--k", "5"], variant_env
                )
                firsts[name].append(first)
                totals[name].append(total)
            # the same code with either runtime finds the same sections (the baseline's code may
            # rank differently: retrieval changes since that commit are not this benchmark's)
            assert ids["current"][:3] == ids["torch"][:3], (question, ids)
            same_top.append(ids["current"][0] == ids["baseline"][0])
        report: dict[str, Any] = {
            "benchmark": "cli_cold_start",
            "machine": machine(),
            "rounds": args.n,
            "baseline_ref": args.baseline_ref,
            "baseline_same_first_hit": f"{sum(same_top)}/{len(same_top)}",
        }
        for name in variants:
            report[name] = {
                "first_result_p50_s": round(statistics.median(firsts[name]), 3),
                "first_result_p90_s": round(percentile(firsts[name], 90), 3),
                "first_result_min_s": round(min(firsts[name]), 3),
                "exit_p50_s": round(statistics.median(totals[name]), 3),
            }
        current = report["current"]["first_result_p50_s"]
        report["ratio_baseline_over_current"] = round(
            report["baseline"]["first_result_p50_s"] / current, 2
        )
        report["ratio_torch_over_current"] = round(
            report["torch"]["first_result_p50_s"] / current, 2
        )
        report["target_2s_met"] = current <= 2.0
        emit(report, args.json)
        if not args.json:
            print(f"cold 'opsassist search', {args.n} rounds, machine {report['machine']}")
            for name in variants:
                figures = report[name]
                print(
                    f"  {name:9s} first result p50 {figures['first_result_p50_s']:.2f} s, "
                    f"p90 {figures['first_result_p90_s']:.2f} s, "
                    f"min {figures['first_result_min_s']:.2f} s "
                    f"(process exit p50 {figures['exit_p50_s']:.2f} s)"
                )
            print(
                f"  baseline / current {report['ratio_baseline_over_current']}x, "
                f"torch / current {report['ratio_torch_over_current']}x; "
                f"target <= 2 s {'met' if report['target_2s_met'] else 'NOT met'}"
            )


if __name__ == "__main__":
    main()

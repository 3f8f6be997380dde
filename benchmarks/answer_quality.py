"""Answer quality on ``evalsets/answers.yaml``: each answer mode and a plain baseline, per split
and language, in one run.

Builds the runbook index of ``OPSASSIST_RUNBOOKS_PATH`` in ``<data dir>/bench/answers`` (an
embedded store; re-runs embed nothing new), puts its knowledge pack in an in-process cache, and
asks every question through the chat pipeline (no answer cache) in each mode:

- ``composed``: the answer composed from the retrieved runbook (no model);
- ``composed_model``: the same plus the model's short summary;
- ``model``: the model's own answer from the numbered sources (guarded; falls back to composed);
- ``top_chunk``: the plain baseline: the best retrieved chunk as it is, with its source.

Model modes use the KServe model server at ``OPSASSIST_MODEL_SERVER_URL`` (``scripts/model-server
up`` for the local SmolLM2). Prints the metrics of ``opsassist.evaluation.answers`` per mode,
split and language, writes every answer to ``<out>/answers-<mode>.jsonl`` so they can be read,
and logs one MLflow run per mode to the experiment ``opsassist-answers``.

The test split is frozen (its digest is checked on load): choices are made on dev, and test is
reported beside it.

    .venv/bin/python -m benchmarks.answer_quality [--modes composed,top_chunk,...]
        [--splits dev,test] [--limit N] [--out DIR] [--no-mlflow] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import emit, machine
from opsassist.cache.memory import MemoryKnowledgeCache
from opsassist.chat.citations import sources_block
from opsassist.chat.pipeline import ChatPipeline, ChatRequest
from opsassist.evaluation.answers import (
    AnswerCase,
    AnswerResult,
    answer_case,
    grouped,
    load_answer_set,
    score_answer,
)
from opsassist.evaluation.evalset import evalset_file
from opsassist.index.embedded import EmbeddedIndexStore
from opsassist.llm.client import client_from_settings
from opsassist.logs import configure_logging
from opsassist.pipelines.runbooks import run_pipeline
from opsassist.settings import Settings

MODES = ("composed", "composed_model", "model", "top_chunk")
MODEL_MODES = ("composed_model", "model")
HEADLINE = (
    "faithfulness",
    "coverage",
    "cited",
    "citation_validity",
    "forbidden",
    "degenerate",
    "language_match",
    "language_share",
    "uncovered_warned",
    "first_piece_p95_s",
    "total_p95_s",
)


def build(settings: Settings) -> tuple[EmbeddedIndexStore, MemoryKnowledgeCache, str]:
    store = EmbeddedIndexStore(settings.data_dir / "index")
    cache = MemoryKnowledgeCache()
    summary = run_pipeline(settings, settings.runbooks_path, store, cache, "bench-answers")
    version = summary["version"]
    assert version is not None, "the runbook index was not built"
    return store, cache, str(version)


async def top_chunk_case(
    pipeline: ChatPipeline, case: AnswerCase, source_text: Any
) -> AnswerResult:
    """The plain baseline: the best retrieved chunk, its header line dropped, and its source."""
    started = time.perf_counter()
    request = ChatRequest(
        messages=[{"role": "user", "content": case.question}], use_cache=False, mode="composed"
    )
    prepared = await asyncio.to_thread(pipeline.prepare, request)
    hit = next((h for h in prepared.hits if h.source_type == "runbook"), None)
    citations = [c for c in prepared.citations if hit is not None and c.source == hit.source][:1]
    if hit is None or not citations:
        answer = "No runbook matched."
        cited: dict[int, str] = {}
    else:
        body = hit.text.partition("\n")[2] or hit.text
        answer = f"{body} [{citations[0].number}]\n\n{sources_block(citations)}"
        cited = {citations[0].number: hit.source}
    total = time.perf_counter() - started
    return AnswerResult(
        case=case,
        mode="top_chunk",
        answer=answer,
        score=score_answer(case, answer, cited, source_text),
        first_piece_s=total,
        total_s=total,
        finish_reason="stop",
        degraded=None,
        citations=cited,
    )


async def run_mode(
    pipeline: ChatPipeline, cases: list[AnswerCase], mode: str, source_text: Any
) -> list[AnswerResult]:
    results = []
    for number, case in enumerate(cases, start=1):
        if mode == "top_chunk":
            result = await top_chunk_case(pipeline, case, source_text)
        else:
            result = await answer_case(pipeline, case, mode, source_text)
        results.append(result)
        if mode in MODEL_MODES:
            print(f"  {mode} {number}/{len(cases)} {case.id}: {result.total_s:.1f} s", flush=True)
    return results


def table(summaries: dict[tuple[str, str, str], dict[str, float | None]]) -> str:
    header = ["mode", "split", "lang", "n", *HEADLINE]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (mode, split, lang), values in summaries.items():
        cells = [mode, split, lang, f"{values['n']:.0f}"]
        for name in HEADLINE:
            value = values.get(name)
            cells.append("—" if value is None else f"{value:.3f}".rstrip("0").rstrip("."))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def log_mlflow(
    settings: Settings,
    mode: str,
    summaries: dict[tuple[str, str, str], dict[str, float | None]],
    results: list[AnswerResult],
    params: dict[str, str],
) -> str:
    from mlflow.entities import Metric, Param, RunTag

    from opsassist.evaluation.tracking import client, ensure_experiment, experiment_name

    mlflow = client(settings)
    experiment = ensure_experiment(mlflow, settings, experiment_name(settings, "answers"))
    run = mlflow.create_run(experiment, run_name=f"answers-{mode}", tags={"mode": mode})
    run_id = str(run.info.run_id)
    now = int(time.time() * 1000)
    metrics = [
        Metric(f"{split}.{lang}.{name}", float(value), now, 0)
        for (m, split, lang), values in summaries.items()
        if m == mode
        for name, value in values.items()
        if value is not None
    ]
    mlflow.log_batch(
        run_id,
        metrics=metrics,
        params=[Param(k, v) for k, v in sorted({**params, "mode": mode}.items())],
        tags=[RunTag("opsassist.set", "answers")],
    )
    with tempfile.TemporaryDirectory(prefix="opsassist-answers-") as tmp:
        path = Path(tmp) / f"answers-{mode}.jsonl"
        path.write_text("".join(json.dumps(r.row(), ensure_ascii=False) + "\n" for r in results))
        mlflow.log_artifacts(run_id, tmp)
    mlflow.set_terminated(run_id, "FINISHED")
    return run_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modes", default="composed,composed_model,model,top_chunk")
    parser.add_argument("--splits", default="dev,test")
    parser.add_argument("--limit", type=int, default=0, help="questions per split (0: all)")
    parser.add_argument("--out", default="", help="folder for the answers (default: data dir)")
    parser.add_argument("--no-mlflow", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    configure_logging("WARNING", "json")

    base = Settings()
    settings = base.model_copy(update={"data_dir": base.data_dir / "bench" / "answers"})
    cases_all = load_answer_set(evalset_file(settings.evalsets_dir, "answers"))
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    cases: list[AnswerCase] = []
    for split in splits:
        chosen = [c for c in cases_all if c.split == split]
        cases.extend(chosen[: args.limit] if args.limit else chosen)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes: {sorted(unknown)} (known: {', '.join(MODES)})")

    started = time.perf_counter()
    store, cache, version = build(settings)
    build_s = time.perf_counter() - started
    corpus = Path(settings.runbooks_path)
    texts: dict[str, str] = {}

    def source_text(source: str) -> str:
        if source not in texts:
            path = corpus / source
            texts[source] = path.read_text(encoding="utf-8") if path.is_file() else ""
        return texts[source]

    out = Path(args.out) if args.out else settings.data_dir / "results"
    out.mkdir(parents=True, exist_ok=True)
    client = client_from_settings(settings)
    pipeline = ChatPipeline(settings, store, cache, client)
    pipeline.warm_up()

    async def everything() -> dict[str, list[AnswerResult]]:
        if any(m in MODEL_MODES for m in modes):
            ready, detail = await client.ready()
            if not ready:
                raise SystemExit(f"model server not ready ({detail}): scripts/model-server up")
        by_mode = {}
        for mode in modes:
            by_mode[mode] = await run_mode(pipeline, cases, mode, source_text)
        await client.aclose()
        return by_mode

    by_mode = asyncio.run(everything())
    results = [r for mode in modes for r in by_mode[mode]]
    summaries = grouped(results)
    params = {
        "index_version": version,
        "model": client.target,
        "answers_set_version": "1",
        "questions": str(len(cases)),
        "repetition_penalty": str(settings.chat_repetition_penalty),
        "chat_max_tokens": str(settings.chat_max_tokens),
        "summary_max_tokens": str(settings.chat_summary_max_tokens),
    }
    runs = {}
    for mode in modes:
        (out / f"answers-{mode}.jsonl").write_text(
            "".join(json.dumps(r.row(), ensure_ascii=False) + "\n" for r in by_mode[mode])
        )
        if not args.no_mlflow:
            runs[mode] = log_mlflow(settings, mode, summaries, by_mode[mode], params)
    result: dict[str, Any] = {
        "benchmark": "answer_quality",
        "machine": machine(),
        "index_build_s": round(build_s, 1),
        "params": params,
        "answers": str(out),
        "mlflow_runs": runs,
        "summaries": {"/".join(k): v for k, v in summaries.items()},
    }
    if args.json:
        emit(result, True)
    else:
        print(table(summaries))
        print(json.dumps({k: v for k, v in result.items() if k != "summaries"}, indent=2))


if __name__ == "__main__":
    main()

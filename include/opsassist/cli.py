"""``opsassist``: a thin command line over the library (index, search, ask, eval, demo,
settings)."""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from opsassist.logs import configure_logging, correlation_scope
from opsassist.progress import terminal
from opsassist.settings import Settings, get_settings, settings_table_markdown

if TYPE_CHECKING:
    from opsassist.evaluation.runner import EvalReport
    from opsassist.forked import ChildResult

app = typer.Typer(
    help="Smart DevSecOps/MLOps Assistant", no_args_is_help=True, pretty_exceptions_enable=False
)
index_app = typer.Typer(help="Build indexes.", no_args_is_help=True)
app.add_typer(index_app, name="index")
reranker_app = typer.Typer(help="The learned re-ranker.", no_args_is_help=True)
app.add_typer(reranker_app, name="reranker")
console = Console(stderr=True)


def _fail(exc: BaseException) -> typer.Exit:
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    print(f"error: {message}", file=sys.stderr)
    return typer.Exit(code=1)


def _setup(verbose: bool = False) -> Settings:
    settings = get_settings()
    level = "DEBUG" if verbose else ("INFO" if settings.log_level == "DEBUG" else "WARNING")
    configure_logging(level, settings.log_format)
    return settings


@index_app.command("runbooks")
def index_runbooks(
    path: Annotated[
        Path | None,
        typer.Argument(help="Runbook folder (default: OPSASSIST_RUNBOOKS_PATH or Git)."),
    ] = None,
    run_id: Annotated[str | None, typer.Option(help="Run id (default: a new one).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    allow_shrink: Annotated[
        bool,
        typer.Option(
            "--allow-shrink",
            help="Let the build delete more than OPSASSIST_INDEX_MAX_SHRINK of the index.",
        ),
    ] = False,
    allow_empty: Annotated[
        bool, typer.Option("--allow-empty", help="Let a folder with no runbook build.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Parse, chunk, embed, validate and index runbooks; promote the build if it passes."""
    settings = _setup(verbose)
    overrides = {"index_allow_shrink": True} if allow_shrink else {}
    if allow_empty:
        overrides["index_allow_empty"] = True
    settings = settings.model_copy(update=overrides) if overrides else settings
    _index_corpus(settings, path, run_id, json_output, postmortems=False)


@index_app.command("postmortems")
def index_postmortems(
    path: Annotated[
        Path | None,
        typer.Argument(help="Postmortem folder (default: OPSASSIST_POSTMORTEMS_PATH or Git)."),
    ] = None,
    run_id: Annotated[str | None, typer.Option(help="Run id (default: a new one).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    allow_shrink: Annotated[
        bool, typer.Option("--allow-shrink", help="Let the build delete more than the limit.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Index incident write-ups into the postmortem alias (same pipeline as runbooks)."""
    settings = _setup(verbose)
    if allow_shrink:
        settings = settings.model_copy(update={"index_allow_shrink": True})
    _index_corpus(settings, path, run_id, json_output, postmortems=True)


def _index_corpus(
    settings: Settings,
    path: Path | None,
    run_id: str | None,
    json_output: bool,
    *,
    postmortems: bool,
) -> None:
    """Sync the runbook (or postmortem) source, run the whole pipeline, print the summary."""
    run_id = run_id or f"cli-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    with correlation_scope(run_id):
        try:
            from opsassist.pipelines.runbooks import POSTMORTEMS, RUNBOOKS, run_pipeline
            from opsassist.stores import get_cache, get_index_store

            if postmortems:
                from opsassist.sources.postmortems import sync_postmortems

                root = sync_postmortems(settings, path)
            else:
                from opsassist.sources.runbooks import sync_runbooks

                root = sync_runbooks(settings, path)
            with terminal(None if json_output else console):  # progress bars in a terminal
                summary = run_pipeline(
                    settings,
                    root,
                    get_index_store(settings),
                    get_cache(settings),
                    run_id,
                    corpus=POSTMORTEMS if postmortems else RUNBOOKS,
                )
        except Exception as exc:
            raise _fail(exc) from exc
    if json_output:
        print(json.dumps(summary, indent=2, default=str))
        return
    collected = summary["collect"]
    console.print(
        f"{'postmortems' if postmortems else 'runbooks'}: {collected['runbooks']}  "
        f"chunks: {collected['chunks']}  embedded: {summary['embed']['embedded']}  "
        f"quarantined: {len(collected['quarantined'])}"
    )
    for item in collected["quarantined"]:
        console.print(f"  [yellow]quarantined[/yellow] {item['source']}: {item['reason']}")
    state = "promoted" if summary["promoted"] else "unchanged"
    alias = settings.postmortem_index if postmortems else settings.runbook_index
    console.print(f"index {alias} -> {summary['version']} ({state})")


@app.command("search")
def search_command(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    k: Annotated[int, typer.Option("--k", "-k", min=1, max=100, help="Results.")] = 5,
    json_output: Annotated[bool, typer.Option("--json", help="JSON list, best first.")] = False,
    mode: Annotated[str, typer.Option(help="hybrid, bm25 or vector.")] = "hybrid",
    index: Annotated[str | None, typer.Option(help="Alias or version (default: runbooks).")] = None,
    source_type: Annotated[
        list[str] | None, typer.Option("--source-type", help="runbook, log, metric, event.")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Only documents since: 1h, 30m, ISO time.")
    ] = None,
) -> None:
    """Hybrid search over an index."""
    settings = _setup()
    from opsassist.lazy_imports import defer_package_init

    defer_package_init("lance_namespace_urllib3_client")  # LanceDB's REST client: not used here
    with correlation_scope():
        prepared: ChildResult | None = None
        try:
            from opsassist.index.base import Filters
            from opsassist.search import question_vector, search
            from opsassist.timeparse import parse_since

            if mode != "bm25" and query.strip():  # embedded on the other core meanwhile
                from opsassist.forked import in_child

                prepared = in_child(lambda: question_vector(query, settings))

            if mode not in ("hybrid", "bm25", "vector"):
                raise ValueError(f"unknown mode {mode!r}: use hybrid, bm25 or vector")
            filters = Filters(
                source_types=tuple(source_type or ()),
                since=parse_since(since) if since else None,
            )
            hits = search(
                query,
                settings=settings,
                target=index,
                k=k,
                mode=mode,  # type: ignore[arg-type]
                filters=filters,
                prepared_vector=prepared,
            )
        except Exception as exc:
            if prepared is not None:  # its output would follow the error on the terminal
                prepared.cancel()
            raise _fail(exc) from exc
    if json_output:
        print(json.dumps([h.to_json() for h in hits], indent=2, ensure_ascii=False))
        return
    table = Table("#", "score", "source", "section", "text")
    for rank, hit in enumerate(hits, start=1):
        snippet = " ".join(hit.text.split("\n", 1)[-1].split())[:90]
        table.add_row(str(rank), f"{hit.score:.4f}", hit.source, hit.section, snippet)
    Console().print(table)


METRIC_COLUMNS = {
    "recall_at_1": "R@1",
    "recall_at_3": "R@3",
    "recall_at_5": "R@5",
    "recall_at_10": "R@10",
    "mrr_at_10": "MRR@10",
    "ndcg_at_10": "nDCG@10",
}


def metric_groups(report: EvalReport) -> list[tuple[str, int]]:
    """The table's question groups with their sizes: all, each language and kind, then each
    split (dev, the frozen test) with its languages: ``test.ru`` is a metric prefix."""
    first = [r for r in report.results if r.mode == report.modes[0]]
    groups: list[tuple[str, int]] = [("", len(first))]
    for attr in ("language", "kind"):
        for value in sorted({getattr(r, attr) for r in first}):
            groups.append((value, sum(1 for r in first if getattr(r, attr) == value)))
    for split in sorted({r.split for r in first}):
        in_split = [r for r in first if r.split == split]
        groups.append((split, len(in_split)))
        for language in sorted({r.language for r in in_split}):
            size = sum(1 for r in in_split if r.language == language)
            groups.append((f"{split}.{language}", size))
    return groups


def metrics_table(
    metrics: dict[str, float], modes: Sequence[str], groups: Sequence[tuple[str, int]]
) -> Table:
    """One row per (question group, mode), three decimals, headers short enough that the table
    fits a 100-column terminal without cutting a number (``--json`` has every metric)."""
    from rich import box

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
    table.add_column("group", no_wrap=True)
    table.add_column("mode", no_wrap=True)
    table.add_column("n", justify="right", no_wrap=True)
    for header in (*METRIC_COLUMNS.values(), "p50 ms", "p95 ms"):
        table.add_column(header, justify="right", no_wrap=True, min_width=len(header))
    for group, count in groups:
        for mode in modes:
            prefix = f"{mode}.{group}." if group else f"{mode}."
            if f"{prefix}recall_at_5" not in metrics:
                continue
            latency = [f"{metrics[f'{mode}.latency_p{p}_ms']:.0f}" for p in (50, 95)]
            table.add_row(
                group.replace(".", "/") or "all",
                mode,
                str(count),
                *(f"{metrics[prefix + name]:.3f}" for name in METRIC_COLUMNS),
                *(latency if not group else ["", ""]),
            )
    return table


@app.command("eval")
def eval_command(
    set_name: Annotated[
        str, typer.Option("--set", help="runbooks, signals or postmortems.")
    ] = "runbooks",
    index: Annotated[
        str | None, typer.Option(help="Alias or version (default: the set's index).")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print metrics as JSON.")] = False,
    mlflow: Annotated[bool, typer.Option("--mlflow/--no-mlflow", help="Log an MLflow run.")] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Evaluate retrieval (hybrid vs BM25 vs vector) on an evaluation set; log it to MLflow."""
    settings = _setup(verbose)
    with correlation_scope():
        try:
            from opsassist.evaluation.service import evaluate_set, resolve_index

            version = resolve_index(settings, set_name, index)
            with terminal(None if json_output else console):
                result = evaluate_set(settings, set_name, version, log_to_mlflow=mlflow)
        except Exception as exc:
            raise _fail(exc) from exc
    if json_output:
        print(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
        return
    report = result.report
    Console().print(metrics_table(report.metrics, report.modes, metric_groups(report)))
    console.print(
        f"{report.evalset} on {report.version}: {report.questions} of {report.total_items} "
        f"questions applicable"
        + (f"; MLflow run {result.mlflow_run_id}" if result.mlflow_run_id else "")
    )
    if "embedding.latency_p50_ms" in report.metrics:
        console.print(
            "query embedding (inside vector and hybrid latency): "
            f"p50 {report.metrics['embedding.latency_p50_ms']:.0f} ms, "
            f"p95 {report.metrics['embedding.latency_p95_ms']:.0f} ms"
        )
    if result.unmatched:
        shown = ", ".join(result.unmatched[:5]) + (" ..." if len(result.unmatched) > 5 else "")
        console.print(
            f"  [yellow]{len(result.unmatched)} rules match no document[/yellow]: {shown}"
        )


@reranker_app.command("train")
def reranker_train_command(
    out: Annotated[Path, typer.Option(help="The weights file to write.")],
    index: Annotated[
        str | None, typer.Option(help="Alias or version (default: the runbook index).")
    ] = None,
    c: Annotated[float, typer.Option(help="Inverse regularisation strength.")] = 1.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Fit the re-ranker on the runbook set's dev split against an index; write its weights
    (use them with OPSASSIST_RERANKER_WEIGHTS=OUT)."""
    settings = _setup(verbose)
    with correlation_scope():
        try:
            from opsassist.evaluation.rerank_training import train_on_index
            from opsassist.index.base import resolve_target
            from opsassist.stores import get_index_store

            store = get_index_store(settings)
            version = resolve_target(store, index or settings.runbook_index)
            with terminal(console):
                payload = train_on_index(settings, store, version, c=c)
        except Exception as exc:
            raise _fail(exc) from exc
    out.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", "utf-8")
    trained = payload["models"]["runbook"]["trained"]
    lofo, fused = trained["dev_leave_one_folder_out"], trained["dev_fused_order"]
    console.print(
        f"wrote {out}: {trained['dev_questions']} dev questions on {version}; "
        f"dev recall@5 / MRR@10 leave-one-folder-out {lofo['recall_at_5']:.3f} / "
        f"{lofo['mrr_at_10']:.3f} (fused order {fused['recall_at_5']:.3f} / "
        f"{fused['mrr_at_10']:.3f})"
    )


@app.command("settings")
def settings_command(
    markdown: Annotated[bool, typer.Option("--markdown", help="README table.")] = False,
) -> None:
    """Show the effective settings (secrets hidden) or the README table."""
    if markdown:
        print(settings_table_markdown())
        return
    data: dict[str, Any] = json.loads(get_settings().model_dump_json())
    print(json.dumps(data, indent=2))


@app.command("history-java-options")
def history_java_options_command() -> None:
    """Print the history job's driver JVM options, for spark-submit --driver-java-options
    (makes the class-data archive first if this environment has none: ~45 s, once)."""
    settings = _setup()
    from opsassist.pipelines.history_jvm import driver_java_options, ensure_class_archive

    print(driver_java_options(settings, ensure_class_archive(settings)))


@app.command("versions")
def versions_command(
    index: Annotated[str | None, typer.Option(help="Alias (default: runbooks).")] = None,
) -> None:
    """List the versions of an index and which one the alias points at."""
    settings = _setup()
    try:
        from opsassist.index.lifecycle import version_table
        from opsassist.stores import get_index_store

        store = get_index_store(settings)
        for row in version_table(store, index or settings.runbook_index):
            marker = "*" if row["promoted"] else " "
            rows = row["rows"]  # None: a build killed half-way
            size = "incomplete (a build that did not finish)" if rows is None else f"{rows} chunks"
            print(f"{marker} {row['version']}  {size}")
    except Exception as exc:
        raise _fail(exc) from exc


@app.command("rollback")
def rollback_command(
    alias: Annotated[
        str | None, typer.Argument(help="Index alias (default: OPSASSIST_RUNBOOK_INDEX).")
    ] = None,
    to: Annotated[
        str | None, typer.Option("--to", help="Version (default: the one before the current).")
    ] = None,
    reason: Annotated[str, typer.Option(help="Why, for the audit record.")] = "",
) -> None:
    """Point an index alias back at an earlier version (audited in <data>/audit/index.jsonl)."""
    settings = _setup()
    try:
        from opsassist.index.lifecycle import rollback
        from opsassist.stores import get_index_store

        record = rollback(
            get_index_store(settings),
            alias or settings.runbook_index,
            settings.data_dir,
            to=to,
            reason=reason,
        )
    except Exception as exc:
        raise _fail(exc) from exc
    print(f"index {record['alias']}: {record['from']} -> {record['to']} (rolled back)")


@app.command("audit")
def audit_command(
    action: Annotated[str | None, typer.Option(help="Only this action id (act-...).")] = None,
    correlation_id: Annotated[str | None, typer.Option(help="Only this correlation id.")] = None,
    limit: Annotated[int, typer.Option(help="Most recent rows shown.")] = 50,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object per row.")] = False,
) -> None:
    """List the action agent's audit trail (append-only table in PostgreSQL), oldest first."""
    settings = _setup()
    try:
        from opsassist.agent.store import AgentStore

        store = AgentStore(settings.audit_dsn.get_secret_value())
        rows = store.audit_rows(action_id=action, correlation_id=correlation_id, limit=limit)
    except Exception as exc:
        raise _fail(exc) from exc
    if json_output:
        for row in rows:
            print(json.dumps(row, default=str, sort_keys=True))
        return
    table = Table("id", "at", "actor", "role", "event", "tool", "ok", "action", "correlation")
    for row in rows:
        table.add_row(
            str(row["id"]),
            row["at"].strftime("%Y-%m-%d %H:%M:%S"),
            row["actor"],
            row["role"],
            row["event"],
            row["tool"],
            "yes" if row["ok"] else "NO",
            row["action_id"] or "",
            row["correlation_id"],
        )
    Console(width=None if sys.stdout.isatty() else 200).print(table)


@app.command("ask")
def ask_command(
    question: Annotated[str, typer.Argument(help="The question, as an engineer would ask it.")],
    url: Annotated[
        str, typer.Option(help="The chat server (OpenAI-compatible API).")
    ] = "http://127.0.0.1:18000",
    key: Annotated[
        str, typer.Option(envvar="OPSASSIST_ASK_KEY", help="API key, if the server has keys.")
    ] = "",
    mode: Annotated[
        str | None,
        typer.Option(help="Answer mode for this question: composed, composed_model or model."),
    ] = None,
    raw: Annotated[bool, typer.Option("--raw", help="Print the Markdown as it arrives.")] = False,
) -> None:
    """Ask the chat server a question and print its answer (streamed, then rendered)."""
    import httpx
    from rich.markdown import Markdown

    body: dict[str, Any] = {
        "model": "opsassist",
        "messages": [{"role": "user", "content": question}],
        "stream": True,
    }
    if mode:
        body["answer_mode"] = mode
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    parts: list[str] = []
    started = time.perf_counter()
    first: float | None = None
    try:
        with httpx.stream(
            "POST",
            f"{url.rstrip('/')}/v1/chat/completions",
            json=body,
            headers=headers,
            timeout=httpx.Timeout(10.0, read=300.0),
        ) as response:
            if response.status_code != 200:
                response.read()
                raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                for choice in json.loads(line[6:]).get("choices") or []:
                    text = (choice.get("delta") or {}).get("content") or ""
                    if text:
                        first = first if first is not None else time.perf_counter() - started
                        parts.append(text)
                        if raw:
                            sys.stdout.write(text)
                            sys.stdout.flush()
    except Exception as exc:
        raise _fail(exc) from exc
    if not raw:
        Console().print(Markdown("".join(parts)))
    else:
        print()
    total = time.perf_counter() - started
    console.print(
        f"[dim]first piece after {first or total:.2f} s, complete after {total:.2f} s[/dim]"
    )


@app.command("demo")
def demo_command() -> None:
    """Index the shipped runbooks on the embedded defaults and answer a few on-call questions."""
    settings = _setup()
    index_runbooks(path=None, run_id=None, json_output=False, verbose=False)
    from opsassist.search import search

    for question in (
        "pod keeps restarting",
        "etcd no leader",
        "disk almost full on a node",
        "alertmanager cannot send notifications",
    ):
        hits = search(question, settings=settings, k=3)
        console.print(f"\n[bold]{question}[/bold]")
        for rank, hit in enumerate(hits, start=1):
            console.print(f"  {rank}. {hit.source}  [dim]{hit.section}[/dim]  ({hit.score:.4f})")


if __name__ == "__main__":  # pragma: no cover
    app()

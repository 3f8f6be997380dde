"""The runbook (CAG) pipeline as plain functions: collect -> plan -> embed -> build -> validate ->
gate -> promote -> cache. The Airflow DAG wires them as tasks; ``opsassist index runbooks`` runs
them in one process. Each step reads and writes files in the run's staging folder, so a retried task
redoes only its own work and re-running the whole pipeline converges to the same index.

The same stages index other Markdown corpora into their own alias: a :class:`Corpus` says what
differs (how a file is parsed and chunked, its alias, its validation suite and evaluation set);
``POSTMORTEMS`` (incident write-ups, ``opsassist.postmortems``) is the second one.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from opsassist import telemetry
from opsassist.cache.base import KnowledgeCache
from opsassist.chunking import chunk_runbook
from opsassist.documents import Chunk, Rejected
from opsassist.embedding import embed_texts, model_dimension
from opsassist.index.base import LEGACY_MODEL, IndexStore
from opsassist.index.lifecycle import version_rows
from opsassist.knowledge import is_current, knowledge_pack_entry, load_pack, save_pack
from opsassist.logs import get_logger
from opsassist.parsing.markdown import Runbook, RunbookError, load_runbook
from opsassist.pipelines import staging
from opsassist.postmortems import chunk_postmortem, load_postmortem, pack_entry, skip_file
from opsassist.settings import Settings
from opsassist.sources.runbooks import scan_runbook_files
from opsassist.validation import ValidationReport, validate_chunks

log = get_logger(__name__)
PIPELINE = "runbooks"
Progress = Callable[[int, int], None]


class BuildRefusedError(RuntimeError):
    """A build failed validation (or the quality gate): the alias was not moved."""


Parsed = tuple[Runbook, Any]  # a document and what its corpus knows about it besides the text


@dataclasses.dataclass(frozen=True, slots=True)
class Corpus:
    """What differs between the Markdown corpora these stages index; the rest (plan, embed,
    build, validate, gate, promote) is shared. ``name``: staging folder, quarantine list, the
    gate's evaluation set and DAG (``<name>_index``); ``shared_cache``: its knowledge pack is the
    answer cache's (runbooks), else it is only kept beside each version (``<data>/knowledge``)."""

    name: str
    alias_field: str  # the Settings field holding its alias
    suite: str  # Great Expectations suite every build must pass
    load: Callable[[Path, Path], Parsed]
    chunk: Callable[[Parsed, Settings], list[Chunk]]
    pack_entry: Callable[[Parsed], dict[str, Any]]
    skip: Callable[[Path], bool] = lambda path: False
    shared_cache: bool = True

    def alias(self, settings: Settings) -> str:
        return str(getattr(settings, self.alias_field))


RUNBOOKS = Corpus(
    name=PIPELINE,
    alias_field="runbook_index",
    suite="runbook_chunks",
    load=lambda path, root: (load_runbook(path, root), None),
    chunk=lambda doc, s: chunk_runbook(
        doc[0],
        max_chars=s.chunk_max_chars,
        overlap_chars=s.chunk_overlap_chars,
        min_chars=s.chunk_min_chars,
    ),
    pack_entry=lambda doc: knowledge_pack_entry(doc[0]),
)
POSTMORTEMS = Corpus(
    name="postmortems",
    alias_field="postmortem_index",
    suite="postmortem_chunks",
    load=load_postmortem,
    chunk=lambda doc, s: chunk_postmortem(
        doc[0], doc[1], s.chunk_max_chars, s.chunk_overlap_chars, s.chunk_min_chars
    ),
    pack_entry=lambda doc: pack_entry(doc[0], doc[1]),
    skip=skip_file,
    shared_cache=False,
)
CORPORA: dict[str, Corpus] = {c.name: c for c in (RUNBOOKS, POSTMORTEMS)}


@dataclasses.dataclass(slots=True)
class CollectResult:
    chunks: list[Chunk]
    runbooks: list[Runbook]
    quarantined: list[Rejected]
    skipped: list[str]
    packs: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(slots=True)
class Plan:
    base_version: str | None
    to_embed: list[str]
    stale: list[str]
    unchanged: int
    changed_sources: list[str]
    kept_quarantined_sources: list[str]

    @property
    def has_changes(self) -> bool:
        return bool(self.to_embed or self.stale)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --- collect -------------------------------------------------------------------------------------
def collect(root: Path, settings: Settings, corpus: Corpus = RUNBOOKS) -> CollectResult:
    """Parse and chunk every runbook under ``root``; bad files are quarantined, not fatal."""
    chunks: list[Chunk] = []
    runbooks: list[Runbook] = []
    packs: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    files, quarantined = scan_runbook_files(root)
    for path in files:
        source = path.relative_to(root).as_posix()
        if corpus.skip(path):
            skipped.append(source)  # a README or template beside the documents
            continue
        try:
            parsed = corpus.load(path, root)
        except RunbookError as exc:
            if path.name == "_index.md" and exc.reason == "no text":
                skipped.append(source)  # Hugo section pages: navigation only, not runbooks
                continue
            quarantined.append(Rejected(source=source, reason=exc.reason, detail=exc.detail))
            log.warning(
                "runbook quarantined",
                extra={"file": source, "reason": exc.reason, "detail": exc.detail},
            )
            continue
        except OSError as exc:
            quarantined.append(Rejected(source=source, reason="unreadable file", detail=str(exc)))
            log.warning("runbook quarantined", extra={"file": source, "reason": "unreadable file"})
            continue
        runbooks.append(parsed[0])
        packs[parsed[0].source] = corpus.pack_entry(parsed)
        chunks.extend(corpus.chunk(parsed, settings))
    log.info(
        f"{corpus.name} collected",
        extra={
            corpus.name: len(runbooks),
            "chunks": len(chunks),
            "quarantined": len(quarantined),
            "skipped": len(skipped),
        },
    )
    return CollectResult(chunks, runbooks, quarantined, skipped, packs)


def write_quarantine(
    settings: Settings, quarantined: Sequence[Rejected], run_id: str, name: str = PIPELINE
) -> Path:
    """The current quarantine list (replaced each run) plus an append-only history."""
    settings.quarantine_dir.mkdir(parents=True, exist_ok=True)
    entries = [q.to_json() | {"run_id": run_id} for q in quarantined]
    path = staging.write_json(settings.quarantine_dir / f"{name}.json", entries)
    with open(settings.quarantine_dir / f"{name}-history.jsonl", "a", encoding="utf-8") as fh:
        stamp = dt.datetime.now(dt.UTC).isoformat()
        for entry in entries:
            fh.write(staging.json.dumps(entry | {"at": stamp}, ensure_ascii=False) + "\n")
    return path


# --- plan ----------------------------------------------------------------------------------------
def plan_changes(
    store: IndexStore,
    alias: str,
    chunks: Sequence[Chunk],
    quarantined: Sequence[Rejected],
    model: str = LEGACY_MODEL,
) -> Plan:
    """Compare the collected chunks with the promoted version: what to embed and what is stale.

    Chunks of a runbook that is quarantined in this run are kept as they were: bad input never
    deletes what was indexed before. A promoted version built with another embedding ``model``
    is no base: every chunk is embedded again into a version of its own (vectors of two models
    in one index would make its similarities meaningless).
    """
    base = store.current_version(alias)
    if base is not None and (store.version_model(base) or LEGACY_MODEL) != model:
        log.info(
            "embedding model changed: full rebuild",
            extra={"base_version": base, "built_with": store.version_model(base), "model": model},
        )
        base = None
    existing = store.ids_by_source(base) if base else {}
    wanted: dict[str, set[str]] = {}
    for chunk in chunks:
        wanted.setdefault(chunk.source, set()).add(chunk.id)
    quarantined_sources = {q.source for q in quarantined}
    to_embed: list[str] = []
    stale: list[str] = []
    changed: set[str] = set()
    unchanged = 0
    for source, ids in wanted.items():
        old = existing.get(source, set())
        added, removed = ids - old, old - ids
        unchanged += len(ids & old)
        to_embed.extend(sorted(added))
        stale.extend(sorted(removed))
        if added or removed:
            changed.add(source)
    kept: list[str] = []
    for source, old in existing.items():
        if source in wanted:
            continue
        if source in quarantined_sources:
            kept.append(source)
            continue
        stale.extend(sorted(old))  # runbook deleted from the source
        changed.add(source)
    plan = Plan(base, to_embed, stale, unchanged, sorted(changed), sorted(kept))
    log.info(
        "plan",
        extra={
            "base_version": base,
            "to_embed": len(to_embed),
            "stale": len(stale),
            "unchanged": unchanged,
            "changed_sources": len(changed),
        },
    )
    return plan


# --- embed ---------------------------------------------------------------------------------------
def embed_chunks(
    chunks: Sequence[Chunk], settings: Settings, progress: Progress | None = None
) -> list[Chunk]:
    """Embed chunk texts in batches; returns copies carrying their vectors. Progress goes through
    :mod:`opsassist.progress` (a bar in the CLI's terminal, log lines with counts and rate in a
    DAG task) and to ``progress`` if given."""
    from opsassist.progress import progress as track

    out: list[Chunk] = []
    batch = max(1, settings.embedding_batch_size) * 8  # encode() batches inside; this bounds memory
    with track("embedding chunks", len(chunks), logger=log) as tracker:
        for start in range(0, len(chunks), batch):
            part = chunks[start : start + batch]
            vectors = embed_texts(
                [c.text for c in part],
                settings.embedding_model,
                settings.embedding_batch_size,
                settings.embedding_device,
            )
            for chunk, vector in zip(part, vectors, strict=True):
                out.append(dataclasses.replace(chunk, vector=vector.tolist()))
            tracker.update(len(out), len(chunks))
            if progress:
                progress(len(out), len(chunks))
    log.info("chunks embedded", extra={"embedded": len(out)})
    return out


# --- validate / build / promote ------------------------------------------------------------------
def validate_build(
    chunks: Sequence[Chunk], settings: Settings, suite: str = "runbook_chunks"
) -> ValidationReport:
    return validate_chunks(
        chunks,
        suite,
        {
            "vector_dim": model_dimension(settings.embedding_model, settings.embedding_device),
            "text_max_length": settings.chunk_max_chars * 2 + 400,
        },
    )


def build_version(
    store: IndexStore,
    alias: str,
    plan: Plan,
    embedded: Sequence[Chunk],
    dimension: int,
    model: str = LEGACY_MODEL,
) -> str:
    """Write a new version = promoted version - stale + embedded. Readers are not affected."""
    version = store.create_version(alias, dimension, base=plan.base_version, model=model)
    deleted = store.delete(version, plan.stale)
    report = store.upsert(version, embedded)
    if report.failed:
        drop_refused(store, version)
        raise BuildRefusedError(
            f"{len(report.failed)} chunks failed to index in {version}: {report.failed[:3]}"
        )
    store.finalize(version)
    log.info(
        "version built",
        extra={
            "version": version,
            "written": report.written,
            "deleted": deleted,
            "rows": store.count(version),
        },
    )
    return version


def promote(store: IndexStore, alias: str, version: str, keep: int) -> str | None:
    """Move the alias; keep the newest ``keep`` complete versions (the one just replaced always:
    it is what a rollback goes to) and drop older ones and any left half-written."""
    previous = store.promote(alias, version)
    versions = store.list_versions(alias)
    complete = [v for v in versions if version_rows(store, v) is not None]
    keep_set = set(complete[-keep:] if keep > 0 else complete) | {version}
    if previous:
        keep_set.add(previous)
    for old in versions:
        if old not in keep_set:
            store.drop_version(old)
    return previous


def drop_refused(store: IndexStore, version: str) -> None:
    """A refused build is not kept: retention then never holds a refused version in place of one
    that passed (its reports stay in the run's staging folder)."""
    try:
        store.drop_version(version)
        log.info("refused build dropped", extra={"version": version})
    except Exception as exc:
        log.warning("refused build not dropped", extra={"version": version, "error": str(exc)})


# --- stages: one per DAG task, communicating through the run's staging folder --------------------
def _run(settings: Settings, run_id: str, name: str = PIPELINE) -> Path:
    return staging.run_dir(settings.runs_dir, name, run_id)


def stage_collect(
    settings: Settings, run_id: str, root: Path, corpus: Corpus = RUNBOOKS
) -> dict[str, Any]:
    folder = _run(settings, run_id, corpus.name)
    result = collect(root, settings, corpus)
    staging.write_chunks(folder / "chunks.parquet", result.chunks)
    staging.write_json(folder / "pack.json", result.packs)
    staging.write_json(folder / "quarantine.json", [q.to_json() for q in result.quarantined])
    write_quarantine(settings, result.quarantined, run_id, corpus.name)
    reasons = collections.Counter(q.reason for q in result.quarantined)
    telemetry.dead_letters(settings.statsd_address, corpus.name, reasons)
    if not result.runbooks and not settings.index_allow_empty:
        raise BuildRefusedError(
            f"no {corpus.name.rstrip('s')} found under {root} ({len(result.quarantined)} "
            "quarantined): is it the "
            "right folder? Pass --allow-empty (OPSASSIST_INDEX_ALLOW_EMPTY=true) to index it "
            "anyway"
        )
    return {
        "root": str(root),
        "runbooks": len(result.runbooks),
        "chunks": len(result.chunks),
        "quarantined": [q.to_json() for q in result.quarantined],
        "skipped": result.skipped,
    }


def publish_pack_if_missing(
    settings: Settings, run_id: str, cache: KnowledgeCache, version: str | None
) -> bool:
    """Publish this run's knowledge pack for ``version`` when the cache lacks it (a new or
    flushed cache, one switched from memory to Redis, entries of an older format): readers then
    get it although no runbook changed. A cache that is down is logged, not fatal."""
    if version is None:
        return False
    pack: dict[str, dict[str, Any]] = staging.read_json(_run(settings, run_id) / "pack.json")
    if not is_current(load_pack(settings.data_dir, version)):
        save_pack(settings.data_dir, version, pack)
    try:
        if cache.pack_version() == version and is_current(cache.get_pack()):
            return False
        cache.put_pack(version, pack)
    except Exception as exc:
        log.warning("knowledge pack not published", extra={"error": f"{type(exc).__name__}: {exc}"})
        return False
    log.info("knowledge pack published", extra={"version": version, "entries": len(pack)})
    return True


def with_run_params(settings: Settings, params: dict[str, Any] | None) -> Settings:
    """Settings with a DAG run's ``allow_shrink`` / ``allow_empty`` params applied."""
    update = {
        field: True
        for param, field in (
            ("allow_shrink", "index_allow_shrink"),
            ("allow_empty", "index_allow_empty"),
        )
        if (params or {}).get(param)
    }
    return settings.model_copy(update=update) if update else settings


def check_shrink(
    store: IndexStore, settings: Settings, plan: Plan, alias: str | None = None
) -> None:
    """Refuse a build that would delete more than ``index_max_shrink`` of the promoted version
    (a wrong or half-empty folder must not wipe the index) unless shrinking is allowed."""
    current = store.current_version(alias or settings.runbook_index)
    if current is None or settings.index_allow_shrink:
        return
    promoted = store.count(current)
    if plan.base_version is None:  # a full rebuild (new embedding model)
        after = len(plan.to_embed)
    else:  # edited runbooks replace their chunks: only the net loss counts
        after = promoted - len(plan.stale) + len(plan.to_embed)
    removed = max(0, promoted - after)
    if promoted and removed / promoted > settings.index_max_shrink:
        raise BuildRefusedError(
            f"this build would shrink {current} by {removed} of its {promoted} chunks "
            f"({removed / promoted:.0%}, more than OPSASSIST_INDEX_MAX_SHRINK "
            f"{settings.index_max_shrink:.0%}): check the runbook folder, or pass --allow-shrink "
            "(OPSASSIST_INDEX_ALLOW_SHRINK=true) if the runbooks really were removed"
        )


def stage_plan(
    settings: Settings,
    run_id: str,
    store: IndexStore,
    cache: KnowledgeCache | None = None,
    corpus: Corpus = RUNBOOKS,
) -> dict[str, Any]:
    """Plan the build; with nothing to build, make sure ``cache`` has the promoted version's
    knowledge pack (the later stages, which normally publish it, are skipped)."""
    folder = _run(settings, run_id, corpus.name)
    alias = corpus.alias(settings)
    chunks = staging.read_chunks(folder / "chunks.parquet")
    quarantined = [Rejected(**q) for q in staging.read_json(folder / "quarantine.json")]
    plan = plan_changes(store, alias, chunks, quarantined, settings.embedding_model)
    check_shrink(store, settings, plan, alias)
    staging.write_json(folder / "plan.json", plan.to_json())
    published = False
    if not plan.has_changes and cache is not None and corpus.shared_cache:
        current = store.current_version(alias)
        published = publish_pack_if_missing(settings, run_id, cache, current)
    return {  # counts only: XCom stays small, the full plan is in the staging folder
        "base_version": plan.base_version,
        "to_embed": len(plan.to_embed),
        "stale": len(plan.stale),
        "unchanged": plan.unchanged,
        "changed_sources": plan.changed_sources[:50],
        "kept_quarantined_sources": plan.kept_quarantined_sources,
        "has_changes": plan.has_changes,
        "pack_published": published,
    }


def stage_embed(
    settings: Settings, run_id: str, progress: Progress | None = None, corpus: Corpus = RUNBOOKS
) -> dict[str, Any]:
    folder = _run(settings, run_id, corpus.name)
    plan = Plan(**staging.read_json(folder / "plan.json"))
    wanted = set(plan.to_embed)
    todo = [c for c in staging.read_chunks(folder / "chunks.parquet") if c.id in wanted]
    embedded = embed_chunks(todo, settings, progress)
    staging.write_chunks(folder / "embedded.parquet", embedded)
    return {"embedded": len(embedded)}


def stage_build(
    settings: Settings, run_id: str, store: IndexStore, corpus: Corpus = RUNBOOKS
) -> dict[str, Any]:
    folder = _run(settings, run_id, corpus.name)
    plan = Plan(**staging.read_json(folder / "plan.json"))
    embedded = staging.read_chunks(folder / "embedded.parquet")
    dimension = model_dimension(settings.embedding_model, settings.embedding_device)
    version = build_version(
        store, corpus.alias(settings), plan, embedded, dimension, settings.embedding_model
    )
    telemetry.document_counts(
        settings.statsd_address,
        telemetry.current_dag_id(f"{corpus.name}_index"),
        {"embedded": len(embedded), "indexed": len(embedded), "deleted": len(plan.stale)},
    )
    return {"version": version, "rows": store.count(version)}


def stage_validate(
    settings: Settings, run_id: str, store: IndexStore, version: str, corpus: Corpus = RUNBOOKS
) -> dict[str, Any]:
    """Validate the whole candidate version; a failure refuses promotion (the alias stays)."""
    ids = [i for ids in store.ids_by_source(version).values() for i in ids]
    report = validate_build(store.fetch(version, ids), settings, corpus.suite)
    staging.write_json(
        _run(settings, run_id, corpus.name) / "validation.json", dataclasses.asdict(report)
    )
    if not report.success:
        telemetry.promotion(settings.statsd_address, corpus.alias(settings), promoted=False)
        drop_refused(store, version)
        raise BuildRefusedError(report.summary())
    return {"suite": report.suite, "rows": report.rows, "success": True}


def stage_gate(
    settings: Settings, run_id: str, store: IndexStore, version: str, corpus: Corpus = RUNBOOKS
) -> dict[str, Any]:
    """Quality gate: evaluate the candidate against the promoted version on the corpus's own
    evaluation set; a regression refuses promotion (the alias stays). See
    ``opsassist.evaluation.gate``."""
    from opsassist.evaluation.gate import run_gate

    baseline = store.current_version(corpus.alias(settings))
    decision = run_gate(settings, store, version, baseline, run_id, set_name=corpus.name)
    staging.write_json(_run(settings, run_id, corpus.name) / "gate.json", decision.to_json())
    if not decision.promote:
        telemetry.promotion(settings.statsd_address, corpus.alias(settings), promoted=False)
        drop_refused(store, version)
        raise BuildRefusedError(f"quality gate refused {version}: {decision.reason}")
    return decision.to_json()


def stage_promote(
    settings: Settings, run_id: str, store: IndexStore, version: str, corpus: Corpus = RUNBOOKS
) -> dict[str, Any]:
    alias = corpus.alias(settings)
    previous = promote(store, alias, version, settings.keep_versions)
    telemetry.promotion(settings.statsd_address, alias, promoted=True)
    return {"version": version, "previous": previous}


def stage_pack(settings: Settings, run_id: str, version: str, corpus: Corpus) -> dict[str, Any]:
    """The knowledge pack of a corpus without a shared cache (postmortems), kept beside its
    version for readers (``opsassist.knowledge.load_pack``); the answer cache is not touched."""
    pack: dict[str, dict[str, Any]] = staging.read_json(
        _run(settings, run_id, corpus.name) / "pack.json"
    )
    save_pack(settings.data_dir, version, pack)
    return {"pack_entries": len(pack)}


def stage_cache(
    settings: Settings,
    run_id: str,
    cache: KnowledgeCache,
    version: str,
    previous: str | None,
) -> dict[str, Any]:
    folder = _run(settings, run_id)
    plan = Plan(**staging.read_json(folder / "plan.json"))
    pack: dict[str, dict[str, Any]] = staging.read_json(folder / "pack.json")
    save_pack(settings.data_dir, version, pack)
    cache.put_pack(version, pack)
    kept = dropped = 0
    if previous and previous != version:
        kept, dropped = cache.carry_over(previous, version, plan.changed_sources)
    log.info(
        "cache refreshed",
        extra={"pack_entries": len(pack), "answers_kept": kept, "answers_invalidated": dropped},
    )
    return {"pack_entries": len(pack), "answers_kept": kept, "answers_invalidated": dropped}


def stage_warmup(
    settings: Settings, store: IndexStore, cache: KnowledgeCache, version: str
) -> dict[str, Any]:
    """Pre-compute retrieval for the most asked questions against the new version."""
    from opsassist.search import search

    questions = [q for q, _ in cache.popular_questions(settings.warmup_top_n)]
    for question in questions:
        hits = search(question, settings=settings, store=store, target=version, k=5)
        cache.put_retrieval(
            question, version, [h.to_json() for h in hits], settings.retrieval_ttl_seconds
        )
    return {"warmed": len(questions)}


def run_pipeline(
    settings: Settings,
    root: Path,
    store: IndexStore,
    cache: KnowledgeCache,
    run_id: str,
    progress: Progress | None = None,
    corpus: Corpus = RUNBOOKS,
) -> dict[str, Any]:
    """All stages in one process (the CLI path); same functions the DAG tasks call. One build
    per alias at a time (``BuildLockedError`` for a second)."""
    from opsassist.index.lifecycle import build_lock

    alias = corpus.alias(settings)
    with build_lock(settings.data_dir, alias):
        summary: dict[str, Any] = {"run_id": run_id}
        summary["collect"] = stage_collect(settings, run_id, root, corpus)
        summary["plan"] = stage_plan(settings, run_id, store, cache, corpus)
        if not summary["plan"]["has_changes"]:
            summary["embed"] = {"embedded": 0}
            summary["version"] = store.current_version(alias)
            summary["promoted"] = False
            return summary
        summary["embed"] = stage_embed(settings, run_id, progress, corpus)
        build = stage_build(settings, run_id, store, corpus)
        version = build["version"]
        summary["validate"] = stage_validate(settings, run_id, store, version, corpus)
        summary["gate"] = stage_gate(settings, run_id, store, version, corpus)
        promoted = stage_promote(settings, run_id, store, version, corpus)
        if not corpus.shared_cache:
            summary["pack"] = stage_pack(settings, run_id, version, corpus)
            summary["version"] = version
            summary["promoted"] = True
            return summary
        summary["cache"] = stage_cache(settings, run_id, cache, version, promoted["previous"])
        summary["warmup"] = stage_warmup(settings, store, cache, version)
        summary["version"] = version
        summary["promoted"] = True
        return summary

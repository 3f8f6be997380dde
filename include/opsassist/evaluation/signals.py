"""Signal documents for evaluation, built deterministically from the loghub samples.

One document per (system, mined template): the log contents of each system's
``*_2k.log_structured.csv`` are mined with :func:`opsassist.mining.mine_two_pass` (frequency
order: the result depends only on the lines, not their order), and each template becomes a
document with its text, how many lines it covers, their levels and components, and a few example
lines. Sources are ``loghub/<system>/<template_id>``; ``metadata`` carries ``system`` and
``template``, which is what the signals evaluation set's relevance rules match on. Only the
``Content`` column is read (plus ``Level`` / ``Component`` when present): the ground-truth
``EventTemplate`` column is never used, so the documents are what our miner makes of the logs.

The signals pipeline proper is written elsewhere; this builder only gives the evaluation a
fixed, reproducible corpus to measure retrieval on.
"""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

from opsassist.documents import Chunk, make_chunk
from opsassist.index.base import IndexStore
from opsassist.logs import get_logger
from opsassist.mining import mine_two_pass
from opsassist.settings import Settings

log = get_logger(__name__)
PATTERN = "*/*_2k.log_structured.csv"
EXAMPLES = 3


def structured_files(loghub: Path, systems: Sequence[str] | None = None) -> dict[str, Path]:
    """``{system: structured csv}`` under a loghub folder (all systems, or the ones named)."""
    found = {path.parent.name: path for path in sorted(loghub.glob(PATTERN))}
    if not found:
        raise FileNotFoundError(f"no loghub samples ({PATTERN}) under {loghub}")
    if systems is None:
        return found
    missing = sorted(set(systems) - set(found))
    if missing:
        raise FileNotFoundError(f"loghub systems not found under {loghub}: {missing}")
    return {name: found[name] for name in systems}


def _top(counter: Counter[str], n: int = 3) -> str:
    return ", ".join(f"{name} ({count})" for name, count in counter.most_common(n))


def system_documents(system: str, path: Path) -> list[Chunk]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    result = mine_two_pass([row["Content"] for row in rows])
    members: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row, template_id in zip(rows, result.assignments, strict=True):
        members[template_id].append(row)
    chunks: list[Chunk] = []
    for template_id, template in sorted(result.templates.items()):
        lines = members[template_id]
        examples = list(dict.fromkeys(row["Content"] for row in lines))[:EXAMPLES]
        levels = Counter(row["Level"] for row in lines if row.get("Level"))
        components = Counter(row["Component"] for row in lines if row.get("Component"))
        details = [f"Seen {len(lines)} times in {len(rows)} {system} log lines."]
        if levels:
            details.append(f"Levels: {_top(levels)}.")
        if components:
            details.append(f"Components: {_top(components)}.")
        text = "\n".join(
            [
                f"{system} log template: {template.text}",
                " ".join(details),
                "Examples:",
                *examples,
            ]
        )
        chunks.append(
            make_chunk(
                source_type="log",
                source=f"loghub/{system}/{template_id}",
                title=f"{system}: {template.text[:100]}",
                section="template",
                text=text,
                metadata={
                    "system": system,
                    "template_id": template_id,
                    "template": template.text,
                    "count": len(lines),
                },
            )
        )
    return chunks


def signal_documents(loghub: Path, systems: Sequence[str] | None = None) -> list[Chunk]:
    """Every system's template documents, systems in name order."""
    chunks: list[Chunk] = []
    for system, path in structured_files(loghub, systems).items():
        chunks.extend(system_documents(system, path))
    return chunks


def ensure_signal_index(
    settings: Settings, store: IndexStore, systems: Sequence[str] | None = None
) -> str:
    """The evaluation's signal index version: reused when its documents are unchanged, else a
    new version is embedded, built and promoted under ``OPSASSIST_EVAL_SIGNAL_INDEX``."""
    from opsassist.embedding import model_dimension
    from opsassist.pipelines.runbooks import Plan, build_version, embed_chunks, promote

    alias = settings.eval_signal_index
    chunks = signal_documents(settings.eval_loghub_path, systems)
    current = store.current_version(alias)
    if current is not None:
        existing = {i for ids in store.ids_by_source(current).values() for i in ids}
        if existing == {c.id for c in chunks}:
            return current
    dimension = model_dimension(settings.embedding_model, settings.embedding_device)
    fresh = Plan(None, [c.id for c in chunks], [], 0, [], [])  # a full build, no base version
    version = build_version(store, alias, fresh, embed_chunks(chunks, settings), dimension)
    promote(store, alias, version, settings.keep_versions)
    log.info("signal evaluation index built", extra={"version": version, "documents": len(chunks)})
    return version

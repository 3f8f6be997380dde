"""The knowledge pack: a compact, model-ready digest of each runbook (the CAG context).

For a model, what helps it act: what the alert means, its impact, the first diagnosis and
mitigation steps and their commands, with the runbook path so answers can cite it. For the
composed answer (``opsassist.chat.compose``), every section parsed into blocks once, here, at
index time: the chat server quotes them without parsing Markdown per question.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from opsassist.parsing.blocks import link_references, markdown_blocks, referenced_labels
from opsassist.parsing.markdown import Runbook

_MAX_FIELD = 400
# The entries' layout and how their blocks are parsed. Bump it whenever either changes (the
# digest in tests/unit/test_knowledge.py fails until you do): a pack of an older format, kept
# beside an index or in the cache, is then rebuilt by the next run even though no runbook
# changed. 2: entries carry "sections" (blocks). 3: reference links made inline, placeholders,
# unclosed fences ended at the next heading, links to other runbooks resolved.
PACK_FORMAT = 3


def _clip(text: str, limit: int = _MAX_FIELD) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rsplit(" ", 1)[0] + "…"


def knowledge_pack_entry(runbook: Runbook) -> dict[str, Any]:
    def body(name: str) -> str:
        section = runbook.section(name)
        return _clip(section.body) if section else ""

    steps: list[str] = []
    commands: list[str] = []
    for name in ("Diagnosis", "Mitigation"):
        section = runbook.section(name)
        if section:
            steps.extend(section.steps[:5])
            commands.extend(section.commands[:4])
    whole = "\n\n".join(s.body for s in runbook.sections)
    references, used = link_references(whole), referenced_labels(whole)
    return {
        "format": PACK_FORMAT,
        "source": runbook.source,
        "title": runbook.title,
        "alert": runbook.alert,
        "meaning": body("Meaning") or _clip(runbook.sections[0].body),
        "impact": body("Impact"),
        "steps": [_clip(s, 200) for s in steps[:8]],
        "commands": [_clip(c, 200) for c in commands[:6]],
        "sections": [
            {
                "path": list(s.path),
                "blocks": [b.to_json() for b in markdown_blocks(s.body, references, used)],
            }
            for s in runbook.sections
        ],
    }


def is_current(pack: dict[str, dict[str, Any]] | None) -> bool:
    """Whether every entry of ``pack`` has this version's :data:`PACK_FORMAT`."""
    return bool(pack) and all(e.get("format") == PACK_FORMAT for e in (pack or {}).values())


def render_pack(entries: dict[str, dict[str, Any]]) -> str:
    """Plain text for a prompt, one block per runbook."""
    blocks = []
    for source, entry in entries.items():
        lines = [f"[{source}] {entry.get('title', '')} ({entry.get('alert', '')})"]
        if entry.get("meaning"):
            lines.append(f"Meaning: {entry['meaning']}")
        if entry.get("impact"):
            lines.append(f"Impact: {entry['impact']}")
        lines.extend(f"- {step}" for step in entry.get("steps", []))
        lines.extend(f"$ {cmd}" for cmd in entry.get("commands", []))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def pack_file(data_dir: Path, version: str) -> Path:
    """Where a version's knowledge pack is kept beside the index (written at build time)."""
    return data_dir / "knowledge" / f"{version}.json"


def save_pack(data_dir: Path, version: str, pack: dict[str, dict[str, Any]]) -> Path:
    """Keep the pack of ``version`` on disk (atomically): a reader whose cache lacks it (the
    in-process cache of another process, a flushed Redis) loads it from here."""
    path = pack_file(data_dir, version)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(pack, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)
    return path


def load_pack(data_dir: Path, version: str) -> dict[str, dict[str, Any]] | None:
    path = pack_file(data_dir, version)
    if not path.is_file():
        return None
    data: dict[str, dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    return data

"""The knowledge pack's format number follows what its entries hold."""

from __future__ import annotations

import hashlib
import json

from opsassist.knowledge import PACK_FORMAT, is_current, knowledge_pack_entry
from opsassist.parsing.markdown import RunbookError, parse_runbook
from tests.conftest import SHIPPED_RUNBOOKS

# Digest of every shipped runbook's pack entry, per format. When it changes, packs already kept
# beside an index or in a cache hold blocks this version would parse differently: bump
# PACK_FORMAT (so the next run rebuilds them) and record the new digest here.
DIGESTS = {3: "4340e887ef40c36f"}


def pack_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(SHIPPED_RUNBOOKS.rglob("*.md")):
        source = path.relative_to(SHIPPED_RUNBOOKS).as_posix()
        try:
            runbook = parse_runbook(path.read_text("utf-8"), source)
        except RunbookError:  # quarantined, never in a pack
            continue
        entry = knowledge_pack_entry(runbook)
        digest.update(json.dumps(entry, sort_keys=True, ensure_ascii=False).encode())
    return digest.hexdigest()[:16]


def test_the_pack_format_is_bumped_when_the_entries_change() -> None:
    assert pack_digest() == DIGESTS[PACK_FORMAT], (
        "the shipped runbooks' knowledge pack entries changed: bump PACK_FORMAT in "
        "opsassist/knowledge.py and record the new digest in DIGESTS"
    )


def test_a_pack_is_current_only_when_every_entry_has_this_format() -> None:
    entry = {"format": PACK_FORMAT, "title": "x"}
    assert is_current({"a.md": entry, "b.md": dict(entry)})
    assert not is_current({"a.md": entry, "b.md": {**entry, "format": PACK_FORMAT - 1}})
    assert not is_current({"a.md": {"title": "no format"}})
    assert not is_current({}) and not is_current(None)

"""The composed answer: what the retrieved runbook says, arranged for an on-call engineer, quoted
block by block with a citation on every line. No model is involved, so it is ready as soon as
retrieval is, and it cannot say anything the runbook does not.

Layout (headings in the question's language; runbook text quoted as written):

    **KubePodCrashLooping**: <the first sentences of its Meaning> [1]
    **Impact**: <the first sentences of its Impact> [2]
    **How to confirm**   <its diagnosis sections: list items, commands and queries verbatim> [3]
    **What to do**       <its mitigation sections> [4]
    **Also relevant**    one line per other retrieved runbook [5]
    **Recent signals**   matching logs, metrics and events in the time window [6]

The primary runbook is the best-ranked runbook hit. Its sections come from the knowledge pack
(whole sections, parsed into blocks when the index was built); without a pack entry (cache
down), from the retrieved chunks of that runbook. Sections are sorted into roles by their
heading words; a section of another kind is shown when retrieval found it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any, Literal

from opsassist.chat.citations import Citation, time_range
from opsassist.chat.language import Language, labels
from opsassist.documents import SearchHit
from opsassist.parsing.blocks import Block, markdown_blocks, render_blocks

Role = Literal["meaning", "impact", "diagnosis", "mitigation", "other"]
_ROLE_WORDS: tuple[tuple[Role, tuple[str, ...]], ...] = (
    ("meaning", ("meaning", "overview", "description", "summary", "about", "what")),
    ("impact", ("impact", "severity", "consequence")),
    (
        "mitigation",
        ("mitigat", "resolution", "resolv", "remediat", "fix", "recover", "solution", "workaround"),
    ),
    (
        "diagnosis",
        ("diagnos", "investigat", "troubleshoot", "check", "debug", "runbook", "verif", "query"),
    ),
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-ZА-ЯЁ`*\"(])")
# A section left for later: its whole text is one of these words (upstream runbooks have "TODO"
# Mitigations). Quoting it as a step reads like advice; the answer says it is not written.
_PLACEHOLDER = re.compile(
    r"^\W*(todo|tbd|tba|wip|fixme|n/?a|coming soon|to be (?:written|added|done|defined))\W*$",
    re.IGNORECASE,
)
LEAD_CHARS = 320  # the lead and the impact line: about two sentences
ROLE_CHARS = 2400  # text of one role (diagnosis, mitigation); code blocks are never cut
SEE_ALSO = 2
SIGNALS = 3


@dataclasses.dataclass(slots=True)
class Section:
    """One section of a runbook: its heading path and its blocks."""

    path: tuple[str, ...]
    blocks: list[Block]

    @property
    def label(self) -> str:
        return " > ".join(self.path)


@dataclasses.dataclass(slots=True)
class Composed:
    text: str  # Markdown with [n] citations, without the sources list
    citations: list[Citation]  # numbered in order of first use
    primary: str | None  # the runbook the answer is built on (None: nothing matched)


def role_of(path: Sequence[str]) -> Role:
    """A section's role from its top heading (``Diagnosis > CLI Checks`` is diagnosis)."""
    words = (path[0] if path else "").lower()
    for role, stems in _ROLE_WORDS:
        if any(stem in words for stem in stems):
            return role
    return "other"


def pack_sections(entry: dict[str, Any]) -> list[Section]:
    """The sections a knowledge-pack entry carries (entries written before they did: none)."""
    return [
        Section(tuple(s["path"]), [Block.from_json(b) for b in s["blocks"]])
        for s in entry.get("sections") or []
    ]


def hit_sections(hits: Sequence[SearchHit], source: str) -> list[Section]:
    """The sections of ``source`` that retrieval returned, rebuilt from their chunks (a chunk's
    first line is its ``title > section`` header), in section order of first appearance."""
    by_label: dict[str, list[Block]] = {}
    for hit in hits:
        if hit.source != source or hit.source_type != "runbook":
            continue
        body = hit.text.partition("\n")[2] if "\n" in hit.text else hit.text
        blocks = by_label.setdefault(hit.section, [])
        for block in markdown_blocks(body):
            if block not in blocks:  # overlapping pieces of a long section
                blocks.append(block)
    return [Section(tuple(label.split(" > ")), blocks) for label, blocks in by_label.items()]


def lead_text(blocks: Sequence[Block], limit: int = LEAD_CHARS) -> str:
    """The first sentences of a section's prose, up to ``limit`` characters (whole sentences;
    one sentence longer than the limit is kept whole)."""
    prose = " ".join(b.text for b in blocks if b.kind in ("p", "li")).strip()
    out = ""
    for sentence in _SENTENCE_END.split(prose):
        if out and len(out) + len(sentence) + 1 > limit:
            break
        out = f"{out} {sentence}".strip()
    return out


def _after_lead(blocks: Sequence[Block], lead: str) -> list[Block]:
    """The blocks of a section after those its lead already quotes."""
    for index, block in enumerate(blocks):
        if block.kind not in ("p", "li") or block.text.strip() not in lead:
            return list(blocks[index:])
    return []


def _within_budget(blocks: Sequence[Block], budget: int) -> tuple[list[Block], bool]:
    """Blocks in order while their text fits ``budget``; code blocks are kept whole and always
    (commands are what the engineer needs most). Returns (kept, whether prose was left out)."""
    kept: list[Block] = []
    used = 0
    left_out = False
    for block in blocks:
        if block.kind == "code":
            kept.append(block)
            continue
        if used + len(block.text) > budget:
            left_out = True
            continue
        kept.append(block)
        used += len(block.text)
    # a sub-heading with nothing kept under it says nothing
    return [b for i, b in enumerate(kept) if b.kind != "h" or _has_body(kept, i)], left_out


def _distinct(blocks: Sequence[Block]) -> list[Block]:
    """Blocks without a repeat of an earlier one (same kind and words, however wrapped): runbooks
    sometimes carry a paragraph twice, and an answer quoting both says it twice."""
    seen: set[tuple[str, str]] = set()
    kept: list[Block] = []
    for block in blocks:
        key = (block.kind, " ".join(block.text.split()))
        if block.kind != "h" and key in seen:
            continue
        seen.add(key)
        kept.append(block)
    return kept


def _is_placeholder(block: Block) -> bool:
    return block.kind in ("p", "li") and bool(_PLACEHOLDER.match(block.text.strip()))


def without_placeholders(blocks: Sequence[Block]) -> list[Block]:
    """A section's blocks without its placeholder paragraphs (``TODO`` above a link)."""
    return [b for b in blocks if not _is_placeholder(b)]


def placeholder(blocks: Sequence[Block]) -> str | None:
    """The placeholder (``TODO``...) a section says instead of any content, else None."""
    said = [b.text.strip() for b in blocks if _is_placeholder(b)]
    rest = [b for b in blocks if b.kind != "h" and not _is_placeholder(b)]
    return said[0] if said and not rest else None


def _has_body(blocks: Sequence[Block], index: int) -> bool:
    return index + 1 < len(blocks) and blocks[index + 1].kind != "h"


class _Numbering:
    """Citation numbers in order of first use (after those of ``seed``)."""

    def __init__(self, seed: Sequence[Citation] = ()) -> None:
        self.citations = list(seed)
        self._by_key = {(c.source_type, c.source, c.section): c.number for c in seed}

    def number(self, hit: SearchHit | None, source: str, section: str, title: str = "") -> int:
        source_type = hit.source_type if hit is not None else "runbook"
        key = (source_type, source, section)
        if key not in self._by_key:
            self._by_key[key] = len(self.citations) + 1
            self.citations.append(
                Citation(
                    number=self._by_key[key],
                    source=source,
                    source_type=source_type,
                    section=section,
                    title=hit.title if hit is not None else title,
                    timestamp=hit.timestamp if hit is not None else None,
                    end_timestamp=hit.end_timestamp if hit is not None else None,
                    document_id=hit.id if hit is not None else "",
                )
            )
        return self._by_key[key]


def quoted(text: str, language: Language) -> str:
    """Runbook text as part of an answer: as it is in English; in another language as a Markdown
    quote, so the answer's own words (headings, notes) stand apart from the runbook's."""
    if language == "en":
        return text
    return "\n".join(f"> {line}" if line else ">" for line in text.split("\n"))


def compose_answer(
    hits: Sequence[SearchHit],
    pack: dict[str, dict[str, Any]],
    language: Language,
    citations: Sequence[Citation] = (),
    primary: str | None = None,
    covered: bool = True,
) -> Composed:
    """The composed answer for ranked ``hits`` (runbook and signal hits, best first).

    ``citations`` already numbered (e.g. in a model's prompt) keep their numbers; ``primary`` is
    the runbook to answer from (default: the best runbook hit; one the question names by its
    alert may have no hit, its pack entry is then used); ``covered=False``: no runbook is
    related to the question, and the answer says so instead of quoting the nearest one."""
    text = labels(language)
    runbook_hits = [h for h in hits if h.source_type == "runbook"] if covered else []
    signal_hits = [h for h in hits if h.source_type != "runbook"]
    numbering = _Numbering(citations)
    parts: list[str] = []
    if not covered:
        primary = None
    elif primary is None:
        primary = runbook_hits[0].source if runbook_hits else None
    if primary is not None:
        parts.extend(_primary_parts(primary, runbook_hits, pack, numbering, language))
        also = _see_also(primary, runbook_hits, pack, numbering)
        if also:
            parts.append(f"### {text['see_also']}\n\n" + quoted("\n".join(also), language))
    if signal_hits:
        lines = [_signal_line(hit, numbering) for hit in signal_hits[:SIGNALS]]
        parts.append(f"### {text['signals']}\n\n" + quoted("\n".join(lines), language))
    if not covered:
        parts.insert(0, text["not_covered"])
    elif not parts:
        parts.append(text["nothing_found"])
    elif primary is not None and text["quoted_note"]:
        parts.append(f"_{text['quoted_note']}_")
    return Composed("\n\n".join(parts), numbering.citations, primary)


def _primary_parts(
    source: str,
    runbook_hits: Sequence[SearchHit],
    pack: dict[str, dict[str, Any]],
    numbering: _Numbering,
    language: Language,
) -> list[str]:
    text = labels(language)
    entry = pack.get(source) or {}
    first = next((h for h in runbook_hits if h.source == source), None)
    sections = pack_sections(entry) or hit_sections(runbook_hits, source)
    retrieved = {h.section for h in runbook_hits if h.source == source}
    title = str(entry.get("alert") or entry.get("title") or (first and first.title) or source)
    hit_for = {h.section: h for h in runbook_hits if h.source == source}

    def cite(section: Section) -> str:
        n = numbering.number(hit_for.get(section.label), source, section.label, title)
        return f"[{n}]"

    by_role: dict[Role, list[Section]] = {}
    for section in sections:
        by_role.setdefault(role_of(section.path), []).append(section)
    parts: list[str] = []
    meaning = (by_role.get("meaning") or sections)[0] if sections else None
    lead = lead_text(without_placeholders(meaning.blocks)) if meaning is not None else ""
    if meaning is not None and lead and language == "en":
        parts.append(f"**{title}**: {lead} {cite(meaning)}")
    elif meaning is not None and lead:
        parts.append(f"**{title}**\n\n" + quoted(f"{lead} {cite(meaning)}", language))
    else:
        parts.append(f"**{title}**")
    for impact in [s for s in by_role.get("impact", [])[:1] if s is not meaning]:
        summary = lead_text(without_placeholders(impact.blocks))
        if summary:
            parts.append(
                f"**{text['impact']}**:\n\n" + quoted(f"{summary} {cite(impact)}", language)
                if language != "en"
                else f"**{text['impact']}**: {summary} {cite(impact)}"
            )
    groups: list[tuple[str, list[Section]]] = [
        ("confirm", by_role.get("diagnosis", [])),
        ("", [s for s in by_role.get("other", []) if s.label in retrieved and s is not meaning]),
        ("act", by_role.get("mitigation", [])),
    ]
    rest = _after_lead(meaning.blocks, lead) if meaning is not None else []
    if rest and not by_role.get("diagnosis") and not by_role.get("mitigation"):
        # a runbook written as one section (no Diagnosis/Mitigation headings): its steps are
        # the rest of that section, not something to leave out after its first sentence
        assert meaning is not None
        groups.insert(0, ("steps", [Section(meaning.path, rest)]))
    for heading, chosen in groups:
        if not chosen:
            continue
        budget = ROLE_CHARS
        pieces: list[str] = []
        unwritten: list[str] = []
        for section in chosen:
            said = placeholder(section.blocks)
            if said is not None:
                unwritten.append(
                    text["unwritten"].format(section=section.label, said=said) + f" {cite(section)}"
                )
                continue
            blocks, left_out = _within_budget(
                _distinct(without_placeholders(section.blocks)), budget
            )
            budget -= sum(len(b.text) for b in blocks if b.kind != "code")
            if not blocks:
                continue
            subheading = section.path[-1] if len(section.path) > 1 or not heading else ""
            body = quoted(render_blocks(blocks, cite(section)), language)
            if left_out:
                body += f"\n\n_{text['more_in']} {cite(section)}_"
            only_code = all(b.kind in ("code", "h") for b in blocks)
            if subheading:  # a section of code alone is cited on its heading
                cited = f" {cite(section)}" if only_code else ""
                body = f"**{subheading}**{cited}\n\n{body}"
            elif only_code:
                body += f"\n\n{cite(section)}"
            pieces.append(body)
        if not pieces and unwritten:
            pieces = [f"_{line}_" for line in unwritten]
        if pieces:
            lead_heading = f"### {text[heading]}\n\n" if heading else ""
            parts.append(lead_heading + "\n\n".join(pieces))
    return parts


def _see_also(
    primary: str,
    runbook_hits: Sequence[SearchHit],
    pack: dict[str, dict[str, Any]],
    numbering: _Numbering,
) -> list[str]:
    lines: list[str] = []
    seen = {primary}
    for hit in runbook_hits:
        if hit.source in seen or len(lines) >= SEE_ALSO:
            continue
        seen.add(hit.source)
        entry = pack.get(hit.source) or {}
        name = str(entry.get("alert") or entry.get("title") or hit.title or hit.source)
        sections = pack_sections(entry) or hit_sections(runbook_hits, hit.source)
        meaning = next((s for s in sections if role_of(s.path) == "meaning"), None)
        summary = lead_text(without_placeholders(meaning.blocks), 200) if meaning else ""
        if meaning is not None:
            n = numbering.number(None, hit.source, meaning.label, name)
        else:
            n = numbering.number(hit, hit.source, hit.section)
        lines.append(f"- **{name}**" + (f": {summary}" if summary else "") + f" [{n}]")
    return lines


def _signal_line(hit: SearchHit, numbering: _Numbering) -> str:
    n = numbering.number(hit, hit.source, hit.section)
    body = hit.text.partition("\n")[2] or hit.text
    first = " ".join(body.split())[:240]
    span = time_range(hit.timestamp, hit.end_timestamp)
    where = f"{hit.source} ({hit.source_type}{', ' + span if span else ''})"
    return f"- {where}: {first} [{n}]"

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
import posixpath
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
# [text](target) to another runbook: a Hugo shortcode ({{< ref "./X.md" >}}, relref) or a
# relative path to a .md file. Quoted as written it is a dead link; the answer cites that
# runbook instead, and a runbook that is only such a link is answered from the one it names.
_RUNBOOK_LINK = re.compile(
    r"\[([^\[\]]+)\]\(\s*(?:\{\{<\s*(?:rel)?ref\s+\"?([^\"\s>]+)\"?\s*>\}\}"
    r"|(?![a-z][a-z0-9+.-]*:)([^()\s]+?\.md)(?:#[^()\s]*)?)\s*\)",
    re.IGNORECASE,
)
_STEP_HEADING = re.compile(r"^\s*(?:\d+[.):]?\s|step\b|шаг\b)", re.IGNORECASE)
_BOLD_LINE = re.compile(r"^\*\*[^*]+\*\*$")
POINTER_WORDS = 6  # "See [X](...) for additional mitigation steps." is a pointer, not advice
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
    one sentence longer than the limit is kept whole). A code block, a sub-heading or a bold
    line (a ``<summary>``) after the first prose ends it: the lead is one run of text."""
    texts: list[str] = []
    for block in blocks:
        if block.kind in ("p", "li") and not _BOLD_LINE.match(block.text):
            texts.append(block.text)
        elif texts:
            break
    prose = " ".join(texts).strip()
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


def linked_runbook(source: str, target: str) -> str:
    """The runbook path a link in ``source`` points to (``./X.md`` beside it, ``/a/X.md`` from
    the root; a Hugo ref may leave out ``.md``)."""
    path = target.split("#", 1)[0]
    if not path.endswith(".md"):
        path += ".md"
    if path.startswith("/"):
        return posixpath.normpath(path.lstrip("/"))
    return posixpath.normpath(posixpath.join(posixpath.dirname(source), path))


def redirect_of(source: str, sections: Sequence[Section]) -> str | None:
    """The runbook that ``source`` only points to: its whole text is one paragraph, a link to
    another runbook and at most :data:`POINTER_WORDS` other words ("See [Node RAID
    Degraded](...)")."""
    blocks = [b for s in sections for b in s.blocks if b.kind != "h"]
    if len(blocks) != 1 or blocks[0].kind != "p":
        return None
    match = _RUNBOOK_LINK.search(blocks[0].text)
    around = blocks[0].text[: match.start()] + blocks[0].text[match.end() :] if match else ""
    if match is None or len(around.split()) > POINTER_WORDS:
        return None
    target = linked_runbook(source, match.group(2) or match.group(3))
    return target if target != source else None


def matched_first(sections: Sequence[Section], rank: dict[str, int]) -> list[Section]:
    """Alternative sub-sections (Mitigation > Data retention, > Direct volume resizing...) with
    those the search matched first, best first: the one the question asks about is not left
    fourth, or cut by the text budget. Numbered steps ("1. Check...", "Step 2") keep their
    order."""
    if len(sections) < 2 or any(_STEP_HEADING.match(s.path[-1]) for s in sections):
        return list(sections)
    # a sub-section moves with its family (Slow disk > PromQL queries stays under Slow disk)
    best: dict[tuple[str, ...], int] = {}
    for section in sections:
        family = section.path[:2]
        best[family] = min(best.get(family, len(rank)), rank.get(section.label, len(rank)))
    # the role's own text (Diagnosis before its sub-sections) introduces them: it stays first
    return sorted(sections, key=lambda s: (len(s.path) > 1, best[s.path[:2]]))


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
    unmatched: Sequence[str] = (),
) -> Composed:
    """The composed answer for ranked ``hits`` (runbook and signal hits, best first).

    ``citations`` already numbered (e.g. in a model's prompt) keep their numbers; ``primary`` is
    the runbook to answer from (default: the best runbook hit; one the question names by its
    alert may have no hit, its pack entry is then used); ``covered=False``: no runbook is
    related to the question, and the answer says so instead of quoting the nearest one;
    ``unmatched``: names no runbook mentions in a question the nearest runbook matches weakly
    (:func:`opsassist.chat.coverage.weak_match`), said first so the quote is read with care."""
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
        redirect = _redirect(primary, runbook_hits, pack, numbering, language)
        target = redirect[0] if redirect is not None else None
        if redirect is not None:
            parts.append(redirect[1])
        parts.extend(_primary_parts(target or primary, runbook_hits, pack, numbering, language))
        also = _see_also(primary, runbook_hits, pack, numbering, skip=target)
        if also:
            parts.append(f"### {text['see_also']}\n\n" + quoted("\n".join(also), language))
    if signal_hits:
        lines = [_signal_line(hit, numbering) for hit in signal_hits[:SIGNALS]]
        parts.append(f"### {text['signals']}\n\n" + quoted("\n".join(lines), language))
    if not covered:
        parts.insert(0, text["not_covered"])
    elif unmatched and primary is not None:
        names = ", ".join(f"**{name}**" for name in unmatched)
        parts.insert(0, text["weak_match"].format(names=names))
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

    def linked_text(value: str, base: str = source) -> str:
        """``value`` with its links to other runbooks citing them (numbered when shown, so call
        it on what is rendered, after the section's own citation)."""

        def relink(match: re.Match[str]) -> str:
            target = linked_runbook(base, match.group(2) or match.group(3))
            entry = pack.get(target)
            if entry is None or target == base:  # unknown, or a link to itself
                return match.group(1)
            other = pack_sections(entry)
            label = next(
                (s.label for s in other if role_of(s.path) == "meaning"),
                other[0].label if other else "",
            )
            n = numbering.number(None, target, label, _name(entry, target))
            return f"{match.group(1)} [{n}]"

        return _RUNBOOK_LINK.sub(relink, value)

    def linked(blocks: Sequence[Block], base: str = source) -> list[Block]:
        return [
            b if b.kind == "code" else dataclasses.replace(b, text=linked_text(b.text, base))
            for b in blocks
        ]

    def pointed(section: Section) -> str | None:
        """A section that only points to another runbook ("See [X](...) for mitigation
        steps"): X's section of the same role, quoted and cited."""
        target = redirect_of(source, [section])
        entry = pack.get(target) if target is not None else None
        if target is None or entry is None:
            return None
        role = role_of(section.path)
        chosen = [
            (other, _within_budget(_distinct(without_placeholders(other.blocks)), ROLE_CHARS)[0])
            for other in pack_sections(entry)
            if role_of(other.path) == role
        ]
        chosen = [(other, blocks) for other, blocks in chosen if blocks]
        if not chosen:
            return None
        name = _name(entry, target)
        pieces = [f"_{text['pointed'].format(target=name)}_ {cite(section)}"]
        for other, blocks in chosen:
            mark = f"[{numbering.number(None, target, other.label, name)}]"
            pieces.append(quoted(render_blocks(linked(blocks, target), mark), language))
        return "\n\n".join(pieces)

    by_role: dict[Role, list[Section]] = {}
    for section in sections:
        by_role.setdefault(role_of(section.path), []).append(section)
    parts: list[str] = []
    meaning = (by_role.get("meaning") or sections)[0] if sections else None
    lead = lead_text(without_placeholders(meaning.blocks)) if meaning is not None else ""
    if meaning is not None and lead:
        mark = cite(meaning)
        shown = f"{linked_text(lead)} {mark}"
        if language == "en":
            parts.append(f"**{title}**: {shown}")
        else:
            parts.append(f"**{title}**\n\n" + quoted(shown, language))
    else:
        parts.append(f"**{title}**")
    for impact in [s for s in by_role.get("impact", [])[:1] if s is not meaning]:
        summary = lead_text(without_placeholders(impact.blocks))
        if summary.endswith(":"):
            # the lead announces what follows (a query, a list): without it, it promises nothing
            blocks, _ = _within_budget(_distinct(without_placeholders(impact.blocks)), ROLE_CHARS)
            mark = cite(impact)
            body = quoted(render_blocks(linked(blocks), mark), language)
            parts.append(f"**{text['impact']}**:\n\n{body}")
        elif summary:
            mark = cite(impact)
            shown = f"{linked_text(summary)} {mark}"
            parts.append(
                f"**{text['impact']}**:\n\n" + quoted(shown, language)
                if language != "en"
                else f"**{text['impact']}**: {shown}"
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
    elif rest and meaning is not None and meaning.label in retrieved:
        # the question matched what the alert means beyond its first sentences (TargetDown's
        # "Full context": a misconfigured ServiceMonitor port is a common cause)
        if len(rest) > 1 and rest[0].kind == "p" and _BOLD_LINE.match(rest[0].text):
            rest = rest[1:]  # "**Full context**": the group's heading says it
        groups.insert(0, ("background", [Section(meaning.path, rest)]))
    rank: dict[str, int] = {}
    for index, hit in enumerate(runbook_hits):
        if hit.source == source:
            rank.setdefault(hit.section, index)
    for heading, chosen in groups:
        if not chosen:
            continue
        chosen = matched_first(chosen, rank)
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
            pointer = pointed(section)
            if pointer is not None:
                pieces.append(pointer)
                continue
            blocks, left_out = _within_budget(
                _distinct(without_placeholders(section.blocks)), budget
            )
            budget -= sum(len(b.text) for b in blocks if b.kind != "code")
            if not blocks:
                continue
            subheading = section.path[-1] if len(section.path) > 1 or not heading else ""
            mark = cite(section)
            body = quoted(render_blocks(linked(blocks), mark), language)
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


def _name(entry: dict[str, Any], source: str) -> str:
    return str(entry.get("alert") or entry.get("title") or source)


def _redirect(
    source: str,
    runbook_hits: Sequence[SearchHit],
    pack: dict[str, dict[str, Any]],
    numbering: _Numbering,
    language: Language,
) -> tuple[str, str] | None:
    """(the runbook ``source`` only points to, the line saying so) when the knowledge pack holds
    that runbook, else None."""
    entry = pack.get(source) or {}
    sections = pack_sections(entry) or hit_sections(runbook_hits, source)
    target = redirect_of(source, sections)
    linked = pack.get(target) if target is not None else None
    if target is None or linked is None or not pack_sections(linked):
        return None
    label = sections[0].label
    hit = next((h for h in runbook_hits if h.source == source and h.section == label), None)
    title = _name(entry, source)
    n = numbering.number(hit, source, label, title)
    line = labels(language)["redirect"].format(title=title, target=_name(linked, target))
    return target, f"{line} [{n}]"


def _see_also(
    primary: str,
    runbook_hits: Sequence[SearchHit],
    pack: dict[str, dict[str, Any]],
    numbering: _Numbering,
    skip: str | None = None,
) -> list[str]:
    lines: list[str] = []
    seen = {primary, skip}
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

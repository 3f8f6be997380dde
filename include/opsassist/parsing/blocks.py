"""A runbook section's Markdown as a flat list of blocks an answer can quote: paragraphs, list
items (with their depth), fenced code and sub-headings.

Quoting block by block keeps what the engineer needs intact: a code block is never cut or
joined onto a line, a list stays a list, and each block can carry its own citation. Runbook HTML
is turned into Markdown or dropped here (``<details><summary>X</summary>`` becomes a bold line,
other tags keep their text): Open WebUI shows Markdown, and raw tags in an answer are noise.
Parsing is markdown-it-py's (CommonMark, linear in the input).
"""

from __future__ import annotations

import dataclasses
import html
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from markdown_it import MarkdownIt
from markdown_it.common.utils import normalizeReference
from markdown_it.token import Token

BlockKind = Literal["p", "li", "code", "h"]

_PARSER = MarkdownIt("commonmark", {"html": True}).enable("table")
_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?>")
_SUMMARY = re.compile(r"<summary[^<>]*>([^<]*)</summary>", re.IGNORECASE)
_CODE_SPAN = re.compile(r"(`[^`\n]+`)")
_BACKTICKS = re.compile(r"`+")
LONG_LINE = 4000  # characters; the longest line in the shipped runbooks is under 700
_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_ANCHOR_LINK = re.compile(r"\[([^\[\]]*)\]\(#[^()\s]*\)")  # [text](#anchor): a link into the page
_INLINE_LINK = re.compile(r"\[([^\[\]\n]+)\]\(((?:[^()\s]|\([^()\s]*\))+)\)")
_REFERENCE_LINK = re.compile(r"\[([^\[\]]+)\]\[([^\[\]]*)\]")  # [text][label], [text][]


@dataclasses.dataclass(frozen=True, slots=True)
class Block:
    kind: BlockKind
    text: str
    depth: int = 0  # li: nesting (0 = top level); code: lists it is inside (0 = none)
    lang: str = ""  # code: the fence's info string
    ordered: bool = False  # li: item of a numbered list

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind, "text": self.text}
        if self.depth:
            data["depth"] = self.depth
        if self.lang:
            data["lang"] = self.lang
        if self.ordered:
            data["ordered"] = True
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Block:
        return cls(
            kind=data["kind"],
            text=data["text"],
            depth=int(data.get("depth", 0)),
            lang=str(data.get("lang", "")),
            ordered=bool(data.get("ordered", False)),
        )


def drop_comments(text: str) -> str:
    """``text`` without HTML comments (an unclosed one runs to the end), by string search."""
    out: list[str] = []
    position = 0
    while (start := text.find("<!--", position)) >= 0:
        out.append(text[position:start])
        end = text.find("-->", start + 4)
        position = len(text) if end < 0 else end + 3
    out.append(text[position:])
    return "".join(out)


def strip_html(text: str) -> str:
    """Inline HTML to plain Markdown text: comments dropped, ``<br>`` as a space, a
    ``<summary>`` as bold, other tags removed with their text kept, entities decoded. Code spans
    are kept as written (``<namespace>`` in one is a placeholder, not a tag)."""
    text = drop_comments(text)
    if "`" not in text:
        return _strip_html_outside_code(text)
    pieces = _CODE_SPAN.split(text)  # prose, code span, prose, ...
    return "".join(
        piece if index % 2 else _strip_html_outside_code(piece)
        for index, piece in enumerate(pieces)
    )


def _strip_html_outside_code(text: str) -> str:
    text = _SUMMARY.sub(lambda m: f"**{m.group(1).strip()}**", text)
    text = _BREAK.sub(" ", text)
    if "<" in text:
        text = _TAG.sub("", text)
    if "&" in text:
        text = html.unescape(text)
    return text


def _inline_links(markdown: str) -> dict[str, str]:
    """The document's inline links by their text: upstream runbooks write ``[here][fsync]`` and
    define it only as a link elsewhere (``- [fsync](https://...)``, ``See [fsync](...)``)."""
    return {normalizeReference(label): href for label, href in _INLINE_LINK.findall(markdown)}


def link_references(markdown: str) -> dict[str, str]:
    """The link reference definitions (``[label]: url``, else an inline link with that text) of
    a whole document, by normalised label: a section quoted alone lacks those of another."""
    references = _inline_links(markdown)
    if "]:" in markdown:
        env: dict[str, Any] = {}
        _PARSER.parse(fence_long_lines(markdown), env)
        references |= {label: str(ref["href"]) for label, ref in env.get("references", {}).items()}
    return references


def _inline_text(token: Token, references: Mapping[str, str]) -> str:
    """An inline token's Markdown source on one line, without HTML, with reference links made
    inline links and without links to anchors of the runbook's own page (they lead nowhere once
    quoted)."""
    text = strip_html(token.content)
    if references and "][" in text:

        def inline(match: re.Match[str]) -> str:
            href = references.get(normalizeReference(match.group(2) or match.group(1)))
            if href is None:
                return match.group(0)
            return match.group(1) if href.startswith("#") else f"[{match.group(1)}]({href})"

        # not inside code spans: `a[i][j]` is code, not a link
        text = "".join(
            part if index % 2 else _REFERENCE_LINK.sub(inline, part)
            for index, part in enumerate(_CODE_SPAN.split(text))
        )
    return " ".join(_ANCHOR_LINK.sub(r"\1", text).split())


def _html_blocks(content: str) -> list[Block]:
    """A raw HTML block: its summary as a bold line, its remaining text as paragraphs."""
    blocks: list[Block] = []
    content = drop_comments(content)
    for summary in _SUMMARY.findall(content):
        text = " ".join(strip_html(summary).split())
        if text:
            blocks.append(Block("p", f"**{text}**"))
    rest = _SUMMARY.sub("", content)
    for paragraph in re.split(r"\n\s*\n", strip_html(rest)):
        text = " ".join(paragraph.split())
        if text:
            blocks.append(Block("p", text))
    return blocks


def _table(tokens: Sequence[Token], start: int, lines: Sequence[str]) -> tuple[Block, int]:
    """A table as its source lines (a code-free, readable Markdown table), and the index after."""
    depth = 0
    index = start
    while index < len(tokens):
        if tokens[index].type == "table_open":
            depth += 1
        elif tokens[index].type == "table_close":
            depth -= 1
            if depth == 0:
                break
        index += 1
    first, last = tokens[start].map or (0, 0)
    text = "\n".join(strip_html(line).rstrip() for line in lines[first:last])
    return Block("p", text), index + 1


def fence_long_lines(markdown: str, limit: int = LONG_LINE) -> str:
    """``markdown`` with every line over ``limit`` characters outside a code block put in a code
    block of its own: shown verbatim, not parsed. markdown-it tries its inline rules at every
    punctuation mark (~20 us each), so one long line of them would take seconds."""
    if len(markdown) <= limit or all(len(line) <= limit for line in markdown.splitlines()):
        return markdown
    out: list[str] = []
    fence = ""
    for line in markdown.splitlines():
        marker = line.lstrip()[:3]
        if marker in ("```", "~~~"):
            fence = "" if fence and marker == fence else (fence or marker)
        elif not fence and len(line) > limit:
            ticks = "`" * (max((len(run) for run in _BACKTICKS.findall(line)), default=0) + 3)
            line = f"\n{ticks}\n{line}\n{ticks}\n"
        out.append(line)
    return "\n".join(out)


def referenced_labels(markdown: str) -> set[str]:
    """The normalised labels a document's ``[text][label]`` links use."""
    return {
        normalizeReference(m.group(2) or m.group(1)) for m in _REFERENCE_LINK.finditer(markdown)
    }


def markdown_blocks(
    markdown: str,
    references: Mapping[str, str] | None = None,
    used_labels: Iterable[str] = (),
) -> list[Block]:
    """The blocks of a Markdown text, in order. Empty blocks are dropped. ``references``: link
    reference definitions of the whole document (:func:`link_references`) besides its own;
    ``used_labels``: labels the document's reference links use (:func:`referenced_labels`): a
    list item that only defines one of them (``- [fsync](https://...)``) is left out, its link
    is inline where it is used."""
    markdown = fence_long_lines(markdown)
    env: dict[str, Any] = {}
    tokens = _PARSER.parse(markdown, env)
    own = {label: str(ref["href"]) for label, ref in env.get("references", {}).items()}
    # as the whole runbook renders: a definition anywhere beats an inline link with that text
    references = {**_inline_links(markdown), **(references or {}), **own}
    lines = markdown.splitlines()
    blocks: list[Block] = []
    lists: list[bool] = []  # open lists, innermost last: ordered?
    in_item = 0  # paragraphs directly inside the current list item
    index = 0
    while index < len(tokens):
        token = tokens[index]
        kind = token.type
        if kind in ("bullet_list_open", "ordered_list_open"):
            lists.append(kind == "ordered_list_open")
        elif kind in ("bullet_list_close", "ordered_list_close"):
            lists.pop()
        elif kind == "list_item_open":
            in_item = 0
        elif kind == "inline" and index > 0:
            opener = tokens[index - 1].type
            text = _inline_text(token, references)
            if not text:
                pass
            elif opener == "heading_open":
                blocks.append(Block("h", text))
            elif lists:
                depth = len(lists) - 1
                if in_item == 0:
                    blocks.append(Block("li", text, depth=depth, ordered=lists[-1]))
                else:  # a second paragraph of the same item: continues it
                    last = blocks[-1]
                    blocks[-1] = dataclasses.replace(last, text=f"{last.text} {text}")
                in_item += 1
            else:
                blocks.append(Block("p", text))
        elif kind in ("fence", "code_block"):
            code = token.content.rstrip("\n")
            if code.strip():
                info = token.info.strip().split(" ", 1)[0] if kind == "fence" else ""
                blocks.append(Block("code", code, depth=len(lists), lang=info))
        elif kind == "html_block":
            blocks.extend(_html_blocks(token.content))
        elif kind == "table_open":
            block, index = _table(tokens, index, lines)
            blocks.append(block)
            continue
        index += 1
    used = set(used_labels) | referenced_labels(markdown)
    if not used:
        return blocks
    return [b for b in blocks if not (b.kind == "li" and _defines(b.text, used))]


def _defines(text: str, labels: set[str]) -> bool:
    match = _INLINE_LINK.fullmatch(text.strip())
    return match is not None and normalizeReference(match.group(1)) in labels


def render_blocks(blocks: Iterable[Block], suffix: str = "") -> str:
    """Blocks back to Markdown, ``suffix`` (e.g. a citation ``[2]``) after each text block."""
    out: list[str] = []
    previous: Block | None = None
    for block in blocks:
        tail = f" {suffix}" if suffix else ""
        if block.kind == "code":
            # inside a list item: indented to the item's content (3 spaces fit "- " and "1. ")
            indent = " " * (4 * (block.depth - 1) + 3) if block.depth else ""
            fence = "~~~" if "```" in block.text else "```"
            body = "\n".join(f"{indent}{line}" if line else line for line in block.text.split("\n"))
            piece = f"{indent}{fence}{block.lang}\n{body}\n{indent}{fence}"
        elif block.kind == "li":
            marker = "1." if block.ordered else "-"
            piece = f"{'    ' * block.depth}{marker} {block.text}{tail}"
        elif block.kind == "h":
            piece = f"**{block.text}**"
        else:
            piece = f"{block.text}{tail}"
        if out:
            tight = block.kind == "li" and previous is not None and previous.kind == "li"
            out.append("\n" if tight else "\n\n")
        out.append(piece)
        previous = block
    return "".join(out)

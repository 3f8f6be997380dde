"""Parse a Markdown runbook: front matter, heading tree, ordered steps, fenced commands, alert name.

Bad files raise ``RunbookError`` with a short reason; the pipeline quarantines them and goes on.
Headings inside fenced code blocks are not headings (shell comments start with ``#`` too). A
fence that is never closed ends before the next ``##`` heading after a blank line: runbooks forget
the closing marks, and reading the rest of the file as code would hide its remaining sections.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import yaml

MAX_RUNBOOK_BYTES = 1_000_000

_FENCE = re.compile(r"^\s*(```|~~~)")
_ORDERED_STEP = re.compile(r"^\s*\d+[.)]\s+(.+)$")
_BULLET_STEP = re.compile(r"^\s{0,3}[-*+]\s+(.+)$")
_INLINE_CMD = re.compile(
    r"`((?:kubectl|oc|helm|curl|systemctl|journalctl|etcdctl|promtool|amtool|"
    r"df|du|ls|ip|ss|iptables|docker|crictl)\b[^`]*)`"
)
_ALERT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]+$")


class RunbookError(ValueError):
    """A runbook that cannot be indexed; ``reason`` is a short machine-friendly label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclasses.dataclass(slots=True)
class Section:
    path: tuple[str, ...]
    body: str
    commands: list[str]
    steps: list[str]

    @property
    def label(self) -> str:
        return " > ".join(self.path)


@dataclasses.dataclass(slots=True)
class Runbook:
    source: str
    title: str
    alert: str
    front_matter: dict[str, Any]
    sections: list[Section]

    def section(self, name: str) -> Section | None:
        wanted = name.lower()
        return next((s for s in self.sections if s.path and s.path[0].lower() == wanted), None)


def read_text(path: Path) -> str:
    """Read a runbook as UTF-8, refusing binary and undecodable files with a clear reason."""
    raw = path.read_bytes()
    if len(raw) > MAX_RUNBOOK_BYTES:
        raise RunbookError("too large", f"{len(raw)} bytes > {MAX_RUNBOOK_BYTES}")
    if b"\x00" in raw:
        raise RunbookError("binary content", "NUL bytes found")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RunbookError("unreadable encoding", f"not UTF-8 at byte {exc.start}") from exc


def split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    """Return (front matter, body). Only a leading ``---`` block counts as front matter."""
    if not text.startswith("---"):
        return {}, text
    lines = text.splitlines(keepends=True)
    if lines[0].strip() != "---":
        return {}, text
    for index in range(1, len(lines)):
        if lines[index].strip() in ("---", "..."):
            block = "".join(lines[1:index])
            try:
                data = yaml.safe_load(block) if block.strip() else {}
            except yaml.YAMLError as exc:
                first = str(exc).splitlines()[0]
                raise RunbookError("broken front matter", f"invalid YAML ({first})") from exc
            if data is None:
                data = {}
            if not isinstance(data, dict):
                raise RunbookError("broken front matter", "front matter is not a mapping")
            return data, "".join(lines[index + 1 :])
    raise RunbookError("broken front matter", "opening --- has no closing ---")


def _extract_steps_and_commands(body: str) -> tuple[list[str], list[str]]:
    steps: list[str] = []
    commands: list[str] = []
    in_fence = False
    fence_lines: list[str] = []
    for line in body.splitlines():
        if _FENCE.match(line):
            if in_fence:
                block = "\n".join(fence_lines).strip()
                if block:
                    commands.append(block)
                fence_lines = []
            in_fence = not in_fence
            continue
        if in_fence:
            fence_lines.append(line)
            continue
        step = _ORDERED_STEP.match(line) or _BULLET_STEP.match(line)
        if step:
            steps.append(step.group(1).strip())
        commands.extend(match.group(1).strip() for match in _INLINE_CMD.finditer(line))
    if in_fence and "\n".join(fence_lines).strip():  # a fence the section never closed
        commands.append("\n".join(fence_lines).strip())
    return steps, commands


def _section_heading(lines: list[str], index: int) -> bool:
    """A ``##`` (or deeper) heading after a blank line: in code, ``# ...`` is a shell comment."""
    heading = atx_heading(lines[index])
    return heading is not None and heading[0] >= 2 and not lines[index - 1].strip()


def fenced_lines(lines: list[str]) -> list[bool]:
    """Per line, whether it is inside a fenced code block (its marks included). A fence with no
    closing marks ends before the next section heading (or at the end without one)."""
    inside = [False] * len(lines)
    index = 0
    while index < len(lines):
        if not _FENCE.match(lines[index]):
            index += 1
            continue
        close = next((j for j in range(index + 1, len(lines)) if _FENCE.match(lines[j])), None)
        if close is None:
            close = next(
                (j - 1 for j in range(index + 2, len(lines)) if _section_heading(lines, j)),
                len(lines) - 1,
            )
        for j in range(index, close + 1):
            inside[j] = True
        index = close + 1
    return inside


def atx_heading(line: str) -> tuple[int, str] | None:
    """``(level, text)`` of a ``## Heading ##`` line, else None. String scanning, not a regex:
    a heading pattern with a lazy group before optional trailing marks backtracks
    quadratically on a line of spaces."""
    level = len(line) - len(line.lstrip("#"))
    if not 1 <= level <= 6 or len(line) == level or not line[level].isspace():
        return None
    text = line[level:].strip()
    if not text:
        return None
    closed = text.rstrip("#")
    if closed != text and (not closed or not closed[-1].isspace()):
        closed = text  # "C#" or "###": the marks are the text, not a closing sequence
    return level, closed.strip() or text


def parse_runbook(text: str, source: str) -> Runbook:
    """Parse runbook text; ``source`` is its path relative to the indexed root."""
    front_matter, body = split_front_matter(text)
    if not body.strip():
        raise RunbookError("no text", "the file has no content after the front matter")
    stem = Path(source).stem
    title = str(front_matter.get("title") or "").strip()
    alert = stem if _ALERT_NAME.match(stem) else ""

    sections: list[Section] = []
    path: list[tuple[int, str]] = []  # (level, heading) of the open headings below H1
    buffer: list[str] = []

    def flush() -> None:
        content = "\n".join(buffer).strip()
        buffer.clear()
        if not content:
            return
        steps, commands = _extract_steps_and_commands(content)
        names = tuple(name for _, name in path) or ("Overview",)
        sections.append(Section(path=names, body=content, commands=commands, steps=steps))

    lines = body.splitlines()
    for line, in_fence in zip(lines, fenced_lines(lines), strict=True):
        heading = None if in_fence else atx_heading(line)
        if heading is None:
            buffer.append(line)
            continue
        level, name = heading
        flush()
        if level == 1:
            if not title:
                title = name
            if _ALERT_NAME.match(name):
                alert = name
            path = []
            continue
        while path and path[-1][0] >= level:
            path.pop()
        path.append((level, name))
    flush()

    if not sections:
        raise RunbookError("no text", "headings only, no section text")
    if not title:
        title = stem
    return Runbook(
        source=source, title=title, alert=alert, front_matter=front_matter, sections=sections
    )


def load_runbook(path: Path, root: Path) -> Runbook:
    return parse_runbook(read_text(path), path.relative_to(root).as_posix())

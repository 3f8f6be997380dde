"""Incremental server-sent-events parsing: one ``data`` payload per event, as lines arrive."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator


async def iter_lines(chunks: AsyncIterable[bytes]) -> AsyncIterator[str]:
    """Text lines (without their ``\n``) from byte chunks split anywhere. A UTF-8 character is
    never cut: ``\n`` cannot occur inside one, and only whole lines are decoded."""
    pending = b""
    async for chunk in chunks:
        pending += chunk
        if b"\n" not in chunk:
            continue
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.decode("utf-8", errors="replace")
    if pending:
        yield pending.decode("utf-8", errors="replace")


async def iter_sse_data(lines: AsyncIterable[str]) -> AsyncIterator[str]:
    """Yield the data of each event as soon as its terminating blank line has been read.

    Follows the SSE rules that matter here: ``data:`` lines of one event are joined with newlines,
    one space after the colon is dropped, comments (``:``) and other fields are ignored, and an
    event still open when the stream ends is delivered.
    """
    data: list[str] = []
    async for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)

"""Incremental server-sent-events parsing: one ``data`` payload per event, as lines arrive."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator


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

"""Pages for the sources an answer cites, for an engineer who clicks a link in Open WebUI.

    GET /v1/sources/runbooks/{path}     the runbook as indexed in the promoted version
    GET /v1/sources/documents/{id}      one indexed document (a signal: log, metric, event; a
                                        postmortem section, shown with its whole write-up)

A browser follows these links without the API key, so when keys are configured a page needs the
signature the answer's link carries (``?sig=``, see ``opsassist.chat.links``) or, for scripts,
the usual ``Authorization: Bearer`` key. Runbook text is rendered from Markdown with raw HTML
escaped; each section heading has the anchor the link's ``#fragment`` names.
"""

from __future__ import annotations

import asyncio
import html
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from markdown_it import MarkdownIt

from opsassist.chat.compose import pack_sections
from opsassist.chat.links import anchor, link_key, signature_ok
from opsassist.documents import Chunk
from opsassist.index.base import IndexStore
from opsassist.parsing.blocks import render_blocks
from opsassist.settings import Settings
from serving.auth import check_api_key
from serving.errors import APIError

router = APIRouter(prefix="/v1/sources", include_in_schema=True)
_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")
_STYLE = """
body { font: 15px/1.55 system-ui, sans-serif; max-width: 860px; margin: 2rem auto; padding: 0 1rem;
       color: #1f2328; }
pre { background: #f6f8fa; padding: .8rem; overflow-x: auto; border-radius: 6px; }
code { font: 13px ui-monospace, monospace; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; border-bottom: 1px solid #d0d7de; }
.meta { color: #59636e; font-size: 13px; } :target { background: #fff8c5; }
"""


def _authorize(request: Request, path: str) -> None:
    settings: Settings = request.app.state.services.settings
    key = link_key(settings)
    if not key or signature_ok(key, path, request.query_params.get("sig")):
        return
    check_api_key(request)  # no valid signature: the API key decides (401 without one)


def _page(title: str, body: str, meta: str) -> HTMLResponse:
    document = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><p class='meta'>{html.escape(meta)}</p>"
        f"{body}</body></html>"
    )
    return HTMLResponse(document, headers={"Cache-Control": "private, max-age=300"})


def _section_html(path: tuple[str, ...], markdown: str) -> str:
    level = min(len(path) + 1, 6)
    heading = html.escape(path[-1]) if path else ""
    head = f"<h{level} id='{anchor(path[-1])}'>{heading}</h{level}>" if path else ""
    return head + _MARKDOWN.render(markdown)


def _runbook_from_pack(entry: dict[str, Any]) -> list[tuple[tuple[str, ...], str]]:
    return [(s.path, render_blocks(s.blocks)) for s in pack_sections(entry)]


def _runbook_from_chunks(chunks: list[Chunk]) -> list[tuple[tuple[str, ...], str]]:
    """Sections rebuilt from the indexed chunks (pieces of a long section in order)."""
    ordered = sorted(
        chunks,
        key=lambda c: (c.metadata.get("section_index", 0), c.section, c.metadata.get("part", 0)),
    )
    sections: dict[str, list[str]] = {}
    for chunk in ordered:
        sections.setdefault(chunk.section, []).append(chunk.text.partition("\n")[2])
    return [(tuple(label.split(" > ")), "\n\n".join(parts)) for label, parts in sections.items()]


def _runbook_chunks(store: IndexStore, alias: str, source: str) -> tuple[str, list[Chunk]]:
    version = store.current_version(alias)
    if version is None:
        raise APIError(404, f"index {alias!r} has no promoted version", code="not_found")
    ids = store.ids_by_source(version).get(source)
    if not ids:
        raise APIError(404, f"no runbook {source!r} in {version}", code="not_found")
    return version, store.fetch(version, sorted(ids))


@router.get("/runbooks/{source:path}", response_class=HTMLResponse)
async def runbook_page(source: str, request: Request) -> HTMLResponse:
    _authorize(request, request.url.path)
    services = request.app.state.services
    version, chunks = await asyncio.to_thread(
        _runbook_chunks, services.store, services.settings.runbook_index, source
    )
    try:
        entry = (await asyncio.to_thread(services.cache.get_pack, [source])).get(source) or {}
    except Exception:  # the cache is optional here: the chunks have the text
        entry = {}
    sections = _runbook_from_pack(entry) or _runbook_from_chunks(chunks)
    title = str(entry.get("title") or chunks[0].title or source)
    body = f"<h1>{html.escape(title)}</h1>" + "".join(
        _section_html(path, markdown) for path, markdown in sections
    )
    return _page(title, body, f"{source} · index version {version}")


async def _postmortem_page(store: IndexStore, version: str, chunk: Chunk) -> HTMLResponse:
    ids = (await asyncio.to_thread(store.ids_by_source, version)).get(chunk.source, set())
    chunks = await asyncio.to_thread(store.fetch, version, sorted(ids))
    sections = _runbook_from_chunks(chunks or [chunk])
    body = f"<h1>{html.escape(chunk.title)}</h1>" + "".join(
        _section_html(path, markdown) for path, markdown in sections
    )
    date = chunk.timestamp.date().isoformat() if chunk.timestamp else ""
    meta = f"postmortem · {chunk.source}" + (f" · {date}" if date else "") + f" · {version}"
    return _page(chunk.title, body, meta)


@router.get("/documents/{document_id}", response_class=HTMLResponse)
async def document_page(document_id: str, request: Request) -> HTMLResponse:
    _authorize(request, request.url.path)
    services = request.app.state.services
    store: IndexStore = services.store
    settings = services.settings
    for alias in (settings.signal_index, settings.runbook_index, settings.postmortem_index):
        version = await asyncio.to_thread(store.current_version, alias)
        if version is None:
            continue
        found = await asyncio.to_thread(store.fetch, version, [document_id])
        if found:
            chunk = found[0]
            if chunk.source_type == "postmortem":  # the whole write-up, the section marked
                return await _postmortem_page(store, version, chunk)
            span = " → ".join(
                t.isoformat() for t in (chunk.timestamp, chunk.end_timestamp) if t is not None
            )
            meta = f"{chunk.source_type} · {chunk.source}" + (f" · {span}" if span else "")
            body = (
                f"<h1>{html.escape(chunk.title or chunk.source)}</h1><pre>"
                + html.escape(chunk.text)
                + "</pre>"
            )
            return _page(chunk.title or chunk.source, body, meta)
    raise APIError(404, f"no document {document_id!r}", code="not_found")

"""Links an engineer can open from an answer's sources.

A runbook links to its page in the Git repository when the runbooks come from one (a template,
or derived from a GitHub or GitLab HTTPS URL), else to the chat server's own page
``/v1/sources/runbooks/<path>#<anchor>``; a signal document to ``/v1/sources/documents/<id>``.
A browser opening a link carries no API key, so when the API has keys the chat server's links
are signed: ``?sig=`` is an HMAC of the path, checked by the page (``signature_ok``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import urllib.parse

from opsassist.settings import Settings

_NON_WORD = re.compile(r"[^\w\- ]+", re.UNICODE)
_GIT_HOSTS = re.compile(
    r"^https://(?P<host>github\.com|gitlab\.com|[^/]*gitlab[^/]*)/(?P<repo>.+)$"
)


def anchor(heading: str) -> str:
    """The anchor GitHub, GitLab and the source page give a heading: lower case, punctuation
    dropped, spaces as hyphens."""
    return _NON_WORD.sub("", heading.strip().lower()).replace(" ", "-")


def link_key(settings: Settings) -> bytes:
    """The signing key (empty: links are not signed)."""
    explicit = settings.source_link_key.get_secret_value()
    if explicit:
        return explicit.encode()
    keys = settings.api_keys.get_secret_value()
    if not keys.strip():
        return b""
    return hashlib.sha256(b"opsassist source links\n" + keys.encode()).digest()


def sign(key: bytes, path: str) -> str:
    return hmac.new(key, path.encode(), hashlib.sha256).hexdigest()[:32]


def signature_ok(key: bytes, path: str, signature: str | None) -> bool:
    return bool(signature) and hmac.compare_digest(sign(key, path), signature or "")


def repository_template(settings: Settings) -> str:
    """The runbook link template in use ("" when runbooks are linked to the chat server)."""
    if settings.source_url_template:
        return settings.source_url_template
    url = settings.runbooks_git_url.strip()
    match = _GIT_HOSTS.match(url)
    if not match:
        return ""
    repo = match.group("repo").removesuffix(".git").strip("/")
    subdir = settings.runbooks_git_subdir.strip("/")
    prefix = f"{subdir}/" if subdir else ""
    ref = settings.runbooks_git_ref or "main"
    blob = "-/blob" if "gitlab" in match.group("host") else "blob"
    return f"https://{match.group('host')}/{repo}/{blob}/{ref}/{prefix}{{path}}#{{anchor}}"


class SourceLinks:
    """Builds the links of one answer (``base_url``: the chat server as browsers reach it)."""

    def __init__(self, settings: Settings, base_url: str) -> None:
        self.base_url = (settings.public_url or base_url).rstrip("/")
        self.template = repository_template(settings)
        self.key = link_key(settings)

    def _page(self, path: str, fragment: str = "") -> str:
        # signed as the server sees the path: percent-decoded
        query = f"?sig={sign(self.key, urllib.parse.unquote(path))}" if self.key else ""
        return f"{self.base_url}{path}{query}{'#' + fragment if fragment else ''}"

    def runbook(self, source: str, section: str) -> str:
        heading = section.split(" > ")[-1] if section else ""
        if self.template:
            return self.template.format(
                path=urllib.parse.quote(source), anchor=anchor(heading) if heading else ""
            ).rstrip("#")
        return self._page(
            f"/v1/sources/runbooks/{urllib.parse.quote(source)}", anchor(heading) if heading else ""
        )

    def document(self, document_id: str) -> str:
        return self._page(f"/v1/sources/documents/{urllib.parse.quote(document_id, safe='')}")

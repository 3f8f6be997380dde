"""An OpenSearch index store on the real node, isolated per test by a unique name prefix.

Shared by the parametrised store fixtures of the index-store and pipeline tests. Skips when the
node is down, or fails under OPSASSIST_REQUIRE_SERVICES=1 (``require_service``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

from opsassist.index.opensearch import OpenSearchIndexStore
from opsassist.settings import Settings
from tests.conftest import require_service, service_port


def opensearch_url() -> str:
    port = service_port("opensearch", 19200)
    require_service("opensearch", port)
    return f"http://127.0.0.1:{port}"


def opensearch_store(prefix: str | None = None) -> Iterator[OpenSearchIndexStore]:
    """Yields a store whose indices, aliases and pipelines start with a unique prefix; deletes
    them all afterwards."""
    url = opensearch_url()
    prefix = prefix or f"test-{uuid.uuid4().hex[:10]}-"
    settings = Settings(opensearch_url=url, opensearch_index_prefix=prefix)
    store = OpenSearchIndexStore.from_settings(settings)
    try:
        yield store
    finally:
        store.purge_prefix()
        store.client.close()

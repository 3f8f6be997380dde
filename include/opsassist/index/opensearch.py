"""OpenSearch index store: the same ``IndexStore`` contract as the embedded LanceDB store.

Layout
    Each version is one physical index named ``version_name(alias, n)`` (``runbooks-v0003``),
    each alias a real OpenSearch alias. ``promote`` moves an alias with one ``_aliases`` request
    (remove + add), which OpenSearch applies atomically: a reader resolves the alias to the old or
    the new version, never to both or none. An optional name prefix
    (``OPSASSIST_OPENSEARCH_INDEX_PREFIX``) is added to every physical index, alias and search
    pipeline, and stripped again from every name this store returns, so callers always see
    ``runbooks-v0003`` and several environments (or tests) can share one cluster.

Mapping (``index_body``)
    ``text`` is analysed with the built-in ``english`` analyzer (stemming and stop words, like the
    embedded store's BM25 index); ``vector`` is a ``knn_vector`` with an HNSW graph on the
    **lucene** engine and ``cosinesimil`` space (the engine is always named: the 2.19 default,
    faiss, needs native libraries this node does not ship and fails at refresh); identity fields
    are ``keyword`` (``section`` and ``title`` with a ``text`` sub-field); ``timestamp`` and
    ``end_timestamp`` are ``date``; ``metadata`` is a JSON string that is stored, not indexed.
    A version is created with refresh off and no replicas (bulk-load settings); ``finalize`` turns
    refresh back on, sets the replicas and force-merges small indices to one segment. A version
    built on a base starts as a copy of it: server-side ``_reindex`` (run as a task, awaited,
    any failure raises), or scroll + bulk from the client on a node without the reindex module.

Consistency with the embedded store
    Writes (``upsert``/``delete``) refresh before returning, so reads see them as they do on
    LanceDB; ``knn`` turns OpenSearch's cosine score ``(1 + cos) / 2`` back into ``cos`` in
    [-1, 1]; the ``since`` filter means ``coalesce(end_timestamp, timestamp) >= since`` and bounds
    are truncated to whole seconds, as the embedded store's SQL filter does. A zero vector cannot
    be indexed with cosine similarity, so ``upsert`` reports it (``vector_norm is 0``) instead of
    writing it; every other rejected document (e.g. a wrong dimension) is reported per item by
    the bulk response, and the rest of the batch is written.

Hybrid search: client-side fusion by default, native as an alternative
    ``opsassist.index.base.hybrid_search`` (the default for every backend, used by the CLI, the
    pipelines and the chat server) calls ``bm25`` and ``knn`` here and fuses the two lists in
    Python (RRF by default). That keeps one fusion implementation, so both backends rank the
    same way and ``OPSASSIST_FUSION``/``OPSASSIST_RRF_K`` mean the same thing everywhere, and the
    per-list ranks (``bm25_rank``/``vector_rank``) stay visible in every hit.
    ``native_hybrid`` instead sends one ``hybrid`` query (neural-search plugin) through a search
    pipeline with a ``normalization-processor``: OpenSearch min-max normalises each sub-query's
    scores and combines them with a weighted arithmetic mean on the server, in one round trip.
    That is the ``weighted`` fusion, not RRF, and the per-list ranks are lost, so it is offered
    for comparison and for callers that want the single round trip, not used by default.
"""

from __future__ import annotations

import datetime as dt
import itertools
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from opensearchpy import OpenSearch, helpers
from opensearchpy.exceptions import NotFoundError, RequestError, TransportError

from opsassist.documents import Chunk
from opsassist.index.base import (
    Filters,
    IndexUnavailableError,
    RankedRow,
    WriteReport,
    version_name,
    version_number,
    versions_of,
)
from opsassist.logs import get_logger

if TYPE_CHECKING:
    from opsassist.settings import Settings

log = get_logger(__name__)

VECTOR_FIELD = "vector"
_KNN_MAX_K = 10_000
_DATE_FIELDS = ("timestamp", "end_timestamp")
_HYBRID_PIPELINE = "opsassist-hybrid"


def index_body(dimension: int, shards: int = 1) -> dict[str, Any]:
    """Settings and mapping of one index version (bulk-load settings; see ``finalize``)."""
    keyword_with_text = {"type": "keyword", "fields": {"text": {"type": "text"}}}
    date = {"type": "date", "format": "strict_date_optional_time||epoch_millis"}
    return {
        "settings": {
            "index": {
                "knn": True,
                "number_of_shards": shards,
                "number_of_replicas": 0,
                "refresh_interval": "-1",
            }
        },
        "mappings": {
            "dynamic": "strict",
            "properties": {
                "id": {"type": "keyword"},
                "source_type": {"type": "keyword"},
                "source": {"type": "keyword"},
                "title": keyword_with_text,
                "section": keyword_with_text,
                "text": {"type": "text", "analyzer": "english"},
                "content_hash": {"type": "keyword"},
                "timestamp": date,
                "end_timestamp": date,
                "metadata": {"type": "keyword", "index": False, "doc_values": False},
                VECTOR_FIELD: {
                    "type": "knn_vector",
                    "dimension": dimension,
                    "method": {
                        "name": "hnsw",
                        "engine": "lucene",
                        "space_type": "cosinesimil",
                    },
                },
            },
        },
    }


# --- conversions ---------------------------------------------------------------------------------
def _iso(value: dt.datetime | None) -> str | None:
    """A stored timestamp: naive values are UTC (as in the embedded store's Arrow schema)."""
    if value is None:
        return None
    value = value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    return value.isoformat()


def _bound(value: dt.datetime) -> str:
    """A filter bound, converted and truncated to the second like the embedded SQL filter."""
    return value.astimezone(dt.UTC).replace(microsecond=0).isoformat()


def _parse_time(value: object) -> dt.datetime | None:
    if value is None or isinstance(value, dt.datetime):
        return value
    parsed = dt.datetime.fromisoformat(str(value))
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)


def _document(chunk: Chunk) -> dict[str, Any]:
    record = chunk.to_record()
    for key in _DATE_FIELDS:
        record[key] = _iso(record[key])
    record[VECTOR_FIELD] = [float(x) for x in chunk.vector or []]
    return record


def _row(source: dict[str, Any], with_vector: bool = False) -> dict[str, Any]:
    row = dict(source)
    if not with_vector:
        row.pop(VECTOR_FIELD, None)
    for key in _DATE_FIELDS:
        row[key] = _parse_time(row.get(key))
    return row


def _vector_problem(vector: Sequence[float] | None) -> str | None:
    """Why a vector cannot be indexed, before it is sent (the dimension is checked by the node)."""
    if vector is None:
        return "no vector"
    values = np.asarray(vector, dtype=np.float64)
    if values.ndim != 1 or not np.all(np.isfinite(values)):
        return "vector has non-finite values"
    if not np.any(values):
        return "vector_norm is 0: a zero vector has no cosine similarity"
    return None


def _filter_clauses(filters: Filters) -> list[dict[str, Any]]:
    """The embedded store's SQL filter (``_where``) as OpenSearch filter clauses."""
    clauses: list[dict[str, Any]] = []
    if filters.source_types:
        clauses.append({"terms": {"source_type": list(filters.source_types)}})
    if filters.sources:
        clauses.append({"terms": {"source": list(filters.sources)}})
    if filters.since is not None:
        since = _bound(filters.since)
        # coalesce(end_timestamp, timestamp) >= since
        clauses.append(
            {
                "bool": {
                    "should": [
                        {"range": {"end_timestamp": {"gte": since}}},
                        {
                            "bool": {
                                "must_not": [{"exists": {"field": "end_timestamp"}}],
                                "filter": [{"range": {"timestamp": {"gte": since}}}],
                            }
                        },
                    ],
                    "minimum_should_match": 1,
                }
            }
        )
    if filters.until is not None:
        clauses.append({"range": {"timestamp": {"lte": _bound(filters.until)}}})
    return clauses


def _retryable(status: object) -> bool:
    """429 (back-pressure), 5xx and transport failures (status "N/A") are worth another try."""
    return status == 429 or status == "N/A" or (isinstance(status, int) and status >= 500)


def _reason(info: dict[str, Any]) -> str:
    error = info.get("error")
    if isinstance(error, dict):
        cause = error.get("caused_by") or {}
        reason = cause.get("reason") or error.get("reason") or ""
        return f"{error.get('type', 'error')}: {reason}".strip()
    return f"status {info.get('status')}: {error}"


def _normalised_weights(weights: Sequence[float]) -> tuple[float, float]:
    if len(weights) != 2 or min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(f"weights must be two non-negative numbers, not {weights!r}")
    first = round(weights[0] / sum(weights), 4)
    return first, round(1.0 - first, 4)


class OpenSearchIndexStore:
    """OpenSearch implementation of ``IndexStore`` (plus ``native_hybrid``)."""

    def __init__(
        self,
        client: OpenSearch,
        *,
        prefix: str = "",
        shards: int = 1,
        replicas: int = 0,
        timeout: float = 60.0,
        bulk_chunk_size: int = 500,
        bulk_retries: int = 3,
        retry_backoff: float = 0.5,
        force_merge_max_docs: int = 20_000,
        ef_search: int = 100,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.shards = shards
        self.replicas = replicas
        self.timeout = timeout
        self.bulk_chunk_size = bulk_chunk_size
        self.bulk_retries = bulk_retries
        self.retry_backoff = retry_backoff
        self.force_merge_max_docs = force_merge_max_docs
        self.ef_search = ef_search
        self._pipelines: set[str] = set()
        self._server_reindex: bool | None = None  # None: not tried yet

    # --- construction ----------------------------------------------------------------------------
    @classmethod
    def from_settings(cls, settings: Settings) -> OpenSearchIndexStore:
        """A store on ``OPSASSIST_OPENSEARCH_URL`` (+ user/password): the CLI and chat server."""
        password = settings.opensearch_password.get_secret_value()
        client = OpenSearch(
            hosts=[settings.opensearch_url],
            http_auth=(settings.opensearch_user, password) if settings.opensearch_user else None,
            timeout=settings.opensearch_timeout_seconds,
        )
        return cls._with_settings(client, settings)

    @classmethod
    def from_airflow_connection(cls, conn_id: str, settings: Settings) -> OpenSearchIndexStore:
        """A store on an Airflow OpenSearch connection (``OpenSearchHook(...).client``)."""
        from opsassist.hooks import opensearch_client

        return cls._with_settings(opensearch_client(conn_id), settings)

    @classmethod
    def _with_settings(cls, client: OpenSearch, settings: Settings) -> OpenSearchIndexStore:
        return cls(
            client,
            prefix=settings.opensearch_index_prefix,
            shards=settings.opensearch_shards,
            replicas=settings.opensearch_replicas,
            timeout=settings.opensearch_timeout_seconds,
        )

    # --- names -----------------------------------------------------------------------------------
    def _physical(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def _logical(self, physical: str) -> str | None:
        return physical[len(self.prefix) :] if physical.startswith(self.prefix) else None

    def _require(self, version: str) -> str:
        """The physical index of an existing version (or alias), else ``IndexUnavailableError``."""
        index = self._physical(version)
        # checked on every call, not cached: a bulk write to a missing index would create one
        if not self.client.indices.exists(index=index, request_timeout=self.timeout):
            raise IndexUnavailableError(f"index version {version} not found")
        return index

    # --- aliases ---------------------------------------------------------------------------------
    def _alias_targets(self, alias: str) -> list[str]:
        try:
            response = self.client.indices.get_alias(
                name=self._physical(alias), request_timeout=self.timeout
            )
        except NotFoundError:
            return []
        return [name for index in response if (name := self._logical(index)) is not None]

    def current_version(self, alias: str) -> str | None:
        versions = versions_of(alias, self._alias_targets(alias))
        return versions[-1] if versions else None

    def promote(self, alias: str, version: str) -> str | None:
        index = self._physical(version)
        if not self.client.indices.exists(index=index, request_timeout=self.timeout):
            raise IndexUnavailableError(f"cannot promote {version}: no such version")
        physical_alias = self._physical(alias)
        for _ in range(5):
            targets = self._alias_targets(alias)
            known = versions_of(alias, targets)
            previous = known[-1] if known else None
            if targets == [version]:
                return previous
            actions: list[dict[str, Any]] = [
                {"remove": {"index": self._physical(t), "alias": physical_alias}} for t in targets
            ]
            actions.append({"add": {"index": index, "alias": physical_alias}})
            try:
                # one request: OpenSearch applies the remove and the add atomically
                self.client.indices.update_aliases(
                    body={"actions": actions}, request_timeout=self.timeout
                )
            except NotFoundError:
                continue  # the alias moved under us: read it again
            log.info(
                "alias promoted", extra={"alias": alias, "version": version, "previous": previous}
            )
            return previous
        raise RuntimeError(f"could not move alias {alias!r} to {version}: it keeps changing")

    # --- versions --------------------------------------------------------------------------------
    def list_versions(self, alias: str) -> list[str]:
        response = self.client.indices.get(
            index=f"{self._physical(alias)}-v*",
            allow_no_indices=True,
            ignore_unavailable=True,
            expand_wildcards="open",
            filter_path="*.settings.index.provided_name",
            request_timeout=self.timeout,
        )
        names = [name for index in response or {} if (name := self._logical(index)) is not None]
        return versions_of(alias, names)

    def create_version(
        self, alias: str, dimension: int, base: str | None = None, model: str | None = None
    ) -> str:
        base_index = self._require(base) if base is not None else None
        model = model or (self.version_model(base) if base is not None else None)
        body = index_body(dimension, self.shards)
        if model:
            body["mappings"]["_meta"] = {"embedding_model": model}
        for _ in range(20):
            existing = self.list_versions(alias)
            number = version_number(existing[-1]) + 1 if existing else 1
            version = version_name(alias, number)
            try:
                self.client.indices.create(
                    index=self._physical(version), body=body, request_timeout=self.timeout
                )
            except RequestError as exc:
                if exc.error == "resource_already_exists_exception":
                    continue  # another build took this number first
                raise
            break
        else:
            raise RuntimeError(f"could not create a new version of {alias!r}")
        if base_index is not None:
            try:
                self._copy(base_index, self._physical(version))
            except Exception:
                self.client.indices.delete(index=self._physical(version), ignore_unavailable=True)
                raise
        log.info("version created", extra={"version": version, "base": base})
        return version

    def version_model(self, version: str) -> str | None:
        index = self._require(version)
        mapping: dict[str, Any] = self.client.indices.get_mapping(
            index=index, request_timeout=self.timeout
        )
        first: dict[str, Any] = next(iter(mapping.values()), {})
        meta: dict[str, Any] = first.get("mappings", {}).get("_meta") or {}
        value = meta.get("embedding_model")
        return str(value) if value else None

    def _copy(self, source: str, dest: str) -> None:
        """Copy every document of ``source`` into ``dest`` (same ids), then refresh.

        Server-side ``_reindex`` when the node has the reindex module; a node without it (the
        tiny launcher of ``scripts/services`` loads only the plugins it lists) answers 405, and
        the copy is done client-side instead: scroll + bulk, with the same retries and a failure
        on any document that could not be copied.
        """
        if self._server_reindex is not False:
            try:
                self._server_side_copy(source, dest)
                self._server_reindex = True
                return
            except TransportError as exc:
                if exc.status_code not in (400, 405) or "_reindex" not in str(exc):
                    raise
                self._server_reindex = False
                log.info("no _reindex on this node: copying client-side", extra={"dest": dest})
        self._client_side_copy(source, dest)

    def _client_side_copy(self, source: str, dest: str) -> None:
        hits: Iterable[dict[str, Any]] = helpers.scan(
            self.client,
            index=source,
            query={"query": {"match_all": {}}},
            size=1000,
            request_timeout=self.timeout,
        )
        actions = (
            {"_op_type": "index", "_index": dest, "_id": hit["_id"], "_source": hit["_source"]}
            for hit in hits
        )
        failures: list[tuple[str, str]] = []
        while batch := list(itertools.islice(actions, 5000)):
            failures += [(str(i.get("_id")), _reason(i)) for ok, i in self._bulk(batch) if not ok]
        if failures:
            raise RuntimeError(f"copying {source} to {dest}: {len(failures)} failed {failures[:3]}")
        self._refresh(dest)

    def _server_side_copy(self, source: str, dest: str) -> None:
        """``_reindex`` as a task, wait for it, fail on any failure, refresh."""
        started = self.client.reindex(
            body={"source": {"index": source, "size": 1000}, "dest": {"index": dest}},
            wait_for_completion=False,
            slices="auto",
            request_timeout=self.timeout,
        )
        task_id = started["task"]
        while True:
            status = self.client.tasks.get(task_id=task_id, request_timeout=self.timeout)
            if status.get("completed"):
                break
            time.sleep(0.2)
        response = status.get("response") or {}
        failures = response.get("failures") or []
        if status.get("error") or failures:
            raise RuntimeError(
                f"copying {source} to {dest} failed: {status.get('error') or failures[:3]}"
            )
        self.client.indices.refresh(index=dest, request_timeout=self.timeout)

    def drop_version(self, version: str) -> None:
        index = self._physical(version)
        try:
            response = self.client.indices.get_alias(index=index, request_timeout=self.timeout)
        except NotFoundError as exc:
            raise IndexUnavailableError(f"index version {version} not found") from exc
        if response.get(index, {}).get("aliases"):
            raise ValueError(f"refusing to drop {version}: an alias points at it")
        self.client.indices.delete(index=index, request_timeout=self.timeout)

    # --- writes ----------------------------------------------------------------------------------
    def _bulk(self, actions: Sequence[dict[str, Any]]) -> Iterator[tuple[bool, dict[str, Any]]]:
        """(ok, item) per action through ``helpers.streaming_bulk``; items that failed with 429,
        5xx or a transport error are re-sent up to ``bulk_retries`` times with backoff."""
        pending = list(actions)
        for attempt in range(self.bulk_retries + 1):
            if attempt:
                time.sleep(min(self.retry_backoff * 2 ** (attempt - 1), 30.0))
            by_id = {str(a["_id"]): a for a in pending}
            retry: list[dict[str, Any]] = []
            for ok, result in helpers.streaming_bulk(
                self.client,
                pending,
                chunk_size=self.bulk_chunk_size,
                max_chunk_bytes=50 * 1024 * 1024,
                raise_on_error=False,
                raise_on_exception=False,
                request_timeout=self.timeout,
            ):
                info: dict[str, Any] = next(iter(result.values()))
                doc_id = str(info.get("_id"))
                if not ok and _retryable(info.get("status")) and attempt < self.bulk_retries:
                    retry.append(by_id[doc_id])
                    continue
                yield ok, info
            if not retry:
                return
            log.warning("bulk retry", extra={"attempt": attempt + 1, "documents": len(retry)})
            pending = retry

    def _refresh(self, index: str) -> None:
        self.client.indices.refresh(index=index, request_timeout=self.timeout)

    def upsert(self, version: str, chunks: Sequence[Chunk]) -> WriteReport:
        index = self._require(version)
        report = WriteReport()
        actions: list[dict[str, Any]] = []
        for chunk in chunks:
            problem = _vector_problem(chunk.vector)
            if problem:
                report.failed.append((chunk.id, problem))
                continue
            actions.append(
                {"_op_type": "index", "_index": index, "_id": chunk.id, "_source": _document(chunk)}
            )
        if not actions:
            return report
        for ok, info in self._bulk(actions):
            if ok:
                report.written += 1
            else:
                report.failed.append((str(info.get("_id")), _reason(info)))
        self._refresh(index)
        if report.failed:
            log.warning(
                "documents rejected",
                extra={"version": version, "failed": len(report.failed), "first": report.failed[0]},
            )
        return report

    def delete(self, version: str, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        index = self._require(version)
        actions = [{"_op_type": "delete", "_index": index, "_id": i} for i in dict.fromkeys(ids)]
        deleted = 0
        errors: list[tuple[str, str]] = []
        for ok, info in self._bulk(actions):
            if ok and info.get("result") == "deleted":
                deleted += 1
            elif not ok and info.get("status") != 404:  # 404: the id was not there
                errors.append((str(info.get("_id")), _reason(info)))
        self._refresh(index)
        if errors:
            raise RuntimeError(f"{len(errors)} deletions failed in {version}: {errors[:3]}")
        return deleted

    def finalize(self, version: str) -> None:
        """Refresh on, replicas set, small indices force-merged to one segment (faster search)."""
        index = self._require(version)
        self.client.indices.put_settings(
            index=index,
            body={"index": {"refresh_interval": None, "number_of_replicas": self.replicas}},
            request_timeout=self.timeout,
        )
        self._refresh(index)
        rows = self.count(version)
        if 0 < rows <= self.force_merge_max_docs:
            self.client.indices.forcemerge(
                index=index, max_num_segments=1, request_timeout=max(self.timeout, 600.0)
            )
            self._refresh(index)

    # --- reads -----------------------------------------------------------------------------------
    def count(self, version: str) -> int:
        index = self._require(version)
        return int(self.client.count(index=index, request_timeout=self.timeout)["count"])

    def ids_by_source(self, version: str) -> dict[str, set[str]]:
        index = self._require(version)
        result: dict[str, set[str]] = {}
        hits: Iterable[dict[str, Any]] = helpers.scan(
            self.client,
            index=index,
            query={"_source": ["source"], "query": {"match_all": {}}},
            size=5000,
            request_timeout=self.timeout,
        )
        for hit in hits:
            result.setdefault(str(hit["_source"]["source"]), set()).add(str(hit["_id"]))
        return result

    def fetch(self, version: str, ids: Sequence[str]) -> list[Chunk]:
        if not ids:
            return []
        index = self._require(version)
        chunks: list[Chunk] = []
        for start in range(0, len(ids), 500):
            batch = list(ids[start : start + 500])
            response = self.client.mget(
                index=index, body={"ids": batch}, request_timeout=self.timeout
            )
            for doc in response["docs"]:
                if doc.get("found"):
                    chunks.append(Chunk.from_record(_row(doc["_source"], with_vector=True)))
        return chunks

    def _search(
        self, target: str, body: dict[str, Any], **params: Any
    ) -> list[tuple[str, float, dict[str, Any]]]:
        try:
            response = self.client.search(
                index=self._physical(target), body=body, request_timeout=self.timeout, **params
            )
        except NotFoundError as exc:
            raise IndexUnavailableError(f"index {target!r} not found") from exc
        return [
            (str(hit["_id"]), float(hit["_score"]), _row(hit["_source"]))
            for hit in response["hits"]["hits"]
        ]

    def _bm25_query(self, text: str, filters: Filters) -> dict[str, Any]:
        return {
            "bool": {
                "must": [{"match": {"text": {"query": text}}}],
                "filter": _filter_clauses(filters),
            }
        }

    def _knn_query(self, vector: np.ndarray, n: int, filters: Filters) -> dict[str, Any]:
        # k is also the HNSW candidate-list size on the lucene engine: at least ef_search, so a
        # small n (k=10) keeps the recall of a larger search; ``size`` still returns n rows
        knn: dict[str, Any] = {
            "vector": np.asarray(vector, dtype=np.float32).tolist(),
            "k": min(max(n, self.ef_search), _KNN_MAX_K),
        }
        clauses = _filter_clauses(filters)
        if clauses:
            knn["filter"] = {"bool": {"filter": clauses}}  # lucene engine: efficient pre-filter
        return {"knn": {VECTOR_FIELD: knn}}

    def bm25(self, target: str, text: str, n: int, filters: Filters) -> list[RankedRow]:
        if n <= 0 or not text.strip():
            return []
        body = {
            "size": n,
            "track_total_hits": False,
            "_source": {"excludes": [VECTOR_FIELD]},
            "query": self._bm25_query(text, filters),
        }
        return [RankedRow(id=i, score=s, row=r) for i, s, r in self._search(target, body)]

    def knn(self, target: str, vector: np.ndarray, n: int, filters: Filters) -> list[RankedRow]:
        if n <= 0:
            return []
        body = {
            "size": n,
            "track_total_hits": False,
            "_source": {"excludes": [VECTOR_FIELD]},
            "query": self._knn_query(vector, n, filters),
        }
        # lucene cosinesimil scores are (1 + cos) / 2: report cos, as the embedded store does
        rows = self._search(target, body)
        return [RankedRow(id=i, score=2.0 * s - 1.0, row=r) for i, s, r in rows]

    def native_hybrid(
        self,
        target: str,
        text: str,
        vector: np.ndarray,
        n: int,
        filters: Filters | None = None,
        weights: Sequence[float] = (0.5, 0.5),
    ) -> list[RankedRow]:
        """One ``hybrid`` query (BM25 + k-NN) combined on the node by a search pipeline with a
        ``normalization-processor`` (min-max per sub-query, weighted arithmetic mean; weights are
        (bm25, vector)). Scores are the combined ones, in [0, 1]. Not the default: see the module
        docstring."""
        if n <= 0:
            return []
        filters = filters or Filters()
        pipeline = self._hybrid_pipeline(_normalised_weights(weights))
        body = {
            "size": n,
            "_source": {"excludes": [VECTOR_FIELD]},
            "query": {
                "hybrid": {
                    "queries": [
                        self._bm25_query(text, filters),
                        self._knn_query(vector, n, filters),
                    ]
                }
            },
        }
        rows = self._search(target, body, search_pipeline=pipeline)
        return [RankedRow(id=i, score=s, row=r) for i, s, r in rows]

    def _hybrid_pipeline(self, weights: tuple[float, float]) -> str:
        name = self._physical(
            f"{_HYBRID_PIPELINE}-{round(weights[0] * 10_000):05d}-{round(weights[1] * 10_000):05d}"
        )
        if name not in self._pipelines:
            self.client.search_pipeline.put(
                id=name,
                body={
                    "description": "opsassist native hybrid: min-max + weighted arithmetic mean",
                    "phase_results_processors": [
                        {
                            "normalization-processor": {
                                "normalization": {"technique": "min_max"},
                                "combination": {
                                    "technique": "arithmetic_mean",
                                    "parameters": {"weights": list(weights)},
                                },
                            }
                        }
                    ],
                },
                request_timeout=self.timeout,
            )
            self._pipelines.add(name)
        return name

    def ping(self) -> bool:
        try:
            return bool(self.client.ping(request_timeout=min(self.timeout, 5.0)))
        except Exception:
            return False

    # --- housekeeping ----------------------------------------------------------------------------
    def purge_prefix(self) -> None:
        """Delete every index and search pipeline under this store's (non-empty) prefix.

        For tests and benchmarks that own a throw-away prefix; refuses an empty prefix.
        """
        if not self.prefix:
            raise ValueError("refusing to purge without a prefix: that would be the whole cluster")
        indices = self.client.indices.get(
            index=f"{self.prefix}*",
            allow_no_indices=True,
            ignore_unavailable=True,
            expand_wildcards="all",
            filter_path="*.settings.index.provided_name",
            request_timeout=self.timeout,
        )
        for index in indices or {}:
            if index.startswith(self.prefix):
                self.client.indices.delete(index=index, ignore_unavailable=True)
        try:
            pipelines = self.client.search_pipeline.get(id=f"{self.prefix}*")
        except NotFoundError:
            pipelines = {}
        for name in pipelines:
            if name.startswith(self.prefix):
                self.client.search_pipeline.delete(id=name)
        self._pipelines.clear()

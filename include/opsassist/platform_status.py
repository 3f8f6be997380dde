"""What the platform looks like right now, read from where each part keeps it: the index aliases
(promoted version, size, the run that built it, the last quality-gate verdict in MLflow), the
runbook quarantine, signal freshness and dead letters per source, the agent's pending actions and
the questions the feedback loop flags. The Airflow plugin "Knowledge" (``plugins/``) shows it; the
CLI reads the same functions (``opsassist versions`` through ``index.lifecycle.version_table``).

Every panel is read on its own: a part that is down (the index store, MLflow, the audit
database) gives a panel with ``ok: False`` and a one-line ``error`` that names what is
unavailable and the kind of error (no address, no secret; the log has the driver's message),
and the other panels are still read.
"""

from __future__ import annotations

import collections
import datetime as dt
import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opsassist.logs import get_logger
from opsassist.settings import Settings

log = get_logger(__name__)
Panel = dict[str, Any]
GATE_SET = "runbooks"  # the evaluation set the quality gate logs its runs under
GATE_TAGS = ("gate.decision", "gate.reason", "opsassist.run_id", "opsassist.correlation_id")


def _failed(what: str, exc: BaseException) -> Panel:
    """A panel that could not be read: what is unavailable and the error's kind. The message is
    shown only for the library's own errors (written to name no address); a driver's (which
    names hosts and ports) goes to the log only."""
    first = str(exc).splitlines()[0][:200] if str(exc) else ""
    ours = type(exc).__module__.startswith("opsassist") or type(exc) is ConnectionError
    shown = f"{type(exc).__name__}: {first}" if first and ours else type(exc).__name__
    log.warning(
        "status panel unavailable",
        extra={"panel": what, "error": f"{type(exc).__name__}: {first}"},
    )
    return {"ok": False, "error": f"{what} unavailable ({shown})"}


def _read(what: str, reader: Callable[[], Panel]) -> Panel:
    try:
        return {"ok": True, "error": None} | reader()
    except Exception as exc:
        return _failed(what, exc)


# --- index aliases -----------------------------------------------------------------------------
def aliases(settings: Settings) -> list[str]:
    """The aliases the platform serves: runbooks, then signals."""
    return [settings.runbook_index, settings.signal_index]


def index_panel(settings: Settings) -> Panel:
    """Per alias: its versions (``version_table``), the promoted one and its size in chunks and
    sources."""

    def read() -> Panel:
        from opsassist.index.lifecycle import version_table
        from opsassist.stores import get_index_store

        store = get_index_store(settings)
        rows = []
        for alias in aliases(settings):
            versions = version_table(store, alias)
            promoted = next((v for v in versions if v["promoted"]), None)
            sources = len(store.ids_by_source(promoted["version"])) if promoted else 0
            rows.append(
                {
                    "alias": alias,
                    "promoted": promoted["version"] if promoted else None,
                    "chunks": promoted["rows"] if promoted else None,
                    "sources": sources,
                    "versions": versions,
                    "can_roll_back": promoted is not None
                    and any(v["rows"] and v["number"] < promoted["number"] for v in versions),
                }
            )
        return {"backend": settings.index_backend, "aliases": rows}

    return _read("index store", read)


# --- quality gate (MLflow) ---------------------------------------------------------------------
def mlflow_run_url(settings: Settings, experiment_id: str, run_id: str) -> str | None:
    """The MLflow UI page of a run: under ``OPSASSIST_MLFLOW_UI_URL``, else under the tracking
    URI when it is an http(s) server; ``None`` for a file or database store (no UI to link)."""
    base = settings.mlflow_ui_url.strip()
    if not base:
        uri = settings.mlflow_tracking_uri.get_secret_value().strip()
        if uri.startswith(("http://", "https://")) and "@" not in uri.split("/")[2]:
            base = uri
    if not base:
        return None
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def build_run(tags: dict[str, str]) -> dict[str, str | None]:
    """The pipeline run a gate run belongs to, and its DAG when an Airflow task logged it (the
    task's correlation id is ``<dag id>/<run id>``; a CLI build's is its own run id)."""
    run_id = tags.get("opsassist.run_id", "")
    correlation = tags.get("opsassist.correlation_id", "")
    dag_id, _, rest = correlation.partition("/")
    return {"run_id": run_id or None, "dag_id": dag_id if rest and rest == run_id else None}


def _check_server(uri: str, timeout: float = 3.0) -> None:
    """A tracking server that does not answer fails at once (MLflow's own client retries a
    refused connection for minutes, and the page waits for it)."""
    import httpx

    try:
        httpx.get(uri.rstrip("/") + "/health", timeout=timeout)
    except httpx.HTTPError as exc:
        raise ConnectionError(
            f"the MLflow tracking server does not answer ({type(exc).__name__})"
        ) from None


def gate_runs(settings: Settings, limit: int = 20) -> list[dict[str, Any]]:
    """The quality gate's MLflow runs, newest first: the version judged, the decision and its
    reason, the gated metrics (candidate and baseline), the build run, the MLflow page."""
    from opsassist.evaluation.gate import gated_keys
    from opsassist.evaluation.tracking import client, experiment_name

    uri = settings.mlflow_tracking_uri.get_secret_value().strip()
    if uri.startswith(("http://", "https://")):
        _check_server(uri)
    mlflow = client(settings)
    experiment = mlflow.get_experiment_by_name(experiment_name(settings, GATE_SET))
    if experiment is None:
        return []
    found = mlflow.search_runs(
        [experiment.experiment_id],
        filter_string="tags.`opsassist.kind` = 'gate'",
        order_by=["attributes.start_time DESC"],
        max_results=limit,
    )
    languages = [x.strip() for x in settings.gate_languages.split(",") if x.strip()]
    keys = [key for language in languages for key in gated_keys(language)]
    runs = []
    for run in found:
        tags = dict(run.data.tags)
        metrics = dict(run.data.metrics)
        runs.append(
            {
                "mlflow_run_id": run.info.run_id,
                "mlflow_url": mlflow_run_url(settings, experiment.experiment_id, run.info.run_id),
                "started": dt.datetime.fromtimestamp(run.info.start_time / 1000, dt.UTC),
                "version": run.data.params.get("index_version"),
                "baseline_version": run.data.params.get("baseline_version"),
                "decision": tags.get("gate.decision"),
                "reason": tags.get("gate.reason", ""),
                "metrics": {k: metrics[k] for k in keys if k in metrics},
                "baseline": {
                    k: metrics[f"baseline.{k}"] for k in keys if f"baseline.{k}" in metrics
                },
                "questions": int(metrics.get("gate.questions", 0)),
                "build": build_run(tags),
            }
        )
    return runs


def gate_panel(settings: Settings) -> Panel:
    """The last gate verdict of the runbook alias, and the gate run of each promoted version
    (what built it). With the gate off there are no runs (said so)."""

    def read() -> Panel:
        runs = gate_runs(settings)
        by_version: dict[str, dict[str, Any]] = {}
        for run in runs:  # newest first: the verdict that promoted a version is its newest
            if run["version"] and run["decision"] == "promote":
                by_version.setdefault(run["version"], run)
        return {
            "enabled": settings.gate_enabled,
            "alias": settings.runbook_index,
            "last": runs[0] if runs else None,
            "promoted_by": by_version,
        }

    return _read("MLflow (quality gate runs)", read)


# --- runbook quarantine ------------------------------------------------------------------------
def quarantine_panel(settings: Settings) -> Panel:
    """The runbooks the last collect put in quarantine, with their reasons and run."""

    def read() -> Panel:
        path = settings.quarantine_dir / "runbooks.json"
        entries = json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
        return {"entries": entries}

    return _read("quarantine list", read)


# --- signals -----------------------------------------------------------------------------------
def _lines(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, "rb") as handle:
        return sum(1 for _ in handle)


def signal_panel(settings: Settings, now: dt.datetime | None = None) -> Panel:
    """Per signal source (enabled ones, plus any that reported): its last batch (when it was
    searchable, its freshness p50/p95), totals, and dead letters by reason (from the batch
    reports) with the dead-letter file's count where the source writes one (Kafka's go to its
    dead-letter topic)."""

    def read() -> Panel:
        from opsassist.pipelines.signals import enabled_sources, signals_dir

        folder = signals_dir(settings)
        sources: dict[str, dict[str, Any]] = {
            name: {
                "source": name,
                "batches": 0,
                "records": 0,
                "accepted": 0,
                "dead_letters": collections.Counter(),
                "last": None,
            }
            for name in enabled_sources(settings)
        }
        reports = folder / "reports" / "batches.jsonl"
        if reports.exists():
            for line in reports.read_text(encoding="utf-8").splitlines():
                if not line.strip():
                    continue
                batch = json.loads(line)
                entry = sources.setdefault(
                    batch["source"],
                    {
                        "source": batch["source"],
                        "batches": 0,
                        "records": 0,
                        "accepted": 0,
                        "dead_letters": collections.Counter(),
                        "last": None,
                    },
                )
                entry["batches"] += 1
                entry["records"] += int(batch.get("records", 0))
                entry["accepted"] += int(batch.get("accepted", 0))
                entry["dead_letters"].update(batch.get("rejected") or {})
                entry["last"] = batch
        clock = now or dt.datetime.now(dt.UTC)
        rows = []
        for name, entry in sources.items():
            last = entry.pop("last")
            indexed_at = last.get("indexed_at") if last else None
            age = None
            if indexed_at:
                when = dt.datetime.fromisoformat(str(indexed_at).replace("Z", "+00:00"))
                age = (
                    clock - (when if when.tzinfo else when.replace(tzinfo=dt.UTC))
                ).total_seconds()
            letters = dict(sorted(entry.pop("dead_letters").items()))
            file = folder / "deadletter" / f"{name}.jsonl"
            rows.append(
                entry
                | {
                    "last_indexed_at": indexed_at,
                    "age_s": age,
                    "freshness_p50_s": last.get("freshness_p50_s") if last else None,
                    "freshness_p95_s": last.get("freshness_p95_s") if last else None,
                    "dead_letters": letters,
                    "dead_letter_total": sum(letters.values()),
                    "dead_letter_file": str(file) if file.exists() else None,
                    "dead_letter_file_lines": _lines(file),
                }
            )
        return {"sources": rows}

    return _read("signal reports", read)


# --- agent actions -----------------------------------------------------------------------------
def actions_panel(settings: Settings, limit: int = 50) -> Panel:
    """The agent's actions still waiting for a decision (pending and not expired), newest first."""

    def read() -> Panel:
        from opsassist.agent.kube import Change
        from opsassist.agent.store import AgentStore

        store = AgentStore(settings.audit_dsn.get_secret_value())
        pending = [
            a.to_json() | {"change_text": Change.from_json(a.change).describe()}
            for a in store.list_actions(limit)
            if a.status == "pending" and not a.expired()
        ]
        return {"pending": pending}

    return _read("action and audit database", read)


# --- feedback ----------------------------------------------------------------------------------
def feedback_panel(settings: Settings, min_bad: int = 3) -> Panel:
    """Questions the feedback loop flags (rated bad ``min_bad`` times or more), from
    ``opsassist.feedback.flagged_questions`` when that module exists."""
    try:
        module = importlib.import_module("opsassist.feedback")
    except ModuleNotFoundError as exc:
        if exc.name != "opsassist.feedback":  # the module is there, something it needs is not
            return _failed("feedback module", exc)
        return {"ok": True, "error": None, "configured": False, "flagged": []}

    def read() -> Panel:
        flagged = module.flagged_questions(settings, min_bad=min_bad)
        return {"configured": True, "flagged": list(flagged)}

    return _read("feedback evaluation set", read)


# --- index audit trail -------------------------------------------------------------------------
def index_audit_panel(settings: Settings, limit: int = 10) -> Panel:
    """The newest rollbacks (who, when, from, to, why) of ``<data>/audit/index.jsonl``."""

    def read() -> Panel:
        from opsassist.index.lifecycle import index_audit

        return {"records": list(reversed(index_audit(settings.data_dir, limit)))}

    return _read("index audit trail", read)


# --- operator actions (the plugin's buttons; the CLI has the same through its commands) ---------
PLUGIN_VIA = "airflow-plugin"  # agent_actions.approval_via of a decision taken in the plugin


def roll_back(settings: Settings, alias: str, actor: str, reason: str = "") -> dict[str, Any]:
    """``opsassist rollback ALIAS``: the alias back one version, audited with ``actor``."""
    from opsassist.index.lifecycle import rollback
    from opsassist.stores import get_index_store

    if alias not in aliases(settings):
        raise KeyError(f"unknown index alias {alias!r} (aliases: {', '.join(aliases(settings))})")
    return rollback(get_index_store(settings), alias, settings.data_dir, actor=actor, reason=reason)


def decide_action(settings: Settings, action_id: str, who: Any, approve: bool) -> Any:
    """An approval or rejection of a pending agent action, as the chat's ``approve <id>`` /
    ``reject <id>`` does it (``opsassist.agent.loop.Agent``: role check, one-time move out of
    pending, audit; an approval triggers the ops_action DAG through Airflow's REST API as the
    ``OPSASSIST_AIRFLOW_API_*`` user), recorded as taken ``via`` the Airflow plugin. ``who`` is
    an ``opsassist.agent.roles.Principal``; returns the agent's ``AgentReply``."""
    from opsassist.agent.airflow_api import trigger_dag
    from opsassist.agent.loop import Agent
    from opsassist.agent.store import AgentStore
    from opsassist.agent.tools import build_registry

    agent = Agent(
        settings,
        build_registry(settings, None, None),  # no tool runs here: only the decision
        AgentStore(settings.audit_dsn.get_secret_value()),
        lambda: None,
        lambda conf: trigger_dag(settings, conf),
    )
    if approve:
        return agent.approve(action_id, who, via=PLUGIN_VIA)
    return agent.reject(action_id, who, via=PLUGIN_VIA)


# --- all of it ---------------------------------------------------------------------------------
def snapshot(settings: Settings) -> dict[str, Panel]:
    """Every panel, each read on its own (one that fails says so; the others are still read)."""
    return {
        "index": index_panel(settings),
        "index_audit": index_audit_panel(settings),
        "gate": gate_panel(settings),
        "quarantine": quarantine_panel(settings),
        "signals": signal_panel(settings),
        "actions": actions_panel(settings),
        "feedback": feedback_panel(settings),
    }

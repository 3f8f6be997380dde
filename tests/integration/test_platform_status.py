"""``opsassist.platform_status``: what the Airflow plugin "Knowledge" shows and does, on the real
parts (an embedded LanceDB store, the spool source and signal ingest, PostgreSQL's action and
audit tables), each read on its own so that a part that is down leaves the rest readable.

Signal batches are embedded with the deterministic ``fake_embed`` of the signal tests (the
reports and dead letters are under test, not the model). The quality gate's MLflow runs are
covered end to end in tests/e2e/test_knowledge_plugin.py (real builds, real gate).
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from pathlib import Path

import pytest
from pydantic import SecretStr

from opsassist import platform_status as status
from opsassist.agent import kube
from opsassist.agent.roles import Principal
from opsassist.agent.store import Action, AgentStore
from opsassist.index.embedded import EmbeddedIndexStore
from opsassist.index.lifecycle import RollbackError, version_table
from opsassist.settings import Settings
from tests.conftest import free_port, require_service, service_port
from tests.integration.test_index_store import DIM, _chunk
from tests.integration.test_signals_pipeline import fake_embed, loghub_lines, retime_line


@pytest.fixture
def audit_dsn() -> str:
    require_service("postgres", service_port("postgres", 15432))
    return f"postgresql://opsassist:opsassist@127.0.0.1:{service_port('postgres', 15432)}/opsassist"


def build(store: EmbeddedIndexStore, alias: str, sources: list[str]) -> str:
    """A complete, promoted version of ``alias`` holding one chunk per source."""
    version = store.create_version(alias, DIM, model="test-model")
    store.upsert(version, [_chunk(s, f"text of {s}", i) for i, s in enumerate(sources)])
    store.finalize(version)
    store.promote(alias, version)
    return version


def test_index_panel_and_rollback_as_the_plugin_does_it(settings: Settings) -> None:
    store = EmbeddedIndexStore(settings.embedded_index_dir)
    first = build(store, "runbooks", ["a.md", "b.md"])
    second = build(store, "runbooks", ["a.md", "b.md", "c.md"])

    panel = status.index_panel(settings)
    assert panel["ok"] and panel["error"] is None and panel["backend"] == "embedded"
    runbooks, signals = panel["aliases"]
    assert (runbooks["alias"], runbooks["promoted"], runbooks["chunks"]) == ("runbooks", second, 3)
    assert runbooks["sources"] == 3 and runbooks["can_roll_back"]
    assert [(v["version"], v["rows"], v["promoted"]) for v in runbooks["versions"]] == [
        (first, 2, False),
        (second, 3, True),
    ]
    assert signals == {
        "alias": "signals",
        "promoted": None,
        "chunks": None,
        "sources": 0,
        "versions": [],
        "can_roll_back": False,
    }

    record = status.roll_back(settings, "runbooks", "airflow:olga", "bad answers since v2")
    assert (record["from"], record["to"], record["actor"]) == (second, first, "airflow:olga")
    assert store.current_version("runbooks") == first
    assert version_table(store, "runbooks")[0]["promoted"]
    lines = (settings.data_dir / "audit" / "index.jsonl").read_text().splitlines()
    assert [json.loads(line)["reason"] for line in lines] == ["bad answers since v2"]
    audit = status.index_audit_panel(settings)
    assert [(r["actor"], r["from"], r["to"]) for r in audit["records"]] == [
        ("airflow:olga", second, first)
    ]
    # nothing older than the first version: refused, the alias and the trail unchanged
    assert not status.index_panel(settings)["aliases"][0]["can_roll_back"]
    with pytest.raises(RollbackError, match="no earlier complete version"):
        status.roll_back(settings, "runbooks", "airflow:olga")
    with pytest.raises(KeyError, match="unknown index alias 'nope'"):
        status.roll_back(settings, "nope", "airflow:olga")
    assert store.current_version("runbooks") == first
    assert len((settings.data_dir / "audit" / "index.jsonl").read_text().splitlines()) == 1


def test_quarantine_panel_reads_the_pipelines_list(settings: Settings, tmp_path: Path) -> None:
    from opsassist.pipelines.runbooks import stage_collect

    root = tmp_path / "runbooks"
    root.mkdir()
    (root / "good.md").write_text("# Good\n\n## Meaning\n\nA runbook with text.\n")
    (root / "broken.md").write_text("---\ntitle: [unclosed\n---\n# Broken\n\ntext\n")
    (root / "binary.md").write_bytes(b"\x00\x01\x02 not text")
    assert status.quarantine_panel(settings) == {"ok": True, "error": None, "entries": []}
    stage_collect(settings, "run-q", root)
    entries = status.quarantine_panel(settings)["entries"]
    assert sorted(e["source"] for e in entries) == ["binary.md", "broken.md"]
    assert all(e["reason"] and e["run_id"] == "run-q" for e in entries)


def test_signal_panel_counts_freshness_and_dead_letters_per_source(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opsassist.pipelines import signals as pipeline

    spool = tmp_path / "spool"
    folder = spool / "logs" / "sshd"
    folder.mkdir(parents=True)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    lines = [retime_line(line, now) for line in loghub_lines("OpenSSH", 12)]
    (folder / "app.log").write_text("\n".join(lines) + '\n{"broken json\n[1, 2]\n')
    settings = settings.model_copy(update={"signals_spool_path": spool})
    store = EmbeddedIndexStore(settings.embedded_index_dir)
    ingest = pipeline.SignalIngestor(settings, store, embed=fake_embed)
    source = pipeline.open_source(settings, "spool")
    try:
        reports = ingest.drain(source)
    finally:
        source.close()
        ingest.close()
    assert reports and sum(r.accepted for r in reports) == 12

    panel = status.signal_panel(settings, now=now + dt.timedelta(minutes=5))
    assert panel["ok"]
    (spool_row,) = [s for s in panel["sources"] if s["source"] == "spool"]
    assert (spool_row["batches"], spool_row["records"], spool_row["accepted"]) == (
        len(reports),
        14,
        12,
    )
    assert spool_row["dead_letters"] == {"invalid json": 1, "json not an object": 1}
    assert spool_row["dead_letter_total"] == 2 and spool_row["dead_letter_file_lines"] == 2
    assert spool_row["freshness_p95_s"] == reports[-1].freshness_p95_s is not None
    assert 0 < spool_row["age_s"] <= 300 + 60


def pending_action(store: AgentStore, requested_by: str = "alice") -> Action:
    now = dt.datetime.now(dt.UTC)
    args = {"namespace": "payments", "name": "api"}
    action = Action(
        id=f"act-{secrets.token_hex(4)}",
        created_at=now,
        expires_at=now + dt.timedelta(minutes=30),
        requested_by=requested_by,
        tool="rollout_restart",
        arguments=args,
        change=kube.change_for("rollout_restart", args, now).to_json(),
        dry_run={"status": "ok"},
        runbook_step="Restart the deployment",
        question="payments api keeps crashing, restart it",
        verify_promql="",
        correlation_id="test",
    )
    store.create_action(action)
    return action


def test_pending_actions_and_decisions_through_the_agent(
    settings: Settings, audit_dsn: str
) -> None:
    """Decisions go through the chat's own Agent (role check, one-time move, audit), recorded
    as taken via the plugin; an approval's DAG trigger is tried against Airflow's REST API (here
    a closed port: the approval stands and the failed trigger is audited)."""
    settings = settings.model_copy(
        update={
            "audit_dsn": SecretStr(audit_dsn),
            "airflow_api_url": f"http://127.0.0.1:{free_port()}",
        }
    )
    store = AgentStore(audit_dsn)
    to_reject, to_approve = pending_action(store), pending_action(store)
    pending = {a["id"]: a for a in status.actions_panel(settings)["pending"]}
    assert {to_reject.id, to_approve.id} <= set(pending)
    assert pending[to_reject.id]["change_text"].startswith("PATCH deployments payments/api")

    viewer = status.decide_action(settings, to_reject.id, Principal("vera", "viewer"), False)
    assert viewer.refusals and "vera has role viewer" in viewer.text
    assert store.get_action(to_reject.id).status == "pending"  # type: ignore[union-attr]

    rejected = status.decide_action(settings, to_reject.id, Principal("olga", "operator"), False)
    assert not rejected.refusals, rejected.text
    row = store.get_action(to_reject.id)
    assert row is not None
    assert (row.status, row.approved_by, row.approval_via) == ("rejected", "olga", "airflow-plugin")
    again = status.decide_action(settings, to_reject.id, Principal("olga", "operator"), True)
    assert again.refusals and "rejected, not pending" in again.text

    approved = status.decide_action(settings, to_approve.id, Principal("olga", "operator"), True)
    assert "could not be triggered" in approved.text, approved.text
    row = store.get_action(to_approve.id)
    assert row is not None and (row.status, row.approval_via) == ("approved", "airflow-plugin")
    pending_now = {a["id"] for a in status.actions_panel(settings)["pending"]}
    assert not pending_now & {to_reject.id, to_approve.id}

    events = {
        (r["action_id"], r["actor"], r["event"], r["ok"])
        for r in store.audit_rows(action_id=to_reject.id)
        + store.audit_rows(action_id=to_approve.id)
    }
    assert {
        (to_reject.id, "vera", "rejection_refused", False),
        (to_reject.id, "olga", "rejection", True),
        (to_reject.id, "olga", "approval_refused", False),
        (to_approve.id, "olga", "approval", True),
        (to_approve.id, "olga", "dag_trigger", False),
    } <= events


def test_a_part_that_is_down_is_named_and_the_rest_is_read(settings: Settings) -> None:
    """The index store (OpenSearch on a closed port), MLflow (a tracking server on a closed
    port) and the audit database (PostgreSQL on a closed port) down: each panel says what is
    unavailable, without an address or a password; the file-backed panels still read."""
    closed = free_port()
    down = settings.model_copy(
        update={
            "index_backend": "opensearch",
            "opensearch_url": f"http://127.0.0.1:{closed}",
            "audit_dsn": SecretStr(
                f"postgresql://opsassist:s3cret-pw@127.0.0.1:{closed}/opsassist"
            ),
            "mlflow_tracking_uri": SecretStr(f"http://127.0.0.1:{closed}"),
        }
    )
    (down.quarantine_dir).mkdir(parents=True, exist_ok=True)
    (down.quarantine_dir / "runbooks.json").write_text(
        json.dumps(
            [{"source": "x.md", "reason": "broken front matter", "detail": "", "run_id": "r"}]
        )
    )
    snap = status.snapshot(down)
    assert snap["index"]["ok"] is False
    assert snap["index"]["error"].startswith("index store unavailable (")
    assert snap["actions"]["ok"] is False
    assert snap["actions"]["error"].startswith("action and audit database unavailable (")
    assert snap["gate"]["ok"] is False and snap["gate"]["error"].startswith("MLflow")
    for panel in ("index", "actions", "gate"):
        assert "s3cret-pw" not in snap[panel]["error"], snap[panel]["error"]
        assert str(closed) not in snap[panel]["error"], snap[panel]["error"]
    assert snap["quarantine"]["ok"] and snap["quarantine"]["entries"][0]["source"] == "x.md"
    assert snap["signals"]["ok"] and snap["index_audit"]["ok"]


def rate(
    settings: Settings, question: str, verdicts: list[str], version: str = "runbooks-v0001"
) -> None:
    """Ratings of answers to ``question`` appended to the feedback set by the feedback loop's own
    functions (an Open WebUI export entry parsed, joined to its logged answer by message id)."""
    from opsassist.chat.answerlog import AnswerRecord
    from opsassist.feedback import append_items, parse_rating, to_item

    items = []
    for n, verdict in enumerate(verdicts):
        message = f"msg-{secrets.token_hex(4)}"
        raw = {
            "id": f"fb-{secrets.token_hex(4)}",
            "type": "rating",
            "updated_at": 1_796_000_000 + n,
            "data": {"rating": -1 if verdict == "bad" else 1, "reason": "wrong runbook"},
            "meta": {"message_id": message, "chat_id": "chat-1"},
        }
        answer = AnswerRecord(
            id=f"chatcmpl-{n}",
            at=dt.datetime.now(dt.UTC),
            correlation_id=f"req-{n}",
            question=question,
            sources=[{"source": "etcd/etcdNoLeader.md", "section": "Meaning"}],
            index_version=version,
            webui_message_id=message,
        )
        items.append(to_item(parse_rating(raw), answer, "message_id"))
    append_items(settings, items)


def test_a_question_rated_bad_three_times_is_flagged(settings: Settings) -> None:
    assert status.feedback_panel(settings) == {
        "ok": True,
        "error": None,
        "configured": True,
        "flagged": [],
    }
    rate(settings, "why does etcd have no leader?", ["bad", "bad", "good", "bad"])
    rate(settings, "how do I drain a node?", ["bad", "bad"])  # twice: not flagged
    (flagged,) = status.feedback_panel(settings)["flagged"]
    assert (flagged["question"], flagged["bad_count"]) == ("why does etcd have no leader?", 3)
    assert flagged["index_version"] == "runbooks-v0001"
    assert flagged["sources"] == [
        {"source": "etcd/etcdNoLeader.md", "section": "Meaning", "bad_count": 3}
    ]

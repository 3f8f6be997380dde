"""Pipeline metrics on the wire: a signal batch and a runbook promotion send statsd packets over
real UDP, and the statsd exporter's mapping turns every one into a series the rules and
dashboards use (``deploy/observability/METRICS.md``)."""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from opsassist import telemetry
from opsassist.index.embedded import EmbeddedIndexStore
from opsassist.pipelines import signals as pipeline
from opsassist.settings import Settings
from opsassist.sources.spool import SpoolSource
from tests.deploy.test_observability import map_statsd
from tests.integration.test_signals_pipeline import fake_embed, loghub_lines, retime_line


@pytest.fixture
def statsd_socket() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.5)
    yield sock
    sock.close()


def received(sock: socket.socket) -> list[str]:
    lines: list[str] = []
    while True:
        try:
            payload = sock.recv(65536)
        except TimeoutError:
            return lines
        lines.extend(payload.decode().splitlines())


def series(lines: list[str]) -> dict[tuple[str, tuple[tuple[str, str], ...]], list[str]]:
    """statsd lines -> {(metric, labels): [value|type...]} through the exporter's mapping."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], list[str]] = {}
    for line in lines:
        name, _, rest = line.partition(":")
        mapped = map_statsd(name)
        assert mapped is not None, f"{name} is not mapped by statsd/mapping.yml"
        metric, labels = mapped
        out.setdefault((metric, tuple(sorted(labels.items()))), []).append(rest)
    return out


@pytest.fixture
def settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, statsd_socket: socket.socket
) -> Iterator[Settings]:
    from opsassist.settings import get_settings

    port = statsd_socket.getsockname()[1]
    monkeypatch.setenv("OPSASSIST_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("OPSASSIST_SIGNALS_SPOOL_PATH", str(tmp_path / "spool"))
    monkeypatch.setenv("OPSASSIST_INDEX_BACKEND", "embedded")
    monkeypatch.setenv("OPSASSIST_STATSD_ADDRESS", f"127.0.0.1:{port}")
    monkeypatch.setenv("AIRFLOW_CTX_DAG_ID", "signals_ingest")
    get_settings.cache_clear()
    yield Settings()
    get_settings.cache_clear()


def test_signal_batch_sends_freshness_dead_letters_and_documents(
    settings: Settings, statsd_socket: socket.socket
) -> None:
    folder = settings.signals_spool_path / "logs" / "sshd"
    folder.mkdir(parents=True)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    lines = [retime_line(line, now) for line in loghub_lines("OpenSSH", 12)]
    (folder / "app.log").write_text("\n".join(lines) + '\n{"broken json\n[1, 2]\n')
    store = EmbeddedIndexStore(settings.embedded_index_dir)
    ingest = pipeline.SignalIngestor(settings, store, embed=fake_embed)
    source = pipeline.open_source(settings, "spool")
    assert isinstance(source, SpoolSource)
    reports = ingest.drain(source)
    ingest.close()
    assert len(reports) == 1 and reports[0].accepted == 12

    got = series(received(statsd_socket))
    freshness = got[("opsassist_signal_freshness_seconds", (("source", "spool"),))]
    assert len(freshness) == 12 and all(v.endswith("|ms") for v in freshness)
    assert got[
        ("opsassist_dead_letter_total", (("reason", "invalid_json"), ("source", "spool")))
    ] == ["1|c"]
    assert got[
        ("opsassist_dead_letter_total", (("reason", "json_not_an_object"), ("source", "spool")))
    ] == ["1|c"]
    documents = {
        dict(labels)["kind"]: values
        for (metric, labels), values in got.items()
        if metric == "opsassist_documents_total" and dict(labels)["dag_id"] == "signals_ingest"
    }
    assert documents["rejected"] == ["2|c"]
    assert documents["indexed"] == [f"{reports[0].upserted}|c"] and reports[0].upserted > 0


def test_promotion_and_refusal_are_counted(
    settings: Settings, statsd_socket: socket.socket
) -> None:
    from opsassist.documents import make_chunk
    from opsassist.pipelines.runbooks import BuildRefusedError, stage_promote, stage_validate

    store = EmbeddedIndexStore(settings.embedded_index_dir)
    chunk = make_chunk(
        source_type="runbook", source="a.md", title="A", section="Meaning", text="pod restarts"
    )
    chunk.vector = np.full(384, 2.0, dtype=np.float32).tolist()  # not unit norm: refused
    bad = store.create_version(settings.runbook_index, 384)
    store.upsert(bad, [chunk])
    with pytest.raises(BuildRefusedError):
        stage_validate(settings, "run-1", store, bad)
    vector = np.zeros(384, dtype=np.float32)
    vector[0] = 1.0
    chunk.vector = vector.tolist()
    good = store.create_version(settings.runbook_index, 384)
    store.upsert(good, [chunk])
    stage_promote(settings, "run-2", store, good)

    got = series(received(statsd_socket))
    index = settings.runbook_index
    refused = (("index", index), ("result", "refused"))
    promoted = (("index", index), ("result", "promoted"))
    assert got[("opsassist_index_promotions_total", refused)] == ["1|c"]
    assert got[("opsassist_index_promotions_total", promoted)] == ["1|c"]


def test_large_batches_send_a_rate_sampled_stride(statsd_socket: socket.socket) -> None:
    port = statsd_socket.getsockname()[1]
    values = [i / 100 for i in range(1000)]
    telemetry.timings(f"127.0.0.1:{port}", "opsassist.signal_freshness.kafka", values)
    lines = received(statsd_socket)
    assert len(lines) == telemetry.MAX_TIMING_SAMPLES
    assert all(line.endswith("|@0.200000") for line in lines)
    sent = [float(line.split(":")[1].split("|")[0]) for line in lines]
    assert sent[0] == 0.0 and sent[-1] == pytest.approx(9950.0)  # ms, spread over the range


def test_airflow_statsd_settings_are_the_fallback() -> None:
    env = {
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": "statsd-exporter",
        "AIRFLOW__METRICS__STATSD_PORT": "9125",
        "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
    }
    assert telemetry.statsd_target("", env) == ("statsd-exporter", 9125, "airflow.")
    assert telemetry.statsd_target("", {}) is None
    assert telemetry.statsd_target("127.0.0.1:8125", env) == ("127.0.0.1", 8125, "")
    with pytest.raises(ValueError, match="host:port"):
        telemetry.statsd_target("no-port", {})
    assert map_statsd("airflow.opsassist.documents.runbooks_index.embedded") == (
        "opsassist_documents_total",
        {"dag_id": "runbooks_index", "kind": "embedded"},
    )

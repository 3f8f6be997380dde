"""Pipeline metrics as statsd packets (names and labels: ``deploy/observability/METRICS.md``).

Airflow tasks are short-lived, so they cannot be scraped; they send statsd lines over UDP to the
statsd exporter, whose mapping (``deploy/observability/statsd/mapping.yml``) turns them into the
Prometheus series the rules and dashboards use. The target is ``OPSASSIST_STATSD_ADDRESS``
(``host:port``); when that is empty the Airflow deployment's own statsd settings are used
(``AIRFLOW__METRICS__STATSD_ON/HOST/PORT/PREFIX``), so a stack that configured Airflow's metrics
gets these too. With neither, every function here is a no-op.

The wire format is plain statsd (``name:value|c`` and ``name:value|ms``), written directly: it
does not depend on Airflow's metrics backend being initialised in the task process, and UDP
never blocks or fails a pipeline (a send error is logged once and ignored).
"""

from __future__ import annotations

import functools
import os
import re
import socket
from collections.abc import Mapping, Sequence

from opsassist.logs import get_logger

log = get_logger(__name__)

MAX_TIMING_SAMPLES = 200  # per call: a batch of 5,000 records sends a stride sample, not 5,000
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]+")


def _is_true(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def statsd_target(
    settings_address: str, environ: Mapping[str, str] | None = None
) -> tuple[str, int, str] | None:
    """(host, port, prefix) from the setting, else from Airflow's statsd settings, else None."""
    env = os.environ if environ is None else environ
    if settings_address:
        host, _, port_text = settings_address.rpartition(":")
        if not host or not port_text.isdigit():
            raise ValueError(f"OPSASSIST_STATSD_ADDRESS must be host:port: {settings_address!r}")
        return host, int(port_text), ""
    if _is_true(env.get("AIRFLOW__METRICS__STATSD_ON")):
        host = env.get("AIRFLOW__METRICS__STATSD_HOST", "localhost")
        port = env.get("AIRFLOW__METRICS__STATSD_PORT", "8125")
        prefix = env.get("AIRFLOW__METRICS__STATSD_PREFIX", "airflow")
        return host, int(port), f"{prefix}." if prefix else ""
    return None


def part(value: str) -> str:
    """One dot-separated part of a statsd name: no dots, only safe characters."""
    return _UNSAFE.sub("_", value).strip("_") or "unknown"


class StatsdSender:
    """Fire-and-forget statsd lines over UDP."""

    def __init__(self, host: str, port: int, prefix: str = "") -> None:
        self.address = (host, port)
        self.prefix = prefix
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._warned = False

    def send(self, lines: Sequence[str]) -> None:
        # several lines per datagram (newline separated), kept under a safe UDP payload size
        packet: list[str] = []
        size = 0
        for line in lines:
            line = self.prefix + line
            if packet and size + len(line) + 1 > 1400:
                self._write("\n".join(packet))
                packet, size = [], 0
            packet.append(line)
            size += len(line) + 1
        if packet:
            self._write("\n".join(packet))

    def _write(self, payload: str) -> None:
        try:
            self._socket.sendto(payload.encode(), self.address)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("statsd send failed: %s", exc, extra={"address": self.address})


@functools.lru_cache(maxsize=4)
def _sender(address: str, airflow_env: tuple[tuple[str, str], ...]) -> StatsdSender | None:
    target = statsd_target(address, dict(airflow_env))
    return StatsdSender(*target) if target else None


def sender(settings_address: str) -> StatsdSender | None:
    airflow_env = tuple(
        sorted((k, v) for k, v in os.environ.items() if k.startswith("AIRFLOW__METRICS__STATSD"))
    )
    return _sender(settings_address, airflow_env)


def counters(settings_address: str, values: Mapping[str, int]) -> None:
    """``name -> count`` counters (zero counts are skipped)."""
    target = sender(settings_address)
    if target is not None:
        target.send([f"{name}:{n}|c" for name, n in values.items() if n])


def timings(settings_address: str, name: str, seconds: Sequence[float]) -> None:
    """Observations of one timer, in seconds (sent as milliseconds, statsd's unit). Large
    batches send an even stride sample with its sampling rate, so counts stay right."""
    target = sender(settings_address)
    if target is None or not seconds:
        return
    ordered = sorted(seconds)
    if len(ordered) <= MAX_TIMING_SAMPLES:
        target.send([f"{name}:{s * 1000:.3f}|ms" for s in ordered])
        return
    step = len(ordered) / MAX_TIMING_SAMPLES
    rate = MAX_TIMING_SAMPLES / len(ordered)
    sample = [ordered[int(i * step)] for i in range(MAX_TIMING_SAMPLES)]
    target.send([f"{name}:{s * 1000:.3f}|ms|@{rate:.6f}" for s in sample])


# --- the pipeline metrics of METRICS.md -----------------------------------------------------------
def signal_batch(
    settings_address: str,
    source: str,
    freshness_seconds: Sequence[float],
    rejected: Mapping[str, int],
    documents: Mapping[str, int],
    dag_id: str,
) -> None:
    """One signal batch: freshness per record, dead letters per reason, documents per kind."""
    timings(settings_address, f"opsassist.signal_freshness.{part(source)}", freshness_seconds)
    dead_letters(settings_address, source, rejected)
    document_counts(settings_address, dag_id, documents)


def dead_letters(settings_address: str, source: str, rejected: Mapping[str, int]) -> None:
    counters(
        settings_address,
        {f"opsassist.dead_letter.{part(source)}.{part(r)}": n for r, n in rejected.items()},
    )


def document_counts(settings_address: str, dag_id: str, kinds: Mapping[str, int]) -> None:
    """``kinds``: ``embedded``, ``deleted``, ``indexed``, ``rejected``."""
    counters(
        settings_address,
        {f"opsassist.documents.{part(dag_id)}.{part(k)}": n for k, n in kinds.items()},
    )


def promotion(settings_address: str, index: str, promoted: bool) -> None:
    result = "promoted" if promoted else "refused"
    counters(settings_address, {f"opsassist.index_promotions.{result}.{part(index)}": 1})


def current_dag_id(default: str) -> str:
    """The DAG of the running Airflow task (``AIRFLOW_CTX_DAG_ID``), else ``default``."""
    return os.environ.get("AIRFLOW_CTX_DAG_ID") or default

"""Parsing of log lines (the eight loghub formats and more), JSON logs, Kubernetes events, metric
samples, and the reasons bad input is rejected with."""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path

import pytest

from opsassist.parsing.events import REASON_NOT_EVENT, parse_event
from opsassist.parsing.logs import (
    REASON_BINARY,
    REASON_EMPTY,
    REASON_ENCODING,
    REASON_INVALID_JSON,
    REASON_NO_MESSAGE,
    REASON_NOT_OBJECT,
    REASON_OVERSIZED,
    BadRecord,
    normalise_level,
    parse_line,
    parse_log,
    retime_line,
)
from opsassist.parsing.metrics import (
    REASON_NOT_FINITE,
    REASON_NOT_METRIC,
    normalise,
    parse_metric,
    parse_range_result,
    selector,
)

LOGHUB = Path(__file__).resolve().parents[2].parent / "shared" / "corpora" / "loghub"
SYSTEMS = ("HDFS", "Hadoop", "Spark", "Zookeeper", "OpenSSH", "Linux", "Apache", "OpenStack")
# loghub's own "Component" column is a different field for these (host, thread), so not compared
COMPONENT_COLUMN = {"HDFS", "Hadoop", "Spark", "OpenStack", "Linux"}
REFERENCE = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
UTC = dt.UTC


def loghub(system: str) -> tuple[list[str], list[dict[str, str]]]:
    folder = LOGHUB / system
    if not folder.is_dir():
        pytest.skip(f"loghub sample not found at {folder}")
    lines = (folder / f"{system}_2k.log").read_text(encoding="utf-8").splitlines()
    with (folder / f"{system}_2k.log_structured.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return lines, rows


# --- raw lines -----------------------------------------------------------------------------------
@pytest.mark.parametrize("system", SYSTEMS)
def test_loghub_lines_split_like_the_ground_truth(system: str) -> None:
    """Every line of every sample: message == loghub's Content, level and component agree."""
    lines, rows = loghub(system)
    assert len(lines) == len(rows) == 2000
    for line, row in zip(lines, rows, strict=True):
        parts = parse_line(line, REFERENCE)
        assert parts.timestamp is not None, line
        assert parts.message == row["Content"].strip(), line
        if "Level" in row and system not in ("Linux",):
            assert parts.level == normalise_level(row["Level"]), line
        if system in COMPONENT_COLUMN:
            assert parts.component == row["Component"], line


@pytest.mark.parametrize(
    ("line", "expected", "level", "component"),
    [
        (
            "081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 terminating",
            dt.datetime(2008, 11, 9, 20, 36, 15, tzinfo=UTC),
            "INFO",
            "dfs.DataNode$PacketResponder",
        ),
        (
            "17/06/09 20:10:40 INFO spark.SecurityManager: Changing view acls to: yarn,curi",
            dt.datetime(2017, 6, 9, 20, 10, 40, tzinfo=UTC),
            "INFO",
            "spark.SecurityManager",
        ),
        (
            "2015-07-29 19:04:29,071 - WARN  [SendWorker:188978561024:QuorumCnxManager$SendWorker"
            "@688] - Send worker leaving thread",
            dt.datetime(2015, 7, 29, 19, 4, 29, 71000, tzinfo=UTC),
            "WARN",
            "QuorumCnxManager$SendWorker",
        ),
        (
            "[Sun Dec 04 04:47:44 2005] [error] mod_jk child workerEnv in error state 6",
            dt.datetime(2005, 12, 4, 4, 47, 44, tzinfo=UTC),
            "ERROR",
            "",
        ),
        (  # syslog has no year: the latest one not in the future of the reference (2026-03-01)
            "Dec 10 06:55:46 LabSZ sshd[24200]: Invalid user webmaster from 173.234.31.186",
            dt.datetime(2025, 12, 10, 6, 55, 46, tzinfo=UTC),
            "",
            "sshd",
        ),
        (
            "Feb 28 23:59:59 host kernel: oops",
            dt.datetime(2026, 2, 28, 23, 59, 59, tzinfo=UTC),
            "",
            "kernel",
        ),
        (
            "E0227 10:00:01.123456    4242 reflector.go:138] failed to list *v1.Pod: timeout",
            dt.datetime(2026, 2, 27, 10, 0, 1, 123456, tzinfo=UTC),
            "ERROR",
            "reflector.go:138",
        ),
        (
            "2024-05-01T10:00:00.5+02:00 [WARNING] [main] com.acme.Billing: slow query 812 ms",
            dt.datetime(2024, 5, 1, 8, 0, 0, 500000, tzinfo=UTC),
            "WARN",
            "com.acme.Billing",
        ),
    ],
)
def test_headers_give_time_level_and_component(
    line: str, expected: dt.datetime, level: str, component: str
) -> None:
    parts = parse_line(line, REFERENCE)
    assert parts.timestamp == expected
    assert parts.level == level
    assert parts.component == component


@pytest.mark.parametrize("system", SYSTEMS)
def test_retime_moves_the_header_and_keeps_the_rest(system: str) -> None:
    lines, _ = loghub(system)
    when = dt.datetime(2026, 11, 25, 13, 5, 7, 123000, tzinfo=UTC)
    for line in lines[:300]:
        moved = retime_line(line, when)
        before, after = parse_line(line, REFERENCE), parse_line(moved, when)
        assert after.message == before.message and after.level == before.level
        assert after.timestamp is not None
        assert abs((after.timestamp - when).total_seconds()) < 1  # formats without millis
        start, end = before.ts_span or (0, 0)
        assert moved[:start] == line[:start] and moved.endswith(line[end:])


def test_line_without_header_is_kept_with_the_source_time() -> None:
    received = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    record = parse_log(b"\tat org.acme.Foo.bar(Foo.java:42)", service="billing", received=received)
    assert record.timestamp == received and record.timestamp_from == "source"
    assert record.message == "at org.acme.Foo.bar(Foo.java:42)"
    assert record.service == "billing" and record.level == ""


def test_apache_line_in_brackets_is_not_json() -> None:
    record = parse_log(
        "[Sun Dec 04 04:51:18 2005] [error] mod_jk child init 1 -2",
        service="apache",
        received=REFERENCE,
    )
    assert record.level == "ERROR" and record.message == "mod_jk child init 1 -2"


# --- JSON logs -----------------------------------------------------------------------------------
def test_fluent_bit_kubernetes_record() -> None:
    payload = {
        "log": "2026-01-01 00:03:20.450 ERROR db.pool: could not connect to postgres\n",
        "stream": "stderr",
        "time": "2026-01-01T00:03:20.000Z",
        "kubernetes": {
            "namespace_name": "payments",
            "pod_name": "payments-api-7f9c6d5b8-x2lqk",
            "container_name": "api",
            "labels": {"app.kubernetes.io/name": "payments-api"},
        },
    }
    record = parse_log(json.dumps(payload), service="topic", received=REFERENCE)
    assert record.service == "payments/payments-api"
    assert record.timestamp == dt.datetime(2026, 1, 1, 0, 3, 20, tzinfo=UTC)
    assert record.level == "ERROR" and record.component == "db.pool"
    assert record.message == "could not connect to postgres"


def test_kubernetes_record_without_labels_uses_the_container() -> None:
    payload = {"log": "ready\n", "kubernetes": {"namespace_name": "ns", "container_name": "web"}}
    record = parse_log(json.dumps(payload), service="x", received=REFERENCE)
    assert record.service == "ns/web" and record.timestamp_from == "source"


@pytest.mark.parametrize(
    ("payload", "service", "level", "when"),
    [
        (  # Logstash / Data Prepper, flattened ECS keys
            {
                "@timestamp": "2026-01-01T10:00:00.250Z",
                "message": "disk quota exceeded",
                "log.level": "warn",
                "host": "node-1",
            },
            "node-1",
            "WARN",
            dt.datetime(2026, 1, 1, 10, 0, 0, 250000, tzinfo=UTC),
        ),
        (  # ECS, nested objects
            {
                "@timestamp": "2026-01-01T10:00:00Z",
                "message": "payment declined",
                "log": {"level": "error", "logger": "billing"},
                "service": {"name": "billing"},
            },
            "billing",
            "ERROR",
            dt.datetime(2026, 1, 1, 10, tzinfo=UTC),
        ),
        (  # application JSON, epoch milliseconds, Python's numeric level
            {"ts": 1767261600000, "msg": "cache miss storm", "level": 40, "app": "cache"},
            "cache",
            "ERROR",
            dt.datetime(2026, 1, 1, 10, tzinfo=UTC),
        ),
    ],
)
def test_json_shapes(
    payload: dict[str, object], service: str, level: str, when: dt.datetime
) -> None:
    record = parse_log(json.dumps(payload).encode(), service="fallback", received=REFERENCE)
    assert (record.service, record.level, record.timestamp) == (service, level, when)
    assert record.timestamp_from == "record"


def test_application_json_inside_the_collector_record() -> None:
    inner = {"level": "fatal", "msg": "out of memory", "logger": "worker"}
    outer = {"log": json.dumps(inner) + "\n", "time": "2026-01-01T00:00:01Z", "kubernetes": {}}
    record = parse_log(json.dumps(outer), service="jobs", received=REFERENCE)
    assert record.message == "out of memory" and record.level == "FATAL"
    assert record.component == "worker" and record.service == "jobs"
    assert record.timestamp == dt.datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)


# --- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"x" * 70_000, REASON_OVERSIZED),
        (b"\xff\xfe\x00caf\xe9", REASON_ENCODING),
        (b"caf\xe9 au lait", REASON_ENCODING),
        (b"ab\x00\x01\x02\x03\x04\x05\x06\x07", REASON_BINARY),
        (b"   \n", REASON_EMPTY),
        (b'{"log": "unterminated', REASON_INVALID_JSON),
        (b"[1, 2, 3]", REASON_NOT_OBJECT),
        (b'"just a string"', REASON_NOT_OBJECT),
        (b'{"level": "info", "time": "2026-01-01T00:00:00Z"}', REASON_NO_MESSAGE),
        (b'{"message": "   "}', REASON_NO_MESSAGE),
    ],
)
def test_bad_input_has_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(BadRecord) as caught:
        parse_log(payload, service="s", received=REFERENCE, max_bytes=65_536)
    assert caught.value.reason == reason


# --- Kubernetes events ---------------------------------------------------------------------------
def test_core_v1_event() -> None:
    event = parse_event(
        json.dumps(
            {
                "metadata": {"namespace": "payments", "uid": "u-1"},
                "involvedObject": {"kind": "Pod", "name": "api-0", "namespace": "payments"},
                "reason": "BackOff",
                "message": "Back-off restarting   failed container",
                "type": "Warning",
                "count": 7,
                "firstTimestamp": "2026-01-01T00:00:00Z",
                "lastTimestamp": "2026-01-01T00:04:00Z",
                "source": {"component": "kubelet"},
            }
        ),
        received=REFERENCE,
    )
    assert (event.namespace, event.kind, event.name, event.reason, event.type) == (
        "payments",
        "Pod",
        "api-0",
        "BackOff",
        "Warning",
    )
    assert event.count == 7 and event.uid == "u-1" and event.reporter == "kubelet"
    assert event.message == "Back-off restarting failed container"
    assert event.timestamp == dt.datetime(2026, 1, 1, 0, 4, tzinfo=UTC)


def test_events_k8s_io_v1_in_a_watch_notification() -> None:
    event = parse_event(
        json.dumps(
            {
                "type": "ADDED",
                "object": {
                    "regarding": {"kind": "Node", "name": "node-3"},
                    "reason": "NodeNotReady",
                    "note": "Node node-3 status is now: NodeNotReady",
                    "type": "Warning",
                    "eventTime": "2026-01-01T00:00:00.000000Z",
                    "series": {"count": 4, "lastObservedTime": "2026-01-01T00:02:00Z"},
                    "reportingController": "node-controller",
                },
            }
        ),
        received=REFERENCE,
    )
    assert (event.namespace, event.kind, event.name, event.type) == (
        "cluster",
        "Node",
        "node-3",
        "Warning",
    )
    assert event.count == 4 and event.reporter == "node-controller"
    assert event.timestamp == dt.datetime(2026, 1, 1, 0, 2, tzinfo=UTC)
    assert len(event.uid) == 16  # derived, stable


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"reason": "BackOff"}', REASON_NOT_EVENT),
        (b"plain text", REASON_NOT_OBJECT),
        (b"[]", REASON_NOT_OBJECT),
    ],
)
def test_bad_events(payload: bytes, reason: str) -> None:
    with pytest.raises(BadRecord) as caught:
        parse_event(payload, received=REFERENCE)
    assert caught.value.reason == reason


# --- metrics -------------------------------------------------------------------------------------
def test_metric_shapes() -> None:
    adapter = parse_metric(
        b'{"name": "up", "labels": {"__name__": "up", "job": "node", "instance": "a:9100"},'
        b' "value": "1", "timestamp": "2026-01-01T00:00:00Z"}',
        received=REFERENCE,
    )
    assert [s.series for s in adapter] == ['up{instance="a:9100",job="node"}']
    instant = parse_metric(
        b'{"metric": {"__name__": "node_load1", "instance": "a"}, "value": [1767225600, "2.5"]}',
        received=REFERENCE,
    )
    assert instant[0].value == 2.5
    assert instant[0].timestamp == dt.datetime(2026, 1, 1, tzinfo=UTC)
    telegraf = parse_metric(
        b'{"name": "cpu", "tags": {"host": "h"}, "fields": {"usage_idle": 97.5, "usage_user": 2},'
        b' "timestamp": 1767225600}',
        received=REFERENCE,
    )
    assert [(s.name, s.value) for s in telegraf] == [
        ("cpu_usage_idle", 97.5),
        ("cpu_usage_user", 2),
    ]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"name": "up", "value": "NaN"}', REASON_NOT_FINITE),
        (b'{"name": "up", "value": "high"}', REASON_NOT_METRIC),
        (b'{"labels": {}}', REASON_NOT_METRIC),
        (b"up 1", REASON_NOT_OBJECT),
    ],
)
def test_bad_metrics(payload: bytes, reason: str) -> None:
    with pytest.raises(BadRecord) as caught:
        parse_metric(payload, received=REFERENCE)
    assert caught.value.reason == reason


def test_normalise_to_step_keeps_the_latest_sample_whatever_the_order() -> None:
    samples = [
        s
        for i, value in enumerate([1.0, 5.0, 2.0, 8.0, 3.0])
        for s in parse_metric(
            json.dumps({"name": "m", "value": value, "timestamp": 1767225600 + 4 * i}),
            received=REFERENCE,
        )
    ]
    forward = normalise(samples, 10)
    backward = normalise(list(reversed(samples)), 10)
    assert forward == backward
    points = forward["m"]
    assert {bucket: value for bucket, (_, value) in points.items()} == {
        1767225600: 2.0,  # samples at +0, +4, +8 s: the one at +8
        1767225610: 3.0,  # +12, +16: the one at +16
    }


def test_selector_escapes_and_range_results() -> None:
    assert selector("m", (("a", 'say "hi"'),)) == 'm{a="say \\"hi\\""}'
    series = parse_range_result(
        {
            "resultType": "matrix",
            "result": [
                {"metric": {"job": "b"}, "values": [[10, "1"], [20, "NaN"], [30, "+Inf"]]},
                {"metric": {"__name__": "up", "job": "a"}, "values": [[10, "0"]]},
            ],
        },
        "fallback",
    )
    assert [s.series for s in series] == ['fallback{job="b"}', 'up{job="a"}']
    assert series[0].values == {10: 1.0}

"""Prometheus rules, their promtool unit tests, the statsd mapping and the Grafana dashboards.

- `promtool check rules|config` and `promtool test rules` (Debian's prometheus package, which
  `scripts/services up prometheus` installs);
- every PromQL expression of the rules and dashboards is sent to the real Prometheus of
  scripts/services as an instant query and must parse;
- every metric they use is in deploy/observability/METRICS.md, and the ones marked "exposed"
  there are really registered by the chat server (serving.metrics.Metrics).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import require_service, service_port

ROOT = Path(__file__).resolve().parents[2]
OBS = ROOT / "deploy" / "observability"
PROM = OBS / "prometheus"
RULE_FILES = sorted((PROM / "rules").glob("*.yml"))
TEST_FILES = sorted((PROM / "tests").glob("*.test.yml"))
DASHBOARDS = sorted((OBS / "grafana" / "dashboards").glob("*.json"))
METRICS_MD = OBS / "METRICS.md"
STATSD_MAPPING = OBS / "statsd" / "mapping.yml"

# Grafana's built-in variables, replaced by concrete values before a query is sent.
GRAFANA_BUILTINS = {
    "__rate_interval": "5m",
    "__interval": "1m",
    "__range": "1h",
    "__interval_ms": "60000",
    "__range_s": "3600",
}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}
PROMQL_WORDS |= {"and", "or", "unless", "inf", "nan", "Inf", "NaN"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


# --- helpers ------------------------------------------------------------------------------------
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        message = "promtool not found (Debian package prometheus: scripts/services up prometheus)"
        if os.environ.get("OPSASSIST_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


def run_promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *map(str, args)], capture_output=True, text=True, timeout=120, cwd=PROM
    )


@cache
def rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = []
    for path in RULE_FILES:
        groups.extend(yaml.safe_load(path.read_text())["groups"])
    return groups


def rules() -> list[dict[str, Any]]:
    return [rule for group in rule_groups() for rule in group["rules"]]


def alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in rules() if "alert" in rule}


def recorded() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


@cache
def dashboards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in DASHBOARDS}


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for panel in board.get("panels", []):
        found.append(panel)
        found.extend(panel.get("panels", []))  # collapsed rows
    return found


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable of the dashboards."""
    queries: list[tuple[str, str]] = []
    for name, board in dashboards().items():
        for panel in panels(board):
            for target in panel.get("targets", []):
                queries.append((f"{name}: {panel['title']} / {target['refId']}", target["expr"]))
        for variable in board.get("templating", {}).get("list", []):
            query = variable.get("query")
            text = query.get("query", "") if isinstance(query, dict) else str(query or "")
            match = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", text, re.S)
            queries.append(
                (f"{name}: variable {variable['name']}", match.group(1) if match else text)
            )
    return queries


def all_queries() -> list[tuple[str, str]]:
    from_rules = [(rule.get("alert") or rule["record"], rule["expr"]) for rule in rules()]
    return from_rules + dashboard_queries()


def substitute_grafana_variables(expr: str) -> str:
    """Grafana variables replaced by concrete values: built-ins by durations, others by `.*`."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        return GRAFANA_BUILTINS.get(name, ".*")

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)", value, expr)


def metric_names(expr: str) -> set[str]:
    """Metric (and recording rule) names an expression selects: identifiers that are not
    functions, keywords, label names (inside {} or by/without/on (...)) or durations."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w:.])[A-Za-z_:][\w:]*", text):
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or match.group(0) in PROMQL_WORDS:
            continue
        names.add(match.group(0))
    return names


@cache
def documented_metrics() -> dict[str, dict[str, str]]:
    """Rows of METRICS.md's tables whose first cell is a metric name: name -> row fields."""
    rows: dict[str, dict[str, str]] = {}
    header: list[str] = []
    for line in METRICS_MD.read_text().splitlines():
        if not line.startswith("|"):
            header = []
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not header:
            header = [cell.lower() for cell in cells]
            continue
        match = re.fullmatch(r"`([A-Za-z_:][\w:]*)`", cells[0])
        if match:
            rows[match.group(1)] = dict(zip(header, cells, strict=False))
    return rows


def is_documented(name: str) -> bool:
    documented = documented_metrics()
    if name in documented:
        return True
    for suffix in HISTOGRAM_SUFFIXES:
        base = name.removesuffix(suffix)
        if base != name and documented.get(base, {}).get("type") == "histogram":
            return True
    return False


# --- promtool -----------------------------------------------------------------------------------
def test_rule_files_exist() -> None:
    assert RULE_FILES and TEST_FILES and DASHBOARDS


def test_promtool_check_rules() -> None:
    result = run_promtool("check", "rules", *RULE_FILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_config() -> None:
    result = run_promtool("check", "config", PROM / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = run_promtool("test", "rules", *TEST_FILES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_fail_when_a_threshold_changes(tmp_path: Path) -> None:
    """The unit tests really pin the rules: a looser SLO threshold makes them fail."""
    for path in RULE_FILES:
        text = path.read_text().replace(
            "opsassist:retrieval_duration_seconds:p95_5m > 0.2",
            "opsassist:retrieval_duration_seconds:p95_5m > 0.3",
        )
        (tmp_path / "rules").mkdir(exist_ok=True)
        (tmp_path / "rules" / path.name).write_text(text)
    (tmp_path / "tests").mkdir()
    for path in TEST_FILES:
        (tmp_path / "tests" / path.name).write_text(path.read_text())
    result = subprocess.run(
        [promtool(), "test", "rules", *[str(tmp_path / "tests" / p.name) for p in TEST_FILES]],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "OpsAssistVectorSearchSlow" in result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for path in TEST_FILES:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    names = set(alerts())
    assert names - firing == set(), f"alerts never fired by a unit test: {names - firing}"
    assert names - silent == set(), f"alerts never shown silent: {names - silent}"
    assert (firing | silent) - names == set(), "unit tests name alerts that do not exist"


def test_alerts_are_labelled_and_described() -> None:
    for name, rule in alerts().items():
        labels, annotations = rule.get("labels", {}), rule.get("annotations", {})
        assert labels.get("severity") in {"critical", "warning", "info"}, name
        assert labels.get("component") in {"chat", "model", "pipeline", "airflow"}, name
        assert annotations.get("summary") and annotations.get("description"), name


@pytest.mark.parametrize(
    ("alert", "record", "threshold"),
    [
        ("OpsAssistVectorSearchSlow", "opsassist:retrieval_duration_seconds:p95_5m", 0.2),
        ("OpsAssistCachedAnswerSlow", "opsassist:cached_answer_duration_seconds:p95_5m", 0.05),
        ("OpsAssistSignalFreshnessSlow", "opsassist:signal_freshness_seconds:p95_5m", 10),
    ],
)
def test_slo_alerts_use_the_slo_thresholds(alert: str, record: str, threshold: float) -> None:
    assert alerts()[alert]["expr"].strip() == f"{record} > {threshold}"
    assert record in recorded()
    assert alerts()[alert]["labels"]["slo"]


def test_required_alerts_exist() -> None:
    assert {
        "OpsAssistVectorSearchSlow",
        "OpsAssistCachedAnswerSlow",
        "OpsAssistSignalFreshnessSlow",
        "OpsAssistDagRunFailed",
        "OpsAssistIndexPromotionRefused",
        "OpsAssistModelServerErrors",
    } <= set(alerts())


# --- PromQL against the real Prometheus ---------------------------------------------------------
def test_grafana_variable_substitution() -> None:
    expr = 'rate(x{route=~"$route", i=~"${instance}"}[$__rate_interval]) + y[$__range]'
    assert substitute_grafana_variables(expr) == 'rate(x{route=~".*", i=~".*"}[5m]) + y[1h]'


@pytest.fixture(scope="module")
def prometheus_url() -> str:
    port = service_port("prometheus", 19090)
    require_service("prometheus", port)
    return f"http://127.0.0.1:{port}"


def query(base: str, expr: str) -> dict[str, Any]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=20) as response:
            body: dict[str, Any] = json.load(response)
    except urllib.error.HTTPError as exc:  # 400 bad_data / 422 execution errors carry JSON
        body = json.load(exc)
    return body


def test_prometheus_rejects_a_broken_expression(prometheus_url: str) -> None:
    body = query(prometheus_url, "sum(rate(x[5m])")
    assert body["status"] == "error" and body["errorType"] == "bad_data"


@pytest.mark.parametrize(("where", "expr"), all_queries(), ids=[w for w, _ in all_queries()])
def test_expression_parses_on_prometheus(prometheus_url: str, where: str, expr: str) -> None:
    concrete = substitute_grafana_variables(expr)
    assert "$" not in concrete, f"{where}: unsubstituted variable in {concrete}"
    body = query(prometheus_url, concrete)
    assert body.get("status") == "success", f"{where}: {body.get('error')}\n{concrete}"


# --- metric names: rules, dashboards, METRICS.md and the chat server agree -----------------------
def test_metric_name_extraction() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, route) (rate(a_bucket{route=~"x"}[5m]))) '
        "/ on (job) b:rec:rate5m > 0 or vector(0) unless c offset 15m"
    )
    assert metric_names(expr) == {"a_bucket", "b:rec:rate5m", "c"}


def test_every_metric_used_is_documented() -> None:
    undocumented: dict[str, set[str]] = {}
    for where, expr in all_queries():
        for name in metric_names(expr) - recorded():
            if not is_documented(name):
                undocumented.setdefault(name, set()).add(where)
    assert not undocumented, f"add these to deploy/observability/METRICS.md: {undocumented}"


def test_every_recording_rule_is_documented() -> None:
    assert recorded() <= set(documented_metrics())


def chat_server_metric_names() -> dict[str, str]:
    from serving.metrics import Metrics

    names: dict[str, str] = {}
    for family in Metrics().registry.collect():
        kind = family.type
        names[family.name + ("_total" if kind == "counter" else "")] = kind
    return names


def test_exposed_chat_metrics_are_registered_by_the_chat_server() -> None:
    registered = chat_server_metric_names()
    for name, row in documented_metrics().items():
        if row.get("status") != "exposed":
            continue
        assert name in registered, f"METRICS.md says {name} is exposed; serving/metrics.py lacks it"
        assert registered[name] == row["type"], f"{name}: {registered[name]} != {row['type']}"


def test_every_chat_server_metric_is_documented() -> None:
    missing = set(chat_server_metric_names()) - set(documented_metrics())
    assert not missing, f"serving/metrics.py registers undocumented metrics: {missing}"


# --- statsd mapping -----------------------------------------------------------------------------
def map_statsd(name: str) -> tuple[str, dict[str, str]] | None:
    """statsd_exporter's first-match-wins mapping of one statsd metric name (glob and regex)."""
    for mapping in yaml.safe_load(STATSD_MAPPING.read_text())["mappings"]:
        if mapping.get("match_type") == "regex":
            pattern = mapping["match"]
        else:
            pattern = "^" + re.escape(mapping["match"]).replace(r"\*", "([^.]*)") + "$"
        match = re.match(pattern, name)
        if match:
            labels = {
                key: match.expand(re.sub(r"\$(\d+)", r"\\g<\1>", value))
                for key, value in (mapping.get("labels") or {}).items()
            }
            return mapping["name"], labels
    return None


@pytest.mark.parametrize(
    ("statsd", "expected"),
    [
        (
            "airflow.dagrun.duration.failed.runbooks_index",
            ("airflow_dagrun_duration_seconds", {"status": "failed", "dag_id": "runbooks_index"}),
        ),
        (
            "airflow.dag.runbooks_index.embed.duration",
            ("airflow_task_duration_seconds", {"dag_id": "runbooks_index", "task_id": "embed"}),
        ),
        ("airflow.ti_failures", ("airflow_ti_failures_total", {})),
        ("airflow.dag_processing.import_errors", ("airflow_dag_processing_import_errors", {})),
        (
            "airflow.opsassist.index_promotions.refused.runbooks",
            ("opsassist_index_promotions_total", {"result": "refused", "index": "runbooks"}),
        ),
        (
            "opsassist.dead_letter.kafka.oversized",
            ("opsassist_dead_letter_total", {"source": "kafka", "reason": "oversized"}),
        ),
        (
            "airflow.opsassist.signal_freshness.kafka",
            ("opsassist_signal_freshness_seconds", {"source": "kafka"}),
        ),
        (
            "opsassist.documents.runbooks_index.embedded",
            ("opsassist_documents_total", {"dag_id": "runbooks_index", "kind": "embedded"}),
        ),
    ],
)
def test_statsd_mapping(statsd: str, expected: tuple[str, dict[str, str]]) -> None:
    assert map_statsd(statsd) == expected


def test_statsd_mapping_names_and_labels_are_documented() -> None:
    documented = documented_metrics()
    for mapping in yaml.safe_load(STATSD_MAPPING.read_text())["mappings"]:
        name = mapping["name"]
        assert name in documented, f"{name} missing from METRICS.md"
        labels_cell = documented[name].get("labels", "")
        for label in mapping.get("labels") or {}:
            assert f"`{label}`" in labels_cell, f"{name}: label {label} not documented"
        if mapping.get("observer_type") == "histogram":
            assert documented[name]["type"] == "histogram", name


def statsd_exporter() -> str:
    binary = (
        os.environ.get("OPSASSIST_STATSD_EXPORTER")
        or shutil.which("statsd_exporter")
        or shutil.which("prometheus-statsd-exporter")
    )
    if not binary:
        pytest.skip("statsd_exporter is not installed (set OPSASSIST_STATSD_EXPORTER to its path)")
    return binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_statsd_exporter_accepts_the_mapping() -> None:
    result = subprocess.run(
        [statsd_exporter(), f"--statsd.mapping-config={STATSD_MAPPING}", "--check-config"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_statsd_exporter_turns_packets_into_the_documented_series() -> None:
    """The real exporter with the mapping: statsd lines in, the names the rules use out."""
    statsd_port, web_port = free_port(), free_port()
    process = subprocess.Popen(
        [
            statsd_exporter(),
            f"--statsd.mapping-config={STATSD_MAPPING}",
            f"--statsd.listen-tcp=127.0.0.1:{statsd_port}",
            f"--statsd.listen-udp=127.0.0.1:{statsd_port}",
            f"--web.listen-address=127.0.0.1:{web_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    lines = [
        "airflow.dagrun.duration.failed.runbooks_index:1234|ms",
        "airflow.ti_failures:1|c",
        "airflow.opsassist.index_promotions.refused.runbooks:1|c",
        "opsassist.dead_letter.kafka.oversized:3|c",
        "airflow.opsassist.signal_freshness.kafka:2500|ms",
        "airflow.dag_processing.import_errors:2|g",
        "opsassist.documents.runbooks_index.embedded:42|c",
    ]
    expected = {
        'airflow_dagrun_duration_seconds_count{dag_id="runbooks_index",status="failed"} 1',
        'airflow_dagrun_duration_seconds_bucket{dag_id="runbooks_index",status="failed",le="5"} 1',
        "airflow_ti_failures_total 1",
        'opsassist_index_promotions_total{index="runbooks",result="refused"} 1',
        'opsassist_dead_letter_total{reason="oversized",source="kafka"} 3',
        'opsassist_signal_freshness_seconds_sum{source="kafka"} 2.5',
        'opsassist_signal_freshness_seconds_bucket{source="kafka",le="2.5"} 1',
        "airflow_dag_processing_import_errors 2",
        'opsassist_documents_total{dag_id="runbooks_index",kind="embedded"} 42',
    }
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", statsd_port), timeout=1) as conn:
                    conn.sendall(("\n".join(lines) + "\n").encode())
                break
            except OSError:
                assert time.monotonic() < deadline, "statsd_exporter did not start"
                time.sleep(0.2)
        missing = expected
        while missing and time.monotonic() < deadline:
            url = f"http://127.0.0.1:{web_port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as response:
                exposed = set(response.read().decode().splitlines())
            missing = expected - exposed
            time.sleep(0.2)
        assert not missing, f"not exposed: {missing}"
    finally:
        process.terminate()
        process.wait(timeout=10)


# --- Grafana ------------------------------------------------------------------------------------
def test_dashboards_are_provisioned_with_the_prometheus_datasource() -> None:
    datasource = yaml.safe_load(
        (OBS / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"][0]
    provider = yaml.safe_load(
        (OBS / "grafana" / "provisioning" / "dashboards" / "opsassist.yml").read_text()
    )["providers"][0]
    compose = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    grafana_mounts = compose["services"]["grafana"]["volumes"]
    assert (
        f"./deploy/observability/grafana/dashboards:{provider['options']['path']}:ro"
        in grafana_mounts
    )
    assert datasource["url"] == "http://prometheus:9090"
    uids = [board["uid"] for board in dashboards().values()]
    assert len(uids) == len(set(uids))
    for name, board in dashboards().items():
        for panel in panels(board):
            assert panel["datasource"]["uid"] == datasource["uid"], f"{name}: {panel['title']}"
            assert panel.get("targets"), f"{name}: {panel['title']} has no query"
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == datasource["uid"]


def test_dashboard_panels_do_not_overlap() -> None:
    for name, board in dashboards().items():
        taken: set[tuple[int, int]] = set()
        for panel in panels(board):
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24, f"{name}: {panel['title']} is wider than the grid"
            cells = {
                (x, y)
                for x in range(pos["x"], pos["x"] + pos["w"])
                for y in range(pos["y"], pos["y"] + pos["h"])
            }
            assert not cells & taken, f"{name}: {panel['title']} overlaps another panel"
            taken |= cells


def test_dashboards_cover_the_requested_views() -> None:
    text = {name: json.dumps(board) for name, board in dashboards().items()}
    for metric in (
        "airflow_dagrun_duration_seconds",
        "opsassist_documents_total",
        "opsassist_dead_letter_total",
        "opsassist_signal_freshness_seconds",
    ):
        assert metric in text["pipeline.json"], metric
    for metric in (
        "opsassist_http_request_duration_seconds",
        "opsassist_retrieval_duration_seconds",
        "opsassist_answer_cache",
        "opsassist_retrieval_top_score",
        "opsassist_generation_duration_seconds",
        "opsassist_generation_tokens_total",
    ):
        assert metric in text["chat.json"], metric

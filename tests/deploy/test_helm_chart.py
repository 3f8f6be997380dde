"""The Helm chart (deploy/helm/opsassist) with the real tools: `helm lint` and `helm template` for
each values file (helm built from the Go module proxy by scripts/tools.sh), then every rendered
object - built-in kinds and the custom resources alike - through a server-side dry run on the
project's real kube-apiserver, with the published CRDs of KServe, the Prometheus Operator and
External Secrets installed into it (their openAPIV3Schema is the schema check). Also: the guards
of the templates, the Argo CD sync waves, the settings against the compose file, and that no
secret value is anywhere in the chart, its values or what it renders.
"""

from __future__ import annotations

import copy
import filecmp
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from opsassist.settings import Settings
from tests.conftest import ROOT
from tests.deploy import chart
from tests.deploy.chart import CHART, ENVIRONMENTS, Manifest

SETTINGS_VARS = frozenset(f"OPSASSIST_{name.upper()}" for name in Settings.model_fields)
SECRET_VARS = frozenset(
    f"OPSASSIST_{name.upper()}"
    for name, field in Settings.model_fields.items()
    if SecretStr in (field.annotation, *getattr(field.annotation, "__args__", ()))
)
# Renderings checked: each values file, and dev with each other secrets provider.
RENDERINGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "dev": ("dev", ()),
    "prod": ("prod", ()),
    "dev-externalSecrets": ("dev", ("secrets.provider=externalSecrets",)),
    "dev-vaultAgent": ("dev", ("secrets.provider=vaultAgent",)),
}
CUSTOM_KINDS = {"InferenceService", "ServiceMonitor", "PodMonitor", "PrometheusRule"}
SECRET_KINDS = {"ExternalSecret", "SecretStore"}


def rendering(name: str) -> tuple[Manifest, ...]:
    environment, sets = RENDERINGS[name]
    return chart.render(environment, *sets)


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([chart.tool("helm"), *args], capture_output=True, text=True, timeout=120)


# --- helm lint / template ------------------------------------------------------------------------
@pytest.mark.parametrize("environment", sorted(ENVIRONMENTS))
def test_helm_lint_is_clean(environment: str) -> None:
    result = helm("lint", "--strict", str(CHART), "-f", str(chart.values_file(environment)))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "1 chart(s) linted, 0 chart(s) failed" in output
    assert "[WARNING]" not in output and "[ERROR]" not in output, output


@pytest.mark.parametrize("name", sorted(RENDERINGS))
def test_helm_template_renders_every_part(name: str) -> None:
    objects = rendering(name)
    kinds = {m["kind"] for m in objects}
    assert {"Deployment", "Service", "ConfigMap", "Ingress", "InferenceService"} <= kinds
    assert {"ServiceMonitor", "PodMonitor", "PrometheusRule"} <= kinds
    assert {"ClusterRole", "Role", "RoleBinding", "ValidatingAdmissionPolicy"} <= kinds
    deployments = set(chart.by_kind(objects, "Deployment"))
    assert deployments == {"opsassist-chat", "opsassist-open-webui"}
    keys = [(m["kind"], m["metadata"]["name"]) for m in objects]
    assert len(keys) == len(set(keys)), "an object rendered twice"
    provider = chart.values(RENDERINGS[name][0])["secrets"]["provider"]
    provider = dict(s.split("=") for s in RENDERINGS[name][1]).get("secrets.provider", provider)
    assert bool(kinds & SECRET_KINDS) == (provider == "externalSecrets")


def template_error(*sets: str) -> str:
    result = helm(
        "template", "x", str(CHART), "-f", str(chart.values_file("dev")), "--set", ",".join(sets)
    )
    assert result.returncode != 0, "the chart rendered values it must refuse"
    return result.stderr


def test_chart_refuses_secrets_in_settings_unpinned_images_and_mismatched_model_url() -> None:
    # the templates' own guards
    assert "is a secret" in template_error("chat.settings.OPSASSIST_API_KEYS=x")
    assert "is a secret" in template_error("settings.OPSASSIST_REDIS_URL=redis://x")
    assert "OPSASSIST_MODEL_SERVER_URL must be" in template_error("model.name=other")
    assert "storageUri is required" in template_error("model.kind=huggingface")
    # values.schema.json: unknown keys (typos), enums, pinned tags, setting names
    assert "'replicaz' not allowed" in template_error("chat.replicaz=2")
    assert "/images/chat/tag" in template_error("images.chat.tag=latest")
    assert "/openWebui/image" in template_error("openWebui.image=open-webui:latest")
    assert "must be one of" in template_error("secrets.provider=plain")
    assert "'HOME' does not match" in template_error("settings.HOME=/tmp")


# --- the server-side dry run --------------------------------------------------------------------
@pytest.fixture(scope="module")
def api() -> Any:
    client = chart.api_server()
    kinds = chart.install_crds(client)
    assert kinds >= CUSTOM_KINDS | SECRET_KINDS, kinds
    for namespace in ENVIRONMENTS.values():
        chart.ensure_namespace(client, namespace)
    return client


@pytest.mark.services
@pytest.mark.parametrize("name", sorted(RENDERINGS))
def test_every_rendered_object_passes_a_server_side_dry_run(api: Any, name: str) -> None:
    """Every object, built-in or custom, is applied with dryRun=All and strict field
    validation: the real API server's admission and OpenAPI schema for the built-in kinds, the
    published CRD's openAPIV3Schema for InferenceService, ServiceMonitor, PodMonitor,
    PrometheusRule, SecretStore and ExternalSecret."""
    failures = {}
    for manifest in rendering(name):
        try:
            chart.dry_run(api, manifest)
        except Exception as exc:  # the client's ApiException: collect every failure
            failures[f"{manifest['kind']}/{manifest['metadata']['name']}"] = str(
                getattr(exc, "body", exc)
            )[:500]
    assert not failures, failures


@pytest.mark.services
def test_the_dry_run_rejects_unknown_fields_and_wrong_values(api: Any) -> None:
    """The check above can fail: typos, wrong types and invalid values in built-in and custom
    objects are refused by the server."""
    objects = rendering("prod")
    cases = [
        ("Deployment", "opsassist-chat", ["spec", "replicaz"], 1, "field not declared"),
        ("Ingress", "opsassist-open-webui", ["spec", "tls"], "x", "expected list"),
        (
            "InferenceService",
            "gpt-oss-20b",
            ["spec", "predictor", "model", "resourses"],
            {},
            "field not declared",
        ),
        (
            "InferenceService",
            "gpt-oss-20b",
            ["spec", "predictor", "minReplicas"],
            "one",
            "expected numeric",
        ),
        ("ServiceMonitor", "opsassist-chat", ["spec", "endpoints", 0, "interval"], "soon", "match"),
        (
            "ExternalSecret",
            "opsassist-secrets",
            ["spec", "secretStoreRef", "kind"],
            "Vault",
            "Unsupported value",
        ),
    ]
    for kind, name, path, value, message in cases:
        manifest = copy.deepcopy(chart.one(objects, kind, name))
        node: Any = manifest
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        with pytest.raises(Exception) as caught:
            chart.dry_run(api, manifest)
        body = str(getattr(caught.value, "body", caught.value))
        assert message in body, (kind, path, body[:400])


# --- Argo CD sync waves -------------------------------------------------------------------------
def wave(manifest: Manifest) -> int:
    annotations = manifest["metadata"].get("annotations") or {}
    assert "argocd.argoproj.io/sync-wave" in annotations, manifest["metadata"]["name"]
    return int(annotations["argocd.argoproj.io/sync-wave"])


@pytest.mark.parametrize("name", sorted(RENDERINGS))
def test_sync_waves_put_secrets_and_settings_before_workloads(name: str) -> None:
    objects = rendering(name)
    waves = {(m["kind"], m["metadata"]["name"]): wave(m) for m in objects}
    workloads = [w for (kind, _), w in waves.items() if kind in {"Deployment", "InferenceService"}]
    first_workload = min(workloads)
    before = {"SecretStore", "ExternalSecret", "ConfigMap", "ServiceAccount", "Role"}
    before |= {"RoleBinding", "ClusterRole", "ClusterRoleBinding", "PersistentVolumeClaim"}
    for (kind, object_name), number in waves.items():
        if kind in before:
            assert number < first_workload, f"{kind}/{object_name} not before the workloads"
        if kind in {"ServiceMonitor", "PodMonitor", "PrometheusRule", "Ingress"}:
            assert number > first_workload, f"{kind}/{object_name} not after the workloads"
    stores = [w for (kind, _), w in waves.items() if kind == "SecretStore"]
    externals = [w for (kind, _), w in waves.items() if kind == "ExternalSecret"]
    if stores:
        assert (
            max(stores)
            < min(externals)
            < min(w for (kind, _), w in waves.items() if kind == "ConfigMap")
        )
    for manifest in objects:  # custom resources may arrive with their CRD in the same sync
        if manifest["kind"] in CUSTOM_KINDS | SECRET_KINDS:
            options = manifest["metadata"]["annotations"].get("argocd.argoproj.io/sync-options")
            assert options == "SkipDryRunOnMissingResource=true", manifest["metadata"]["name"]


# --- settings -----------------------------------------------------------------------------------
def pod_env_names(deployment: Manifest) -> set[str]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"] for e in container.get("env", [])}


@pytest.mark.parametrize("environment", sorted(ENVIRONMENTS))
def test_settings_come_from_configmaps_and_secrets_only_from_secrets(environment: str) -> None:
    objects = chart.render(environment)
    config = {
        name: chart.one(objects, "ConfigMap", name)["data"]
        for name in ("opsassist-settings", "opsassist-airflow-settings")
    }
    for name, data in config.items():
        assert set(data) <= SETTINGS_VARS, (
            f"{name}: not Settings fields {set(data) - SETTINGS_VARS}"
        )
        assert not set(data) & SECRET_VARS, f"{name} holds secrets {set(data) & SECRET_VARS}"
        assert all(isinstance(v, str) for v in data.values())
    chat_keys = set(chart.values(environment)["secrets"]["chat"]["keys"])
    assert chat_keys <= SETTINGS_VARS
    deployment = chart.one(objects, "Deployment", "opsassist-chat")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    from_token_secrets = {
        e["name"] for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})
    }
    # every secret setting reaches the chat server from a Secret, except the write identity's
    # token, which only the ops_action DAG's pods get (never the chat server)
    assert SECRET_VARS - chat_keys - from_token_secrets == {"OPSASSIST_KUBE_WRITE_TOKEN"}
    for env in container["env"]:
        assert env["name"] not in SECRET_VARS or "value" not in env, env["name"]
    refs = [ref for entry in container["envFrom"] for ref in entry.values()]
    assert {"name": "opsassist-settings"} in refs
    assert {"name": chart.values(environment)["secrets"]["chat"]["name"]} in refs
    checksum = deployment["spec"]["template"]["metadata"]["annotations"]["checksum/settings"]
    assert re.fullmatch(r"[0-9a-f]{64}", checksum)  # a settings change rolls the pods


def test_a_settings_change_rolls_the_chat_pods() -> None:
    def checksum(*sets: str) -> str:
        deployment = chart.one(chart.render("dev", *sets), "Deployment", "opsassist-chat")
        return str(deployment["spec"]["template"]["metadata"]["annotations"]["checksum/settings"])

    assert checksum() != checksum("settings.OPSASSIST_LOG_LEVEL=WARNING")


def compose_settings() -> dict[str, str]:
    """The OPSASSIST_* variables docker-compose.yaml gives the chat server and the Airflow
    services (the x-opsassist-env anchor plus the chat server's own)."""
    compose = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    keys: dict[str, str] = {}
    for service in compose["services"].values():
        environment = service.get("environment") or {}
        if isinstance(environment, dict):
            keys.update({k: str(v) for k, v in environment.items() if k.startswith("OPSASSIST_")})
    return keys


# Settings only the Kubernetes install sets, each with its reason (anything else must match).
KUBERNETES_ONLY = {
    # compose runs OpenSearch with its security plugin off and the model server without a key
    "OPSASSIST_OPENSEARCH_USER",
    "OPSASSIST_OPENSEARCH_PASSWORD",
    "OPSASSIST_MODEL_API_KEY",
    # the action agent's cluster identities: compose has no cluster
    "OPSASSIST_KUBE_API_URL",
    "OPSASSIST_KUBE_CA_FILE",
    "OPSASSIST_KUBE_READ_TOKEN",
    "OPSASSIST_KUBE_DRYRUN_TOKEN",
    # secrets compose leaves at their dev defaults (the local PostgreSQL, no Airflow API user,
    # no signed source links); the chart has them in the Secret so a cluster sets them
    "OPSASSIST_AUDIT_DSN",
    "OPSASSIST_AIRFLOW_API_PASSWORD",
    "OPSASSIST_SOURCE_LINK_KEY",
    # the GPU model's longer answers (values-prod.yaml)
    "OPSASSIST_MODEL_READ_TIMEOUT_SECONDS",
    "OPSASSIST_CHAT_MAX_TOKENS",
}
# Values that differ by nature between one host and a cluster (hosts, scale, log level).
HOST_OR_SCALE = re.compile(r"_(URL|URI|BOOTSTRAP|REPLICAS|ORIGINS|LEVEL|SOURCES|NAME)$")


@pytest.mark.parametrize("environment", sorted(ENVIRONMENTS))
def test_the_chart_and_the_compose_file_set_the_same_settings(environment: str) -> None:
    objects = chart.render(environment)
    rendered: dict[str, str] = {}
    for name in ("opsassist-settings", "opsassist-airflow-settings"):
        rendered.update(chart.one(objects, "ConfigMap", name)["data"])
    secret_keys = set(chart.values(environment)["secrets"]["chat"]["keys"])
    chart_keys = set(rendered) | secret_keys
    chart_keys |= pod_env_names(chart.one(objects, "Deployment", "opsassist-chat")) & SETTINGS_VARS
    compose = compose_settings()
    assert set(compose) - chart_keys == set(), "set by compose, not by the chart"
    assert chart_keys - set(compose) <= KUBERNETES_ONLY, "set by the chart, not by compose"
    for key, value in rendered.items():  # the same values where the host does not matter
        if key in compose and not HOST_OR_SCALE.search(key) and "${" not in compose[key]:
            assert value == compose[key], key


# --- no secret in the repository's deploy files or in what they render ---------------------------
def known_secret_values() -> set[str]:
    """Real secret values that must never be copied into the chart: the dev secrets of
    .env.example (what compose runs with), the throwaway values of the KSOPS example (decrypted
    here with the test key) and the secret defaults of Settings."""
    found: set[str] = set()
    for line in (ROOT / ".env.example").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#") and re.search(r"PASSWORD|SECRET|KEY", key) and value:
            found.add(value)
    decrypted = chart.run(
        chart.tool("sops"),
        "--decrypt",
        str(chart.SECRETS / "dev" / "secrets.enc.yaml"),
        env={"SOPS_AGE_KEY_FILE": str(chart.AGE_TEST_KEY)},
    )
    for doc in yaml.safe_load_all(decrypted):
        found |= {str(v) for v in (doc.get("stringData") or {}).values()}
    for name, field in Settings.model_fields.items():
        if f"OPSASSIST_{name.upper()}" in SECRET_VARS and isinstance(field.default, SecretStr):
            found.add(field.default.get_secret_value())
    # long enough to be a secret rather than a word (the KSOPS user name "opsassist" is not)
    return {v for v in found if len(v) >= 12 and not v.startswith("http://mlflow")}


def deploy_texts() -> dict[str, str]:
    texts = {
        str(path.relative_to(ROOT)): path.read_text()
        for folder in ("deploy/helm", "deploy/argocd", "deploy/k8s", "deploy/secrets")
        for path in (ROOT / folder).rglob("*")
        if path.is_file()
    }
    for name in RENDERINGS:
        environment, sets = RENDERINGS[name]
        texts[f"helm template ({name})"] = chart.helm_template(environment, None, sets)
    return texts


def test_no_secret_value_in_the_chart_values_or_rendered_output() -> None:
    secrets = known_secret_values()
    assert len(secrets) >= 10, secrets  # the check has something to look for
    texts = deploy_texts()
    assert any("secrets.enc.yaml" in name for name in texts)
    leaks = {(name, s[:6] + "...") for name, text in texts.items() for s in secrets if s in text}
    assert not leaks, leaks
    for name in RENDERINGS:  # no Secret is ever rendered with data
        for manifest in rendering(name):
            if manifest["kind"] == "Secret":
                assert manifest["type"] == "kubernetes.io/service-account-token"
                assert not manifest.get("data") and not manifest.get("stringData")


def test_the_secret_grep_finds_a_planted_secret(tmp_path: Path) -> None:
    """The grep above is not blind: a values file with a dev password in it is caught, in the
    file and in what helm renders from it."""
    secret = sorted(known_secret_values())[0]
    planted = tmp_path / "values-leak.yaml"
    planted.write_text(f"settings:\n  OPSASSIST_LOG_FORMAT: {secret}\n")
    output = chart.run(chart.tool("helm"), "template", "x", str(CHART), "-f", str(planted))
    assert secret in planted.read_text() and secret in output


# --- the Prometheus rules and the generated plain manifests -------------------------------------
def test_prometheus_rules_are_the_observability_rules_files() -> None:
    rules = ROOT / "deploy" / "observability" / "prometheus" / "rules"
    rendered = chart.by_kind(chart.render("prod"), "PrometheusRule")
    assert set(rendered) == {p.stem for p in rules.glob("*.yml")}
    for path in rules.glob("*.yml"):
        assert rendered[path.stem]["spec"] == yaml.safe_load(path.read_text())
        assert rendered[path.stem]["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_deploy_k8s_is_generated_from_the_chart(tmp_path: Path) -> None:
    """deploy/k8s holds no hand-kept copy: every file equals what generate.sh renders now."""
    script = ROOT / "deploy" / "k8s" / "generate.sh"
    subprocess.run(
        ["bash", str(script)],
        check=True,
        timeout=120,
        env={**os.environ, "OUT": str(tmp_path), "OPSASSIST_HELM": chart.tool("helm")},
    )
    shipped = {
        str(p.relative_to(script.parent))
        for p in script.parent.rglob("*")
        if p.is_file() and p != script
    }
    generated = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()}
    assert shipped == generated
    for name in shipped:
        assert filecmp.cmp(script.parent / name, tmp_path / name, shallow=False), name


# --- the Vault Agent injector mode --------------------------------------------------------------
def test_vault_agent_mode_reads_no_kubernetes_secret_and_sources_the_injected_file() -> None:
    objects = rendering("dev-vaultAgent")
    for name, secret in (
        ("opsassist-chat", chart.values("dev")["secrets"]["chat"]),
        ("opsassist-open-webui", chart.values("dev")["secrets"]["openWebui"]),
    ):
        pod = chart.one(objects, "Deployment", name)["spec"]["template"]
        (container,) = pod["spec"]["containers"]
        assert "envFrom" not in container or all(
            "secretRef" not in ref for ref in container["envFrom"]
        )
        annotations = pod["metadata"]["annotations"]
        assert annotations["vault.hashicorp.com/agent-inject"] == "true"
        assert annotations["vault.hashicorp.com/role"] == "opsassist"
        path = f"secret/data/{secret['vaultKey']}"
        assert annotations[f"vault.hashicorp.com/agent-inject-secret-{secret['name']}.env"] == path
        template = annotations[f"vault.hashicorp.com/agent-inject-template-{secret['name']}.env"]
        assert re.findall(r"export (\w+)=", template) == secret["keys"]
        command = container["command"]
        assert command[:2] == ["/bin/sh", "-c"]
        assert command[2].startswith(f". /vault/secrets/{secret['name']}.env && exec ")
        token_volume = annotations["vault.hashicorp.com/agent-service-account-token-volume-name"]
        assert token_volume in {v["name"] for v in pod["spec"]["volumes"]}


def test_the_chat_command_is_the_images_own() -> None:
    """The command is set only in vaultAgent mode (to source the injected file first); it must
    stay the chat image's CMD, and other modes leave the image's CMD alone."""
    dockerfile = (ROOT / "deploy" / "docker" / "chat.Dockerfile").read_text()
    (cmd,) = re.findall(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE)
    assert chart.values("dev")["chat"]["command"] == json.loads(cmd)
    for name in ("dev", "prod", "dev-externalSecrets"):
        for deployment in chart.by_kind(rendering(name), "Deployment").values():
            assert "command" not in deployment["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("environment", sorted(ENVIRONMENTS))
@pytest.mark.parametrize("configmap", ["opsassist-settings", "opsassist-airflow-settings"])
def test_the_rendered_settings_are_valid_for_the_settings_class(
    environment: str, configmap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each ConfigMap, as the environment of a pod, is accepted by opsassist's Settings (types,
    enums, ranges) and gives the values the chart set."""
    from opsassist.settings import get_settings

    data = chart.one(chart.render(environment), "ConfigMap", configmap)["data"]
    for key in list(os.environ):
        if key.startswith("OPSASSIST_"):
            monkeypatch.delenv(key)
    for key, value in data.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    try:
        settings = Settings()
    finally:
        get_settings.cache_clear()
    for key, value in data.items():
        parsed = getattr(settings, key.removeprefix("OPSASSIST_").lower())
        if isinstance(parsed, str | int) and not isinstance(parsed, bool):
            assert parsed == type(parsed)(value), (key, parsed, value)
    monkeypatch.setenv("OPSASSIST_INDEX_BACKEND", "elasticsearch")  # the check can fail
    with pytest.raises(ValueError, match="index_backend"):
        Settings()

"""The chart's objects (deploy/helm/opsassist, rendered by the real `helm template`): schema,
images, the chat server, the model, RBAC, monitors, and the Airflow chart's values that go with
them.

Built-in kinds are also checked here without a server: every field against the `kubernetes`
Python client's models (`openapi_types` / `attribute_map`, i.e. the API's OpenAPI schema: unknown
fields and wrong types fail) and deserialized into its model class (required fields fail). The
server-side dry run of every object, custom resources included (their published CRDs installed
into the project's kube-apiserver), is in test_helm_chart.py.
"""

from __future__ import annotations

import copy
import inspect
import json
import re
from typing import Any

import kubernetes.client as k8s
import pytest
import yaml
from kubernetes.client import ApiClient

from opsassist.settings import Settings
from tests.conftest import ROOT
from tests.deploy import chart
from tests.deploy.chart import AIRFLOW_VALUES, CLUSTER_SCOPED, ENVIRONMENTS

STATSD_MAPPING = ROOT / "deploy" / "observability" / "statsd" / "mapping.yml"
SETTINGS_VARS = frozenset(f"OPSASSIST_{name.upper()}" for name in Settings.model_fields)
QUANTITY = re.compile(r"^\d+(\.\d+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?$")
OVERLAYS = sorted(ENVIRONMENTS)  # the values files: values-dev.yaml, values-prod.yaml

Manifest = dict[str, Any]


def render(overlay: str) -> tuple[Manifest, ...]:
    return chart.render(overlay)


def by_kind(overlay: str, kind: str) -> dict[str, Manifest]:
    return chart.by_kind(render(overlay), kind)


def one(overlay: str, kind: str, name: str) -> Manifest:
    return chart.one(render(overlay), kind, name)


# --- schema validation --------------------------------------------------------------------------
PRIMITIVES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "bool": (bool,),
    "float": (int, float),
    "datetime": (str,),
    "date": (str,),
    "bytes": (str,),
    "object": (object,),
}


def check_fields(value: Any, type_name: str, path: str, errors: list[str]) -> None:
    """Every field of `value` is a field of the OpenAPI model `type_name`, with its type."""
    # the client spells containers List[T] / Dict[str, T] (older releases: list[T] / dict(str, T))
    if type_name.lower().startswith("list["):
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list")
            return
        for index, item in enumerate(value):
            check_fields(item, type_name[5:-1], f"{path}[{index}]", errors)
        return
    if type_name.lower().startswith(("dict[", "dict(")):
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a mapping")
            return
        inner = type_name[type_name.index(",") + 1 : -1].strip()
        for key, item in value.items():
            check_fields(item, inner, f"{path}.{key}", errors)
        return
    if type_name in PRIMITIVES:
        wanted = PRIMITIVES[type_name]
        if not isinstance(value, wanted) or (type_name == "int" and isinstance(value, bool)):
            errors.append(f"{path}: expected {type_name}, got {type(value).__name__} {value!r}")
        return
    model = getattr(k8s, type_name)
    if not isinstance(value, dict):
        errors.append(f"{path}: expected an object ({type_name})")
        return
    fields = {json_name: attr for attr, json_name in model.attribute_map.items()}
    for key, item in value.items():
        if key not in fields:
            errors.append(f"{path}.{key}: unknown field of {type_name}")
            continue
        check_fields(item, model.openapi_types[fields[key]], f"{path}.{key}", errors)


class _Response:  # what kubernetes clients before v35 deserialize
    def __init__(self, document: Manifest) -> None:
        self.data = json.dumps(document)


def deserialize(document: Manifest, type_name: str) -> object:
    """The document as the client's model object (required fields and types enforced)."""
    client = ApiClient()
    if "content_type" in inspect.signature(client.deserialize).parameters:  # pydantic models
        return client.deserialize(json.dumps(document), type_name, "application/json")
    legacy: Any = client.deserialize
    return legacy(_Response(document), type_name)


def model_name(manifest: Manifest) -> str:
    version = manifest["apiVersion"].rsplit("/", 1)[-1]
    return version[0].upper() + version[1:] + manifest["kind"]


def validate_model(document: Any, type_name: str, path: str) -> list[str]:
    errors: list[str] = []
    check_fields(document, type_name, path, errors)
    try:  # required fields, as the client's models enforce them
        deserialize(document, type_name)
    except (ValueError, TypeError) as exc:
        errors.append(f"{path}: {exc}")
    return errors


def validate_builtin(manifest: Manifest) -> list[str]:
    name = model_name(manifest)
    if not hasattr(k8s, name):
        return [f"no schema for {manifest['apiVersion']} {manifest['kind']}"]
    return validate_model(manifest, name, manifest["kind"])


# --- rendering and schema tests -----------------------------------------------------------------
def validate(manifest: Manifest) -> list[str]:
    """Built-in kinds against the client's models; custom resources are left to their CRDs."""
    group = manifest["apiVersion"].rpartition("/")[0]
    if "." in group and not group.endswith(".k8s.io"):
        return []
    return validate_builtin(manifest)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_chart_renders_valid_builtin_objects(overlay: str) -> None:
    manifests = render(overlay)
    kinds = {m["kind"] for m in manifests}
    assert {
        "Deployment",
        "Service",
        "ConfigMap",
        "ServiceMonitor",
        "PodMonitor",
        "PrometheusRule",
        "Ingress",
        "InferenceService",
        "ClusterRole",
        "Role",
        "ServiceAccount",
        "PersistentVolumeClaim",
        "ValidatingAdmissionPolicy",
    } <= kinds
    problems = {f"{m['kind']}/{m['metadata']['name']}": validate(m) for m in manifests}
    assert not {k: v for k, v in problems.items() if v}, problems
    for manifest in manifests:
        namespace = manifest["metadata"].get("namespace")
        if manifest["kind"] in CLUSTER_SCOPED:
            assert namespace is None, manifest["metadata"]
        else:
            assert namespace == ENVIRONMENTS[overlay], manifest["metadata"]


def test_schema_check_rejects_typos_wrong_types_and_missing_fields() -> None:
    deployment = copy.deepcopy(one("prod", "Deployment", "opsassist-chat"))
    assert validate(deployment) == []
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["contianers"] = typo["spec"]["template"]["spec"].pop(
        "containers"
    )
    assert any("contianers: unknown field" in e for e in validate(typo))
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["revisionHistoryLimit"] = "five"
    assert any("spec.revisionHistoryLimit: expected int" in e for e in validate(wrong_type))
    port = copy.deepcopy(deployment)
    del port["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
    assert any(re.search("container_?[pP]ort", e) for e in validate(port))


def containers(manifest: Manifest) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("containers", "initContainers") and isinstance(value, list):
                    found.extend(value)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(manifest)
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_are_pinned_and_resources_set(overlay: str) -> None:
    for manifest in render(overlay):
        for container in containers(manifest):
            image = container["image"]
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            assert tag and tag != "latest", f"{manifest['metadata']['name']}: {image} not pinned"
            registry = chart.values(overlay)["images"]["registry"]
            # the project's images from the values' registry; Open WebUI the compose file's
            assert image.startswith(registry + "/") or image == compose_image("open-webui")
            resources = container.get("resources", {})
            assert resources.get("requests", {}).get("memory"), image
            assert resources.get("limits", {}).get("memory"), image
            for kind in ("requests", "limits"):
                for value in resources[kind].values():
                    assert QUANTITY.match(str(value)), f"{image}: bad quantity {value}"


def compose_image(service: str) -> str:
    compose = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    return str(compose["services"][service]["image"])


# --- the chat server ----------------------------------------------------------------------------
def mebibytes(quantity: str) -> float:
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)(Mi|Gi)", quantity).groups()  # type: ignore[union-attr]
    return float(number) * (1024 if unit == "Gi" else 1)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_chat_server_settings_secret_probes_and_footprint(overlay: str) -> None:
    deployment = one(overlay, "Deployment", "opsassist-chat")
    pod = deployment["spec"]["template"]["spec"]
    (chat,) = pod["containers"]
    settings = one(overlay, "ConfigMap", "opsassist-settings")
    refs = {(k, v["name"]) for ref in chat["envFrom"] for k, v in ref.items()}
    assert ("configMapRef", settings["metadata"]["name"]) in refs
    assert ("secretRef", "opsassist-secrets") in refs
    unknown = set(settings["data"]) - SETTINGS_VARS
    assert not unknown, f"not fields of opsassist.settings.Settings: {unknown}"
    secret_keys = chart.values(overlay)["secrets"]["chat"]["keys"]
    assert set(secret_keys) <= SETTINGS_VARS
    assert "OPSASSIST_API_KEYS" in secret_keys
    assert not set(secret_keys) & set(settings["data"]), "a secret in the ConfigMap"
    # measured: ~300 MiB RSS + the embedding model and torch
    resources = chat["resources"]
    assert (
        512
        <= mebibytes(resources["requests"]["memory"])
        <= mebibytes(resources["limits"]["memory"])
    )
    assert mebibytes(resources["limits"]["memory"]) >= 1024
    assert chat["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert chat["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    service = one(overlay, "Service", "opsassist-chat")
    assert (
        service["spec"]["selector"].items()
        <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    port_names = {p["name"] for p in chat["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    if chart.values(overlay)["chat"]["autoscaling"]["enabled"]:  # prod: the HPA owns replicas
        hpa = one(overlay, "HorizontalPodAutoscaler", "opsassist-chat")
        assert hpa["spec"]["scaleTargetRef"]["name"] == "opsassist-chat"
        assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        assert "replicas" not in deployment["spec"]
    else:  # dev: one replica, no HPA
        assert not by_kind(overlay, "HorizontalPodAutoscaler")
        assert deployment["spec"]["replicas"] == 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_monitors_select_the_chat_service_and_pin_job_labels(overlay: str) -> None:
    service = one(overlay, "Service", "opsassist-chat")
    monitor = one(overlay, "ServiceMonitor", "opsassist-chat")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {
        p["name"] for p in service["spec"]["ports"]
    }
    jobs = {
        r["replacement"]
        for m in (monitor, one(overlay, "PodMonitor", "opsassist-model-server"))
        for e in m["spec"].get("endpoints", []) + m["spec"].get("podMetricsEndpoints", [])
        for r in e.get("relabelings", [])
        if r.get("targetLabel") == "job"
    }
    rules = (
        ROOT / "deploy" / "observability" / "prometheus" / "rules" / "opsassist-alerts.yml"
    ).read_text()
    assert jobs == {"opsassist-chat", "opsassist-model-server"}
    for job in jobs:
        assert f'job="{job}"' in rules


# --- the model server ---------------------------------------------------------------------------
def test_prod_serves_gpt_oss_20b_on_a_gpu_through_the_openai_routes() -> None:
    isvc = one("prod", "InferenceService", "gpt-oss-20b")
    model = isvc["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "huggingface"
    assert model["storageUri"] == "hf://openai/gpt-oss-20b"
    assert model["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert model["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert "--backend=vllm" in model["args"]
    names = [a.split("=", 1)[1] for a in model["args"] if a.startswith("--model_name=")]
    env = {e["name"]: e.get("value") for e in model.get("env", [])}
    assert env.get("KSERVE_OPENAI_ROUTE_PREFIX") == "openai"  # the chat client calls /openai/v1
    settings = one("prod", "ConfigMap", "opsassist-settings")["data"]
    assert names == [settings["OPSASSIST_MODEL_NAME"]]
    assert settings["OPSASSIST_MODEL_PROTOCOL"] == "openai"
    assert settings["OPSASSIST_MODEL_SERVER_URL"] == f"http://{isvc['metadata']['name']}-predictor"
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"


def test_dev_serves_the_project_model_server_on_the_cpu() -> None:
    isvc = one("dev", "InferenceService", "opsassist-model-server")
    (container,) = isvc["spec"]["predictor"]["containers"]
    assert "/model-server:" in container["image"]
    assert not any("gpu" in key for key in container["resources"]["limits"])
    # measured: SmolLM2-135M ~1.15 GB RSS, 1.36 GB peak
    assert mebibytes(container["resources"]["requests"]["memory"]) >= 1400
    assert mebibytes(container["resources"]["limits"]["memory"]) >= 1400
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert {p["containerPort"] for p in container["ports"]} == {8080}
    env = {e["name"]: e["value"] for e in container["env"]}
    settings = one("dev", "ConfigMap", "opsassist-settings")["data"]
    assert env["OPSASSIST_MODEL_NAME"] == settings["OPSASSIST_MODEL_NAME"]
    assert settings["OPSASSIST_MODEL_SERVER_URL"] == f"http://{isvc['metadata']['name']}-predictor"


# --- RBAC ---------------------------------------------------------------------------------------
def grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rbac_read_only_and_write_service_accounts(overlay: str) -> None:
    namespace = ENVIRONMENTS[overlay]
    accounts = set(by_kind(overlay, "ServiceAccount"))
    assert {"opsassist-reader", "opsassist-operator", "opsassist-chat"} <= accounts
    roles = {**by_kind(overlay, "ClusterRole"), **by_kind(overlay, "Role")}
    for role in roles.values():
        for group, resource, verb in grants(role["rules"]):
            assert "*" not in (group, resource, verb), f"{role['metadata']['name']}: wildcard"

    read = grants(one(overlay, "ClusterRole", "opsassist-read")["rules"])
    assert {verb for _, _, verb in read} == {"get", "list", "watch"}
    for group, resource in [
        ("", "pods"),
        ("", "pods/log"),
        ("", "events"),
        ("", "nodes"),
        ("apps", "deployments"),
        ("apps", "replicasets"),
        ("apps", "statefulsets"),
        ("apps", "daemonsets"),
    ]:
        assert {(group, resource, v) for v in ("get", "list", "watch")} <= read, resource
    assert not {r for _, r, _ in read} & {"secrets", "configmaps", "pods/exec"}

    write = grants(one(overlay, "Role", "opsassist-ops-write")["rules"])
    assert ("apps", "deployments", "patch") in write  # rollout restart
    assert ("apps", "deployments/scale", "patch") in write
    assert ("", "pods", "delete") in write
    assert {v for _, _, v in write} <= {"get", "patch", "update", "delete"}
    nodes = grants(one(overlay, "ClusterRole", "opsassist-ops-nodes")["rules"])
    assert nodes == {("", "nodes", "get"), ("", "nodes", "patch")}  # cordon

    bindings = {**by_kind(overlay, "ClusterRoleBinding"), **by_kind(overlay, "RoleBinding")}
    bound: dict[str, set[str]] = {}
    for binding in bindings.values():
        assert binding["roleRef"]["name"] in roles
        for subject in binding["subjects"]:
            assert subject["kind"] == "ServiceAccount" and subject["name"] in accounts
            assert subject["namespace"] == namespace, "subjects follow the overlay's namespace"
            bound.setdefault(subject["name"], set()).add(binding["roleRef"]["name"])
    assert bound["opsassist-reader"] == {"opsassist-read"}
    assert bound["opsassist-operator"] == {"opsassist-ops-write", "opsassist-ops-nodes"}
    assert "opsassist-chat" not in bound
    assert one(overlay, "RoleBinding", "opsassist-ops-write")["roleRef"]["kind"] == "Role"


# --- Airflow Helm values ------------------------------------------------------------------------
def test_airflow_values_fit_the_manifests() -> None:
    values = yaml.safe_load(AIRFLOW_VALUES.read_text())
    assert values["airflowVersion"] == "3.3.2"
    assert values["executor"] == "KubernetesExecutor"
    tag = values["images"]["airflow"]["tag"]
    assert tag == values["defaultAirflowTag"] and tag != "latest" and tag.endswith("airflow3.3.2")
    assert values["postgresql"]["enabled"] is False
    for key in ("fernetKeySecretName", "apiSecretKeySecretName", "jwtSecretName"):
        assert values[key], key
    assert values["data"]["metadataSecretName"]
    prod = {m["kind"] + "/" + m["metadata"]["name"] for m in render("prod")}
    assert f"ServiceAccount/{values['workers']['serviceAccount']['name']}" in prod
    assert values["workers"]["serviceAccount"]["name"] == "opsassist-reader"
    env_from = yaml.safe_load(values["extraEnvFrom"])
    assert {"name": "opsassist-airflow-settings"} in [e.get("configMapRef") for e in env_from]
    assert {"name": "opsassist-secrets"} in [e.get("secretRef") for e in env_from]
    assert "ConfigMap/opsassist-airflow-settings" in prod  # fixed name: no hash suffix
    airflow_settings = one("prod", "ConfigMap", "opsassist-airflow-settings")["data"]
    assert set(airflow_settings) <= SETTINGS_VARS
    claims = {v["persistentVolumeClaim"]["claimName"] for v in values["workers"]["extraVolumes"]}
    assert {f"PersistentVolumeClaim/{c}" for c in claims} <= prod
    pvc = one("prod", "PersistentVolumeClaim", "opsassist-data")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]  # tasks are separate pods
    (mount,) = values["workers"]["extraVolumeMounts"]
    assert mount["mountPath"] == airflow_settings["OPSASSIST_DATA_DIR"]
    mapping = yaml.safe_load(STATSD_MAPPING.read_text())["mappings"]
    assert values["statsd"]["overrideMappings"] == mapping

"""Kubernetes manifests (deploy/k8s): rendered with kustomize, validated against a schema.

Rendering: `kubectl kustomize` when kubectl is installed, else a small Python renderer of the
kustomize features the overlays use (a test checks both give the same objects).
Validation, without a cluster:
- built-in kinds: every field is checked against the `kubernetes` Python client's models
  (`openapi_types` / `attribute_map`, i.e. the API's OpenAPI schema: unknown fields and wrong
  types fail) and the object is deserialized into its model class (required fields fail);
- custom resources (InferenceService, ServiceMonitor, PodMonitor): hand-rolled checks of
  apiVersion/kind and the spec fields KServe and the Prometheus Operator require, with the
  embedded Kubernetes types (containers, pod spec fields, label selectors) checked as above.
Every overlay is also sent to a real API server for a server-side dry run: the project's own
kube-apiserver (scripts/services), or the one OPSASSIST_KUBE_APISERVER names.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes.client as k8s
import pytest
import yaml
from kubernetes.client import ApiClient

from opsassist.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = {"dev": K8S / "overlays" / "dev", "prod": K8S / "overlays" / "prod"}
NAMESPACES = {"dev": "opsassist-dev", "prod": "opsassist"}
AIRFLOW_VALUES = K8S / "airflow" / "values.yaml"
STATSD_MAPPING = ROOT / "deploy" / "observability" / "statsd" / "mapping.yml"
SETTINGS_VARS = frozenset(f"OPSASSIST_{name.upper()}" for name in Settings.model_fields)
CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "Namespace", "PersistentVolume"}
HASH_SUFFIX = re.compile(r"\b(opsassist-settings)-[a-z0-9]{10}\b")
DURATION = re.compile(r"^(\d+(ms|s|m|h))+$")
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
QUANTITY = re.compile(r"^\d+(\.\d+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?$")

Manifest = dict[str, Any]


# --- rendering ----------------------------------------------------------------------------------
def env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def _find(resources: list[Manifest], kind: str, name: str) -> Manifest:
    for resource in resources:
        if resource["kind"] == kind and resource["metadata"]["name"] == name:
            return resource
    raise KeyError(f"{kind}/{name} not found for a merge or patch")


def _json_patch(document: Manifest, operations: list[dict[str, Any]]) -> None:
    for op in operations:
        *parents, last = [part for part in op["path"].split("/") if part]
        node: Any = document
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if op["op"] in ("replace", "add"):
            if isinstance(node, list):
                node.insert(len(node) if last == "-" else int(last), op["value"])
            else:
                node[last] = op["value"]
        elif op["op"] == "remove":
            del node[int(last) if isinstance(node, list) else last]
        else:
            raise NotImplementedError(f"JSON patch op {op['op']}")


def _set_images(node: Any, images: list[dict[str, str]]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                for container in value:
                    name = container.get("image", "").rsplit(":", 1)[0]
                    for image in images:
                        if image["name"] == name:
                            tag = image.get("newTag", container["image"].rsplit(":", 1)[-1])
                            container["image"] = f"{image.get('newName', name)}:{tag}"
            _set_images(value, images)
    elif isinstance(node, list):
        for item in node:
            _set_images(item, images)


def render_python(directory: Path) -> list[Manifest]:
    """The kustomize features the overlays use: resources (files and folders), ConfigMap
    generators (envs, literals, merge; no name hash), JSON 6902 patches, labels, images and the
    namespace (including RoleBinding subjects in namespace "default")."""
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    resources: list[Manifest] = []
    for entry in spec.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            resources.extend(render_python(path))
        else:
            resources.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    for generator in spec.get("configMapGenerator", []):
        data: dict[str, str] = {}
        for env in generator.get("envs", []):
            data.update(env_file(directory / env))
        for literal in generator.get("literals", []):
            key, _, value = literal.partition("=")
            data[key] = value
        if generator.get("behavior", "create") == "merge":
            _find(resources, "ConfigMap", generator["name"])["data"].update(data)
        else:
            meta = {"name": generator["name"]}
            resources.append(
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}
            )
    for patch in spec.get("patches", []):
        target = _find(resources, patch["target"]["kind"], patch["target"]["name"])
        _json_patch(target, yaml.safe_load(patch["patch"]))
    for labels in spec.get("labels", []):
        for resource in resources:
            resource["metadata"].setdefault("labels", {}).update(labels["pairs"])
    _set_images(resources, spec.get("images", []))
    namespace = spec.get("namespace")
    if namespace:
        for resource in resources:
            if resource["kind"] not in CLUSTER_SCOPED:
                resource["metadata"]["namespace"] = namespace
            for subject in resource.get("subjects", []):
                if subject.get("namespace") == "default":
                    subject["namespace"] = namespace
    return resources


def kubectl() -> str | None:
    return shutil.which("kubectl")


@cache
def render(overlay: str) -> tuple[Manifest, ...]:
    directory = OVERLAYS[overlay]
    binary = kubectl()
    if binary is None:
        return tuple(render_python(directory))
    result = subprocess.run(
        [binary, "kustomize", str(directory)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return tuple(d for d in yaml.safe_load_all(result.stdout) if d)


def by_kind(overlay: str, kind: str) -> dict[str, Manifest]:
    return {m["metadata"]["name"]: m for m in render(overlay) if m["kind"] == kind}


def one(overlay: str, kind: str, name: str) -> Manifest:
    return by_kind(overlay, kind)[name]


def configmap(overlay: str, prefix: str) -> Manifest:
    """A generated ConfigMap by its generator name (kustomize adds a content hash)."""
    found = [
        m
        for name, m in by_kind(overlay, "ConfigMap").items()
        if name == prefix or re.fullmatch(rf"{prefix}-[a-z0-9]{{10}}", name)
    ]
    assert len(found) == 1, f"{prefix}: {len(found)} ConfigMaps"
    return found[0]


def normalized(resources: tuple[Manifest, ...] | list[Manifest]) -> dict[str, Any]:
    text = HASH_SUFFIX.sub(r"\1", json.dumps(list(resources), sort_keys=True))
    objects = json.loads(text)
    return {
        f"{o['kind']}/{o['metadata'].get('namespace', '')}/{o['metadata']['name']}": o
        for o in objects
    }


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


KSERVE_COMPONENT_FIELDS = {
    "minReplicas",
    "maxReplicas",
    "scaleTarget",
    "scaleMetric",
    "scaleMetricType",
    "containerConcurrency",
    "timeout",
    "canaryTrafficPercent",
    "logger",
    "batcher",
    "labels",
    "annotations",
    "deploymentStrategy",
    "autoScaling",
    "workerSpec",
}
KSERVE_MODEL_FIELDS = {"modelFormat", "storageUri", "runtime", "protocolVersion", "runtimeVersion"}
MONITOR_ENDPOINT_FIELDS = {
    "port",
    "portNumber",
    "targetPort",
    "path",
    "scheme",
    "params",
    "interval",
    "scrapeTimeout",
    "tlsConfig",
    "bearerTokenSecret",
    "authorization",
    "honorLabels",
    "honorTimestamps",
    "basicAuth",
    "oauth2",
    "metricRelabelings",
    "relabelings",
    "proxyUrl",
    "followRedirects",
    "enableHttp2",
    "filterRunning",
    "trackTimestampsStaleness",
}
RELABEL_FIELDS = {
    "sourceLabels",
    "separator",
    "targetLabel",
    "regex",
    "modulus",
    "replacement",
    "action",
}
RELABEL_ACTIONS = {"replace", "keep", "drop", "hashmod", "labelmap", "labeldrop", "labelkeep"}
RELABEL_ACTIONS |= {"lowercase", "uppercase", "keepequal", "dropequal"}


def validate_inference_service(manifest: Manifest) -> list[str]:
    errors: list[str] = []
    if manifest["apiVersion"] != "serving.kserve.io/v1beta1":
        errors.append(f"InferenceService apiVersion {manifest['apiVersion']}")
    if not DNS_1035.match(manifest["metadata"]["name"]):
        errors.append("InferenceService name must be a DNS-1035 label")
    predictor = manifest.get("spec", {}).get("predictor")
    if not isinstance(predictor, dict):
        return [*errors, "spec.predictor is required"]
    pod_fields = {json_name: attr for attr, json_name in k8s.V1PodSpec.attribute_map.items()}
    implementations = [key for key in ("model", "containers") if key in predictor]
    if len(implementations) != 1:
        errors.append(f"predictor needs exactly one of model / containers, has {implementations}")
    for key, value in predictor.items():
        if key in KSERVE_COMPONENT_FIELDS or key == "model":
            continue
        if key not in pod_fields:
            errors.append(f"predictor.{key}: unknown field")
            continue
        check_fields(
            value, k8s.V1PodSpec.openapi_types[pod_fields[key]], f"predictor.{key}", errors
        )
    for key in ("minReplicas", "maxReplicas"):
        if key in predictor and not isinstance(predictor[key], int):
            errors.append(f"predictor.{key} must be an integer")
    if "containers" in predictor:
        for index, container in enumerate(predictor["containers"]):
            errors.extend(
                validate_model(container, "V1Container", f"predictor.containers[{index}]")
            )
            if index == 0 and container.get("name") != "kserve-container":
                errors.append("the first custom predictor container must be kserve-container")
    model = predictor.get("model")
    if model is not None:
        name = (model.get("modelFormat") or {}).get("name")
        if not isinstance(name, str) or not name:
            errors.append("predictor.model.modelFormat.name is required")
        uri = model.get("storageUri")
        if not isinstance(uri, str) or not re.match(r"^(hf|s3|gs|pvc|https?|oci)://", uri):
            errors.append(f"predictor.model.storageUri {uri!r} has no supported scheme")
        container = {k: v for k, v in model.items() if k not in KSERVE_MODEL_FIELDS}
        check_fields(container, "V1Container", "predictor.model", errors)
    return errors


def validate_monitor(manifest: Manifest) -> list[str]:
    errors: list[str] = []
    if manifest["apiVersion"] != "monitoring.coreos.com/v1":
        errors.append(f"{manifest['kind']} apiVersion {manifest['apiVersion']}")
    spec = manifest.get("spec", {})
    check_fields(spec.get("selector"), "V1LabelSelector", "spec.selector", errors)
    if not spec.get("selector"):
        errors.append("spec.selector is required")
    key = "endpoints" if manifest["kind"] == "ServiceMonitor" else "podMetricsEndpoints"
    endpoints = spec.get(key)
    if not endpoints:
        errors.append(f"spec.{key} must list at least one endpoint")
    for endpoint in endpoints or []:
        unknown = set(endpoint) - MONITOR_ENDPOINT_FIELDS
        if unknown:
            errors.append(f"spec.{key}: unknown fields {unknown}")
        if not {"port", "portNumber", "targetPort"} & set(endpoint):
            errors.append(f"spec.{key}: an endpoint needs a port")
        for field in ("interval", "scrapeTimeout"):
            if field in endpoint and not DURATION.match(endpoint[field]):
                errors.append(f"spec.{key}.{field}: {endpoint[field]!r} is not a duration")
        for relabel in endpoint.get("relabelings", []) + endpoint.get("metricRelabelings", []):
            if set(relabel) - RELABEL_FIELDS:
                errors.append(f"relabeling: unknown fields {set(relabel) - RELABEL_FIELDS}")
            if relabel.get("action", "replace") not in RELABEL_ACTIONS:
                errors.append(f"relabeling: unknown action {relabel.get('action')}")
    return errors


CUSTOM = {
    "InferenceService": validate_inference_service,
    "ServiceMonitor": validate_monitor,
    "PodMonitor": validate_monitor,
}


def validate(manifest: Manifest) -> list[str]:
    validator = CUSTOM.get(manifest["kind"])
    return validator(manifest) if validator else validate_builtin(manifest)


# --- rendering and schema tests -----------------------------------------------------------------
@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_overlay_renders_valid_manifests(overlay: str) -> None:
    manifests = render(overlay)
    kinds = {m["kind"] for m in manifests}
    assert {
        "Deployment",
        "Service",
        "ConfigMap",
        "HorizontalPodAutoscaler",
        "ServiceMonitor",
    } <= kinds
    assert {"InferenceService", "ClusterRole", "Role", "ServiceAccount"} <= kinds
    problems = {f"{m['kind']}/{m['metadata']['name']}": validate(m) for m in manifests}
    assert not {k: v for k, v in problems.items() if v}, problems
    for manifest in manifests:
        namespace = manifest["metadata"].get("namespace")
        if manifest["kind"] in CLUSTER_SCOPED:
            assert namespace is None, manifest["metadata"]
        else:
            assert namespace == NAMESPACES[overlay], manifest["metadata"]


def test_schema_check_rejects_typos_wrong_types_and_missing_fields() -> None:
    deployment = copy.deepcopy(one("prod", "Deployment", "opsassist-chat"))
    assert validate(deployment) == []
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["contianers"] = typo["spec"]["template"]["spec"].pop(
        "containers"
    )
    assert any("contianers: unknown field" in e for e in validate(typo))
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "two"
    assert any("spec.replicas: expected int" in e for e in validate(wrong_type))
    port = copy.deepcopy(deployment)
    del port["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
    assert any(re.search("container_?[pP]ort", e) for e in validate(port))
    isvc = copy.deepcopy(one("prod", "InferenceService", "gpt-oss-20b"))
    assert validate(isvc) == []
    isvc["spec"]["predictor"]["model"]["resourses"] = {}
    del isvc["spec"]["predictor"]["model"]["storageUri"]
    errors = validate(isvc)
    assert any("resourses: unknown field" in e for e in errors)
    assert any("storageUri" in e for e in errors)
    monitor = copy.deepcopy(one("prod", "ServiceMonitor", "opsassist-chat"))
    monitor["spec"]["endpoints"][0]["interval"] = "fifteen"
    assert any("not a duration" in e for e in validate(monitor))


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_python_renderer_matches_kubectl_kustomize(overlay: str) -> None:
    if kubectl() is None:
        pytest.skip("kubectl is not installed: the Python renderer is the one in use")
    assert normalized(render_python(OVERLAYS[overlay])) == normalized(render(overlay))


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


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_images_are_pinned_and_resources_set(overlay: str) -> None:
    for manifest in render(overlay):
        for container in containers(manifest):
            image = container["image"]
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            assert tag and tag != "latest", f"{manifest['metadata']['name']}: {image} not pinned"
            assert image.startswith("registry.example.com/"), "overlays set the registry"
            resources = container.get("resources", {})
            assert resources.get("requests", {}).get("memory"), image
            assert resources.get("limits", {}).get("memory"), image
            for kind in ("requests", "limits"):
                for value in resources[kind].values():
                    assert QUANTITY.match(str(value)), f"{image}: bad quantity {value}"


# --- the chat server ----------------------------------------------------------------------------
def mebibytes(quantity: str) -> float:
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)(Mi|Gi)", quantity).groups()  # type: ignore[union-attr]
    return float(number) * (1024 if unit == "Gi" else 1)


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_chat_server_settings_secret_probes_and_footprint(overlay: str) -> None:
    deployment = one(overlay, "Deployment", "opsassist-chat")
    pod = deployment["spec"]["template"]["spec"]
    (chat,) = pod["containers"]
    settings = configmap(overlay, "opsassist-settings")
    refs = {(k, v["name"]) for ref in chat["envFrom"] for k, v in ref.items()}
    assert ("configMapRef", settings["metadata"]["name"]) in refs
    assert ("secretRef", "opsassist-secrets") in refs
    unknown = set(settings["data"]) - SETTINGS_VARS
    assert not unknown, f"not fields of opsassist.settings.Settings: {unknown}"
    secret_keys = env_file(K8S / "base" / "chat" / "secrets.env.example")
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
    hpa = one(overlay, "HorizontalPodAutoscaler", "opsassist-chat")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "opsassist-chat"
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
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
    settings = configmap("prod", "opsassist-settings")["data"]
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
    settings = configmap("dev", "opsassist-settings")["data"]
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


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_rbac_read_only_and_write_service_accounts(overlay: str) -> None:
    namespace = NAMESPACES[overlay]
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


# --- server-side dry run on a real API server ---------------------------------------------------
def api_server() -> Any:
    """A dynamic client for the API server OPSASSIST_KUBE_APISERVER names (token in
    OPSASSIST_KUBE_TOKEN, CA in OPSASSIST_KUBE_CA_FILE or OPSASSIST_KUBE_INSECURE=1), else for the
    project's own kube-apiserver (scripts/services up kube-apiserver), as its admin."""
    from kubernetes import client, dynamic

    from tests.conftest import require_service, service_port

    configuration = client.Configuration()
    external = os.environ.get("OPSASSIST_KUBE_APISERVER")
    if external:
        configuration.host = external
        token = os.environ.get("OPSASSIST_KUBE_TOKEN", "")
        configuration.ssl_ca_cert = os.environ.get("OPSASSIST_KUBE_CA_FILE") or None
        configuration.verify_ssl = os.environ.get("OPSASSIST_KUBE_INSECURE") != "1"
    else:
        port = service_port("kube_apiserver", 16443)
        require_service("kube-apiserver", port)
        kube = ROOT / "var" / "services" / "kube-apiserver"
        configuration.host = f"https://127.0.0.1:{port}"
        configuration.ssl_ca_cert = str(kube / "pki" / "ca.crt")
        token = (kube / "tokens" / "admin.token").read_text().strip()
    if token:
        configuration.api_key = {"authorization": token}
        configuration.api_key_prefix = {"authorization": "Bearer"}
    return dynamic.DynamicClient(client.ApiClient(configuration))


@pytest.mark.services
@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_server_side_dry_run(overlay: str) -> None:
    """Every object of the overlay passes a real kube-apiserver's server-side dry run (admission,
    defaulting, schema). Custom resources (KServe InferenceService, Prometheus Operator
    ServiceMonitor) are sent too when the server has their CRD; the project's bare API server
    has none, so there they are left to the schema checks above. The overlay's namespace is
    created for real, since a dry run cannot create the namespace its objects go into."""
    from kubernetes.client import CoreV1Api
    from kubernetes.client.rest import ApiException
    from kubernetes.dynamic.exceptions import ResourceNotFoundError

    api = api_server()
    namespace = NAMESPACES[overlay]
    try:
        CoreV1Api(api.client).create_namespace({"metadata": {"name": namespace}})
    except ApiException as exc:
        assert exc.status == 409, exc.body
    checked, without_crd = [], []
    for manifest in render(overlay):
        if manifest["kind"] == "Namespace":
            continue
        try:
            resource = api.resources.get(api_version=manifest["apiVersion"], kind=manifest["kind"])
        except ResourceNotFoundError:
            group = manifest["apiVersion"].split("/")[0]
            assert group.endswith("kserve.io") or group == "monitoring.coreos.com", manifest
            without_crd.append(manifest["kind"])
            continue
        kwargs: dict[str, Any] = {"body": manifest, "dry_run": "All"}
        if resource.namespaced:
            kwargs["namespace"] = manifest["metadata"].get("namespace", namespace)
        try:
            resource.create(**kwargs)
        except ApiException as exc:
            if exc.status != 409:  # already exists from an earlier run: a create conflict only
                raise AssertionError(
                    f"{manifest['kind']}/{manifest['metadata']['name']}: {exc.body}"
                ) from exc
        checked.append(manifest["kind"])
    assert {"Deployment", "Service", "ServiceAccount", "Role"} <= set(checked), checked
    if not os.environ.get("OPSASSIST_KUBE_APISERVER"):
        assert "InferenceService" in without_crd

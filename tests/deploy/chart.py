"""Shared helpers of the deploy tests: the real tools the test command builds from the Go module
proxy (scripts/tools.sh: helm, sops, age), the chart rendered with `helm template`, the
published CRDs, and a client of the project's real kube-apiserver."""

from __future__ import annotations

import os
import subprocess
import time
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT

CHART = ROOT / "deploy" / "helm" / "opsassist"
AIRFLOW_VALUES = ROOT / "deploy" / "helm" / "airflow" / "values.yaml"
ARGOCD = ROOT / "deploy" / "argocd"
SECRETS = ROOT / "deploy" / "secrets"
AGE_TEST_KEY = ROOT / "tests" / "deploy" / "fixtures" / "age-test-key.txt"
ENVIRONMENTS = {"dev": "opsassist-dev", "prod": "opsassist"}
CLUSTER_SCOPED = {
    "ClusterRole",
    "ClusterRoleBinding",
    "Namespace",
    "PersistentVolume",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "CustomResourceDefinition",
}

Manifest = dict[str, Any]


def tool(name: str) -> str:
    """A binary scripts/tools.sh builds: OPSASSIST_<NAME> (the test command exports none of
    these; a developer may point at another build), else var/tools/bin/<name>. Missing is a
    failure, not a skip: CI builds it (scripts/test.sh build_tools)."""
    override = os.environ.get("OPSASSIST_" + name.upper().replace("-", "_"), "")
    path = Path(override) if override else ROOT / "var" / "tools" / "bin" / name
    assert path.is_file() and os.access(path, os.X_OK), (
        f"{name} not found at {path}: build it with scripts/tools.sh {name}"
    )
    return str(path)


def crds_dir() -> Path:
    """The published CRDs (KServe, Prometheus Operator, External Secrets, Argo CD) that
    scripts/tools.sh crds copies out of the projects' Go module zips."""
    path = Path(os.environ.get("OPSASSIST_CRDS", "") or ROOT / "var" / "tools" / "crds")
    assert list(path.glob("*.yaml")), f"no CRDs in {path}: run scripts/tools.sh crds"
    return path


def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        list(args),
        capture_output=True,
        text=True,
        timeout=180,
        input=input,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, f"{' '.join(args)}: {result.stderr}{result.stdout}"
    return result.stdout


def values_file(environment: str) -> Path:
    return CHART / f"values-{environment}.yaml"


@cache
def helm_template(
    environment: str, namespace: str | None = None, sets: tuple[str, ...] = ()
) -> str:
    args = ["--set", ",".join(sets)] if sets else []
    return run(
        tool("helm"),
        "template",
        "opsassist",
        str(CHART),
        "--namespace",
        namespace or ENVIRONMENTS[environment],
        "-f",
        str(values_file(environment)),
        *args,
    )


def render(environment: str, *sets: str) -> tuple[Manifest, ...]:
    """The chart's objects for one environment's values (plus --set overrides). helm template
    leaves metadata.namespace out of most objects: the namespace is the release's."""
    docs = [d for d in yaml.safe_load_all(helm_template(environment, None, sets)) if d]
    for doc in docs:
        if doc["kind"] not in CLUSTER_SCOPED:
            doc["metadata"].setdefault("namespace", ENVIRONMENTS[environment])
    return tuple(docs)


def by_kind(objects: tuple[Manifest, ...], kind: str) -> dict[str, Manifest]:
    return {m["metadata"]["name"]: m for m in objects if m["kind"] == kind}


def one(objects: tuple[Manifest, ...], kind: str, name: str) -> Manifest:
    found = by_kind(objects, kind)
    assert name in found, f"{kind}/{name} not rendered; have {sorted(found)}"
    return found[name]


def load_yaml_files(folder: Path) -> list[Manifest]:
    return [
        doc
        for path in sorted(folder.rglob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


# --- the real kube-apiserver ---------------------------------------------------------------------
class KubeError(Exception):
    """A refused request: its HTTP status and the API server's Status body."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body


class Kube:
    """A small client of the API server over the kubernetes package's transport: raw requests,
    and a discovery of only the group versions it is asked about (the dynamic client discovers
    every group up front, which takes many seconds on a loaded machine)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._resources: dict[str, list[dict[str, Any]]] = {}

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        import json

        request = self.client.param_serialize(
            method,
            path,
            query_params=query or [],
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.client.call_api(*request, _request_timeout=60)
        response.read()
        text = (response.data or b"").decode()
        if not 200 <= response.status <= 299:
            raise KubeError(response.status, text)
        return json.loads(text or "{}")  # type: ignore[no-any-return]

    def resource(self, api_version: str, kind: str) -> tuple[str, bool]:
        """(collection path prefix, namespaced) of a kind; waits briefly for a new CRD's group."""
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        deadline = time.monotonic() + 90  # a new CRD's group may take a while to be served
        while base not in self._resources:
            try:
                self._resources[base] = self.request("GET", base)["resources"]
            except KubeError as exc:
                if exc.status != 404 or time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        for entry in self._resources[base]:
            if entry["kind"] == kind and "/" not in entry["name"]:
                return f"{base}/{{namespace}}{entry['name']}", bool(entry["namespaced"])
        raise KubeError(404, f"no kind {kind} in {api_version}")

    def path(self, manifest: Manifest) -> str:
        template, namespaced = self.resource(manifest["apiVersion"], manifest["kind"])
        namespace = manifest["metadata"].get("namespace") if namespaced else None
        assert namespace or not namespaced, f"{manifest['kind']} needs a namespace"
        prefix = f"namespaces/{namespace}/" if namespace else ""
        return template.format(namespace=prefix) + "/" + manifest["metadata"]["name"]

    def apply(self, manifest: Manifest, dry_run: bool) -> dict[str, Any]:
        """Server-side apply, fieldValidation=Strict (unknown or duplicate fields are errors)."""
        query = [("fieldManager", "opsassist-tests"), ("force", "true")]
        query.append(("fieldValidation", "Strict"))
        if dry_run:
            query.append(("dryRun", "All"))
        return self.request(
            "PATCH",
            self.path(manifest),
            body=manifest,
            query=query,
            content_type="application/apply-patch+yaml",
        )


def api_server() -> Kube:
    """A client of the API server OPSASSIST_KUBE_APISERVER names (token in OPSASSIST_KUBE_TOKEN,
    CA in OPSASSIST_KUBE_CA_FILE or OPSASSIST_KUBE_INSECURE=1), else of the project's own
    kube-apiserver (scripts/services up kube-apiserver), as its admin."""
    from kubernetes import client

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
        configuration.api_key = {"BearerToken": token}
        configuration.api_key_prefix = {"BearerToken": "Bearer"}
    return Kube(client.ApiClient(configuration))


def ensure_namespace(api: Kube, name: str) -> None:
    """A real namespace: a dry run cannot create the namespace its objects go into."""
    try:
        api.request("POST", "/api/v1/namespaces", body={"metadata": {"name": name}})
    except KubeError as exc:
        assert exc.status == 409, exc.body


CRDS_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def established(crd: dict[str, Any]) -> bool:
    conditions = crd.get("status", {}).get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


def put_crd(api: Kube, crd: dict[str, Any]) -> bool:
    """Creates the CRD, or updates it where it differs; True when it changed. Safe against a
    concurrent run doing the same (a conflict is retried on the fresh object)."""
    name = crd["metadata"]["name"]
    wanted = api.client.sanitize_for_serialization(
        {"conversion": {"strategy": "None"}, **crd["spec"]}  # with the server's default
    )
    for _ in range(10):
        try:  # a plain create (a server-side apply of a 1 MB schema is much slower)
            api.request("POST", CRDS_PATH, body=crd)
            return True
        except KubeError as exc:
            assert exc.status == 409, exc.body
        existing = api.request("GET", f"{CRDS_PATH}/{name}")
        if existing["spec"] == wanted:
            return not established(existing)
        version = {"resourceVersion": existing["metadata"]["resourceVersion"]}
        body = {**crd, "metadata": {**crd["metadata"], **version}}
        try:
            api.request("PUT", f"{CRDS_PATH}/{name}", body=body)
            return True
        except KubeError as exc:
            assert exc.status in (404, 409), exc.body  # deleted or changed meanwhile: again
    raise AssertionError(f"CRD {name}: could not be created or updated")


def install_crds(api: Kube) -> set[str]:
    """Every published CRD of crds_dir() created (or updated when it differs) in the API server
    for real, and waited for until Established; returns their kinds."""
    kinds = set()
    pending = []
    for path in sorted(crds_dir().glob("*.yaml")):
        for crd in yaml.load_all(path.read_text(), Loader=yaml.CSafeLoader):  # 1 MB schemas
            if not crd:
                continue
            crd["metadata"].pop("creationTimestamp", None)
            crd.pop("status", None)
            kinds.add(crd["spec"]["names"]["kind"])
            name = crd["metadata"]["name"]
            if put_crd(api, crd):
                pending.append(name)
    deadline = time.monotonic() + 120
    for name in pending:
        while not established(api.request("GET", f"{CRDS_PATH}/{name}")):
            assert time.monotonic() < deadline, f"CRD {name} not Established"
            time.sleep(0.2)
    return kinds


def dry_run(api: Kube, manifest: Manifest) -> None:
    """A server-side apply of the object with dryRun=All and fieldValidation=Strict: admission,
    defaulting and the schema (built-in OpenAPI, or the CRD's openAPIV3Schema) all run, unknown
    or duplicate fields are errors, and nothing is stored."""
    api.apply(manifest, dry_run=True)


def _merge(base: Any, override: Any) -> Any:
    """Helm's values merge: maps merge key by key, anything else is replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        return {k: _merge(base.get(k), v) if k in base else v for k, v in override.items()} | {
            k: v for k, v in base.items() if k not in override
        }
    return override


def values(environment: str) -> dict[str, Any]:
    """values.yaml merged with values-<environment>.yaml, as helm merges them."""
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    return _merge(defaults, yaml.safe_load(values_file(environment).read_text()))


def secret_specs(environment: str) -> list[dict[str, Any]]:
    """The Secrets the chart's pods and Airflow read: name, keys, Vault path (never values)."""
    secrets = values(environment)["secrets"]
    return [secrets["chat"], secrets["openWebui"], *secrets["airflow"]]

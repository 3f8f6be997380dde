"""The Argo CD install (deploy/argocd): an app of apps per environment whose children point at
what exists in this repository (the chart with its values files, the KSOPS folder, the Airflow
values), sync in waves (CRDs, then secrets, then the chart, then Airflow), and are allowed by
the project. Every Application and the AppProject pass a server-side dry run against Argo CD's
published CRDs installed into the project's real kube-apiserver.
"""

from __future__ import annotations

import pytest
import yaml

from tests.conftest import ROOT
from tests.deploy import chart
from tests.deploy.chart import ARGOCD, CHART, CLUSTER_SCOPED, ENVIRONMENTS, Manifest

REPOSITORY = "https://git.example.com/platform/opsassist.git"


def documents(path_glob: str) -> list[Manifest]:
    return [
        doc
        for path in sorted(ARGOCD.glob(path_glob))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def children(environment: str) -> dict[str, Manifest]:
    return {d["metadata"]["name"]: d for d in documents(f"{environment}/apps/*.yaml")}


def sources(application: Manifest) -> list[Manifest]:
    spec = application["spec"]
    return list(spec.get("sources") or [spec["source"]])


def wave(application: Manifest) -> int:
    return int(application["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"])


@pytest.mark.parametrize("environment", sorted(ENVIRONMENTS))
def test_the_root_application_points_at_its_children(environment: str) -> None:
    (root,) = documents(f"{environment}/root.yaml")
    assert root["kind"] == "Application" and root["metadata"]["namespace"] == "argocd"
    (source,) = sources(root)
    assert source["repoURL"] == REPOSITORY
    assert (ROOT / source["path"]) == ARGOCD / environment / "apps"
    assert children(environment), "no child Application"


@pytest.mark.parametrize("environment", sorted(ENVIRONMENTS))
def test_the_chart_application_uses_the_chart_and_its_values_files(environment: str) -> None:
    apps = children(environment)
    app = apps[f"opsassist-{environment}-app"]
    (source,) = sources(app)
    assert ROOT / source["path"] == CHART
    assert source["helm"]["valueFiles"] == ["values.yaml", f"values-{environment}.yaml"]
    for name in source["helm"]["valueFiles"]:
        assert (CHART / name).is_file()
    assert source["helm"]["releaseName"] == "opsassist"
    assert app["spec"]["destination"]["namespace"] == ENVIRONMENTS[environment]
    assert "CreateNamespace=true" in app["spec"]["syncPolicy"]["syncOptions"]
    airflow = apps[f"opsassist-{environment}-airflow"]
    chart_source, values_source = sources(airflow)
    assert chart_source["chart"] == "airflow" and values_source["ref"] == "values"
    (values_file,) = chart_source["helm"]["valueFiles"]
    assert values_file.startswith("$values/")
    assert ROOT / values_file.removeprefix("$values/") == chart.AIRFLOW_VALUES
    assert values_source["repoURL"] == REPOSITORY
    assert airflow["spec"]["destination"]["namespace"] == ENVIRONMENTS[environment]


@pytest.mark.parametrize("environment", sorted(ENVIRONMENTS))
def test_sync_waves_order_crds_secrets_chart_airflow(environment: str) -> None:
    apps = children(environment)
    waves = {name.removeprefix(f"opsassist-{environment}-"): wave(a) for name, a in apps.items()}
    assert waves["kserve-crds"] == waves["prometheus-operator-crds"] < waves["app"]
    assert waves["app"] < waves["airflow"]
    secret_source = chart.values(environment)["secrets"]["provider"]
    if secret_source == "existing":  # the Secrets come from KSOPS, before the chart
        assert waves["kserve-crds"] < waves["secrets"] < waves["app"]
        (source,) = sources(apps[f"opsassist-{environment}-secrets"])
        assert (ROOT / source["path"] / "kustomization.yaml").is_file()
    else:  # from Vault through the chart's own SecretStore and ExternalSecrets (waves inside)
        assert "secrets" not in waves
        assert secret_source == "externalSecrets"


@pytest.mark.parametrize("environment", sorted(ENVIRONMENTS))
def test_the_project_allows_every_source_destination_and_cluster_kind(environment: str) -> None:
    (project,) = documents("project.yaml")
    spec = project["spec"]
    apps = [*documents(f"{environment}/root.yaml"), *children(environment).values()]
    for app in apps:
        assert app["spec"]["project"] == project["metadata"]["name"]
        for source in sources(app):
            assert source["repoURL"] in spec["sourceRepos"], source["repoURL"]
        destination = app["spec"]["destination"]
        assert {k: destination[k] for k in ("server", "namespace")} in spec["destinations"]
    allowed = {(k["group"], k["kind"]) for k in spec["clusterResourceWhitelist"]}
    for manifest in chart.render(environment):
        if manifest["kind"] in CLUSTER_SCOPED:
            group = manifest["apiVersion"].rpartition("/")[0]
            assert (group, manifest["kind"]) in allowed, manifest["kind"]


@pytest.mark.services
def test_every_application_passes_a_server_side_dry_run() -> None:
    """Application and AppProject against Argo CD's own CRDs (schema, enums, required fields)."""
    api = chart.api_server()
    kinds = chart.install_crds(api)
    assert {"Application", "AppProject"} <= kinds
    chart.ensure_namespace(api, "argocd")
    objects = documents("*.yaml") + documents("*/*.yaml") + documents("*/apps/*.yaml")
    assert len(objects) >= 10
    for manifest in objects:
        chart.dry_run(api, manifest)
    broken = {**objects[-1], "spec": {**objects[-1]["spec"], "syncPolicy": {"automatic": {}}}}
    with pytest.raises(chart.KubeError) as caught:  # the check can fail
        chart.dry_run(api, broken)
    assert "automatic" in caught.value.body

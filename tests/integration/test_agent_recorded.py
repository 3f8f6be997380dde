"""The recorded cluster states of the agent's incident scenarios are objects the real
kube-apiserver accepts: every object of every fixture is sent as a server-side dry-run create
(``dryRun=All``: validated and admitted, never stored). Their ``status`` is not checked by a
create (the API server ignores it there); the integration incidents write status for real."""

from __future__ import annotations

from typing import Any

import pytest

from opsassist.agent import kuberead, replay
from tests.conftest import require_service, service_port
from tests.integration import agent_cluster

pytestmark = [pytest.mark.slow, pytest.mark.services]


def _api_version(kind: str) -> str:
    prefix = kuberead.RESOURCES[kuberead.KIND_TO_PLURAL[kind]].prefix
    return "v1" if prefix == "/api/v1" else prefix.removeprefix("/apis/")


def test_every_recorded_object_is_valid_for_the_api_server() -> None:
    require_service("kube-apiserver", service_port("kube_apiserver", 16443))
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    admin = agent_cluster.kube_api("admin")
    core = client.CoreV1Api(admin)
    data = replay.load()
    for namespace in data["allow"]["namespaces"]:  # dry-runs need the namespace to exist
        try:
            core.create_namespace({"metadata": {"name": namespace}})
        except ApiException as exc:
            assert exc.status == 409
    checked = 0
    rejected: list[tuple[str, str, int, str]] = []
    for name, fixture in data["fixtures"].items():
        for obj in fixture.get("objects") or []:
            body: dict[str, Any] = {"apiVersion": _api_version(obj["kind"]), **obj}
            plural = kuberead.KIND_TO_PLURAL[obj["kind"]]
            url = kuberead.path(plural, obj["metadata"].get("namespace"))
            method, full, headers, payload, _ = admin.param_serialize(
                "POST",
                url,
                query_params=[("dryRun", "All")],
                header_params={"Content-Type": "application/json", "Accept": "application/json"},
                body=body,
                auth_settings=["BearerToken"],
            )
            response = admin.call_api(method, full, header_params=headers, body=payload)
            answer = response.read().decode()
            # 409: the name exists already (created by another test): still a valid object
            if response.status not in (200, 201, 409):
                rejected.append((name, obj["metadata"]["name"], response.status, answer[:300]))
            checked += 1
    assert checked >= 60
    assert rejected == []

"""The action agent's Kubernetes objects (deploy/k8s/agent): every listed file exists and parses,
the dry-run identity holds only the write actions' verbs, and the admission policy binds it to
dry-runs. (tests/integration/test_action_agent.py applies them to a real API server.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT

AGENT = ROOT / "deploy" / "k8s" / "agent"


def objects() -> list[dict[str, Any]]:
    spec = yaml.safe_load((AGENT / "kustomization.yaml").read_text())
    out: list[dict[str, Any]] = []
    for entry in spec["resources"]:
        path: Path = AGENT / entry
        assert path.is_file(), entry
        out.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return out


def test_dry_run_identity_has_only_action_verbs_and_is_bound_to_dry_runs() -> None:
    docs = objects()
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("ServiceAccount", "opsassist-dryrun") in kinds
    for doc in docs:
        for rule in doc.get("rules", []):
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
            assert set(rule["verbs"]) <= {"get", "patch", "delete"}
            assert "secrets" not in rule["resources"]
    for doc in docs:
        for subject in doc.get("subjects", []):
            assert subject["name"] == "opsassist-dryrun"
    [policy] = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicy"]
    [binding] = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding"]
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert policy["spec"]["failurePolicy"] == "Fail"
    assert "opsassist-dryrun" in policy["spec"]["matchConditions"][0]["expression"]
    assert "request.dryRun == true" in policy["spec"]["validations"][0]["expression"]
    tokens = {
        d["metadata"]["annotations"]["kubernetes.io/service-account.name"]
        for d in docs
        if d["kind"] == "Secret"
    }
    assert tokens == {"opsassist-reader", "opsassist-dryrun"}  # never the write identity's

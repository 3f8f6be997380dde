"""Secrets kept in Git (deploy/secrets, rendered by KSOPS in Argo CD) with the real sops and age
(built from the Go module proxy by scripts/tools.sh):

- the committed example decrypts with the public test key (tests/deploy/fixtures), holds exactly
  the Secrets and keys the chart's pods read, and every one passes the real kube-apiserver's
  server-side dry run;
- a fresh age key made at test time encrypts a throwaway copy through deploy/secrets/.sops.yaml's
  creation rule (values encrypted, names and keys readable), and only that key decrypts it;
- the KSOPS generator and kustomization point at the encrypted file.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy import chart
from tests.deploy.chart import AGE_TEST_KEY, SECRETS

EXAMPLE = SECRETS / "dev" / "secrets.enc.yaml"


def sops(*args: str, key_file: Path | None = AGE_TEST_KEY, cwd: Path = SECRETS) -> str:
    env = {"SOPS_AGE_KEY_FILE": str(key_file) if key_file else "/nonexistent"}
    result = subprocess.run(
        [chart.tool("sops"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "HOME": str(cwd), **env},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def decrypted_example() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(sops("--decrypt", str(EXAMPLE))) if d]


def test_the_committed_example_is_encrypted_and_decrypts_with_the_test_key() -> None:
    raw = EXAMPLE.read_text()
    encrypted = [d for d in yaml.safe_load_all(raw) if d]
    recipient = re.search(r"public key: (age1\w+)", AGE_TEST_KEY.read_text())
    assert recipient and recipient.group(1) in (SECRETS / ".sops.yaml").read_text()
    for doc in encrypted:
        assert doc["sops"]["age"][0]["recipient"] == recipient.group(1)
        for key, value in doc["stringData"].items():
            assert value == "" or value.startswith("ENC[AES256_GCM,"), key  # no plain value
    plain = decrypted_example()
    assert [d["metadata"]["name"] for d in plain] == [d["metadata"]["name"] for d in encrypted]
    for before, after in zip(encrypted, plain, strict=True):
        assert set(before["stringData"]) == set(after["stringData"])
        assert "sops" not in after
        for key, value in after["stringData"].items():
            assert value == "" or not value.startswith("ENC["), key
            if len(value) >= 12:  # a secret, not a word like the user name
                assert value not in raw, f"{key}: plain value in the encrypted file"


def test_the_example_holds_the_secrets_and_keys_the_chart_reads() -> None:
    wanted = {s["name"]: set(s["keys"]) for s in chart.secret_specs("dev")}
    found = {d["metadata"]["name"]: set(d["stringData"]) for d in decrypted_example()}
    assert found == wanted
    assert chart.values("dev")["secrets"]["provider"] == "existing"  # dev reads these Secrets


def test_a_wrong_key_cannot_decrypt_the_example(tmp_path: Path) -> None:
    other = tmp_path / "other.key"
    subprocess.run([chart.tool("age-keygen"), "-o", str(other)], check=True, capture_output=True)
    for key_file in (other, None):
        result = subprocess.run(
            [chart.tool("sops"), "--decrypt", str(EXAMPLE)],
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": "/usr/bin:/bin", "SOPS_AGE_KEY_FILE": str(key_file or "/nonexistent")},
        )
        assert result.returncode != 0
        assert "failed to decrypt" in result.stderr.lower() or "error" in result.stderr.lower()


def test_round_trip_with_a_key_made_at_test_time(tmp_path: Path) -> None:
    """A throwaway key and a throwaway copy: encrypted with the repository's creation rule (path
    dev/*.enc.yaml: only data/stringData), readable names and keys, decrypted back unchanged."""
    key_file = tmp_path / "key.txt"
    subprocess.run([chart.tool("age-keygen"), "-o", str(key_file)], check=True, capture_output=True)
    recipient = re.search(r"public key: (age1\w+)", key_file.read_text())
    assert recipient
    rules = yaml.safe_load((SECRETS / ".sops.yaml").read_text())
    rules["creation_rules"][0]["age"] = recipient.group(1)
    (tmp_path / ".sops.yaml").write_text(yaml.safe_dump(rules))
    (tmp_path / "dev").mkdir()
    plain = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "opsassist-secrets"},
        "type": "Opaque",
        "stringData": {"OPSASSIST_API_KEYS": "throwaway-" + key_file.stat().st_ino.__str__()},
    }
    target = tmp_path / "dev" / "throwaway.enc.yaml"
    target.write_text(yaml.safe_dump(plain))
    sops("--encrypt", "--in-place", str(target), key_file=key_file, cwd=tmp_path)
    encrypted = yaml.safe_load(target.read_text())
    assert encrypted["metadata"] == plain["metadata"] and encrypted["kind"] == "Secret"
    value = encrypted["stringData"]["OPSASSIST_API_KEYS"]
    assert value.startswith("ENC[AES256_GCM,") and "throwaway" not in target.read_text()
    assert encrypted["sops"]["age"][0]["recipient"] == recipient.group(1)
    back = yaml.safe_load(sops("--decrypt", str(target), key_file=key_file, cwd=tmp_path))
    assert back == plain
    # the committed test key is not a recipient of this copy
    result = subprocess.run(
        [chart.tool("sops"), "--decrypt", str(target)],
        capture_output=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "SOPS_AGE_KEY_FILE": str(AGE_TEST_KEY)},
    )
    assert result.returncode != 0


def test_the_ksops_generator_is_what_argocd_builds() -> None:
    kustomization = yaml.safe_load((SECRETS / "dev" / "kustomization.yaml").read_text())
    assert kustomization["namespace"] == chart.ENVIRONMENTS["dev"]
    (generator_file,) = kustomization["generators"]
    generator = yaml.safe_load((SECRETS / "dev" / generator_file).read_text())
    assert (generator["apiVersion"], generator["kind"]) == ("viaduct.ai/v1", "ksops")
    function = yaml.safe_load(generator["metadata"]["annotations"]["config.kubernetes.io/function"])
    assert function == {"exec": {"path": "ksops"}}
    assert [(SECRETS / "dev" / f).resolve() for f in generator["files"]] == [EXAMPLE]
    application = yaml.safe_load((chart.ARGOCD / "dev" / "apps" / "secrets.yaml").read_text())
    assert application["spec"]["source"]["path"] == "deploy/secrets/dev"
    assert application["spec"]["destination"]["namespace"] == kustomization["namespace"]


@pytest.mark.services
def test_the_decrypted_secrets_pass_the_server_side_dry_run() -> None:
    api = chart.api_server()
    namespace = chart.ENVIRONMENTS["dev"]
    chart.ensure_namespace(api, namespace)
    documents = decrypted_example()
    for doc in documents:
        doc["metadata"]["namespace"] = namespace
        chart.dry_run(api, doc)
    broken = {**documents[0], "stringData": {"not a key!": "x"}}  # the check can fail
    with pytest.raises(Exception) as caught:  # the client's ApiException
        chart.dry_run(api, broken)
    assert "Invalid value" in str(getattr(caught.value, "body", ""))

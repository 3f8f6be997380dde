"""docker-compose.yaml: pinned images, health checks, named volumes, host ports, secrets, and
settings passed as the OPSASSIST_* variables that opsassist.settings.Settings reads.

No Docker engine here: the file is checked as data (PyYAML), plus `docker compose config -q`
where the compose client plugin is installed.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml

from opsassist.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
INSTALL_LOCKED = ROOT / "deploy" / "docker" / "install-locked.sh"

SETTINGS_VARS = frozenset(f"OPSASSIST_{name.upper()}" for name in Settings.model_fields)
OPSASSIST_VAR = re.compile(r"(?<![A-Za-z0-9_])OPSASSIST_[A-Z0-9_]+")
INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")

MINIMAL = {
    "chat",
    "model-server",
    "redis",
    "opensearch",
    "postgres",
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
}
AIRFLOW = {s for s in MINIMAL if s.startswith("airflow-")}
# service -> container paths whose data must outlive the container (on a named volume)
STATEFUL: dict[str, set[str]] = {
    "postgres": {"/var/lib/postgresql/data"},
    "redis": {"/data"},
    "opensearch": {"/usr/share/opensearch/data"},
    "kafka": {"/var/lib/kafka/data"},
    "mlflow": {"/mlflow"},
    "prometheus": {"/prometheus"},
    "grafana": {"/var/lib/grafana"},
    "open-webui": {"/app/backend/data"},
    "model-server": {"/var/cache/model-server"},
    "chat": {"/opt/opsassist/var/data"},
    **{name: {"/opt/opsassist/var/data", "/opt/airflow/logs"} for name in AIRFLOW},
}
STATEFUL["airflow-apiserver"] = STATEFUL["airflow-apiserver"] | {"/opt/airflow/auth"}
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|API_KEY|_KEYS?$)")


@cache
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def services() -> dict[str, dict[str, Any]]:
    value: dict[str, dict[str, Any]] = compose()["services"]
    return value


def env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def unknown_settings_vars(text: str) -> set[str]:
    """OPSASSIST_* names in `text` that are not environment names of a Settings field."""
    return set(OPSASSIST_VAR.findall(text)) - SETTINGS_VARS


# --- images -------------------------------------------------------------------------------------
def image_tag(image: str) -> str | None:
    """The tag of an image reference (None when it has none); a digest counts as a tag."""
    if "@sha256:" in image:
        return image.split("@", 1)[1]
    last = image.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def dockerfile_bases(path: Path) -> list[str]:
    """FROM images of a Dockerfile, with ARG defaults declared before them substituted."""
    args: dict[str, str] = {}
    bases: list[str] = []
    for line in path.read_text().splitlines():
        words = line.split()
        if not words:
            continue
        if words[0].upper() == "ARG" and "=" in words[1]:
            key, _, value = words[1].partition("=")
            args.setdefault(key, value)
        elif words[0].upper() == "FROM":
            bases.append(
                re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), words[1])
            )
    return bases


def test_image_tag_parsing() -> None:
    assert image_tag("postgres:16.8-bookworm") == "16.8-bookworm"
    assert image_tag("registry:5000/team/app") is None
    assert image_tag("registry:5000/team/app:1.2") == "1.2"
    assert image_tag("ghcr.io/x/y@sha256:abc") == "sha256:abc"


@pytest.mark.parametrize("name", sorted(services()))
def test_every_image_is_pinned(name: str) -> None:
    service = services()[name]
    image = service.get("image")
    assert image, f"{name}: no image name (built images need one too, with a version tag)"
    tag = image_tag(image)
    assert tag and tag != "latest", f"{name}: image {image!r} is not pinned to an exact tag"
    assert not re.fullmatch(r"v?\d+(\.\d+)?", tag), f"{name}: {image!r} is a moving major/minor tag"
    build = service.get("build")
    if build:
        context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
        dockerfile = context / (
            "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        )
        assert dockerfile.is_file(), f"{name}: Dockerfile {dockerfile} does not exist"
        for base in dockerfile_bases(dockerfile):
            base_tag = image_tag(base)
            assert base_tag and base_tag != "latest", f"{dockerfile.name}: FROM {base} not pinned"


def test_dockerfiles_copy_only_files_that_exist() -> None:
    for dockerfile in (ROOT / "deploy" / "docker").glob("*.Dockerfile"):
        for line in dockerfile.read_text().splitlines():
            words = line.split()
            if not words or words[0] != "COPY":
                continue
            sources = [w for w in words[1:-1] if not w.startswith("--")]
            for source in sources:
                matches = list(ROOT.glob(source)) if source != "." else [ROOT]
                assert matches, f"{dockerfile.name}: COPY source {source} does not exist"
        assert Path(f"{dockerfile}.dockerignore").is_file(), f"{dockerfile.name}: no .dockerignore"


# --- health checks and dependencies ------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(services()))
def test_every_service_has_a_healthcheck(name: str) -> None:
    check = services()[name].get("healthcheck") or {}
    assert not check.get("disable"), f"{name}: healthcheck disabled"
    test = check.get("test")
    assert test, f"{name}: no healthcheck"
    if isinstance(test, list):
        assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, f"{name}: bad test {test}"


def test_dependencies_exist_and_wait_for_health() -> None:
    for name, service in services().items():
        depends = service.get("depends_on") or {}
        for dep, spec in depends.items() if isinstance(depends, dict) else []:
            assert dep in services(), f"{name} depends on unknown service {dep}"
            condition = spec.get("condition")
            assert condition in {
                "service_healthy",
                "service_started",
                "service_completed_successfully",
            }
            if condition == "service_healthy":
                assert services()[dep].get("healthcheck"), f"{name} waits for {dep}'s health"
            # a service of the minimal profile may not depend on one that only `full` starts
            if "minimal" in service.get("profiles", []):
                assert "minimal" in services()[dep].get("profiles", []), f"{name} -> {dep}"


# --- volumes ------------------------------------------------------------------------------------
class Mount(NamedTuple):
    source: str
    target: str
    read_only: bool
    named: bool


def mounts(service: dict[str, Any]) -> list[Mount]:
    result = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, str):
            parts = entry.split(":")
            source, target = parts[0], parts[1]
            options = parts[2].split(",") if len(parts) > 2 else []
            read_only = "ro" in options
            named = not source.startswith((".", "/", "~"))
        else:
            source, target = entry.get("source", ""), entry["target"]
            read_only = bool(entry.get("read_only"))
            named = entry.get("type", "volume") == "volume"
        result.append(Mount(source, target, read_only, named))
    return result


def test_stateful_services_keep_their_data_on_named_volumes() -> None:
    declared = set(compose().get("volumes") or {})
    for name, paths in STATEFUL.items():
        by_target = {m.target: m for m in mounts(services()[name])}
        for path in paths:
            mount = by_target.get(path)
            assert mount is not None, f"{name}: nothing mounted at {path}"
            assert mount.named and mount.source in declared, (
                f"{name}: {path} is not on a named volume"
            )


def test_volumes_are_declared_and_bind_mounts_are_read_only_config() -> None:
    declared = set(compose().get("volumes") or {})
    used: set[str] = set()
    for name, service in services().items():
        for mount in mounts(service):
            if mount.named:
                assert mount.source in declared, f"{name}: volume {mount.source} not declared"
                used.add(mount.source)
            else:
                assert mount.read_only, f"{name}: bind mount {mount.source} must be read-only"
                if mount.source.startswith("."):
                    assert (ROOT / mount.source).exists(), f"{name}: {mount.source} missing"
    assert declared == used, f"declared but unused volumes: {declared - used}"


# --- ports --------------------------------------------------------------------------------------
class Port(NamedTuple):
    host_ip: str
    host_port: int
    container_port: int
    protocol: str


def ports(service: dict[str, Any]) -> list[Port]:
    result = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            result.append(
                Port(
                    str(entry.get("host_ip", "0.0.0.0")),
                    int(entry["published"]),
                    int(entry["target"]),
                    entry.get("protocol", "tcp"),
                )
            )
            continue
        spec, _, protocol = str(entry).partition("/")
        parts = spec.split(":")
        if len(parts) == 1:
            continue  # container port only: no host port
        host_ip = parts[0] if len(parts) == 3 else "0.0.0.0"
        result.append(Port(host_ip, int(parts[-2]), int(parts[-1]), protocol or "tcp"))
    return result


def test_port_parsing() -> None:
    service = {
        "ports": ["127.0.0.1:18000:18000", "9000:9001/udp", "8080", {"published": 1, "target": 2}]
    }
    assert ports(service) == [
        Port("127.0.0.1", 18000, 18000, "tcp"),
        Port("0.0.0.0", 9000, 9001, "udp"),
        Port("0.0.0.0", 1, 2, "tcp"),
    ]


def test_no_host_port_clash_and_loopback_only() -> None:
    published = Counter((p.host_port, p.protocol) for s in services().values() for p in ports(s))
    clashes = [port for port, count in published.items() if count > 1]
    assert not clashes, f"host ports published twice: {clashes}"
    for name, service in services().items():
        for port in ports(service):
            assert port.host_ip == "127.0.0.1", f"{name}: {port} is not bound to loopback"


# --- settings -----------------------------------------------------------------------------------
def test_unknown_settings_vars_are_detected() -> None:
    assert unknown_settings_vars("OPSASSIST_INDEX_BACKEND: x\nOPSASSIST_NOT_A_FIELD: y") == {
        "OPSASSIST_NOT_A_FIELD"
    }


def test_every_opsassist_variable_is_a_settings_field() -> None:
    unknown = unknown_settings_vars(COMPOSE.read_text())
    assert not unknown, f"not fields of opsassist.settings.Settings: {sorted(unknown)}"
    unknown = unknown_settings_vars(ENV_EXAMPLE.read_text())
    assert not unknown, f".env.example: not fields of Settings: {sorted(unknown)}"
    for name, service in services().items():  # after anchors and merge keys are resolved
        unknown = {k for k in environment(service) if k.startswith("OPSASSIST_")} - SETTINGS_VARS
        assert not unknown, f"{name}: {sorted(unknown)}"


def test_settings_anchor_reaches_the_chat_server_and_every_airflow_service() -> None:
    anchor = compose()["x-opsassist-env"]
    assert anchor and all(key.startswith("OPSASSIST_") for key in anchor)
    for name in AIRFLOW | {"chat"}:
        env = environment(services()[name])
        missing = set(anchor) - set(env)
        assert not missing, f"{name} lacks {sorted(missing)}"
    # the settings point at the services of this file
    assert anchor["OPSASSIST_INDEX_BACKEND"] == "opensearch"
    assert anchor["OPSASSIST_CACHE_BACKEND"] == "redis"
    model_url = re.fullmatch(r"http://([a-z-]+):(\d+)", anchor["OPSASSIST_MODEL_SERVER_URL"])
    assert model_url, anchor["OPSASSIST_MODEL_SERVER_URL"]
    host, port = model_url.group(1), int(model_url.group(2))
    assert host in services()
    assert port in {p.container_port for p in ports(services()[host])}
    assert (
        environment(services()["model-server"])["OPSASSIST_MODEL_NAME"]
        == (anchor["OPSASSIST_MODEL_NAME"])
    )


def test_open_webui_talks_to_the_chat_server_with_its_key() -> None:
    webui = environment(services()["open-webui"])
    chat = environment(services()["chat"])
    assert webui["OPENAI_API_BASE_URL"] == "http://chat:18000/v1"
    assert 18000 in {p.container_port for p in ports(services()["chat"])}
    key = INTERPOLATION.search(webui["OPENAI_API_KEY"])
    assert key, "OPENAI_API_KEY must come from .env, not a literal"
    assert INTERPOLATION.search(chat["OPSASSIST_API_KEYS"]).group(1) == key.group(1)  # type: ignore[union-attr]


# --- profiles -----------------------------------------------------------------------------------
def test_profiles() -> None:
    minimal = {n for n, s in services().items() if "minimal" in s.get("profiles", [])}
    assert minimal == MINIMAL
    without_full = [n for n, s in services().items() if "full" not in s.get("profiles", [])]
    assert not without_full, f"not in the full profile: {without_full}"


# --- secrets ------------------------------------------------------------------------------------
def test_no_literal_secrets_in_the_compose_file() -> None:
    for name, service in services().items():
        for key, value in environment(service).items():
            if not SECRET_NAME.search(key) or key.endswith(("_FILE", "_CMD")):
                continue
            assert INTERPOLATION.search(value) or value == "", (
                f"{name}: {key} holds a literal value; read it from .env (see .env.example)"
            )
    for name, spec in (compose().get("secrets") or {}).items():
        assert set(spec) <= {"environment", "file"}, name
        if "file" in spec:
            assert not (ROOT / spec["file"]).exists() or spec["file"].startswith("./secrets")


def test_every_interpolated_variable_is_in_env_example() -> None:
    example = env_file(ENV_EXAMPLE)
    text = COMPOSE.read_text()
    for match in INTERPOLATION.finditer(text):
        variable, operator = match.group(1), match.group(2)
        if operator in (":-", "-"):
            continue  # has a default
        assert variable in example, f"${{{variable}}} is not defined in .env.example"
    for name, spec in (compose().get("secrets") or {}).items():
        if "environment" in spec:
            assert spec["environment"] in example, f"secret {name}: not in .env.example"


def test_env_example_secrets_are_marked_dev_only() -> None:
    lines = ENV_EXAMPLE.read_text().splitlines()
    for index, line in enumerate(lines):
        key, _, value = line.partition("=")
        if line.startswith("#") or not value or not SECRET_NAME.search(key):
            continue
        context = " ".join(lines[max(0, index - 3) : index + 1])
        assert "dev-only" in context, f".env.example: {key} is not marked dev-only"


# --- the images' install script -----------------------------------------------------------------
def test_install_locked_takes_cpu_torch_and_drops_the_cuda_wheels(tmp_path: Path) -> None:
    """Runs deploy/docker/install-locked.sh with a stand-in `python` that records pip's calls."""
    log = tmp_path / "calls.log"
    fake = tmp_path / "python"
    fake.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> "{log}"\n'
        'prev=""; for a in "$@"; do\n'
        f'  if [ "$prev" = "-r" ]; then echo "== $a" >> "{log}"; cat "$a" >> "{log}"; fi\n'
        '  prev="$a"\n'
        "done\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    lock = ROOT / "serving" / "model_server" / "requirements.lock"
    nodeps = ROOT / "serving" / "model_server" / "requirements-nodeps.lock"
    env = {k: v for k, v in os.environ.items() if k != "TORCH_INDEX"}
    subprocess.run(
        ["sh", str(INSTALL_LOCKED), str(fake), str(lock), "--no-deps", str(nodeps)],
        check=True,
        env=env,
        timeout=60,
    )
    calls = log.read_text()
    torch = re.search(r"^torch==(\S+)$", lock.read_text(), re.M)
    assert torch
    assert f"--index-url https://download.pytorch.org/whl/cpu torch=={torch.group(1)}" in calls
    installed = calls.split("== ", 2)[1]
    assert not re.search(r"^(nvidia-|cuda-|triton==|torch==)", installed, re.M)
    assert re.search(r"^kserve==", installed, re.M)
    assert "--no-deps -r" in calls and "vllm==" in calls.split("== ")[-1]


# --- the real compose client, where it is installed ---------------------------------------------
def compose_command(docker: list[str], *args: str) -> list[str]:
    return [*docker, "-f", str(COMPOSE), *args]


def compose_plugin() -> list[str] | None:
    """The Compose CLI: the binary the test command builds (OPSASSIST_DOCKER_COMPOSE, from
    scripts/tools.sh), else `docker compose` when the plugin is installed."""
    built = os.environ.get("OPSASSIST_DOCKER_COMPOSE", "")
    candidates = [[built]] if built and os.access(built, os.X_OK) else []
    docker = shutil.which("docker")
    if docker is not None:
        candidates.append([docker, "compose"])
    for command in candidates:
        probe = subprocess.run([*command, "version"], capture_output=True, text=True, timeout=30)
        if probe.returncode == 0:
            return command
    return None


def run_compose(docker: list[str], *args: str, env: dict[str, str] | None = None) -> Any:
    return subprocess.run(
        compose_command(docker, *args),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
    )


@pytest.mark.parametrize("profile", ["minimal", "full"])
def test_docker_compose_config_is_valid(profile: str) -> None:
    docker = compose_plugin()
    if docker is None:
        pytest.skip("no Compose CLI: run via the test command (scripts/tools.sh docker_compose)")
    options = ("--env-file", str(ENV_EXAMPLE), "--profile", profile, "config")
    listed = run_compose(docker, *options, "--services")
    assert listed.returncode == 0, listed.stderr
    assert set(listed.stdout.split()) == (MINIMAL if profile == "minimal" else set(services()))
    quiet = run_compose(docker, *options, "-q")
    assert quiet.returncode == 0, quiet.stderr


def test_docker_compose_refuses_to_start_without_the_secrets(tmp_path: Path) -> None:
    docker = compose_plugin()
    if docker is None:
        pytest.skip("no Compose CLI: run via the test command (scripts/tools.sh docker_compose)")
    empty = tmp_path / "empty.env"
    empty.write_text("")
    env = {k: v for k, v in os.environ.items() if k not in env_file(ENV_EXAMPLE)}
    result = run_compose(docker, "--env-file", str(empty), "config", "-q", env=env)
    assert result.returncode != 0
    assert "see .env.example" in result.stderr

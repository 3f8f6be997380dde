"""The project's bash scripts: a pitfall that made `scripts/services status` drop a service."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(
    [p for p in (ROOT / "scripts").iterdir() if p.is_file() and p.read_bytes().startswith(b"#!")]
    + list((ROOT / "scripts" / "services.d").glob("*.sh"))
    + [ROOT / ".ci" / "run"]
)
# `producer | grep -q PATTERN`: grep exits on its first match, the producer may then die of
# SIGPIPE, and under pipefail the whole test reads as false.
EARLY_EXIT_PIPE = re.compile(r"\|\s*grep\s+-[a-zA-Z]*q")


def _code_lines(path: Path) -> list[tuple[int, str]]:
    return [
        (number, line)
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if not line.lstrip().startswith("#")
    ]


def test_scripts_are_found() -> None:
    names = {p.name for p in SCRIPTS}
    assert {"services", "common.sh", "model-server", "open-webui", "run"} <= names


def test_no_script_pipes_into_an_early_exiting_grep() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in SCRIPTS
        for number, line in _code_lines(path)
        if EARLY_EXIT_PIPE.search(line)
    ]
    assert offenders == []


def test_pattern_catches_the_pipeline_it_is_for() -> None:
    assert EARLY_EXIT_PIPE.search("""printf '%s\\n' "${ids[@]}" | grep -qx "$id" || continue""")
    assert not EARLY_EXIT_PIPE.search('grep -q "$x" <<< "$body"')


def _in_list(*args: str) -> int:
    script = 'set -uo pipefail; source "$ROOT/scripts/services.d/common.sh"; in_list "$@"'
    env = {"ROOT": str(ROOT), "PATH": "/usr/bin:/bin"}
    return subprocess.run(["bash", "-c", script, "in_list", *args], env=env, check=False).returncode


def test_in_list_matches_whole_items_only() -> None:
    assert _in_list("node_exporter", "redis", "postgres", "node_exporter", "prometheus") == 0
    assert _in_list("node", "redis", "node_exporter") == 1
    assert _in_list("redis") == 1  # an empty list, under set -u

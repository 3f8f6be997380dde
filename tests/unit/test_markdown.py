from __future__ import annotations

from pathlib import Path

import pytest

from opsassist.parsing.markdown import RunbookError, load_runbook, parse_runbook, read_text
from tests.conftest import runbook_corpus

RUNBOOK = """---
title: Kube Pod Crash Looping
weight: 20
---

# KubePodCrashLooping

## Meaning

Pod is in CrashLoop.

## Diagnosis

1. Check the pod via `kubectl -n $NAMESPACE get pod $POD`.
2. Look at events.

```shell
# this is a shell comment, not a heading
kubectl -n $NAMESPACE logs $POD
```

### Deeper

- resources may be too low

## Mitigation

Fix the app.
"""


def test_front_matter_title_alert_and_sections() -> None:
    runbook = parse_runbook(RUNBOOK, "kubernetes/KubePodCrashLooping.md")
    assert runbook.title == "Kube Pod Crash Looping"
    assert runbook.alert == "KubePodCrashLooping"
    assert runbook.front_matter["weight"] == 20
    labels = [s.label for s in runbook.sections]
    assert labels == ["Meaning", "Diagnosis", "Diagnosis > Deeper", "Mitigation"]


def test_code_fence_comment_is_not_a_heading_and_commands_are_extracted() -> None:
    diagnosis = parse_runbook(RUNBOOK, "x.md").section("Diagnosis")
    assert diagnosis is not None
    assert "# this is a shell comment" in diagnosis.body
    assert diagnosis.steps[:2] == [
        "Check the pod via `kubectl -n $NAMESPACE get pod $POD`.",
        "Look at events.",
    ]
    assert any(c.startswith("# this is a shell comment") for c in diagnosis.commands)
    assert "kubectl -n $NAMESPACE get pod $POD" in diagnosis.commands


UNCLOSED_FENCE = """# PrometheusOperatorNodeLookupErrors

## Diagnosis

- Check the kubelet Service
```shell
$ kubectl describe service -n kube-system kubelet
# a shell comment in the unclosed fence

## Mitigation

Restart the operator.
"""


def test_an_unclosed_fence_ends_before_the_next_heading() -> None:
    """The shipped PrometheusOperatorNodeLookupErrors runbook forgets to close a fence; read as
    CommonMark, its Mitigation heading would become a line of code inside Diagnosis."""
    runbook = parse_runbook(UNCLOSED_FENCE, "x.md")
    assert [s.label for s in runbook.sections] == ["Diagnosis", "Mitigation"]
    diagnosis, mitigation = runbook.sections
    assert "# a shell comment in the unclosed fence" in diagnosis.body
    assert "Mitigation" not in diagnosis.body
    assert diagnosis.commands == [
        "$ kubectl describe service -n kube-system kubelet\n# a shell comment in the unclosed fence"
    ]
    assert mitigation.body == "Restart the operator."


def test_an_unclosed_fence_without_a_heading_after_it_runs_to_the_end() -> None:
    runbook = parse_runbook("# T\n\n## Fix\n\n```\n# not a heading\nrm -rf cache\n", "t.md")
    assert [s.label for s in runbook.sections] == ["Fix"]
    assert runbook.sections[0].commands == ["# not a heading\nrm -rf cache"]


def test_no_front_matter_uses_h1_as_title() -> None:
    runbook = parse_runbook("# Disk Full\n\nSome text here.\n", "node/DiskFull.md")
    assert runbook.title == "Disk Full"
    assert runbook.sections[0].label == "Overview"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("---\ntitle: [unclosed\n---\n# A\n\ntext\n", "broken front matter"),
        ("---\ntitle: x\n# never closed\n\ntext\n", "broken front matter"),
        ("---\n- a list\n---\n\ntext\n", "broken front matter"),
        ("---\ntitle: empty\n---\n\n   \n", "no text"),
        ("# Only\n## Headings\n", "no text"),
    ],
)
def test_bad_runbooks_raise_with_reason(text: str, reason: str) -> None:
    with pytest.raises(RunbookError) as info:
        parse_runbook(text, "bad.md")
    assert info.value.reason == reason


def test_binary_and_encoding_are_refused(tmp_path: Path) -> None:
    binary = tmp_path / "bin.md"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    latin = tmp_path / "latin.md"
    latin.write_bytes("# Caf\u00e9\n\nd\u00e9j\u00e0 vu".encode("latin-1"))
    with pytest.raises(RunbookError, match="binary content"):
        read_text(binary)
    with pytest.raises(RunbookError, match="unreadable encoding"):
        read_text(latin)


def test_every_shared_runbook_parses() -> None:
    root = runbook_corpus()
    files = [p for p in root.rglob("*.md") if p.name != "_index.md"]
    assert len(files) >= 100
    for path in files:
        runbook = load_runbook(path, root)
        assert runbook.title and runbook.sections, path

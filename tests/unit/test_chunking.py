from __future__ import annotations

from opsassist.chunking import chunk_runbook, split_body
from opsassist.parsing.markdown import load_runbook, parse_runbook
from tests.conftest import runbook_corpus


def _runbook(body: str, source: str = "k/Alert.md"):  # type: ignore[no-untyped-def]
    return parse_runbook(f"---\ntitle: Some Alert\n---\n# SomeAlert\n\n{body}", source)


def test_every_chunk_keeps_title_and_section_path() -> None:
    runbook = _runbook(
        "## Meaning\n\nIt means real trouble.\n\n"
        "## Diagnosis\n\n### Logs\n\nRead the pod logs first.\n"
    )
    chunks = chunk_runbook(runbook)
    assert [c.section for c in chunks] == ["Meaning", "Diagnosis > Logs"]
    for chunk in chunks:
        assert chunk.title == "Some Alert"
        assert chunk.text.startswith(f"Some Alert (SomeAlert) > {chunk.section}\n")
        assert chunk.source == "k/Alert.md"
        assert chunk.metadata["alert"] == "SomeAlert"


def test_ids_are_deterministic_and_content_based() -> None:
    body = "## Meaning\n\nIt means real trouble.\n\n## Mitigation\n\nRestart the deployment.\n"
    first = chunk_runbook(_runbook(body))
    second = chunk_runbook(_runbook(body))
    assert [c.id for c in first] == [c.id for c in second]
    changed = chunk_runbook(
        _runbook(body.replace("Restart the deployment.", "Scale the deployment up."))
    )
    assert first[0].id == changed[0].id  # untouched section keeps its id
    assert first[1].id != changed[1].id
    other_source = chunk_runbook(_runbook(body, source="k/Other.md"))
    assert {c.id for c in first}.isdisjoint({c.id for c in other_source})


def test_long_sections_split_with_overlap_and_bounded_size() -> None:
    paragraphs = "\n\n".join(f"Paragraph {i} " + "word " * 40 for i in range(12))
    chunks = chunk_runbook(
        _runbook(f"## Diagnosis\n\n{paragraphs}\n"), max_chars=600, overlap_chars=120
    )
    assert len(chunks) > 3
    header = len("Some Alert (SomeAlert) > Diagnosis\n")
    assert all(len(c.text) - header <= 600 for c in chunks)
    assert len({c.id for c in chunks}) == len(chunks)
    # overlap: the start of each later piece repeats the end of the previous one
    assert chunks[1].text.split("\n", 1)[1].split()[0:2] == ["Paragraph", "1"] or "Paragraph" in (
        chunks[1].text
    )


def test_code_fences_are_not_split_on_blank_lines() -> None:
    body = "intro\n\n```\nline one\n\nline two\n```\n\nafter " + "x " * 400
    pieces = split_body(body, max_chars=300, overlap_chars=0)
    fence = next(p for p in pieces if "line one" in p)
    assert "line two" in fence


def test_tiny_sections_merge_into_previous_chunk() -> None:
    chunks = chunk_runbook(
        _runbook("## Meaning\n\nIt means real trouble here.\n\n## Impact\n\nNone.\n")
    )
    assert len(chunks) == 1
    assert "Impact: None." in chunks[0].text


def test_corpus_chunks_are_unique_and_within_bounds() -> None:
    root = runbook_corpus()
    ids: set[str] = set()
    total = 0
    for path in sorted(root.rglob("*.md")):
        if path.name == "_index.md":
            continue
        for chunk in chunk_runbook(load_runbook(path, root)):
            assert chunk.id not in ids
            ids.add(chunk.id)
            assert 20 <= len(chunk.text) <= 2800
            total += 1
    assert total > 300


def test_alert_name_words_the_title_lacks_are_spelled_in_every_chunk_header() -> None:
    from opsassist.chunking import identifier_words

    assert identifier_words("KubeletPlegDurationHigh") == ["Kubelet", "Pleg", "Duration", "High"]
    assert identifier_words("etcdGRPCRequestsSlow") == ["etcd", "GRPC", "Requests", "Slow"]
    text = (
        "---\ntitle: Kubelet Pod Lifecycle Event Generator Duration High\n---\n"
        "# KubeletPlegDurationHigh\n\n## Meaning\n\nThe generator is slow on a node.\n\n"
        "## Mitigation\n\nRestart the kubelet after checking the container runtime.\n"
    )
    chunks = chunk_runbook(parse_runbook(text, "kubernetes/KubeletPlegDurationHigh.md"))
    assert chunks and all(
        c.text.startswith(
            "Kubelet Pod Lifecycle Event Generator Duration High "
            "(KubeletPlegDurationHigh: Kubelet Pleg Duration High) >"
        )
        for c in chunks
    )
    named = (
        "---\ntitle: Pod Crash Looping\n---\n# KubePodCrashLooping\n\n## Meaning\n\nIt restarts.\n"
    )
    (chunk,) = chunk_runbook(parse_runbook(named, "kubernetes/KubePodCrashLooping.md"))
    assert chunk.text.startswith("Pod Crash Looping (KubePodCrashLooping: Kube Pod Crash Looping)")

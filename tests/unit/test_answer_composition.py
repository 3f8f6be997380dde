"""The composed answer and what it is made of: Markdown blocks, the guard on model text, the
question's language, source links, and the answer-quality metrics."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from opsassist.chat.claims import claims
from opsassist.chat.compose import (
    compose_answer,
    hit_sections,
    lead_text,
    linked_runbook,
    role_of,
)
from opsassist.chat.guard import StreamGuard
from opsassist.chat.language import detect_language
from opsassist.chat.links import SourceLinks, anchor, link_key, signature_ok
from opsassist.documents import SearchHit
from opsassist.evaluation.answers import AnswerCase, degenerate, load_answer_set, score_answer
from opsassist.evaluation.evalset import FrozenSplitChanged, freeze_test_split
from opsassist.knowledge import knowledge_pack_entry
from opsassist.parsing.blocks import link_references, markdown_blocks, render_blocks, strip_html
from opsassist.parsing.markdown import parse_runbook
from opsassist.settings import Settings
from tests.conftest import SHIPPED_RUNBOOKS

CRASH = "kubernetes/KubePodCrashLooping.md"
QUOTA = "etcd/etcdBackendQuotaLowSpace.md"
BURN = "kubernetes/KubeAPIErrorBudgetBurn.md"


def entry(source: str) -> dict:
    return knowledge_pack_entry(parse_runbook((SHIPPED_RUNBOOKS / source).read_text(), source))


def hit(source: str, section: str, text: str = "", source_type: str = "runbook") -> SearchHit:
    return SearchHit(
        id=f"id-{source}-{section}",
        source=source,
        source_type=source_type,
        title=source,
        section=section,
        score=1.0,
        text=text or f"{source} > {section}\nbody",
    )


# --- blocks ---------------------------------------------------------------------------------------
def test_blocks_keep_lists_code_and_turn_runbook_html_into_markdown() -> None:
    markdown = (
        "Intro line one\nand two.\n\n"
        "- Check `kubectl get pod`.\n  - nested item\n- second\n\n"
        "```shell\n$ etcdctl endpoint status -w table\n\n$ etcdctl defrag\n```\n\n"
        "<details>\n<summary>Full context</summary>\nHidden <b>text</b> &amp; more.\n</details>\n"
        "<!-- a comment -->\n\nSee [below](#example-queries) for queries."
    )
    blocks = markdown_blocks(markdown)
    kinds = [(b.kind, b.depth) for b in blocks]
    assert kinds[:4] == [("p", 0), ("li", 0), ("li", 1), ("li", 0)]
    code = next(b for b in blocks if b.kind == "code")
    assert code.text == "$ etcdctl endpoint status -w table\n\n$ etcdctl defrag"
    assert code.lang == "shell"
    rendered = render_blocks(blocks, "[1]")
    assert "<" not in rendered.replace("<", "", 0) or "<details>" not in rendered
    assert "**Full context** [1]" in rendered
    assert "Hidden text & more. [1]" in rendered
    assert "comment" not in rendered
    assert "See below for queries. [1]" in rendered  # a link to the page's own anchor leads nowhere
    assert "```shell\n$ etcdctl endpoint status -w table\n\n$ etcdctl defrag\n```" in rendered
    assert "- Check `kubectl get pod`. [1]\n    - nested item [1]\n- second [1]" in rendered


def test_reference_links_are_made_inline_from_definitions_anywhere_in_the_runbook() -> None:
    """Upstream runbooks write ``[here][fsync]`` in one section and define it in another, as
    ``[fsync]: url`` or only as a listed link ``- [fsync](url)``; quoted alone, the section would
    show the brackets."""
    whole = (
        "Disks must be [fast][disks] and [fsync'd][fsync]; see [x][missing] and `a[i][j]`.\n\n"
        "- [fsync](https://man7.org/fsync.2.html)\n\n"
        "[disks]: https://etcd.io/hardware/#disks\n"
    )
    references = link_references(whole)
    section = "Disks must be [fast][disks] and [fsync'd][fsync]; see [x][missing] and `a[i][j]`."
    text = markdown_blocks(section, references)[0].text
    assert text == (
        "Disks must be [fast](https://etcd.io/hardware/#disks) and "
        "[fsync'd](https://man7.org/fsync.2.html); see [x][missing] and `a[i][j]`."
    )
    assert markdown_blocks(section)[0].text == section  # without the definitions: as written
    # the list that only defines a used label is left out: its link is inline where it is used
    kinds = [(b.kind, b.text[:12]) for b in markdown_blocks(whole)]
    assert kinds == [("p", "Disks must b")]
    kept = markdown_blocks("- [fsync](https://man7.org/fsync.2.html)\n- [other](https://o.org)")
    assert [b.text for b in kept] == [
        "[fsync](https://man7.org/fsync.2.html)",
        "[other](https://o.org)",
    ]  # nothing refers to them: a list of links stays


def test_a_definition_beats_an_inline_link_with_its_text_as_the_whole_runbook_renders() -> None:
    """``[here][fsync]`` resolves to ``[fsync]: url`` (CommonMark); an inline link that happens
    to have the text ``fsync`` is only a fallback, in the section and in the whole runbook."""
    whole = (
        "## Diagnosis\n\nSee [fsync](https://inline.example/) and read [here][fsync].\n\n"
        "## Links\n\n[fsync]: https://man7.org/fsync.2.html\n"
    )
    section = "See [fsync](https://inline.example/) and read [here][fsync]."
    references = link_references(whole)
    assert references["FSYNC"] == "https://man7.org/fsync.2.html"
    text = markdown_blocks(section, references)[0].text
    assert text.endswith("read [here](https://man7.org/fsync.2.html).")
    alone = markdown_blocks(section)[0].text  # no definition known: the inline link's target
    assert alone.endswith("read [here](https://inline.example/).")


def test_strip_html_is_linear_on_unclosed_tags_and_comments() -> None:
    hostile = "<summary>" * 20_000 + "<!--" * 20_000 + "x"
    assert strip_html(hostile).endswith("x") or strip_html(hostile) == ""
    assert strip_html("a<br>b &lt;c&gt;") == "a b <c>"


# --- composition ----------------------------------------------------------------------------------
def test_role_of_section_headings() -> None:
    assert role_of(("Meaning",)) == "meaning"
    assert role_of(("Diagnosis", "CLI Checks")) == "diagnosis"
    assert role_of(("Mitigation",)) == "mitigation"
    assert role_of(("Impact",)) == "impact"
    assert role_of(("Critical",)) == "other"


def test_composed_answer_quotes_the_runbook_verbatim_with_a_citation_on_every_line() -> None:
    hits = [hit(CRASH, "Diagnosis"), hit(QUOTA, "Meaning")]
    composed = compose_answer(hits, {CRASH: entry(CRASH), QUOTA: entry(QUOTA)}, "en")
    text = composed.text
    assert composed.primary == CRASH
    assert text.startswith("**KubePodCrashLooping**: Pod is in CrashLoop")
    assert "### How to confirm" in text and "### What to do" in text
    assert "- Check pod events via `kubectl -n $NAMESPACE describe pod $POD`. [" in text
    for line in text.splitlines():
        if line.lstrip().startswith("- ") or (line and line[0].isalpha() and "**" not in line):
            assert "[" in line, f"uncited line: {line!r}"
    numbers = {c.number for c in composed.citations}
    assert numbers == set(range(1, len(composed.citations) + 1))
    sources = {c.source for c in composed.citations}
    assert sources == {CRASH, QUOTA}  # the other runbook is mentioned as also relevant
    assert "### Also relevant" in text
    # every claim of the answer is in the runbooks it cites
    corpus = "\n".join((SHIPPED_RUNBOOKS / s).read_text() for s in sources)
    assert all(" ".join(c.split()) in " ".join(corpus.split()) for c in claims(text))


def test_composed_answer_keeps_code_blocks_whole_and_shows_retrieved_other_sections() -> None:
    composed = compose_answer(
        [hit(BURN, "Critical"), hit(BURN, "Runbook")], {BURN: entry(BURN)}, "en"
    )
    text = composed.text
    assert "**Critical**" in text  # retrieved: shown under its own name
    assert "`long: 1h` and `short: 5m`" in text
    assert text.count("```promql") == 4  # the four queries, none cut
    assert "**Slow Write Requests** [" in text  # a section of code alone: cited on its heading
    assert text.count("The overall availability") == 1  # no Meaning: Impact leads, once
    cited = {int(n) for n in re.findall(r"\[(\d+)\]", text)}
    assert cited == {c.number for c in composed.citations}  # every listed source is cited
    assert "<details>" not in text and "<summary>" not in text
    assert "(#example-queries-for-slow-requests)" not in text


def test_a_paragraph_the_runbook_repeats_is_quoted_once() -> None:
    """AlertmanagerFailedToSendAlerts' Mitigation carries its one sentence twice (re-wrapped)."""
    send = "alertmanager/AlertmanagerFailedToSendAlerts.md"
    source = (SHIPPED_RUNBOOKS / send).read_text()
    sentence = "you can have a look to alert-manager logs"
    assert " ".join(source.split()).count(sentence) == 2
    composed = compose_answer([hit(send, "Mitigation")], {send: entry(send)}, "en")
    assert " ".join(composed.text.split()).count(sentence) == 1
    assert "kubectl -n monitoring logs -l 'alertmanager=main' -c alertmanager" in composed.text


def test_a_runbook_written_as_one_section_gives_its_steps_not_just_its_first_sentence() -> None:
    one = "prometheus/PrometheusDuplicateTimestamps.md"
    composed = compose_answer([hit(one, "Overview")], {one: entry(one)}, "en")
    text = composed.text
    assert text.startswith("**PrometheusDuplicateTimestamps**: Find the Prometheus Pod")
    assert "### Steps" in text
    assert "$ kubectl -n <namespace> logs prometheus-k8s-0" in text  # the commands, whole
    assert "`<namespace>/<service-monitor-name>/<endpoint-id>`" in text
    assert text.count("Find the Prometheus Pod that concerns this.") == 1  # the lead, once
    assert {c.section for c in composed.citations} == {"Overview"}
    ru = compose_answer([hit(one, "Overview")], {one: entry(one)}, "ru").text
    assert "### Шаги" in ru and "> $ kubectl -n <namespace> get pod" in ru


def test_a_todo_section_is_said_to_be_unwritten_not_quoted_as_a_step() -> None:
    """PrometheusOperatorNodeLookupErrors: an unclosed code fence in Diagnosis, then a
    Mitigation that only says TODO."""
    lookup = "prometheus-operator/PrometheusOperatorNodeLookupErrors.md"
    for language, heading, line in [
        ("en", "### What to do", "_The runbook's Mitigation section is not written yet"),
        (
            "ru",
            "### Что делать",
            "_Раздел Mitigation в runbook ещё не написан: в нём только «TODO».",
        ),
    ]:
        composed = compose_answer([hit(lookup, "Diagnosis")], {lookup: entry(lookup)}, language)
        text = composed.text
        assert "## Mitigation" not in text  # the heading is no longer read as code
        assert "app.kubernetes.io/managed-by=prometheus-operator" in text
        mitigation = text.split(heading, 1)[1].strip()
        assert mitigation.startswith(line), mitigation
        assert "> TODO" not in text
        assert "Mitigation" in {c.section for c in composed.citations}


def test_a_todo_line_above_real_content_is_left_out_and_the_content_kept() -> None:
    down = "kubernetes/KubeAggregatedAPIDown.md"
    assert "TODO" in (SHIPPED_RUNBOOKS / down).read_text()
    text = compose_answer([hit(down, "Mitigation")], {down: entry(down)}, "en").text
    mitigation = text.split("### What to do", 1)[1]
    assert "TODO" not in text
    assert "See [APIServer aggregation](https://kubernetes.io/docs/" in mitigation
    assert "not written yet" not in text


def shipped_pack(*sources: str) -> dict[str, dict]:
    return {source: entry(source) for source in sources}


def test_a_runbook_that_only_points_to_another_is_answered_from_that_one() -> None:
    """NodeRAIDDiskFailure's whole text is ``See [Node RAID Degraded]({{< ref "..." >}})``."""
    failure, degraded = "node/NodeRAIDDiskFailure.md", "node/NodeRAIDDegraded.md"
    pack = shipped_pack(failure, degraded)
    for language, line in [
        ("en", "**NodeRAIDDiskFailure**: its runbook only points to **NodeRAIDDegraded**"),
        ("ru", "**NodeRAIDDiskFailure**: runbook только отсылает к **NodeRAIDDegraded**"),
    ]:
        composed = compose_answer([hit(failure, "Overview")], pack, language)
        assert composed.text.startswith(line + ", ")
        assert "{{<" not in composed.text
        assert "cat /proc/mdstat" in composed.text  # NodeRAIDDegraded's diagnosis
        assert "Cordon and drain node if possible" in composed.text
        cited = {(c.source, c.section) for c in composed.citations}
        assert (failure, "Overview") in cited and (degraded, "Mitigation") in cited
        assert "NodeRAIDDegraded**:" not in composed.text.split("###")[-1]  # not "also" again


def test_a_section_that_points_to_another_runbook_quotes_that_runbooks_section() -> None:
    """NodeClockNotSynchronising's Mitigation is only "See [Node Clok Skew Detected](...) for
    mitigation steps"; its Diagnosis only TODO."""
    sync, skew = "node/NodeClockNotSynchronising.md", "node/NodeClockSkewDetected.md"
    composed = compose_answer([hit(sync, "Mitigation")], shipped_pack(sync, skew), "en")
    mitigation = composed.text.split("### What to do", 1)[1]
    assert mitigation.strip().startswith(
        "_The runbook points to **NodeClockSkewDetected** here; quoted from it:_ [4]"
    )
    assert "Ensure time synchronization service is running." in mitigation
    assert mitigation.rstrip().endswith("(like server mainboard and so on). [5]")
    assert "{{<" not in composed.text
    assert [(c.number, c.source, c.section) for c in composed.citations][3:] == [
        (4, sync, "Mitigation"),
        (5, skew, "Mitigation"),
    ]
    # without the other runbook in the pack: the link's text, no dead link
    alone = compose_answer([hit(sync, "Mitigation")], shipped_pack(sync), "en").text
    assert "See Node Clok Skew Detected for mitigation steps. [4]" in alone


def test_links_to_other_runbooks_cite_them_and_resolve_like_hugo_refs() -> None:
    assert linked_runbook("node/A.md", "./B.md") == "node/B.md"
    assert linked_runbook("node/A.md", "../etcd/C.md#diagnosis") == "etcd/C.md"
    assert linked_runbook("node/A.md", "/kubernetes/D") == "kubernetes/D.md"
    source = "node/Own.md"
    own = parse_runbook(
        "# Own\n\n## Meaning\n\nDisk trouble.\n\n## Mitigation\n\n"
        'Free space first, then see [RAID]({{< ref "./NodeRAIDDegraded.md" >}}) and '
        "[our wiki](https://wiki.example/raid) and [self](./Own.md).\n",
        source,
    )
    pack = {source: knowledge_pack_entry(own), **shipped_pack("node/NodeRAIDDegraded.md")}
    composed = compose_answer([hit(source, "Mitigation")], pack, "en")
    assert (
        "Free space first, then see RAID [3] and [our wiki](https://wiki.example/raid) and "
        "self. [2]" in composed.text
    )
    assert [(c.number, c.source, c.section) for c in composed.citations] == [
        (1, source, "Meaning"),
        (2, source, "Mitigation"),
        (3, "node/NodeRAIDDegraded.md", "Meaning"),
    ]


def test_an_impact_that_announces_a_query_is_quoted_with_the_query() -> None:
    """etcdHighNumberOfFailedGRPCRequests' Impact ends "the following query will display method
    and etcd instance that has failing requests:" and then gives it."""
    grpc = "etcd/etcdHighNumberOfFailedGRPCRequests.md"
    text = compose_answer([hit(grpc, "Impact")], {grpc: entry(grpc)}, "en").text
    impact = text.split("**Impact**:", 1)[1].split("###", 1)[0]
    assert "that has failing requests: [2]" in impact
    assert "```promql\n100 * sum without(grpc_type, grpc_code)" in impact


def test_the_lead_stops_at_a_summary_line_and_a_retrieved_meaning_shows_the_rest() -> None:
    """TargetDown's Meaning: two sentences, then ``<details><summary>Full context</summary>``
    with the likely cause (a misconfigured ServiceMonitor port)."""
    down = "general/TargetDown.md"
    cause = "a common cause could be a misconfigured ServiceMonitor"
    text = compose_answer([hit(down, "Meaning")], {down: entry(down)}, "en").text
    lead = text.split("\n", 1)[0]
    assert lead.endswith("scrape targets in a Service are unreachable. [1]"), lead
    background = text.split("### Background", 1)[1].split("###", 1)[0]
    assert cause in background and "Full context" not in text
    # the Meaning section not retrieved (the question matched the diagnosis): the lead only
    text = compose_answer([hit(down, "Diagnosis")], {down: entry(down)}, "en").text
    assert "### Background" not in text and cause not in text


def test_the_sub_section_the_search_matched_comes_first_with_its_family() -> None:
    """KubePersistentVolumeFillingUp's Mitigation has eight alternatives; a question about
    resizing matched "Direct Volume resizing", the fourth."""
    fill = "kubernetes/KubePersistentVolumeFillingUp.md"
    hits = [hit(fill, "Mitigation > Direct Volume resizing"), hit(fill, "Diagnosis")]
    text = compose_answer(hits, {fill: entry(fill)}, "en").text
    mitigation = text.split("### What to do", 1)[1]
    assert mitigation.strip().startswith("**Direct Volume resizing**")
    assert mitigation.index("**Data retention**") < mitigation.index("**Data export**")
    # a family moves together and the role's own text stays first
    burn = "kubernetes/KubeAPIErrorBudgetBurn.md"
    hits = [hit(burn, "Diagnosis > Example Queries for slow requests > Slow Write Requests")]
    text = compose_answer(hits, {burn: entry(burn)}, "en").text
    confirm = text.split("### How to confirm", 1)[1]
    assert confirm.strip().startswith("1. Take a look at the APIServer Grafana dashboard.")
    order = [confirm.index(f"**{name}**") for name in ("Slow Read Requests", "Slow Write Requests")]
    assert order == sorted(order)


def test_russian_question_gets_russian_framing_and_quoted_runbook_text() -> None:
    composed = compose_answer([hit(QUOTA, "Diagnosis")], {QUOTA: entry(QUOTA)}, "ru")
    text = composed.text
    assert "### Как проверить" in text and "### Что делать" in text
    assert "> $ etcdctl endpoint status -w table" in text  # commands unchanged
    assert "на языке оригинала" in text
    own = [line for line in text.splitlines() if line and not line.startswith(">")]
    assert all("etcd" not in line.lower() or line.startswith("**") for line in own), own


def test_without_a_pack_entry_the_answer_is_built_from_the_retrieved_chunks() -> None:
    chunk = f"{CRASH} > Diagnosis\n- Check pod logs via `kubectl logs $POD`\n- Check events"
    hits = [hit(CRASH, "Diagnosis", chunk), hit(CRASH, "Meaning", f"{CRASH} > Meaning\nIt dies.")]
    sections = hit_sections(hits, CRASH)
    assert [s.label for s in sections] == ["Diagnosis", "Meaning"]
    text = compose_answer(hits, {}, "en").text
    assert "It dies." in text and "- Check pod logs via `kubectl logs $POD` [" in text


def test_nothing_retrieved_says_so_and_cites_nothing() -> None:
    composed = compose_answer([], {}, "en")
    assert composed.citations == [] and composed.primary is None
    assert "No runbook in the index matches" in composed.text


def test_lead_text_keeps_whole_sentences() -> None:
    blocks = markdown_blocks(
        "First sentence here. Second one is longer than the rest of it. Third."
    )
    assert lead_text(blocks, 30) == "First sentence here."
    assert lead_text(blocks, 1000).endswith("Third.")


# --- the guard ------------------------------------------------------------------------------------
def test_guard_drops_lines_with_unsupported_commands_and_keeps_the_rest() -> None:
    guard = StreamGuard("Run `kubectl get pods -n $NS` to list pods.")
    shown = guard.feed("Check the pods with `kubectl get pods -n $NS`.\n")
    shown += guard.feed("Then run `kubectl delete ns prod` to reset.\nDone")
    shown += guard.finish()
    assert "kubectl get pods" in shown
    assert "delete" not in shown
    assert guard.report.dropped == ["kubectl delete ns prod"]
    assert shown.endswith("Done")


def test_guard_stops_a_looping_stream() -> None:
    guard = StreamGuard("")
    shown = ""
    for _ in range(30):
        shown += guard.feed("The answer to your question is:\n")
        if guard.stopped:
            break
    assert guard.report.stopped == "degenerate"
    assert shown.count("The answer to your question is:") == 1


def test_guard_shows_code_blocks_whole_and_only_when_every_line_is_in_the_sources() -> None:
    support = "```\netcdctl endpoint status -w table\netcdctl defrag\n```"
    guard = StreamGuard(support)
    shown = guard.feed("Run:\n```shell\netcdctl endpoint status -w table\n")
    assert shown == "Run:\n"  # the block is held until it closes
    shown += guard.feed(
        "etcdctl defrag\n```\nThen:\n```python\n```\n```\nrm -rf /var/lib/etcd\n```\n"
    )
    assert "```shell\netcdctl endpoint status -w table\netcdctl defrag\n```" in shown
    assert "python" not in shown and "rm -rf" not in shown
    assert guard.report.dropped == ["empty code block", "rm -rf /var/lib/etcd"]
    assert guard.feed("```\nunterminated\n") == "" and guard.finish() == ""
    assert guard.report.dropped[-1] == "unterminated code block"


def test_guard_keeps_a_summary_short_in_prose_and_in_the_questions_language() -> None:
    guard = StreamGuard("x", prose_only=True, language="ru", max_lines=2)
    shown = guard.feed("Под падает при старте.\n- список\nThe pod dies.\n`kubectl get pods`\n")
    shown += guard.feed("Проверьте логи.\nЕщё одна строка.\n")
    assert shown == "Под падает при старте.\nПроверьте логи.\n"
    assert guard.report.stopped == "enough"
    assert guard.report.dropped == [
        "list or code in a summary",
        "not in ru",
        "list or code in a summary",
    ]


def test_guard_drops_invented_identifiers_in_prose() -> None:
    guard = StreamGuard("Check the kube-state-metrics deployment and node_filesystem_files_free.")
    shown = guard.feed("Look at node_filesystem_files_free.\nSee runbooks/fix.md [1].\n")
    assert shown == "Look at node_filesystem_files_free.\n"
    assert guard.report.dropped == ["runbooks/fix.md"]


def test_guard_drops_an_invented_alert_or_resource_name_in_a_summary() -> None:
    """SmolLM2 once summarised a remote-write runbook as "The issue with
    PrometheusRemoteWriterSeveredDiskError occurs...": an alert that does not exist."""
    support = "PrometheusRemoteWriteDesiredShards: the StatefulSet's shards lag behind."
    guard = StreamGuard(support, prose_only=True, language="en", max_lines=3)
    shown = guard.feed(
        "The issue with PrometheusRemoteWriterSeveredDiskError occurs on disk.\n"
        "PrometheusRemoteWriteDesiredShards fires when the StatefulSet's shards lag.\n"
        "Check the API and CPU use.\n"
    )
    assert "Severed" not in shown and "DesiredShards fires" in shown and "CPU use" in shown
    assert guard.report.dropped == ["PrometheusRemoteWriterSeveredDiskError"]
    assert claims("the DaemonSet's pods, OOMKilled, API, kube-proxy, KubePodCrashLooping.") == [
        "DaemonSet",
        "KubePodCrashLooping",
    ]


def test_guard_holds_a_line_until_it_ends() -> None:
    guard = StreamGuard("x")
    assert guard.feed("Partial") == ""
    assert guard.feed(" line\n") == "Partial line\n"


# --- language and links ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("pod keeps restarting, what do I do?", "en"),
        ("под перезапускается, что делать с KubePodCrashLooping?", "ru"),
        ("почему `kubectl get pods -n payments --field-selector=status.phase=Pending` пусто", "ru"),
        ("etcd defrag", "en"),
    ],
)
def test_detect_language(text: str, language: str) -> None:
    assert detect_language(text) == language


def test_links_go_to_the_repository_when_the_runbooks_come_from_git() -> None:
    settings = Settings(
        runbooks_git_url="https://github.com/example/runbooks.git",
        runbooks_git_ref="v2",
        runbooks_git_subdir="content/runbooks",
    )
    url = SourceLinks(settings, "http://ignored").runbook(CRASH, "Diagnosis > CLI Checks")
    assert url == (
        "https://github.com/example/runbooks/blob/v2/content/runbooks/"
        "kubernetes/KubePodCrashLooping.md#cli-checks"
    )


def test_chat_server_links_are_signed_when_the_api_has_keys() -> None:
    settings = Settings(api_keys="k1,k2", public_url="https://ops.example.com/")
    links = SourceLinks(settings, "http://127.0.0.1:18000/")
    url = links.runbook(CRASH, "Diagnosis")
    path, _, rest = url.removeprefix("https://ops.example.com").partition("?sig=")
    signature, _, fragment = rest.partition("#")
    assert path == f"/v1/sources/runbooks/{CRASH}" and fragment == "diagnosis"
    assert signature_ok(link_key(settings), path, signature)
    assert not signature_ok(link_key(settings), "/v1/sources/runbooks/other.md", signature)
    assert "?sig=" not in SourceLinks(Settings(api_keys=""), "http://h/").runbook(CRASH, "")
    assert anchor("Slow Read Requests!") == "slow-read-requests"


# --- metrics --------------------------------------------------------------------------------------
CASE = AnswerCase(
    id="x",
    split="dev",
    lang="en",
    kind="short",
    question="pod restarts",
    cite=(CRASH,),
    sections=("Diagnosis",),
    facts=("kubectl -n $NAMESPACE describe pod $POD",),
    forbid=("kubectl delete deployment",),
)


def test_score_counts_unsupported_claims_missing_facts_and_bad_citations() -> None:
    text = (SHIPPED_RUNBOOKS / CRASH).read_text()
    good = "Run `kubectl -n $NAMESPACE describe pod $POD`. [1]\n\n**Sources**\n- [1] x"
    score = score_answer(CASE, good, {1: CRASH}, lambda s: text)
    assert (score.faithfulness, score.coverage, score.cited, score.citation_validity) == (
        1.0,
        1.0,
        True,
        1.0,
    )
    assert score.language_ok and not score.degenerate
    bad = "Run `kubectl delete deployment app` after 45 seconds. [2]"
    score = score_answer(CASE, bad, {1: CRASH}, lambda s: text)
    assert score.faithfulness == 0.0 and score.unsupported == [
        "kubectl delete deployment app",
        "45",
    ]
    assert score.coverage == 0.0 and score.forbidden == 1 and score.citation_validity == 0.0
    assert score_answer(CASE, good, {}, lambda s: "").cited is False
    named = "**CPUThrottlingHigh**: processes are throttled. [1]"
    throttling = "kubernetes/CPUThrottlingHigh.md"
    score = score_answer(CASE, named, {1: throttling}, lambda s: "# CPU Throttling High")
    assert score.faithfulness == 1.0 and score.citation_validity == 1.0  # its file's name
    score = score_answer(CASE, named, {1: CRASH}, lambda s: text)
    assert score.unsupported == ["CPUThrottlingHigh"] and score.citation_validity == 0.0
    assert score.warned is None  # a covered question


def test_an_uncovered_question_counts_as_warned_when_its_answer_says_so() -> None:
    from opsassist.chat.language import labels

    uncovered = AnswerCase(
        id="u", split="dev", lang="en", kind="uncovered", question="Terraform lock?",
        cite=(), sections=(), facts=(), forbid=(),
    )  # fmt: skip
    quoted = "**KubePodCrashLooping**: pods restart. [1]"
    notice = labels("en")["weak_match"].format(names="**Terraform**")
    cases = [(quoted, {1: CRASH}, False), (f"{notice}\n\n{quoted}", {1: CRASH}, True)]
    cases.append((labels("en")["not_covered"], {}, True))
    for answer, cited, warned in cases:
        assert score_answer(uncovered, answer, cited, lambda s: "pods restart").warned is warned


def test_degeneration_and_truncation_are_caught() -> None:
    assert degenerate("The answer to your question is:\n" * 5)
    assert degenerate(" ".join(["check the pod that is running a pod"] * 10))
    assert not degenerate((SHIPPED_RUNBOOKS / CRASH).read_text())
    score = score_answer(CASE, "short", {}, lambda s: "", finish_reason="length")
    assert score.degenerate and score.truncated


def test_the_test_split_is_frozen(tmp_path: Path) -> None:
    path = tmp_path / "answers.yaml"
    path.write_text(
        "questions:\n"
        "  - {id: a, split: dev, lang: en, kind: short, question: q1, cite: [], facts: []}\n"
        "  - {id: b, split: test, lang: en, kind: short, question: q2, cite: [], facts: []}\n"
    )
    freeze_test_split(path)
    assert len(load_answer_set(path)) == 2
    path.write_text(path.read_text().replace("q1", "q1 edited"))  # dev may change
    assert len(load_answer_set(path)) == 2
    path.write_text(path.read_text().replace("q2", "q2 edited"))
    with pytest.raises(FrozenSplitChanged):
        load_answer_set(path)


def test_the_shipped_answer_set_matches_its_frozen_test_split() -> None:
    from opsassist.settings import Settings as S

    cases = load_answer_set(S().evalsets_dir / "answers.yaml")
    assert len(cases) >= 60
    assert sum(c.lang == "ru" for c in cases) >= 20
    assert {c.split for c in cases} == {"dev", "test"}
    for case in cases:  # every fact is verbatim in one of the runbooks the answer must cite
        texts = [" ".join((SHIPPED_RUNBOOKS / s).read_text().split()).casefold() for s in case.cite]
        for fact in case.facts:
            assert any(" ".join(fact.split()).casefold() in t for t in texts), (case.id, fact)
        assert bool(case.cite) == (case.kind != "uncovered"), case.id

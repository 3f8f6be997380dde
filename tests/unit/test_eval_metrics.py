"""Evaluation metrics on hand-made rankings, evaluation-set files, relevance rules, the gate rule
and the contract of the shipped sets (sizes, languages, kinds, every runbook exists)."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest

from opsassist.evaluation.evalset import (
    DocRef,
    EvalSetError,
    applicable,
    load_evalset,
    parse_evalset,
    unmatched_rules,
)
from opsassist.evaluation.gate import decide
from opsassist.evaluation.metrics import (
    dedupe_sources,
    first_relevant_rank,
    ndcg_at_k,
    percentile,
    recall_at_k,
    reciprocal_rank,
)
from opsassist.evaluation.runner import QuestionResult, summarize
from opsassist.settings import PACKAGE_ROOT
from tests.conftest import SHIPPED_RUNBOOKS

EVALSETS = PACKAGE_ROOT / "evalsets"


# --- metrics ---------------------------------------------------------------------------------
def test_dedupe_keeps_each_document_at_its_best_rank() -> None:
    chunks = ["a.md", "b.md", "a.md", "c.md", "b.md", "d.md"]
    assert dedupe_sources(chunks) == ["a.md", "b.md", "c.md", "d.md"]


def test_recall_is_the_share_of_relevant_documents_in_the_top_k() -> None:
    ranking = ["x", "a", "y", "b", "z"]
    assert recall_at_k(ranking, {"a"}, 1) == 0.0
    assert recall_at_k(ranking, {"a"}, 3) == 1.0
    assert recall_at_k(ranking, {"a", "b"}, 3) == 0.5
    assert recall_at_k(ranking, {"a", "b"}, 5) == 1.0
    assert recall_at_k(["b", "x"], {"a", "b"}, 1) == 0.5
    assert recall_at_k([], {"a"}, 10) == 0.0
    # monotonic in k even with more relevant documents than k
    five = {"a", "b", "c", "d", "e"}
    ranked = ["a", "b", "c", "x", "d", "y", "e"]
    values = [recall_at_k(ranked, five, k) for k in (1, 3, 5, 10)]
    assert values == sorted(values) == [0.2, 0.6, 0.8, 1.0]


def test_reciprocal_rank_uses_the_first_relevant_document_within_k() -> None:
    assert reciprocal_rank(["a", "b"], {"a"}) == 1.0
    assert reciprocal_rank(["x", "y", "a"], {"a", "y"}) == 0.5
    assert reciprocal_rank([f"d{i}" for i in range(10)] + ["a"], {"a"}) == 0.0
    assert first_relevant_rank([f"d{i}" for i in range(10)] + ["a"], {"a"}) == 11
    assert first_relevant_rank(["x"], {"a"}) is None


def test_ndcg_against_hand_computed_values() -> None:
    assert ndcg_at_k(["a", "b"], {"a"}) == 1.0
    assert ndcg_at_k(["x", "a"], {"a"}) == pytest.approx(1 / math.log2(3))
    # relevant at ranks 1 and 3 of two relevant: (1 + 1/log2(4)) / (1 + 1/log2(3))
    expected = (1 + 0.5) / (1 + 1 / math.log2(3))
    assert ndcg_at_k(["a", "x", "b"], {"a", "b"}) == pytest.approx(expected)
    assert ndcg_at_k(["x", "y"], {"a"}) == 0.0


def test_metrics_refuse_bad_input() -> None:
    with pytest.raises(ValueError, match="relevant"):
        recall_at_k(["a"], set(), 5)
    with pytest.raises(ValueError, match="k must be"):
        ndcg_at_k(["a"], {"a"}, 0)


def test_percentile_interpolates() -> None:
    values = [10.0, 20.0, 30.0, 40.0]
    assert percentile(values, 50) == 25.0
    assert percentile(values, 0) == 10.0 and percentile(values, 100) == 40.0
    assert percentile([5.0], 95) == 5.0
    assert math.isnan(percentile([], 50))


def _result(item: str, mode: str, language: str, kind: str, ranking: list[str]) -> QuestionResult:
    relevant = {"a"}
    return QuestionResult(
        item_id=item,
        question=item,
        language=language,
        kind=kind,
        mode=mode,
        version="runbooks-v0001",
        relevant=("a",),
        ranking=tuple(ranking),
        first_relevant_rank=first_relevant_rank(ranking, relevant),
        latency_ms=10.0 if mode == "bm25" else 30.0,
        scores={"recall_at_5": recall_at_k(ranking, relevant, 5)},
    )


def test_summary_names_per_mode_language_and_kind() -> None:
    results = [
        _result("q1", "hybrid", "en", "terse", ["a"]),
        _result("q2", "hybrid", "ru", "incident", ["x"]),
        _result("q1", "bm25", "en", "terse", ["x"]),
        _result("q2", "bm25", "ru", "incident", ["a"]),
    ]
    metrics = summarize(results)
    assert metrics["hybrid.recall_at_5"] == 0.5
    assert metrics["hybrid.en.recall_at_5"] == 1.0 and metrics["hybrid.ru.recall_at_5"] == 0.0
    assert metrics["bm25.incident.recall_at_5"] == 1.0 and metrics["bm25.terse.recall_at_5"] == 0.0
    assert metrics["bm25.latency_p50_ms"] == 10.0 and metrics["hybrid.latency_p95_ms"] == 30.0
    assert metrics["questions"] == 2 and metrics["questions.en"] == 1
    assert metrics["questions.incident"] == 1


# --- evaluation-set files --------------------------------------------------------------------
SMALL = """
schema_version: 1
name: demo
version: 3
items:
  - {id: q1, question: pod restarts, relevant: [k/Crash.md], language: en, kind: terse}
  - id: q2
    question: namenode block allocation
    relevant: [{system: HDFS, template: 'allocateBlock'}]
    language: en
    kind: terse
"""


def test_parse_reads_items_rules_and_a_versioned_label() -> None:
    evalset = parse_evalset(SMALL)
    assert [item.id for item in evalset.items] == ["q1", "q2"]
    assert evalset.items[0].relevant[0].source == "k/Crash.md"
    assert evalset.items[1].relevant[0].system == "HDFS"
    assert evalset.label.startswith("demo@3+") and evalset.needs_templates
    assert parse_evalset(SMALL + "\n# edited\n").label != evalset.label  # content hash


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (SMALL.replace("schema_version: 1", "schema_version: 2"), "schema_version"),
        (SMALL.replace("kind: terse}", "kind: vague}"), "kind 'vague'"),
        (SMALL.replace("[k/Crash.md]", "[]"), "non-empty"),
        (SMALL.replace("id: q2", "id: q1"), "duplicate ids q1"),
        (SMALL.replace("'allocateBlock'", "'(unclosed'"), "bad template"),
        (SMALL.replace("question: pod restarts, ", ""), "missing question"),
    ],
)
def test_malformed_sets_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(EvalSetError, match=message):
        parse_evalset(text)


def test_applicable_keeps_only_questions_the_index_can_answer() -> None:
    evalset = parse_evalset(SMALL)
    docs = [
        DocRef("k/Crash.md"),
        DocRef("loghub/HDFS/1", "HDFS", "BLOCK* NameSystem.allocateBlock: <*>"),
        DocRef("loghub/Spark/2", "Spark", "allocateBlock in spark"),  # other system
    ]
    resolved = {a.item.id: a.relevant for a in applicable(evalset.items, docs)}
    assert resolved == {"q1": frozenset({"k/Crash.md"}), "q2": frozenset({"loghub/HDFS/1"})}
    assert [a.item.id for a in applicable(evalset.items, docs[1:])] == ["q2"]
    assert unmatched_rules(evalset, docs[1:]) == ["q1: k/Crash.md"]


# --- the gate rule ---------------------------------------------------------------------------
RULE = {
    "language": "en",
    "tolerance": 0.02,
    "floors": {"recall_at_5": 0.8, "mrr_at_10": 0.6},
    "min_questions": 20,
}
GOOD = {"hybrid.en.recall_at_5": 0.95, "hybrid.en.mrr_at_10": 0.90}


def test_gate_passes_within_tolerance_and_refuses_a_regression() -> None:
    within = {"hybrid.en.recall_at_5": 0.94, "hybrid.en.mrr_at_10": 0.885}
    decision = decide(within, GOOD, questions=50, baseline_version="runbooks-v0001", **RULE)
    assert decision.promote and decision.label == "promote"
    assert "no regression" in decision.reason and "runbooks-v0001" in decision.reason
    worse = {"hybrid.en.recall_at_5": 0.95, "hybrid.en.mrr_at_10": 0.85}
    refused = decide(worse, GOOD, questions=50, **RULE)
    assert not refused.promote and refused.label == "refuse"
    assert "hybrid.en.mrr_at_10 0.850 vs 0.900" in refused.reason
    assert "recall_at_5" not in refused.reason  # only the metric that dropped is named


def test_gate_first_build_uses_floors_and_small_sets_are_not_judged() -> None:
    assert decide(GOOD, None, questions=50, **RULE).promote
    low = {"hybrid.en.recall_at_5": 0.7, "hybrid.en.mrr_at_10": 0.9}
    refused = decide(low, None, questions=50, **RULE)
    assert not refused.promote and "below floors" in refused.reason
    tiny = decide({}, None, questions=7, **RULE)  # a first build nothing could check
    assert not tiny.promote and tiny.reason.startswith("first build not judged: too few")
    assert "OPSASSIST_GATE_ALLOW_UNJUDGED_FIRST_BUILD" in tiny.reason
    allowed = decide({}, None, questions=7, **RULE, allow_unjudged_first=True)
    assert allowed.promote and allowed.reason.startswith("too few applicable questions")
    none = decide({}, GOOD, questions=0, **(RULE | {"min_questions": 0}))
    assert none.promote and "too few" in none.reason


# --- the shipped sets ------------------------------------------------------------------------
def test_runbook_set_covers_the_corpus_in_both_languages() -> None:
    evalset = load_evalset(EVALSETS, "runbooks")
    items = evalset.items
    languages = Counter(item.language for item in items)
    kinds = Counter(item.kind for item in items)
    assert len(items) >= 60 and languages["ru"] >= 10
    assert set(kinds) == {"paraphrase", "terse", "incident", "symptom"}
    assert min(kinds.values()) >= 10
    test = [item for item in items if item.split == "test"]  # frozen: written before tuning
    assert len(test) >= 50 and sum(item.language == "ru" for item in test) >= 25
    assert {item.split for item in items} == {"dev", "test"}
    sources = {rule.source for item in items for rule in item.relevant}
    for source in sources:
        assert source and (SHIPPED_RUNBOOKS / source).is_file(), f"{source} is not a runbook"
    folders = {p.parent.name for p in SHIPPED_RUNBOOKS.glob("*/*.md") if p.name != "_index.md"}
    assert {Path(s).parts[0] for s in sources if s} == folders  # every folder is asked about
    assert len(sources) >= 80


def test_signal_set_uses_rules_not_ids() -> None:
    evalset = load_evalset(EVALSETS, "signals")
    assert len(evalset.items) >= 20 and evalset.needs_templates
    assert all(rule.system and rule.template for item in evalset.items for rule in item.relevant)
    assert {rule.system for item in evalset.items for rule in item.relevant} == {
        "Apache",
        "HDFS",
        "Hadoop",
        "Linux",
        "OpenSSH",
        "OpenStack",
        "Spark",
        "Zookeeper",
    }


def test_an_edited_test_question_is_refused(tmp_path: Path) -> None:
    from opsassist.evaluation.evalset import FrozenSplitChanged, freeze_test_split

    text = (EVALSETS / "runbooks.yaml").read_text()
    (tmp_path / "runbooks.yaml").write_text(text)
    freeze_test_split(tmp_path / "runbooks.yaml")
    assert len(load_evalset(tmp_path, "runbooks").items) == len(
        load_evalset(EVALSETS, "runbooks").items
    )
    edited = text.replace(
        "rbn-001\n    split: test\n    question: >-\n",
        "rbn-001\n    split: test\n    question: >-\n      Edited. ",
        1,
    )
    assert edited != text
    (tmp_path / "runbooks.yaml").write_text(edited)
    with pytest.raises(FrozenSplitChanged):
        load_evalset(tmp_path, "runbooks")
    # the shipped set matches its frozen digest (a test question edited by mistake fails here)
    assert (EVALSETS / "runbooks.test.sha256").exists()


def test_the_gate_judges_each_language_and_refuses_a_build_that_breaks_russian() -> None:
    from opsassist.evaluation.gate import decide_languages

    rule = {k: v for k, v in RULE.items() if k != "language"}
    promoted = GOOD | {"hybrid.ru.recall_at_5": 0.80, "hybrid.ru.mrr_at_10": 0.70}
    better_en_worse_ru = {
        "hybrid.en.recall_at_5": 0.99,
        "hybrid.en.mrr_at_10": 0.95,
        "hybrid.ru.recall_at_5": 0.60,
        "hybrid.ru.mrr_at_10": 0.70,
    }
    counts = {"en": 50, "ru": 30}
    refused = decide_languages(
        better_en_worse_ru, promoted, questions=counts, languages=["en", "ru"], **rule
    )
    assert not refused.promote
    assert (
        "ru: regression" in refused.reason
        and "hybrid.ru.recall_at_5 0.600 vs 0.800" in refused.reason
    )
    assert "en: no regression" in refused.reason
    fine = decide_languages(promoted, promoted, questions=counts, languages=["en", "ru"], **rule)
    assert fine.promote and fine.questions == 80
    # a first build faces the floors in the first language only
    first = decide_languages(
        better_en_worse_ru, None, questions=counts, languages=["en", "ru"], **rule
    )
    assert first.promote
    few_ru = decide_languages(
        better_en_worse_ru, promoted, questions={"en": 50, "ru": 3}, languages=["en", "ru"], **rule
    )
    assert few_ru.promote and "ru: too few applicable questions" in few_ru.reason


def test_the_cli_metrics_table_fits_100_columns_with_every_number_whole() -> None:
    """Groups as rows (all, languages, kinds, each split and its languages), three decimals,
    no number cut to an ellipsis in a 100-column terminal."""
    import io

    from rich.console import Console

    from opsassist.cli import METRIC_COLUMNS, metrics_table

    metrics: dict[str, float] = {}
    groups = [("", 204), ("en", 139), ("ru", 65), ("incident", 53), ("test", 59), ("test.ru", 30)]
    for mode in ("hybrid", "bm25", "vector"):
        metrics[f"{mode}.latency_p50_ms"] = 1234.5
        metrics[f"{mode}.latency_p95_ms"] = 98765.4
        for group, _ in groups:
            prefix = f"{mode}.{group}." if group else f"{mode}."
            for index, name in enumerate(METRIC_COLUMNS):
                metrics[prefix + name] = 0.123456 + index / 10
    out = io.StringIO()
    Console(file=out, width=100, color_system=None).print(
        metrics_table(metrics, ("hybrid", "bm25", "vector"), groups)
    )
    text = out.getvalue()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100 and "…" not in text
    row = next(
        line.split() for line in lines if line.strip().startswith("test/ru") and "hybrid" in line
    )
    assert row == ["test/ru", "hybrid", "30", "0.123", "0.223", "0.323", "0.423", "0.523", "0.623"]
    assert any(line.split()[-2:] == ["1234", "98765"] for line in lines)  # latency on "all"

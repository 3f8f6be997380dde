"""The glossaries that widen a question's keyword search: Russian words and concept phrases."""

from __future__ import annotations

import re
import time

import pytest

from opsassist.glossary import concept_terms, expand_query, load_glossary, parse_concepts


def test_russian_words_add_their_english_terms_once() -> None:
    expanded = expand_query("под постоянно перезапускается, поды падают после перезапуска ноды")
    assert expanded.startswith("под постоянно перезапускается")
    added = expanded.split(", поды падают после перезапуска ноды ", 1)[1].split()
    assert {"pod", "restart", "node", "pods", "crash"} <= set(added)
    assert added.count("restart") == 1  # each term list once


def test_questions_without_russian_words_or_concepts_are_unchanged() -> None:
    question = "kubectl describe deployment payments shows the image tag v2"
    assert expand_query(question) == question


def test_the_longest_stem_wins() -> None:
    stems = [stem for stem, _ in load_glossary()]
    assert stems == sorted(stems, key=len, reverse=True)
    assert "inodes" in expand_query("кончились иноды")  # иноды, not инод


def test_every_stem_can_match_a_russian_word() -> None:
    stems = [stem for stem, _ in load_glossary()]
    assert all(re.fullmatch("[а-я]{3,}", stem) for stem in stems), [
        stem for stem in stems if not re.fullmatch("[а-я]{3,}", stem)
    ]


def test_no_concept_phrase_is_listed_twice() -> None:
    from collections import Counter

    from opsassist.glossary import _glossary_text

    phrases = Counter(
        phrase.strip()
        for line in _glossary_text("concepts.tsv").splitlines()
        if line.strip() and not line.startswith("#")
        for phrase in line.partition("\t")[0].split("|")
    )
    assert [phrase for phrase, count in phrases.items() if count > 1] == []


def test_yo_and_ye_spellings_are_one_word() -> None:
    assert expand_query("очередь растёт") == "очередь растёт queue growing increase high"
    assert expand_query("очередь растет").endswith(" queue growing increase high")
    assert "expired" in expand_query("сертификат истек")  # the glossary spells it истёк
    stems = [stem for stem, _ in load_glossary()]
    assert len(stems) == len(set(stems)) and not any("ё" in stem for stem in stems)


@pytest.mark.parametrize(
    ("question", "term"),
    [
        ("прометей не видит цели", "prometheus"),
        ("кублет на ноде не отвечает", "kubelet"),
        ("оом на подах после релиза", "oom"),
        ("в пространстве имён кончаются ресурсы", "namespace"),
        ("сертификат клиента не продлевается", "renewal"),
    ],
)
def test_spoken_and_transliterated_names_find_their_english_term(question: str, term: str) -> None:
    assert term in expand_query(question)[len(question) :].split()


@pytest.mark.parametrize(
    ("question", "terms"),
    [
        ("the cluster's key-value store is close to its size limit", "etcd"),
        ("is our dead man's switch still reaching the pager?", "watchdog"),
        ("постоянно горящий алерт перестал приходить", "watchdog"),
        ("samples arrive out of order", "timestamps samples"),
        ("the key value store lost quorum", "etcd"),
        ("pods get OOMKilled under load", "memory"),  # a stem: oom*
        ("nothing reaches PagerDuty any more", "alertmanager notifications"),
        ("из трёх экземпляров рассылки уведомлений работает один", "alertmanager notifications"),
        ("агент на каждой ноде не запустился", "kubelet"),
    ],
)
def test_a_phrase_that_describes_a_component_adds_its_name(question: str, terms: str) -> None:
    assert terms in concept_terms(question)
    assert expand_query(question).startswith(question)
    assert terms in expand_query(question)[len(question) :]


def test_phrases_match_whole_words_only() -> None:
    assert "etcd" not in concept_terms("the craft of on-call")  # not "raft"
    assert concept_terms("a bicycle") == []  # "cycle" is no concept, and no partial words
    assert "raid degraded disk" not in concept_terms("a raider")  # "raid" is exact, not a stem


def test_each_concept_is_added_once_in_order_of_appearance() -> None:
    found = concept_terms("raft raft; then OOMKilled, then raft again")
    assert found == ["etcd", "memory"]


def test_a_malformed_concepts_file_is_refused_with_its_line() -> None:
    with pytest.raises(ValueError, match="line 2: no terms"):
        parse_concepts("# comment\nkey value store\n")
    with pytest.raises(ValueError, match="too short"):
        parse_concepts("o*\tx\n")


def test_matching_is_linear_on_hostile_input() -> None:
    """Correctness bound only (the speed figure is benchmarks/adversarial_parsers.py): 100k
    characters of near-miss words finish in well under a second."""
    hostile = "key value key value stor " * 4000
    start = time.perf_counter()
    assert concept_terms(hostile) == []
    assert time.perf_counter() - start < 1.0

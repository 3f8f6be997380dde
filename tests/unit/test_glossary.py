"""The Russian -> English operations glossary that widens a Russian question's keyword search."""

from __future__ import annotations

from opsassist.glossary import expand_query, load_glossary


def test_russian_words_add_their_english_terms_once() -> None:
    expanded = expand_query("под постоянно перезапускается, поды падают после перезапуска ноды")
    assert expanded.startswith("под постоянно перезапускается")
    added = expanded.split(", поды падают после перезапуска ноды ", 1)[1].split()
    assert {"pod", "restart", "node", "pods", "crash"} <= set(added)
    assert added.count("restart") == 1  # each term list once


def test_questions_without_russian_words_are_unchanged() -> None:
    question = "pod keeps restarting, kubectl describe pod shows OOMKilled"
    assert expand_query(question) == question


def test_the_longest_stem_wins() -> None:
    stems = [stem for stem, _ in load_glossary()]
    assert stems == sorted(stems, key=len, reverse=True)
    assert "inodes" in expand_query("кончились иноды")  # иноды, not инод

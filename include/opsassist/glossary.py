"""Keyword search across languages and wordings: the terms a question's words stand for are
added to its BM25 query.

Two hand-written glossaries, both data:
- ``glossaries/ru.tsv``: a Russian word adds its English operations terms ("под постоянно
  перезапускается" also matches "pod ... restart"); a word takes the terms of the longest stem
  it starts with.
- ``glossaries/concepts.tsv``: a phrase that describes a component without naming it adds the
  component's name ("the cluster's key-value store" adds "etcd", "рассылка уведомлений" adds
  "alertmanager notifications"). Phrases are matched as whole words; a ``*`` ends a stem.

Both were written from general Kubernetes, Prometheus, etcd and Linux vocabulary, not from
evaluation questions. The multilingual embedding already finds runbooks by meaning; keyword
search needs the runbooks' own words. The vector search is unchanged: only the lexical list gets
the added terms (``FusionConfig.expand_lexical``). Matching is one pass over the question's
words (linear in its length, whatever it contains).
"""

from __future__ import annotations

import dataclasses
import re
from collections import defaultdict
from functools import lru_cache
from importlib import resources

_WORD = re.compile(r"[а-яё]+")
_TOKEN = re.compile(r"[0-9a-zа-я_']+")
_BUCKET = 3  # phrases are found by the first characters of their first word


@dataclasses.dataclass(frozen=True, slots=True)
class Phrase:
    words: tuple[tuple[str, bool], ...]  # (word, is a stem)
    terms: str

    def matches(self, tokens: list[str], start: int) -> bool:
        if start + len(self.words) > len(tokens):
            return False
        for offset, (word, stem) in enumerate(self.words):
            token = tokens[start + offset]
            if not (token.startswith(word) if stem else token == word):
                return False
        return True


def _glossary_text(name: str) -> str:
    return resources.files("opsassist").joinpath("glossaries", name).read_text("utf-8")


@lru_cache(maxsize=4)
def load_glossary(language: str = "ru") -> tuple[tuple[str, str], ...]:
    """(stem, English terms) pairs, longest stem first."""
    pairs = []
    for line in _glossary_text(f"{language}.tsv").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        stem, _, terms = line.partition("\t")
        if stem.strip() and terms.strip():
            pairs.append((_normalise(stem.strip()), terms.strip()))
    unique = dict(reversed(pairs))  # after ё -> е a stem may be listed twice: the first one wins
    return tuple(sorted(unique.items(), key=lambda pair: -len(pair[0])))


def _normalise(text: str) -> str:
    return text.lower().replace("ё", "е")


def parse_concepts(text: str) -> tuple[Phrase, ...]:
    """Phrases of a concepts file (``phrase|phrase<TAB>terms`` per line)."""
    phrases: list[Phrase] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        alternatives, _, terms = line.partition("\t")
        if not terms.strip():
            raise ValueError(f"concepts line {number}: no terms after a tab")
        for alternative in alternatives.split("|"):
            words: list[tuple[str, bool]] = []
            for raw in alternative.strip().split():
                stem = raw.endswith("*")
                pieces = _TOKEN.findall(_normalise(raw.rstrip("*")))
                words += [(piece, False) for piece in pieces[:-1]]
                if pieces:
                    words.append((pieces[-1], stem))
            if not words:
                raise ValueError(f"concepts line {number}: empty phrase")
            if words[0][1] and len(words[0][0]) < _BUCKET:
                raise ValueError(f"concepts line {number}: stem {words[0][0]!r} too short")
            phrases.append(Phrase(tuple(words), terms.strip()))
    return tuple(phrases)


@lru_cache(maxsize=1)
def _concepts() -> dict[str, tuple[Phrase, ...]]:
    buckets: dict[str, list[Phrase]] = defaultdict(list)
    for phrase in parse_concepts(_glossary_text("concepts.tsv")):
        buckets[phrase.words[0][0][:_BUCKET]].append(phrase)
    return {key: tuple(value) for key, value in buckets.items()}


def concept_terms(text: str) -> list[str]:
    """The terms of every concept phrase in ``text``, each list once, in order of appearance."""
    buckets = _concepts()
    tokens = _TOKEN.findall(_normalise(text))
    found: list[str] = []
    for start, token in enumerate(tokens):
        for phrase in buckets.get(token[:_BUCKET], ()):
            if phrase.terms not in found and phrase.matches(tokens, start):
                found.append(phrase.terms)
    return found


@lru_cache(maxsize=4)
def _stems_by_prefix(language: str = "ru") -> dict[str, tuple[tuple[str, str], ...]]:
    """:func:`load_glossary`'s pairs by their stem's first letters, longest stem first."""
    buckets: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for stem, terms in load_glossary(language):
        if len(stem) < _BUCKET:
            raise ValueError(f"glossary {language}: stem {stem!r} shorter than {_BUCKET} letters")
        buckets[stem[:_BUCKET]].append((stem, terms))
    return {key: tuple(value) for key, value in buckets.items()}


def russian_terms(text: str) -> list[str]:
    """The English terms of ``text``'s Russian words, each list once."""
    stems = _stems_by_prefix("ru")
    added: list[str] = []
    for word in _WORD.findall(_normalise(text)):
        for stem, terms in stems.get(word[:_BUCKET], ()):
            if word.startswith(stem):
                if terms not in added:
                    added.append(terms)
                break
    return added


def glossary_terms(text: str) -> list[str]:
    """The terms ``text``'s Russian words and then its concept phrases stand for, each once."""
    added = russian_terms(text)
    added += [terms for terms in concept_terms(text) if terms not in added]
    return added


def expand_query(text: str) -> str:
    """``text`` followed by :func:`glossary_terms` (unchanged without any)."""
    added = glossary_terms(text)
    return f"{text} {' '.join(added)}" if added else text

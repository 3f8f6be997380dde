"""Keyword search across languages: a Russian question's words add their English operations
terms to its BM25 query, so "под постоянно перезапускается" also matches "pod ... restart".

The multilingual embedding finds English runbooks for a Russian question by meaning; keyword
search needs the runbooks' own words. The glossary (``glossaries/ru.tsv``: a stem, a tab, the
English terms) is data, written by hand from general Kubernetes, Prometheus and Linux vocabulary;
a word takes the terms of the longest stem it starts with. The vector search is unchanged: only
the lexical list gets the added terms (``FusionConfig.expand_lexical``).
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources

_WORD = re.compile(r"[а-яё]+")


@lru_cache(maxsize=4)
def load_glossary(language: str = "ru") -> tuple[tuple[str, str], ...]:
    """(stem, English terms) pairs, longest stem first."""
    text = resources.files("opsassist").joinpath("glossaries", f"{language}.tsv").read_text("utf-8")
    pairs = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        stem, _, terms = line.partition("\t")
        if stem.strip() and terms.strip():
            pairs.append((stem.strip().lower(), terms.strip()))
    return tuple(sorted(pairs, key=lambda pair: -len(pair[0])))


def expand_query(text: str) -> str:
    """``text`` followed by the English terms of its Russian words (unchanged without any)."""
    glossary = load_glossary("ru")
    added: list[str] = []
    for word in _WORD.findall(text.lower()):
        for stem, terms in glossary:
            if word.startswith(stem):
                if terms not in added:
                    added.append(terms)
                break
    return f"{text} {' '.join(added)}" if added else text

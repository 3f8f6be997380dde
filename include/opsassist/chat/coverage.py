"""Does the nearest runbook really cover the question? A weak match is said so, not hidden.

Retrieval always returns its nearest runbook. For a question about a system no runbook is
about ("HashiCorp Vault sealed itself after a node restart"), the nearest one
(KubeletServerCertificateExpiration) would be quoted as if it were the answer. The signals
that tell such a question from a covered one are weak on their own (incident narratives also
name products the runbooks never mention, and symptom-only questions are far in meaning), so a
weak match is not refused: the answer quotes the nearest runbook under a notice naming what no
runbook mentions. All three must hold (chosen on the answer set's dev questions):

- the question names something (``Terraform``, ``RabbitMQ``: a word with a capital that is no
  everyday English word) that no runbook mentions, neither as a word nor as the parts of a
  CamelCase name;
- at most a fifth of its content words appear in the nearest runbook;
- no runbook hit is close in meaning (cosine below ``OPSASSIST_CHAT_WEAK_MATCH_SIMILARITY``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from functools import lru_cache
from pathlib import Path
from typing import Any

from opsassist.chat.rewrite import STOPWORDS
from opsassist.documents import SearchHit

MAX_SHARE_IN_NEAREST = 0.2  # of the question's content words found in the nearest runbook
_LATIN = re.compile(r"[A-Za-z][A-Za-z0-9]+")
_WORD = re.compile(r"[a-z][a-z0-9]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def _words(text: str) -> set[str]:
    """Lower-case words of ``text``, CamelCase names also split into their parts."""
    return set(_WORD.findall(text.lower())) | _camel_parts(text)


def _camel_parts(word: str) -> set[str]:
    return set(_WORD.findall(_CAMEL.sub(" ", word).lower()))


def entry_words(entry: Mapping[str, Any]) -> set[str]:
    """The words of one knowledge-pack entry: title, alert name and every block."""
    parts = [str(entry.get("title", "")), str(entry.get("alert", "")), str(entry.get("source", ""))]
    for section in entry.get("sections", []):
        parts.extend(str(p) for p in section.get("path", []))
        parts.extend(str(block.get("text", "")) for block in section.get("blocks", []))
    return _words("\n".join(parts))


def vocabulary(pack: Mapping[str, Mapping[str, Any]]) -> frozenset[str]:
    """Every word any runbook of the pack uses."""
    words: set[str] = set()
    for entry in pack.values():
        words |= entry_words(entry)
    return frozenset(words)


def content_words(question: str) -> list[str]:
    """The question's Latin-script content words, and for a Russian question the English terms
    the glossaries give for its words (what a runbook, written in English, could contain)."""
    found = [w for w in _LATIN.findall(question) if len(w) > 2 and w.lower() not in STOPWORDS]
    if re.search(r"[А-Яа-яЁё]", question):
        from opsassist.glossary import glossary_terms

        found.extend(w for w in glossary_terms(question) if w.lower() not in STOPWORDS)
    return found


@lru_cache(maxsize=1)
def english_words() -> frozenset[str]:
    """Whole words of MiniLM's (uncased BERT) vocabulary: an everyday word there (``Monday``,
    ``Product``) starting a sentence is no product name; ``terraform``, ``rabbitmq``, ``istio``
    are not in it."""
    from opsassist.embedding import MINILM_MODEL, resolve_model_path

    try:
        text = (Path(resolve_model_path(MINILM_MODEL)) / "vocab.txt").read_text("utf-8")
    except (OSError, RuntimeError):
        return frozenset()
    return frozenset(w for w in text.split() if w.isalpha() and w.islower())


def unknown_names(question: str, known: AbstractSet[str]) -> list[str]:
    """Names in the question that no runbook mentions, in order: words with a capital that are
    not everyday English words (unless written in mixed case: ``RabbitMQ``, ``HashiCorp``)."""
    everyday = english_words()
    names: list[str] = []
    for word in _LATIN.findall(question):
        if len(word) < 3 or word.islower() or word.lower() in STOPWORDS or word in names:
            continue
        mixed = any(c.isupper() for c in word[1:]) and not word.isupper()
        if not mixed and word.lower() in everyday:
            continue
        if word.lower() not in known and not _camel_parts(word) <= known:
            names.append(word)
    return names


def weak_match(
    question: str,
    hits: Sequence[SearchHit],
    pack: Mapping[str, Mapping[str, Any]],
    known: frozenset[str],
    min_similarity: float,
) -> list[str]:
    """The names no runbook mentions when the nearest runbook is a weak match for the question
    (see the module docstring); empty when it is not."""
    runbooks = [h for h in hits if h.source_type == "runbook"]
    if not runbooks:
        return []
    if max((h.vector_score or 0.0) for h in runbooks) >= min_similarity:
        return []
    names = unknown_names(question, known)
    if not names:
        return []
    nearest = entry_words(pack.get(runbooks[0].source, {}))
    words = [w.lower() for w in content_words(question)]
    share = sum(w in nearest for w in words) / len(words) if words else 0.0
    return names if share <= MAX_SHARE_IN_NEAREST else []

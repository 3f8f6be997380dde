"""Follow-up questions rewritten into standalone queries, before retrieval and the cache lookup.

"and how do I fix it?" after "why does my pod keep crash looping?" must retrieve the crash-loop
runbook, and must not share a cache entry with the same words asked after an etcd question.

Choice: a deterministic rewrite, not a model call. A follow-up (it starts with a connective such
as "and"/"what about", or leans on a pronoun and has few terms of its own) gets the key terms of
the previous user turn (itself rewritten first) prepended. With a 135M-parameter model a model
rewrite is unreliable (it drifts or answers instead of rewriting) and would add a whole generation
before retrieval; this rule is predictable, testable and free.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_./:-]*")
_CONNECTIVE = re.compile(
    r"^\s*(and|also|then|so|but|ok|okay|what about|how about|what if)\b[\s,]*",
    re.IGNORECASE,
)
_ANAPHORA = {"it", "its", "that", "this", "they", "them", "those", "these", "there", "one", "same"}
_STOPWORDS_TEXT = """
    a about after again all am an and any are as at be because been before being but by can
    could did do does doing done during each few for from further get gets getting got had has
    have having he her here hers him his how i if in into is it its itself just keep keeps
    kept let me might more most my myself no nor not now of off on once only or other our out
    over own please same she should so some such than that the their them then there these
    they this those through to too under until up very was we were what when where which while
    who whom why will with would you your yours also still really ok okay tell show explain
    fix fixed fixing happen happening happened going need needs one thing things
"""
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())
MAX_TERMS = 8


def words(text: str) -> list[str]:
    return [w.lower().strip(".:-/") for w in _WORD.findall(text)]


def key_terms(text: str, limit: int = MAX_TERMS) -> list[str]:
    """Content words in order of appearance, without stop words or repeats."""
    seen: list[str] = []
    for word in words(text):
        if word and word not in STOPWORDS and word not in seen and len(word) > 1:
            seen.append(word)
    return seen[:limit]


def is_follow_up(question: str) -> bool:
    """Does the question lean on the previous turn? (Only meaningful when there is one.)"""
    if _CONNECTIVE.match(question):
        return True
    tokens = words(question)
    own_terms = key_terms(question)
    return bool(_ANAPHORA.intersection(tokens)) and len(own_terms) <= 2


def standalone_question(user_turns: Sequence[str]) -> str:
    """The last user turn as a standalone query, given the user turns of the conversation."""
    if not user_turns:
        return ""
    standalone = user_turns[0].strip()
    for turn in user_turns[1:]:
        question = turn.strip()
        if is_follow_up(question):
            context = " ".join(
                t for t in key_terms(standalone) if t not in set(key_terms(question))
            )
            body = _CONNECTIVE.sub("", question, count=1).strip() or question
            standalone = f"{context}: {body}" if context else body
        else:
            standalone = question
    return standalone

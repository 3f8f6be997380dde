"""Answer quality, measured without a judge model: the set, its frozen test split, and the
metrics of one answer.

The set (``evalsets/answers.yaml``) gives per question the runbooks an answer must cite, the
facts it must contain (verbatim strings: commands, PromQL, metric names) and strings it must
not contain. The test split is frozen: its SHA-256 is kept beside the set
(``answers.test.sha256``) and :func:`load_answer_set` refuses a set whose test split no longer
matches it.

Per answer:
- **faithfulness**: the share of its checkable claims (inline code, each line of a code block,
  numbers in its prose) that appear in the text of the sources it cites or in the question;
- **coverage**: the share of the question's facts it contains; **forbidden**: how many of the
  forbidden strings it contains;
- **cited**: whether it cites one of the expected runbooks (for a question the corpus does not
  cover: whether it cites no runbook); **citation validity**: the share of its ``[n]`` markers
  that point to a listed source whose text holds that line's claims;
- **degenerate**: cut by the token limit, a line repeated three times, or over a third of its
  word 4-grams repeats;
- **language**: whether the answer's own words (headings, sentences it writes; not quotes from
  the runbooks, not code) are in the question's language, and the share of all its prose in that
  language.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from opsassist.chat.citations import without_sources
from opsassist.chat.claims import claims, contains, normalise
from opsassist.chat.language import Language, detect_language
from opsassist.evaluation.evalset import check_frozen

_FENCE = re.compile(r"^\s*(?:>\s*)*(```|~~~)")
_INLINE_CODE = re.compile(r"`([^`\n]+)`")
_CITATION = re.compile(r"\[(\d{1,3})\]")
_WORD = re.compile(r"\w+", re.UNICODE)
_QUOTE = re.compile(r"^\s*>")


@dataclasses.dataclass(frozen=True, slots=True)
class AnswerCase:
    id: str
    split: str
    lang: Language
    kind: str
    question: str
    cite: tuple[str, ...]
    sections: tuple[str, ...]
    facts: tuple[str, ...]
    forbid: tuple[str, ...]

    @property
    def covered(self) -> bool:
        return bool(self.cite)


@dataclasses.dataclass(slots=True)
class AnswerScore:
    faithfulness: float
    coverage: float | None  # None: the question has no facts (uncovered)
    forbidden: int
    cited: bool
    citation_validity: float | None  # None: no [n] marker
    degenerate: bool
    truncated: bool
    language_ok: bool
    language_share: float
    unsupported: list[str] = dataclasses.field(default_factory=list)
    missing: list[str] = dataclasses.field(default_factory=list)
    # uncovered questions only: the answer says not covered or that its match is weak
    warned: bool | None = None


def load_answer_set(path: Path) -> list[AnswerCase]:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    questions: list[dict[str, Any]] = raw["questions"]
    check_frozen(path, questions)
    return [
        AnswerCase(
            id=q["id"],
            split=q["split"],
            lang=q["lang"],
            kind=q["kind"],
            question=q["question"],
            cite=tuple(q.get("cite") or ()),
            sections=tuple(q.get("sections") or ()),
            facts=tuple(q.get("facts") or ()),
            forbid=tuple(q.get("forbid") or ()),
        )
        for q in questions
    ]


def degenerate(answer: str) -> bool:
    """In the answer's prose (code blocks, inline code and citations left out: a quoted PromQL
    query legitimately repeats itself), a line repeated three times or more, or over a third of
    the word 4-grams repeated."""
    text = prose(answer, own_words_only=False)
    lines = [normalise(line) for line in text.splitlines() if len(line.strip()) > 12]
    if lines and Counter(lines).most_common(1)[0][1] >= 3:
        return True
    words = _WORD.findall(normalise(text))
    grams = [tuple(words[i : i + 4]) for i in range(len(words) - 3)]
    if len(grams) < 12:
        return False
    repeated = sum(count - 1 for count in Counter(grams).values() if count > 1)
    return repeated / len(grams) > 1 / 3


def prose(answer: str, own_words_only: bool) -> str:
    """The answer's prose: no code, no citations, no sources list (and no quoted lines when
    ``own_words_only``)."""
    out: list[str] = []
    in_fence = False
    for line in without_sources(answer).splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence or (own_words_only and _QUOTE.match(line)):
            continue
        out.append(_CITATION.sub(" ", _INLINE_CODE.sub(" ", line)))
    return "\n".join(out)


def language_share(text: str, language: Language) -> float:
    """The share of the letters of ``text`` in the script of ``language``."""
    cyrillic = len(re.findall(r"[А-Яа-яЁё]", text))
    latin = len(re.findall(r"[A-Za-z]", text))
    total = cyrillic + latin
    if total == 0:
        return 1.0
    return (cyrillic if language == "ru" else latin) / total


def score_answer(
    case: AnswerCase,
    answer: str,
    cited_sources: dict[int, str],
    source_text: Callable[[str], str],
    finish_reason: str = "stop",
) -> AnswerScore:
    """Score ``answer``; ``cited_sources`` maps each citation number to its runbook or signal
    source, ``source_text(source)`` gives that source's full text."""
    # a source's name is part of it: an answer may name the runbook (``CPUThrottlingHigh``)
    texts = {n: f"{source}\n{source_text(source)}" for n, source in cited_sources.items()}
    support = "\n".join([*texts.values(), case.question])
    answer_claims = claims(answer)
    unsupported = [c for c in answer_claims if not contains(support, c)]
    faithfulness = 1.0 - len(unsupported) / len(answer_claims) if answer_claims else 1.0
    missing = [f for f in case.facts if not contains(answer, f)]
    coverage = 1.0 - len(missing) / len(case.facts) if case.facts else None
    forbidden = sum(1 for f in case.forbid if contains(answer, f))
    runbooks_cited = {s for s in cited_sources.values() if s.endswith(".md")}
    cited = bool(runbooks_cited & set(case.cite)) if case.covered else not runbooks_cited
    own = prose(answer, own_words_only=True)
    return AnswerScore(
        faithfulness=faithfulness,
        coverage=coverage,
        forbidden=forbidden,
        cited=cited,
        citation_validity=citation_validity(answer, texts),
        degenerate=degenerate(answer) or finish_reason == "length",
        truncated=finish_reason == "length",
        language_ok=detect_language(own) == case.lang if own.strip() else False,
        language_share=language_share(prose(answer, own_words_only=False), case.lang),
        unsupported=unsupported,
        missing=missing,
        warned=None if case.covered else (not runbooks_cited or weak_notice(answer, case.lang)),
    )


def weak_notice(answer: str, language: Language) -> bool:
    """Does the answer open with the weak-match notice (:mod:`opsassist.chat.coverage`)?"""
    from opsassist.chat.language import labels

    return answer.lstrip().startswith(labels(language)["weak_match"].split("{names}")[0])


def citation_validity(answer: str, texts: dict[int, str]) -> float | None:
    """The share of ``[n]`` markers that name a listed source holding that line's claims."""
    checked = valid = 0
    for line in without_sources(answer).splitlines():
        numbers = [int(n) for n in _CITATION.findall(line)]
        if not numbers:
            continue
        line_claims = claims(line)
        for number in numbers:
            checked += 1
            text = texts.get(number)
            if text is not None and all(contains(text, c) for c in line_claims):
                valid += 1
    return valid / checked if checked else None


def mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def summarize(scores: Sequence[AnswerScore]) -> dict[str, float | None]:
    """Means (and counts) over a group of scored answers."""
    return {
        "n": float(len(scores)),
        "faithfulness": mean(s.faithfulness for s in scores),
        "coverage": mean(s.coverage for s in scores),
        "cited": mean(float(s.cited) for s in scores),
        "citation_validity": mean(s.citation_validity for s in scores),
        "forbidden": float(sum(s.forbidden for s in scores)),
        "degenerate": float(sum(s.degenerate for s in scores)),
        "language_match": mean(float(s.language_ok) for s in scores),
        "language_share": mean(s.language_share for s in scores),
        "uncovered_warned": mean(None if s.warned is None else float(s.warned) for s in scores),
    }


# --- running the set through the chat pipeline ---------------------------------------------------
@dataclasses.dataclass(slots=True)
class AnswerResult:
    case: AnswerCase
    mode: str
    answer: str
    score: AnswerScore
    first_piece_s: float  # from the question to the first piece of the answer (prep included)
    total_s: float
    finish_reason: str
    degraded: str | None
    citations: dict[int, str]

    def row(self) -> dict[str, Any]:
        s = self.score
        return {
            "id": self.case.id,
            "split": self.case.split,
            "lang": self.case.lang,
            "kind": self.case.kind,
            "mode": self.mode,
            "faithfulness": round(s.faithfulness, 3),
            "coverage": None if s.coverage is None else round(s.coverage, 3),
            "cited": s.cited,
            "citation_validity": (
                None if s.citation_validity is None else round(s.citation_validity, 3)
            ),
            "forbidden": s.forbidden,
            "degenerate": s.degenerate,
            "language_ok": s.language_ok,
            "language_share": round(s.language_share, 3),
            "warned": s.warned,
            "first_piece_s": round(self.first_piece_s, 3),
            "total_s": round(self.total_s, 3),
            "finish_reason": self.finish_reason,
            "degraded": self.degraded,
            "missing": s.missing,
            "unsupported": s.unsupported,
            "question": self.case.question,
            "answer": self.answer,
        }


async def answer_case(
    pipeline: Any, case: AnswerCase, mode: str, source_text: Callable[[str], str]
) -> AnswerResult:
    """Ask the pipeline (``opsassist.chat.pipeline.ChatPipeline``) one question in ``mode``,
    without the answer cache, timing it as the chat server would, and score the answer."""
    import asyncio
    import time

    from opsassist.chat.pipeline import ChatRequest, Outcome

    request = ChatRequest(
        messages=[{"role": "user", "content": case.question}],
        use_cache=False,
        mode=mode,  # type: ignore[arg-type]
    )
    started = time.perf_counter()
    prepared = await asyncio.to_thread(pipeline.prepare, request)
    outcome = Outcome()
    first: float | None = None
    pieces: list[str] = []
    async for piece in pipeline.stream(prepared, request, outcome):
        if piece and first is None:
            first = time.perf_counter() - started
        pieces.append(piece)
    total = time.perf_counter() - started
    answer = "".join(pieces)
    cited = {c.number: c.source for c in prepared.citations}
    score = score_answer(case, answer, cited, source_text, outcome.finish_reason)
    return AnswerResult(
        case=case,
        mode=mode,
        answer=answer,
        score=score,
        first_piece_s=first if first is not None else total,
        total_s=total,
        finish_reason=outcome.finish_reason,
        degraded=outcome.degraded,
        citations=cited,
    )


def grouped(
    results: Sequence[AnswerResult],
) -> dict[tuple[str, str, str], dict[str, float | None]]:
    """Summaries per (mode, split, language), with "all" rows for each language pair."""
    groups: dict[tuple[str, str, str], list[AnswerResult]] = {}
    for r in results:
        for lang in (r.case.lang, "all"):
            groups.setdefault((r.mode, r.case.split, lang), []).append(r)
    out: dict[tuple[str, str, str], dict[str, float | None]] = {}
    for key, members in sorted(groups.items()):
        summary = summarize([m.score for m in members])
        firsts = sorted(m.first_piece_s for m in members)
        totals = sorted(m.total_s for m in members)
        summary["first_piece_p95_s"] = firsts[min(len(firsts) - 1, round(0.95 * (len(firsts) - 1)))]
        summary["total_p95_s"] = totals[min(len(totals) - 1, round(0.95 * (len(totals) - 1)))]
        out[key] = summary
    return out

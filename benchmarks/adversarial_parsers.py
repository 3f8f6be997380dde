"""The worst 100,000-character line for every parser of untrusted text: runbook Markdown (headings,
blocks, chunking, and a runbook's whole way to a composed answer), log lines (every known header
format), Kubernetes events, metric samples, time windows, and the chat side's question readers.
Each parser gets a grid of hostile lines (a format's header, then one character or token
repeated: spaces, brackets, backticks, list markers, hex, Cyrillic, links, fences, ...) and the
slowest call is reported beside the same parser on a plain 100k line of letters (the baseline,
same process; the ratio shows what the hostile shapes cost on top).
A regex that backtracks shows here as seconds (a heading of 2,000 spaces took 22 s before).

    .venv/bin/python -m benchmarks.adversarial_parsers [--chars 100000] [--json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from collections.abc import Callable, Iterator

from benchmarks._common import emit, machine

NOW = dt.datetime(2026, 12, 5, tzinfo=dt.UTC)
HEADERS = (
    "",
    "## a",
    "# ",
    "- ",
    "1. ",
    "> ",
    "<details>",
    "<summary>",
    "```\n",
    "Jun 14 15:16:01 host ",
    "2015-07-29 17:41:44,747 - INFO  [",
    "2015-10-18 18:01:47,978 INFO [main] ",
    "2017-05-16 00:00:00.008 25746 INFO nova.compute ",
    "[Sun Dec 04 04:47:44 2005] [",
    "I0102 15:04:05.123456   12345 ",
    "[2024-01-01T10:00:00Z] ",
    "081109 203615 148 INFO ",
    "17/06/09 20:10:40 INFO ",
    "last ",
    "since 9 ",
)
REPEATS = (
    " ", "\t", "a", "0", "#", "[", "]", "(", "<", "<a ", "`", "*", "_", "- ", "1. ", ":", "=",
    ",", ".", "0x", "ab:", "/", "\\", '"', "{", "-", "~", "|", "&", "!", "а", "е ", "last 1 ",
    "`kubectl ", "[a][", "[a](", '{{< ref "',
)  # fmt: skip
# Repeats that make many lines (list items, fences): markdown-it's own parse of 11,000 list
# items takes ~0.6 s per 100k characters, linear (plain `- abcdef` items too).
LINE_REPEATS = ("- [a](b)\n", "```\n## a\n")


def adversarial_lines(
    chars: int,
    headers: tuple[str, ...] = HEADERS,
    repeats: tuple[str, ...] = REPEATS + LINE_REPEATS,
) -> Iterator[str]:
    """Every header followed by every repeat, cut to ``chars``, ending with and without "x"."""
    for header in headers:
        for repeat in repeats:
            body = (header + repeat * ((chars - len(header)) // len(repeat) + 1))[:chars]
            yield body[:-1] + "x"
            yield body


def parsers() -> dict[str, Callable[[str], object]]:
    from opsassist.chat.claims import claims
    from opsassist.chat.compose import compose_answer
    from opsassist.chat.language import detect_language
    from opsassist.chat.pipeline import QUESTION_CHARS
    from opsassist.chat.rewrite import standalone_question
    from opsassist.chat.timewindow import infer_window
    from opsassist.chunking import split_body
    from opsassist.documents import SearchHit
    from opsassist.glossary import expand_query
    from opsassist.knowledge import knowledge_pack_entry
    from opsassist.parsing.blocks import markdown_blocks
    from opsassist.parsing.events import parse_event
    from opsassist.parsing.logs import parse_log
    from opsassist.parsing.markdown import parse_runbook
    from opsassist.parsing.metrics import parse_metric
    from opsassist.timeparse import parse_since

    def question(line: str) -> object:
        """What the chat server does with a question (it reads its first QUESTION_CHARS)."""
        text = line[:QUESTION_CHARS]
        return (
            infer_window(text, NOW),
            detect_language(text),
            expand_query(text),
            standalone_question([text]),
        )

    def runbook_answer(line: str) -> object:
        """The whole way from a runbook file to a composed answer (fences, reference links,
        links to other runbooks, placeholders)."""
        runbook = parse_runbook(f"# Hostile\n\n## Meaning\n\n{line}\n", "x/Hostile.md")
        hit = SearchHit(
            id="1",
            source=runbook.source,
            source_type="runbook",
            title=runbook.title,
            section=runbook.sections[0].label,
            score=1.0,
            text=line[:2000],
        )
        return compose_answer([hit], {runbook.source: knowledge_pack_entry(runbook)}, "en")

    def quietly(parse: Callable[[str], object]) -> Callable[[str], object]:
        def call(line: str) -> object:
            try:
                return parse(line)
            except Exception:  # a refusal is an answer too: what counts is how long it took
                return None

        return call

    return {
        "markdown runbook": quietly(lambda line: parse_runbook(line, "x/Hostile.md")),
        "markdown blocks": quietly(markdown_blocks),
        "runbook answer": quietly(runbook_answer),
        "chunking": quietly(lambda line: split_body(line, 1200, 200)),
        "log line": quietly(
            lambda line: parse_log(line, service="s", received=NOW, max_bytes=1 << 20)
        ),
        "event": quietly(
            lambda line: parse_event(
                json.dumps({"reason": line, "message": line}), received=NOW, max_bytes=1 << 20
            )
        ),
        "metric": quietly(
            lambda line: parse_metric(
                json.dumps({"name": line[:200], "value": 1, "labels": {"l": line}}),
                received=NOW,
                max_bytes=1 << 20,
            )
        ),
        "time window": quietly(lambda line: parse_since(line, NOW)),
        "question": quietly(question),
        "answer claims": quietly(claims),
    }


def worst(parse: Callable[[str], object], lines: list[str]) -> tuple[float, str]:
    slowest, shape = 0.0, ""
    for line in lines:
        started = time.perf_counter()
        parse(line)
        took = (time.perf_counter() - started) * 1000
        if took > slowest:
            slowest, shape = took, repr(line[:32])
    return slowest, shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chars", type=int, default=100_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    lines = list(adversarial_lines(args.chars))
    plain = "a" * (args.chars - 1) + "x"
    rows = []
    for name, parse in parsers().items():
        baseline, _ = worst(parse, [plain, plain, plain])
        slowest, shape = worst(parse, lines)
        rows.append(
            {
                "parser": name,
                "lines": len(lines),
                "worst_ms": round(slowest, 1),
                "worst_shape": shape,
                "plain_ms": round(baseline, 1),
                "ratio": round(slowest / baseline, 1) if baseline > 0 else None,
            }
        )
        if not args.json:
            print(
                f"{name:16s} worst {slowest:8.1f} ms ({shape})  plain {baseline:6.1f} ms",
                flush=True,
            )
    emit({"benchmark": "adversarial_parsers", "machine": machine(), "rows": rows}, args.json)


if __name__ == "__main__":
    main()

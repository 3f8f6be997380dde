"""How well a log parser did, against ground truth: grouping accuracy and parsing accuracy.

Grouping accuracy (GA), as defined by Zhu et al. (ICSE-SEIP 2019), "Tools and Benchmarks for
Automated Log Parsing": a line is parsed correctly only if the set of lines in its predicted
group is exactly the set of lines in its ground-truth group; GA is the share of lines parsed
correctly. So a predicted group that merges two true events, or that is one part of a split
event, makes *all* its lines wrong, however large. The group labels themselves (template ids or
texts) never matter, only the partition of the lines.

Parsing accuracy (PA, also called message-level accuracy; Dai et al. 2020, Jiang et al. 2024):
a line is parsed correctly if its predicted template *text* equals its ground-truth template.
Texts are compared after :func:`canonical_template`, which both sides go through alike, so that
two ways of writing the same variable part are not counted as a difference. It follows the
canonical form that Jiang et al. ("A Large-scale Evaluation for Log Parsing Techniques: How Far
are We?", ISSTA 2024, Loghub-2.0) apply to templates, without their list of words that count as
variables (true/false/null/root): whitespace collapsed; a number is a variable (loghub writes
``uid=0`` where a miner that masks numbers writes ``uid=<*>``); a token holding a variable is
one variable (``blk_<*>``, ``attempt_<*>_m_<*>``, ``/<*>:<*>``, ``<*>KB``: loghub and a miner
draw the edge of a value differently), and so is a size unit after one (``<*> MB``); a URL and
an absolute path are variables; and a run of variables,
joined by nothing, punctuation or spaces, is one (``<*>.<*>``, ``<*>:<*>``, ``<*> <*>``: a
variable part that a miner sees as one value and loghub as several, or the other way round).
Only ``<*>`` marks a variable, on both sides (loghub's notation and the miner's).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Hashable, Sequence
from functools import lru_cache

from .masking import WILDCARD

_SPACES = re.compile(r"\s+")
_NUMBER = re.compile(r"\d+")
# A token is split off at these delimiters (kept), as in Loghub-2.0's canonical form.
_DELIMITERS = re.compile(r"""([\s,!;:=|"'\[\](){}.+@#$%&-])""")
_URL = re.compile(r"(?<![\w+.-])[A-Za-z][\w+.-]{0,15}://\S*")
_PATH = re.compile(r"(?<![^\s=:(\[\"'])(?:/[^/\s,;:=|\"'\[\](){}]+)+/?(?=$|[\s,;:|\"'\])}])")
# A size unit after a variable is part of it ("<*> MB" and "<*>" for "2048 MB").
_UNIT = re.compile(r"<\*>\s?(?:[kKMGTPE]i?B|B)\b")
# Runs of variables joined by nothing, one punctuation mark, or spaces.
_RUN = re.compile(r"<\*>(?:(?:[.:/@#,_-]|\s+)?<\*>)+")


@lru_cache(maxsize=65536)
def canonical_template(template: str) -> str:
    """The form in which two templates are compared for parsing accuracy (module docstring)."""
    text = _SPACES.sub(" ", template.strip())
    text = _URL.sub(WILDCARD, text)
    text = _PATH.sub(WILDCARD, text)
    text = _NUMBER.sub(WILDCARD, text)
    text = _UNIT.sub(WILDCARD, text)
    parts = _DELIMITERS.split(text)
    text = "".join(WILDCARD if WILDCARD in part else part for part in parts)
    return _RUN.sub(WILDCARD, text)


def _groups(labels: Sequence[Hashable]) -> dict[Hashable, frozenset[int]]:
    members: dict[Hashable, set[int]] = defaultdict(set)
    for line, label in enumerate(labels):
        members[label].add(line)
    return {label: frozenset(lines) for label, lines in members.items()}


def grouping_accuracy(truth_ids: Sequence[Hashable], predicted_ids: Sequence[Hashable]) -> float:
    """Share of lines whose predicted group equals their ground-truth group (1.0 if no lines)."""
    if len(truth_ids) != len(predicted_ids):
        raise ValueError(f"{len(truth_ids)} truth labels but {len(predicted_ids)} predictions")
    if not truth_ids:
        return 1.0
    true_groups = set(_groups(truth_ids).values())
    correct = sum(len(group) for group in _groups(predicted_ids).values() if group in true_groups)
    return correct / len(truth_ids)


def parsing_accuracy(truth_templates: Sequence[str], predicted_templates: Sequence[str]) -> float:
    """Share of lines whose predicted template text equals the truth's, both in
    :func:`canonical_template` form (1.0 if no lines)."""
    if len(truth_templates) != len(predicted_templates):
        raise ValueError(
            f"{len(truth_templates)} truth templates but {len(predicted_templates)} predictions"
        )
    if not truth_templates:
        return 1.0
    correct = sum(
        canonical_template(truth) == canonical_template(predicted)
        for truth, predicted in zip(truth_templates, predicted_templates, strict=True)
    )
    return correct / len(truth_templates)

"""Grouping accuracy of a log parser, as defined by Zhu et al. (ICSE-SEIP 2019).

"Tools and Benchmarks for Automated Log Parsing": a line is parsed correctly only if the set of
lines in its predicted group is exactly the set of lines in its ground-truth group; grouping
accuracy is the share of lines parsed correctly. So a predicted group that merges two true
events, or that is one part of a split event, makes *all* its lines wrong, however large. The
group labels themselves (template ids or texts) never matter, only the partition of the lines.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence


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

"""Behaviour of the Drain template miner, its merge, and grouping accuracy (real loghub data)."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest

from opsassist.mining import (
    WILDCARD,
    Mask,
    MinerConfig,
    TemplateMiner,
    grouping_accuracy,
    mask_content,
    merge,
    mine_two_pass,
    similarity,
    template_id,
)
from opsassist.mining.masking import DEFAULT_MASKS
from opsassist.mining.templates import paper_config

LOGHUB = Path(__file__).resolve().parents[2].parent / "shared" / "corpora" / "loghub"
SYSTEMS = ("HDFS", "Hadoop", "Spark", "Zookeeper", "OpenSSH", "Linux", "Apache", "OpenStack")

SSH_LINES = [
    "Accepted password for root from 10.0.0.1 port 50022 ssh2",
    "Failed password for invalid user admin from 192.168.3.4 port 40000 ssh2",
    "Accepted password for alice from 10.0.0.7 port 50110 ssh2",
    "Received disconnect from 10.0.0.1: 11: Bye Bye [preauth]",
    "Failed password for invalid user oracle from 172.16.0.9 port 41234 ssh2",
    "Received disconnect from 10.0.0.9: 11: Bye Bye [preauth]",
    "pam_unix(sshd:session): session opened for user root by (uid=0)",
    "Accepted password for bob from 10.0.0.8 port 50111 ssh2",
]


def load(system: str) -> tuple[list[str], list[str]]:
    path = LOGHUB / system / f"{system}_2k.log_structured.csv"
    if not path.exists():
        pytest.skip(f"loghub sample not found at {path}")
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [r["Content"] for r in rows], [r["EventId"] for r in rows]


def mined(lines: list[str], config: MinerConfig | None = None) -> TemplateMiner:
    miner = TemplateMiner(config)
    for line in lines:
        miner.add(line)
    return miner


def final_ids(miner: TemplateMiner, lines: list[str]) -> list[str | None]:
    return [None if (m := miner.match(line)) is None else m[0] for line in lines]


# -- masking ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        (
            "Receiving block blk_-1608999687919862906 src: /10.250.19.102:54106",
            "Receiving block blk_<*> src: <*>",
        ),
        ("Connect to 10.86.169.121:50010 failed", "Connect to <*> failed"),
        (
            "[instance: 96abccce-8d1f-4e07-b6d1-4b2ab87e23b4] "
            "rm /i/96abccce-8d1f-4e07-b6d1-4b2ab87e23b4_del",
            "[instance: <*>] rm <*>_del",
        ),
        ("connection from 1.2.3.4 () at Sun Jul 10 03:55:21 2005", "connection from <*> () at <*>"),
        (
            "Resolved MSRA-SA-41.fareast.corp.microsoft.com to /default-rack",
            "Resolved <*> to <*>",
        ),
        ("status 0x1F at 2017-06-09 20:10:40,123", "status <*> at <*>"),
        ("Launching attempt_1445144423722_0020_m_000000_0", "Launching attempt_<*>_m_<*>"),
        ("offset -12 of BP-1347-10", "offset <*> of BP-<*>"),
        ("commit 3f2a9c1b7e done", "commit <*> done"),
        ("host db01.example.com and ns1.lab.local", "host <*> and <*>"),
    ],
)
def test_default_masks_hide_values(raw: str, masked: str) -> None:
    assert mask_content(raw, DEFAULT_MASKS) == masked


@pytest.mark.parametrize(
    "text",
    [
        "mounted sda1 on ip6 for x86",
        "Registered org.apache.spark.SparkEnv via run.sh",
        "mapred.job.id is deprecated, see java.io docs",
    ],
)
def test_default_masks_keep_names(text: str) -> None:
    assert mask_content(text, DEFAULT_MASKS) == text


def test_masks_are_configurable_per_miner() -> None:
    plain = MinerConfig(masks=())
    users = MinerConfig(masks=(Mask("user", r"(?<=user )\w+"),))
    assert plain.tokens("login user alice ok") == ("login", "user", "alice", "ok")
    assert users.tokens("login user alice ok") == ("login", "user", WILDCARD, "ok")
    restored = MinerConfig.from_dict(json.loads(json.dumps(users.to_dict())))
    assert restored == users


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        MinerConfig(sim_threshold=0.0)
    with pytest.raises(ValueError):
        MinerConfig(depth=2)


# -- mining ---------------------------------------------------------------------------------------


def test_lines_differing_only_in_parameters_share_a_template() -> None:
    miner = mined(SSH_LINES)
    accepted = {final_ids(miner, [line])[0] for line in SSH_LINES if line.startswith("Accepted")}
    failed = {final_ids(miner, [line])[0] for line in SSH_LINES if line.startswith("Failed")}
    assert len(accepted) == 1
    assert len(failed) == 1
    assert accepted != failed
    text = miner.match(SSH_LINES[0])
    assert text is not None
    assert text[1] == "Accepted password for <*> from <*> port <*> ssh2"
    assert text[0] == template_id(text[1])


def test_add_returns_the_template_as_of_now() -> None:
    miner = TemplateMiner()
    first_id, first_text = miner.add("Accepted password for root from 10.0.0.1 port 22 ssh2")
    assert first_text == "Accepted password for root from <*> port <*> ssh2"
    _, second_text = miner.add("Accepted password for alice from 10.0.0.2 port 22 ssh2")
    assert second_text == "Accepted password for <*> from <*> port <*> ssh2"
    # the first line now belongs to the generalised template, with another id
    match = miner.match("Accepted password for root from 10.0.0.1 port 22 ssh2")
    assert match is not None
    assert match[1] == second_text
    assert match[0] != first_id


def test_ids_are_deterministic_across_fresh_miners_and_orders() -> None:
    lines = SSH_LINES * 3
    shuffled = lines[:]
    random.Random(7).shuffle(shuffled)
    one, two, other_order = mined(lines), mined(lines), mined(shuffled)
    assert one.templates() == two.templates()
    assert final_ids(one, lines) == final_ids(two, lines)
    assert set(one.templates()) == set(other_order.templates())


def test_max_children_routes_overflow_through_the_wildcard_branch() -> None:
    config = MinerConfig(max_children=3, depth=4)
    lines = [f"{verb} service now" for verb in ("start", "stop", "reload", "restart", "kill")]
    miner = mined(lines, config)
    # each verb keeps its own template even though only two literal branches fit
    assert len(miner) == 5
    assert all(miner.match(line) is not None for line in lines)


def test_match_does_not_change_state() -> None:
    miner = mined(SSH_LINES)
    before = json.dumps(miner.to_dict(), sort_keys=True)
    unseen = "Accepted password for carol from 10.9.9.9 port 5000 ssh2"
    match = miner.match(unseen)
    assert match is not None
    assert match[1] == "Accepted password for <*> from <*> port <*> ssh2"
    assert miner.match("kernel: completely unrelated message") is None
    assert json.dumps(miner.to_dict(), sort_keys=True) == before


def test_round_trip_keeps_assignments_and_future_behaviour() -> None:
    lines, _ = load("OpenSSH")
    head, tail = lines[:1000], lines[1000:]
    original = mined(head)
    restored = TemplateMiner.from_dict(json.loads(json.dumps(original.to_dict())))
    assert restored.to_dict() == original.to_dict()
    assert final_ids(restored, lines) == final_ids(original, lines)
    assert [restored.add(x) for x in tail] == [original.add(x) for x in tail]
    assert restored.to_dict() == original.to_dict()


def test_from_dict_rejects_foreign_state() -> None:
    with pytest.raises(ValueError):
        TemplateMiner.from_dict({"format": "something-else"})


# -- merge ----------------------------------------------------------------------------------------


def partition_miners(lines: list[str], parts: int) -> list[TemplateMiner]:
    size = -(-len(lines) // parts)
    miners = []
    for index in range(parts):
        miner = TemplateMiner(partition=index)
        for line in lines[index * size : (index + 1) * size]:
            miner.add(line)
        miners.append(miner)
    return miners


def test_merge_does_not_depend_on_argument_order() -> None:
    lines, _ = load("Linux")
    a, b, c = partition_miners(lines, 3)
    for order in ("first_seen", "frequency"):
        reference = merge(a, b, c, order=order).to_dict()
        assert merge(c, a, b, order=order).to_dict() == reference
        assert merge(b, c, a, order=order).to_dict() == reference
        assert merge(merge(a, b, order=order), c, order=order).to_dict() == reference
    assert merge(a, b).to_dict() == merge(b, a).to_dict()


@pytest.mark.parametrize("system", ["Linux", "OpenStack", "Hadoop"])
def test_first_seen_merge_equals_one_streaming_miner(system: str) -> None:
    lines, _ = load(system)
    single = mined(lines)
    merged = merge(*reversed(partition_miners(lines, 4)))
    assert merged.templates() == single.templates()
    assert final_ids(merged, lines) == final_ids(single, lines)


def test_frequency_merge_equals_two_pass_mining_of_any_order() -> None:
    lines, _ = load("OpenSSH")
    shuffled = lines[:]
    random.Random(3).shuffle(shuffled)
    result = mine_two_pass(lines)
    merged = merge(*partition_miners(shuffled, 5), order="frequency")
    assert merged.templates() == result.templates
    assert final_ids(merged, lines) == result.assignments
    assert mine_two_pass(shuffled).templates == result.templates


def test_merge_rejects_different_configs() -> None:
    with pytest.raises(ValueError):
        merge(TemplateMiner(), TemplateMiner(MinerConfig(sim_threshold=0.5)))


# -- grouping accuracy ------------------------------------------------------------------------


def test_grouping_accuracy_ignores_label_names() -> None:
    assert grouping_accuracy(["A", "A", "B"], [7, 7, 3]) == 1.0


def test_grouping_accuracy_merged_groups_are_all_wrong() -> None:
    # one predicted group swallowing two true events makes every line in it wrong
    assert grouping_accuracy(["A", "A", "B", "B", "C"], ["x", "x", "x", "x", "y"]) == 0.2


def test_grouping_accuracy_split_groups_are_all_wrong() -> None:
    # splitting A (3 lines) into two predicted groups makes all of A wrong, even its majority
    truth = ["A", "A", "A", "B", "B"]
    assert grouping_accuracy(truth, ["x", "x", "z", "y", "y"]) == 0.4
    # a prediction equal to the ground truth in size only is still wrong: sets must be equal
    assert grouping_accuracy(["A", "A", "B", "B"], ["x", "y", "x", "y"]) == 0.0


def test_grouping_accuracy_edge_cases() -> None:
    assert grouping_accuracy([], []) == 1.0
    with pytest.raises(ValueError):
        grouping_accuracy(["A"], ["x", "y"])


# -- accuracy on real loghub samples ----------------------------------------------------------


# Measured: HDFS 0.998, Apache 1.000 (mine_two_pass and streaming alike); average of the eight
# systems 0.932 against 0.8805 published for Drain. Thresholds are those minus a small margin.
@pytest.mark.parametrize(("system", "minimum"), [("HDFS", 0.99), ("Apache", 0.99)])
def test_accuracy_on_loghub_sample(system: str, minimum: float) -> None:
    lines, truth = load(system)
    assert grouping_accuracy(truth, mine_two_pass(lines).assignments) >= minimum
    assert grouping_accuracy(truth, final_ids(mined(lines), lines)) >= minimum


def test_average_accuracy_beats_published_drain() -> None:
    accuracies = []
    for system in SYSTEMS:
        lines, truth = load(system)
        accuracies.append(grouping_accuracy(truth, mine_two_pass(lines).assignments))
    assert sum(accuracies) / len(accuracies) >= 0.92


def test_similarity_counts_masked_parameters_only_when_asked() -> None:
    template = ["Took", WILDCARD, "seconds"]
    assert similarity(template, ["Took", WILDCARD, "seconds"]) == (1.0, 1)
    assert similarity(template, ["Took", "many", "seconds"]) == (2 / 3, 1)
    assert similarity(template, ["Took", WILDCARD, "seconds"], masked_params_match=False) == (
        2 / 3,
        1,
    )


# The paper's per-system settings (regexes, threshold, depth) with its similarity rule, lines in
# file order: Zhu et al. published 0.998 for HDFS and 0.788 for OpenSSH.
@pytest.mark.parametrize(
    ("system", "patterns", "threshold", "depth", "published"),
    [
        ("HDFS", (r"blk_-?\d+", r"(\d+\.){3}\d+(:\d+)?"), 0.5, 4, 0.998),
        ("OpenSSH", (r"(\d+\.){3}\d+", r"([\w-]+\.){2,}[\w-]+"), 0.6, 5, 0.788),
    ],
)
def test_paper_settings_reproduce_published_drain(
    system: str, patterns: tuple[str, ...], threshold: float, depth: int, published: float
) -> None:
    lines, truth = load(system)
    config = paper_config(patterns, threshold, depth)
    assert grouping_accuracy(truth, final_ids(mined(lines, config), lines)) == pytest.approx(
        published, abs=0.0015
    )

"""The steps around Drain: the split of few-word positions, the merge of templates of different
lengths, affixes, bad input; that they keep mining streaming and mergeable; parsing accuracy."""

from __future__ import annotations

import csv
import json
import random
import time
import tracemalloc
from pathlib import Path

import pytest

from opsassist.mining import MinerConfig, TemplateMiner, merge, mine_two_pass
from opsassist.mining.evaluation import canonical_template, parsing_accuracy
from opsassist.mining.templates import (
    BINARY,
    WILDCARD,
    collapse_runs,
    mine_token_lines,
)

LOGHUB = Path(__file__).resolve().parents[2].parent / "shared" / "corpora" / "loghub"


def texts(lines: list[str], config: MinerConfig | None = None) -> list[str]:
    result = mine_two_pass(lines, config)
    return [result.templates[tid].text for tid in result.assignments]


def load(system: str) -> list[str]:
    path = LOGHUB / system / f"{system}_2k.log_structured.csv"
    if not path.exists():
        pytest.skip(f"loghub sample not found at {path}")
    with path.open(newline="", encoding="utf-8") as handle:
        return [row["Content"] for row in csv.DictReader(handle)]


# -- split ------------------------------------------------------------------------------------

STATES = [f"[instance: {i:04d}] VM {s} (Lifecycle Event)" for i, s in enumerate(["Paused"] * 5)]
STATES += [f"[instance: {i:04d}] VM {s} (Lifecycle Event)" for i, s in enumerate(["Resumed"] * 4)]
STATES += [f"[instance: {i:04d}] VM {s} (Lifecycle Event)" for i, s in enumerate(["Stopped"] * 3)]


def test_a_few_recurring_words_are_kinds_of_event() -> None:
    shown = set(texts(STATES))
    assert shown == {
        "[instance: <*>] VM Paused (Lifecycle Event)",
        "[instance: <*>] VM Resumed (Lifecycle Event)",
        "[instance: <*>] VM Stopped (Lifecycle Event)",
    }
    # without the split, Drain merges them (one word of six differs)
    assert set(texts(STATES, MinerConfig(split_max_values=0))) == {
        "[instance: <*>] VM <*> (Lifecycle Event)"
    }


def test_a_word_seen_once_keeps_the_position_a_parameter() -> None:
    users = ["root", "root", "alice", "bob", "bob"]  # alice is on one line only
    lines = [f"Accepted password for {u} from 10.0.0.{i} port 22 ssh2" for i, u in enumerate(users)]
    assert set(texts(lines)) == {"Accepted password for <*> from <*> port <*> ssh2"}
    many = [f"Failed password for user{i % 7} from 10.0.0.1 port 22 ssh2" for i in range(40)]
    assert set(texts(many)) == {"Failed password for <*> from <*> port <*> ssh2"}  # 7 > 4 words


def test_a_masked_value_is_never_split() -> None:
    lines = [f"Block rdd_{i}_1 stored as bytes in memory" for i in range(5)] + [
        f"Block broadcast_{i}_piece0 stored as bytes in memory" for i in range(5)
    ]
    assert set(texts(lines)) == {"Block <*> stored as bytes in memory"}


def test_match_of_an_unseen_word_gives_the_unsplit_template() -> None:
    miner = TemplateMiner()
    for line in STATES:
        miner.add(line)
    known = miner.match("[instance: 9999] VM Paused (Lifecycle Event)")
    assert known is not None and known[1] == "[instance: <*>] VM Paused (Lifecycle Event)"
    new = miner.match("[instance: 9999] VM Rebooted (Lifecycle Event)")
    assert new is not None and new[1] == "[instance: <*>] VM <*> (Lifecycle Event)"


# -- merge of lengths, affixes ----------------------------------------------------------------


def test_templates_of_different_lengths_sharing_their_constants_are_one() -> None:
    rng = random.Random(5)
    words = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta"]
    lines = []
    for _ in range(30):
        k = rng.randint(1, 6)
        lines.append(
            "Deleting blocks " + " ".join(f"blk_{rng.randint(1, 10**9)}" for _ in range(k))
        )
        lines.append(
            "quorum "
            + ",".join(f"{rng.choice(words)}:{rng.randint(1000, 9999)}" for _ in range(k))
            + " ready"
        )
        lines.append("args " + " ".join(str(rng.randint(0, 99)) for _ in range(k)) + " end")
    assert set(texts(lines)) == {"Deleting blocks blk_<*>", "quorum <*> ready", "args <*> end"}
    # Drain alone routes by length: one template per length
    plain = MinerConfig(
        merge_lengths=False,
        masks=tuple(
            m for m in MinerConfig().masks if m.name not in ("wildcard_run", "repeated_value")
        ),
    )
    assert len(set(texts(lines, plain))) > 10


def test_collapse_runs_keeps_separate_fields() -> None:
    assert collapse_runs(["a", WILDCARD, WILDCARD, "b", "x_<*>", "x_<*>"]) == [
        "a",
        WILDCARD,
        "b",
        "x_<*>",
    ]
    assert collapse_runs(["from", "<*>:", "<*>:", "Bye"]) == ["from", "<*>:", "<*>:", "Bye"]


def test_affixes_are_kept_up_to_a_separator() -> None:
    lines = [
        f"authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=10.0.0.{i}  user={u}"
        for i, u in enumerate(["root", "git", "ftp", "uucp", "sshd", "x"] * 2)
    ]
    assert set(texts(lines)) == {
        "authentication failure; logname= uid=<*> euid=<*> tty=ssh ruser= rhost=<*> user=<*>"
    }
    lines = ["connection from 1.2.3.4 () at x", "connection from 1.2.3.5 (a.example.com) at x"] * 2
    assert set(texts(lines, MinerConfig(split_max_values=0))) == {"connection from <*> (<*>) at x"}
    # a shared part of a word is not kept: Paused/Resumed share "d", not an affix
    assert set(texts(STATES, MinerConfig(split_max_values=0))) == {
        "[instance: <*>] VM <*> (Lifecycle Event)"
    }


# -- streaming and mergeable ------------------------------------------------------------------


def partition_miners(lines: list[str], parts: int, config: MinerConfig) -> list[TemplateMiner]:
    size = -(-len(lines) // parts)
    miners = []
    for index in range(parts):
        miner = TemplateMiner(config, partition=index)
        for line in lines[index * size : (index + 1) * size]:
            miner.add(line)
        miners.append(miner)
    return miners


@pytest.mark.parametrize("system", ["OpenStack", "Linux", "Zookeeper"])
def test_split_and_merge_keep_partitioned_mining_exact(system: str) -> None:
    lines = load(system) + STATES + ["   ", "", "\x00\x01\x02binary"]
    config = MinerConfig()
    single = TemplateMiner(config)
    for line in lines:
        single.add(line)
    merged = merge(*reversed(partition_miners(lines, 5, config)))
    # the same sequences, counts and clusters (first positions are per partition)
    counts = {tokens: count for tokens, (count, _) in single.sequences().items()}
    assert {tokens: count for tokens, (count, _) in merged.sequences().items()} == counts
    assert merged.templates() == single.templates()
    assert [merged.match(x) for x in lines] == [single.match(x) for x in lines]
    # the templates depend on the split (some lines of these systems are split)
    assert (
        merged.templates()
        != merge(*partition_miners(lines, 5, MinerConfig(split_max_values=0))).templates()
    )
    shuffled = lines[:]
    random.Random(1).shuffle(shuffled)
    by_frequency = merge(*partition_miners(shuffled, 3, config), order="frequency")
    assert by_frequency.templates() == mine_two_pass(lines, config).templates


def test_restored_state_rebuilds_split_words_and_affixes() -> None:
    lines = load("OpenStack")
    head, tail = lines[:1200], lines[1200:]
    original = TemplateMiner()
    for line in head:
        original.add(line)
    restored = TemplateMiner.from_dict(json.loads(json.dumps(original.to_dict())))
    assert restored.templates() == original.templates()
    assert [restored.add(x) for x in tail] == [original.add(x) for x in tail]
    assert restored.templates() == original.templates()


def test_a_state_saved_before_the_new_steps_keeps_its_behaviour() -> None:
    old = TemplateMiner(
        MinerConfig(split_max_values=0, merge_lengths=False, keep_affixes=False, route_masked=False)
    )
    for line in STATES:
        old.add(line)
    data = old.to_dict()
    for key in (
        "split_max_values",
        "split_min_lines",
        "merge_lengths",
        "keep_affixes",
        "route_masked",
        "max_line_chars",
        "max_tokens",
    ):
        del data["config"][key]
    del data["bad_input"]
    restored = TemplateMiner.from_dict(data)
    assert restored.config.split_max_values == 0 and not restored.config.merge_lengths
    assert restored.templates() == old.templates()


def test_mine_token_lines_is_mine_two_pass() -> None:
    lines = load("Hadoop")
    config = MinerConfig()
    direct = mine_two_pass(lines, config)
    tokens = mine_token_lines([config.tokens(x) for x in lines], config)
    assert tokens.assignments == direct.assignments and tokens.templates == direct.templates


# -- bad input --------------------------------------------------------------------------------


def test_bad_input_is_bounded_and_counted() -> None:
    config = MinerConfig()
    megabyte = "x=1 " * 262_144  # 1 MiB, 262,144 tokens
    long_word = "a" * 1_048_576
    binary = "".join(chr(i % 32) for i in range(1000)) + "\x00"
    lines = [
        "",
        "   \t",
        binary,
        "\ufffd\ufffd\x01ok",
        megabyte,
        long_word,
        "normal line 1",
        "\x1b[31mred\x1b[0m text",
    ]
    tracemalloc.start()
    started = time.perf_counter()
    result = mine_two_pass(lines, config)
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 1.0
    assert peak < 8 * 1024 * 1024  # the 1 MiB lines are cut at 16 KiB before masking
    assert result.bad_input == {"empty": 2, "binary": 2, "truncated": 2}
    ids = result.assignments
    assert ids[0] == ids[1]  # empty lines share one (empty) template
    assert result.templates[ids[2]].text == BINARY == result.templates[ids[3]].text
    assert config.inspect(lines[7]) == (
        ("\x1b[<*>mred\x1b[<*>", "text"),
        None,
    )  # colour: not binary
    for line in (megabyte, long_word):
        tokens, kind = config.inspect(line)
        assert kind == "truncated" and len(tokens) <= config.max_tokens
        assert sum(map(len, tokens)) <= config.max_line_chars
        assert tokens[-1] == WILDCARD


def test_streaming_counts_bad_input_and_merge_sums_it() -> None:
    a, b = TemplateMiner(partition=0), TemplateMiner(partition=1)
    for line in ["", "ok 1", "\x00"]:
        a.add(line)
    for line in ["", "y" * 20_000]:
        b.add(line)
    assert a.bad_input == {"empty": 1, "binary": 1, "truncated": 0}
    assert merge(a, b).bad_input == {"empty": 2, "binary": 1, "truncated": 1}
    assert TemplateMiner.from_dict(merge(b, a).to_dict()).bad_input == merge(a, b).bad_input


# -- parsing accuracy -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("truth", "predicted"),
    [
        (
            "authentication failure; logname= uid=0 euid=0 rhost=<*>",
            "authentication failure;  logname= uid=<*> euid=<*> rhost=<*>",
        ),
        (
            "Receiving block blk_<*> src: /<*>:<*> dest: /<*>:<*>",
            "Receiving block <*> src: <*> dest: <*>",
        ),
        ("attempt_<*> TaskAttempt Transitioned", "attempt_<*>_m_<*> TaskAttempt Transitioned"),
        ("Took <*>.<*> seconds to spawn", "Took <*> seconds to spawn"),
        ("Total memory: <*> MB, used: <*> MB", "Total memory: <*>, used: <*>"),
        ("Input split: hdfs://<*>", "Input split: <*>"),
        ("Resolved <*> to /default-rack", "Resolved <*> to <*>"),
    ],
)
def test_canonical_form_ignores_how_a_variable_is_written(truth: str, predicted: str) -> None:
    assert canonical_template(truth) == canonical_template(predicted)


@pytest.mark.parametrize(
    ("truth", "predicted"),
    [
        ("VM Paused (Lifecycle Event)", "VM <*> (Lifecycle Event)"),
        ("session opened for user <*> by (uid=<*>)", "session opened for user news by (uid=<*>)"),
        ("Received disconnect from <*>: <*>: Bye Bye", "Received disconnect from <*>: Bye Bye"),
    ],
)
def test_canonical_form_keeps_constants(truth: str, predicted: str) -> None:
    assert canonical_template(truth) != canonical_template(predicted)


def test_parsing_accuracy_counts_lines() -> None:
    truth = ["A <*>", "A <*>", "B", "C 1"]
    assert parsing_accuracy(truth, ["A <*>", "A x", "B", "C <*>"]) == 0.75
    assert parsing_accuracy([], []) == 1.0
    with pytest.raises(ValueError):
        parsing_accuracy(["A"], [])

"""The history job's library side, in one process: template mining split over partitions equals
the single-process miner on the loghub samples, and every archived record has one owner."""

from __future__ import annotations

import bz2
import csv
import datetime as dt
import gzip
import json
from pathlib import Path

import pytest

from opsassist.mining import MinerConfig, grouping_accuracy, mine_two_pass
from opsassist.mining.windows import TemplateWindow
from opsassist.pipelines.history import (
    BLOCK_SECONDS,
    DEADLETTER,
    REASON_OUTSIDE,
    REASON_UNREADABLE,
    DayScope,
    Partial,
    add_file,
    add_record,
    describe_path,
    file_lines,
    group_documents,
    partial_rows,
    splits_itself,
)
from opsassist.signals import SignalConfig

LOGHUB = Path(__file__).resolve().parents[2].parent / "shared" / "corpora" / "loghub"
SYSTEMS = ("HDFS", "Hadoop", "Spark", "Zookeeper", "OpenSSH", "Linux", "Apache", "OpenStack")


def structured(system: str) -> tuple[list[str], list[str]]:
    path = LOGHUB / system / f"{system}_2k.log_structured.csv"
    if not path.exists():
        pytest.skip(f"shared loghub sample missing: {path}")
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [r["Content"] for r in rows], [r["EventId"] for r in rows]


@pytest.mark.parametrize("partitions", [2, 7])
def test_partitioned_mining_equals_single_process_on_loghub(partitions: int) -> None:
    """Per-partition window aggregates, merged in a shuffled order, then mined once: the same
    templates, the same grouping of every line and so the same accuracy as ``mine_two_pass``."""
    config = MinerConfig()
    for system in SYSTEMS:
        contents, truth = structured(system)
        single = mine_two_pass(contents, config)
        parts = [TemplateWindow(max_sequences=10_000) for _ in range(partitions)]
        for index, content in enumerate(contents):  # round robin: every partition sees all kinds
            parts[index % partitions].add(config.tokens(content), index, "", content)
        merged = TemplateWindow(max_sequences=10_000)
        for part in reversed(parts):  # merge order must not matter
            merged.merge(TemplateWindow.from_dict(json.loads(json.dumps(part.to_dict()))))
        templates, miner = merged.mine(config)
        assigned = [miner.template_of(config.tokens(c)) for c in contents]
        assert assigned == single.assignments, system
        assert {t.template_id: t.count for t in templates} == {
            tid: t.count for tid, t in single.templates.items()
        }, system
        assert grouping_accuracy(truth, assigned) == grouping_accuracy(truth, single.assignments)


def test_describe_path_names_kind_service_and_day() -> None:
    day = dt.date(2026, 1, 2)
    assert describe_path("file:/a/logs/date=2026-01-02/HDFS/part-1.log") == ("log", "HDFS", day)
    assert describe_path("s3a://b/x/logs/date=2026-01-02/nginx.log.1") == ("log", "nginx", day)
    assert describe_path("hdfs://nn/events/date=2026-01-02/k.jsonl")[0::2] == ("event", day)
    assert describe_path("/tmp/elsewhere/file.log") == ("log", "", None)


def test_window_must_divide_a_day() -> None:
    with pytest.raises(ValueError, match="does not divide a day"):
        DayScope(dt.date(2026, 1, 2), window_seconds=7 * 60)


def test_each_record_has_one_owner_and_bad_ones_are_dead_lettered() -> None:
    config = SignalConfig()
    day = dt.date(2026, 1, 2)
    scope = DayScope.for_day(day, config, slack_days=1)
    own = "/a/logs/date=2026-01-02/app/app.log"
    neighbour = "/a/logs/date=2026-01-01/app/app.log"
    partial = Partial()
    lines = [
        (own, b"2026-01-02T10:00:01Z ERROR disk full on /dev/sda1"),  # used
        (own, b"2026-01-03T00:00:02Z ERROR disk full on /dev/sda1"),  # next day's run uses it
        (own, b"2025-06-01T00:00:00Z INFO far away"),  # no run would: dead letter
        (own, b'{"log": "broken'),  # bad: dead letter with the parser's reason
        (own, b"   "),  # blank: not a record
        (neighbour, b'{"log": "broken too'),  # the neighbour partition's run dead-letters it
        (neighbour, b"2026-01-02T00:00:03Z ERROR disk full on /dev/sdb1"),  # misfiled: used
    ]
    for origin, payload in lines:
        add_record(partial, origin, payload, scope, config, 65536)
    rows = list(partial_rows(partial))
    letters = [json.loads(agg) for kind, _, _, agg, _ in rows if kind == DEADLETTER]
    assert sorted(letter["reason"] for letter in letters) == sorted(
        [REASON_OUTSIDE, "invalid json"]
    )
    assert partial.counts == {"log_used": 2, "log_other_days": 1, "log_rejected": 2}
    docs = group_documents(
        "log", "app", [(s, a) for k, _, s, a, _ in rows if k == "log"], scope, config
    )
    assert len(docs) == 2 and all(d.section.startswith("2026-01-02T") for d in docs)


def test_whole_files_split_into_the_lines_sparks_text_reader_gives() -> None:
    text = b"first\nsecond\r\nthird\rfourth\n\nsixth"  # LF, CRLF, CR, an empty line, no end
    lines = [b"first", b"second", b"third", b"fourth", b"", b"sixth"]
    assert file_lines("/a/logs/date=2026-01-02/app/app.log", text) == lines
    assert file_lines("/a/x.log", text + b"\n") == lines  # a final terminator adds no line
    assert file_lines("/a/x.log.gz", gzip.compress(text)) == lines
    assert file_lines("/a/X.LOG.GZ", gzip.compress(text[:12]) + gzip.compress(text[12:])) == lines
    assert file_lines("/a/x.jsonl.bz2", bz2.compress(text)) == lines
    assert file_lines("/a/x.log", b"") == []
    assert file_lines("/a/x.log", b"tab\tform\x0cfeed\x1cfs") == [b"tab\tform\x0cfeed\x1cfs"]
    assert splits_itself("s3a://b/logs/date=2026-01-02/app.log.gz")
    assert splits_itself("file:/a/logs/date=2026-01-02/app/part-0")
    for other in ("x.parquet", "x.log.snappy", "x.log.zst", "x.log.lz4", "x.log.deflate"):
        assert not splits_itself(other)  # Spark's readers and Hadoop's codecs


def test_a_whole_file_folds_like_its_lines_and_an_unreadable_one_is_one_dead_letter() -> None:
    config = SignalConfig()
    scope = DayScope.for_day(dt.date(2026, 1, 2), config, slack_days=1)
    own = "/a/logs/date=2026-01-02/app/app.log.gz"
    lines = [
        b"2026-01-02T10:00:01Z ERROR disk full on /dev/sda1",
        b'{"log": "broken',
        b"2026-01-02T10:00:05Z WARN retrying write",
    ]
    by_line, by_file = Partial(), Partial()
    for line in lines:
        add_record(by_line, own, line, scope, config, 65536)
    add_file(by_file, own, gzip.compress(b"\r\n".join(lines)), scope, config, 65536)
    assert list(partial_rows(by_file)) == list(partial_rows(by_line))

    truncated = gzip.compress(b"\n".join(lines))[:-9]
    broken = Partial()
    add_file(broken, own, truncated, scope, config, 65536)
    add_file(broken, own, b"not gzip at all", scope, config, 65536)
    add_file(broken, "/a/logs/date=2026-01-01/app/app.log.gz", truncated, scope, config, 65536)
    letters = [json.loads(agg) for kind, _, _, agg, _ in partial_rows(broken) if kind == DEADLETTER]
    assert [letter["reason"] for letter in letters] == [REASON_UNREADABLE] * 2  # own day only
    assert letters[0]["file"] == own and "EOFError" in letters[0]["detail"]
    assert letters[0]["payload_base64"]  # the bytes are kept, nothing is lost
    assert broken.counts == {"log_rejected": 2}


def test_documents_built_per_block_equal_the_whole_day() -> None:
    """Pass two runs per (service, block of an hour): each block gets the windows it needs (a log
    window's documents compare with the window before, across a block boundary too), so the
    union of the blocks' documents is the whole day's, each document once."""
    from opsassist.parsing.logs import retime_line

    config = SignalConfig()
    day = dt.date(2026, 1, 2)
    scope = DayScope.for_day(day, config, slack_days=1)
    path = LOGHUB / "OpenSSH" / "OpenSSH_2k.log"
    if not path.exists():
        pytest.skip(f"shared loghub sample missing: {path}")
    lines = path.read_text(encoding="utf-8").splitlines()
    start = dt.datetime(2026, 1, 2, 0, 30, tzinfo=dt.UTC)  # 4 hours: over three block edges
    partial = Partial()
    origin = "/a/logs/date=2026-01-02/sshd/sshd.log"
    for n, raw in enumerate(lines):
        when = start + dt.timedelta(seconds=n * 4 * 3600 / len(lines))
        add_record(partial, origin, retime_line(raw, when).encode(), scope, config, 65536)
    rows = [r for r in partial_rows(partial, config.window_seconds) if r[0] == "log"]
    whole = group_documents("log", "sshd", {(s, a) for _, _, s, a, _ in rows}, scope, config)
    blocks = sorted({b for *_, b in rows})
    assert len(blocks) >= 4 and all(b >= 0 for b in blocks)
    assert len(rows) > len({(s, a) for _, _, s, a, _ in rows})  # edge windows sent twice
    per_block = [
        doc
        for block in blocks
        for doc in group_documents(
            "log", "sshd", [(s, a) for *_, s, a, b in rows if b == block], scope, config, block
        )
    ]
    assert len(whole) > 48
    assert sorted((d.id, d.text) for d in per_block) == sorted((d.id, d.text) for d in whole)
    # without the duplicated edge rows, a block's first window would lose its "previous window"
    edge = blocks[1]
    own_rows = [(s, a) for *_, s, a, b in rows if b == edge and s // BLOCK_SECONDS == edge]
    alone = group_documents("log", "sshd", own_rows, scope, config, edge)
    expected = [d for d in per_block if d.timestamp and d.timestamp.timestamp() // 3600 == edge]
    assert expected and len(alone) == len(expected)
    assert sorted((d.id, d.text) for d in alone) != sorted((d.id, d.text) for d in expected)

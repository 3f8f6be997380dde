"""The feedback set's rules without services: rating parsing, dead letters, idempotent appends,
current ratings, flagged questions and the bad share per index version; the progress helper's
log lines."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import pytest

from opsassist import feedback
from opsassist.chat.answerlog import AnswerRecord
from opsassist.progress import progress
from opsassist.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", audit_dsn="")


def exported(
    feedback_id: str, rating: Any, message_id: str = "m1", updated_at: int = 1_800_000_000
) -> dict[str, Any]:
    """A feedback as Open WebUI's export returns it, with the chat snapshot."""
    return {
        "id": feedback_id,
        "type": "rating",
        "updated_at": updated_at,
        "data": {"rating": rating, "model_id": "opsassist", "reason": "", "comment": "wrong"},
        "meta": {"message_id": message_id, "chat_id": "c1"},
        "snapshot": {
            "chat": {
                "chat": {
                    "history": {
                        "messages": {
                            "u1": {"id": "u1", "role": "user", "content": "pod keeps restarting?"},
                            message_id: {
                                "id": message_id,
                                "role": "assistant",
                                "parentId": "u1",
                                "timestamp": updated_at - 30,
                            },
                        }
                    }
                }
            }
        },
    }


def answer(question: str, version: str, sources: list[str], at: dt.datetime) -> AnswerRecord:
    return AnswerRecord(
        id=f"chatcmpl-{abs(hash((question, version, at)))}",
        at=at,
        correlation_id="req-1",
        question=question,
        language="en",
        sources=[{"source": s, "section": "Diagnosis", "source_type": "runbook"} for s in sources],
        index_version=version,
        mode="composed",
    )


def test_parse_rating_reads_the_snapshot_and_refuses_malformed() -> None:
    rating = feedback.parse_rating(exported("f1", -1))
    assert (rating.verdict, rating.message_id, rating.chat_id) == ("bad", "m1", "c1")
    assert rating.question == "pod keeps restarting?"
    assert rating.message_at == 1_800_000_000 - 30
    assert feedback.parse_rating(exported("f2", "1")).verdict == "good"
    for bad in (exported("f3", 5), exported("f4", None), exported("f5", True)):
        with pytest.raises(feedback.Malformed, match="not 1 or -1"):
            feedback.parse_rating(bad)
    with pytest.raises(feedback.Malformed, match="message id"):
        feedback.parse_rating(exported("f6", 1, message_id=""))


def test_items_are_appended_once_and_the_latest_rating_counts(settings: Settings) -> None:
    at = dt.datetime(2027, 1, 15, 10, 0, tzinfo=dt.UTC)
    record = answer("pod keeps restarting?", "runbooks-v0001", ["k/A.md"], at)
    bad = feedback.to_item(feedback.parse_rating(exported("f1", -1)), record, "message_id")
    assert bad["sources"] == [
        {"source": "k/A.md", "section": "Diagnosis", "source_type": "runbook", "verdict": "bad"}
    ]
    assert bad["split"] == "dev"
    assert feedback.append_items(settings, [bad, bad]) == 1
    assert feedback.append_items(settings, [bad]) == 0  # a re-run adds nothing
    changed = exported("f1", 1, updated_at=1_800_000_100)  # the user changed their mind
    good = feedback.to_item(feedback.parse_rating(changed), record, "message_id")
    assert good["id"] != bad["id"]
    assert feedback.append_items(settings, [good]) == 1
    assert [i["rating"] for i in feedback.read_set(settings)] == ["bad", "good"]
    assert [i["rating"] for i in feedback.latest_ratings(feedback.read_set(settings))] == ["good"]
    shares = feedback.bad_share_by_version(feedback.read_set(settings))
    assert shares == {"runbooks-v0001": {"ratings": 1, "bad": 0, "bad_share": 0.0}}


def test_flagged_questions_need_three_current_bad_ratings(settings: Settings) -> None:
    at = dt.datetime(2027, 1, 15, 10, 0, tzinfo=dt.UTC)
    items = []
    for n, (question, rating) in enumerate(
        [
            ("Pod keeps restarting?", -1),
            ("pod keeps  restarting", -1),
            ("POD KEEPS RESTARTING?", -1),
            ("etcd has no leader", -1),
            ("etcd has no leader", -1),
            ("etcd has no leader", 1),
        ]
    ):
        version = "runbooks-v0002" if n == 2 else "runbooks-v0001"
        record = answer(question, version, ["k/A.md", "k/B.md"][: 1 + n % 2], at)
        raw = exported(f"f{n}", rating, message_id=f"m{n}", updated_at=1_800_000_000 + n)
        items.append(feedback.to_item(feedback.parse_rating(raw), record, "message_id"))
    feedback.append_items(settings, items)
    flagged = feedback.flagged_questions(settings)
    assert len(flagged) == 1
    top = flagged[0]
    assert top["bad_count"] == 3
    assert top["question"] == "POD KEEPS RESTARTING?"  # as last asked
    assert top["index_version"] == "runbooks-v0002"
    assert top["last_rated_at"] == items[2]["rated_at"]
    assert {s["source"]: s["bad_count"] for s in top["sources"]} == {"k/A.md": 3, "k/B.md": 1}
    assert [f["bad_count"] for f in feedback.flagged_questions(settings, min_bad=2)] == [3, 2]
    shares = feedback.bad_share_by_version(feedback.read_set(settings))
    assert shares["runbooks-v0001"] == {"ratings": 5, "bad": 4, "bad_share": 0.8}
    assert shares["runbooks-v0002"]["bad_share"] == 1.0


def test_fallback_join_takes_the_same_question_nearest_in_time() -> None:
    rating = feedback.parse_rating(exported("f1", -1))
    moment = dt.datetime.fromtimestamp(1_800_000_000 - 30, tz=dt.UTC)
    near = answer("Pod keeps restarting", "v1", ["a.md"], moment + dt.timedelta(seconds=20))
    far = answer("pod keeps restarting?", "v1", ["b.md"], moment - dt.timedelta(seconds=300))
    other = answer("etcd no leader", "v1", ["c.md"], moment)
    assert feedback._fallback(rating, [far, other, near], 900) is near
    assert feedback._fallback(rating, [far, other], 100) is None


def test_progress_logs_counts_and_rate(caplog: pytest.LogCaptureFixture) -> None:
    ticks = iter([0.0, 1.0, 2.5, 5.0, 5.0, 6.0, 6.0])
    logger = logging.getLogger("opsassist.test.progress")
    with (
        caplog.at_level(logging.INFO, logger="opsassist.test.progress"),
        progress(
            "embedding", 100, logger=logger, every_seconds=2.0, clock=lambda: next(ticks)
        ) as t,
    ):
        t.update(10)  # 1.0 s: too soon for a line
        t.update(30)  # 2.5 s: a line
        t.update(60)  # 5.0 s: a line
        t.update(100)  # 6.0 s: too soon
    lines = [r for r in caplog.records if r.name == "opsassist.test.progress"]
    assert [r.progress_done for r in lines] == [30, 60, 100]  # type: ignore[attr-defined]
    assert lines[-1].progress_final is True  # type: ignore[attr-defined]
    assert lines[0].getMessage() == "embedding: 30/100 (30.0%), 12.0/s, 2.5 s elapsed, ~5.8 s left"
    assert lines[-1].progress_rate == pytest.approx(100 / 6, abs=0.01)  # type: ignore[attr-defined]


def test_progress_draws_a_bar_in_a_terminal_instead_of_log_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import io

    from rich.console import Console

    from opsassist.progress import terminal

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    logger = logging.getLogger("opsassist.test.bar")
    with (
        caplog.at_level(logging.INFO, logger="opsassist.test.bar"),
        terminal(console),
        progress("embedding chunks", 10, logger=logger, every_seconds=0.0) as tracker,
    ):
        for done in range(1, 11):
            tracker.update(done)
    assert "embedding chunks" in out.getvalue() and "10/10" in out.getvalue()
    assert not [r for r in caplog.records if r.name == "opsassist.test.bar"]
    plain = io.StringIO()  # a console that is not a terminal (CI, a pipe): log lines instead
    with (
        caplog.at_level(logging.INFO, logger="opsassist.test.bar"),
        terminal(Console(file=plain, force_terminal=False)),
        progress("embedding chunks", 10, logger=logger, every_seconds=0.0) as tracker,
    ):
        tracker.update(10)
    assert plain.getvalue() == ""
    assert [r.progress_done for r in caplog.records if r.name == "opsassist.test.bar"] == [10, 10]  # type: ignore[attr-defined]


def test_answer_log_falls_back_to_jsonl_and_stops_trying_a_database_that_is_down(
    tmp_path: Path,
) -> None:
    """PostgreSQL on a port with nothing listening (a real "down"): the record goes to the JSONL
    file, the next one too without a new connection attempt, and the readers find both."""
    import socket
    import time

    from opsassist.chat.answerlog import AnswerLog, answers_between, answers_by_message

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dsn = f"postgresql://opsassist:opsassist@127.0.0.1:{port}/opsassist"
    settings = Settings(data_dir=tmp_path / "data", audit_dsn="")  # the readers: file only
    answers = AnswerLog(dsn, tmp_path / "data" / "answers" / "answers.jsonl", retry_seconds=60)
    at = dt.datetime(2027, 1, 15, 10, 0, tzinfo=dt.UTC)
    first = answer("pod keeps restarting?", "runbooks-v0001", ["k/A.md"], at)
    first.webui_message_id = "m-1"
    assert answers.record(first) == "jsonl"
    tried_at = answers._down_until
    assert tried_at > time.monotonic() + 50
    second = answer("etcd has no leader", "runbooks-v0001", ["e/B.md"], at)
    assert answers.record(second) == "jsonl"
    assert answers._down_until == tried_at  # not tried again
    found = answers_by_message(settings, ["m-1", "unknown"])
    assert list(found) == ["m-1"] and found["m-1"].sources == first.sources
    window = answers_between(settings, at - dt.timedelta(minutes=1), at + dt.timedelta(minutes=1))
    assert sorted(r.question for r in window) == ["etcd has no leader", "pod keeps restarting?"]
    (tmp_path / "data" / "answers" / "answers.jsonl").open("a").write('{"torn": ')  # killed writer
    assert len(answers_between(settings, at, at)) == 2

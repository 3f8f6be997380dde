"""Ratings of answers, from Open WebUI into the ``feedback`` evaluation set.

The loop (the ``chat_feedback`` DAG runs :func:`import_feedback`, then :func:`track_bad_share`):

1. **Fetch** every rating (thumbs up/down, reason, comment) from Open WebUI's admin feedback
   export (:func:`fetch_feedback`), keeping those updated since the checkpoint.
2. **Join** each rating to the chat server's answer log (:mod:`opsassist.chat.answerlog`): by the
   rated assistant message's id, which Open WebUI forwards to the chat server with the question
   (``X-OpenWebUI-Message-Id``) and stores as the rating's ``meta.message_id``. Open WebUI does
   not keep the chat server's completion id (``chatcmpl-...``) or its ``X-Request-ID``, so the
   message id is what really flows through. A rating without a logged message id (a chat server
   without the answer log then, or an Open WebUI that does not forward the ids) is joined as a
   fallback on the question text (the rated message's parent in the rating's chat snapshot) and
   the nearest answer to the same question within ``OPSASSIST_FEEDBACK_JOIN_WINDOW_SECONDS``;
   ratings joined neither way are dead-lettered as ``unjoined`` and counted.
3. **Append** the joined ratings to the set (``<data dir>/feedback/feedback.jsonl``): one item
   per rating version, id ``fb-`` + a hash of Open WebUI's feedback id, its ``updated_at`` and the
   rating, so a re-run adds nothing and a changed rating adds one item (the latest counts). An
   item carries the question, its language, the rating (``good``/``bad``), the reason and
   comment, the answer's ids, index version and mode, and the cited sources each marked with the
   rating's verdict. Every item is ``split: dev``: ratings never enter a frozen test split by
   themselves (a test split is written and frozen by hand, ``evaluation.evalset``).
4. **Checkpoint** (``checkpoint.json``): the newest ``updated_at`` imported, written only after
   the items are on disk. Open WebUI down: the task raises (Airflow retries), nothing is written,
   the checkpoint stays. A crash between the append and the checkpoint re-reads those ratings
   and the ids keep them single.

Malformed ratings (no message id, a rating that is not up or down) go to ``deadletter.jsonl``
with a reason and are counted per reason in the task's summary.

:func:`flagged_questions` lists questions rated bad at least ``min_bad`` times (the Airflow
plugin's view); :func:`track_bad_share` logs ``feedback_bad_share`` per index version to MLflow.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from opsassist.logs import get_logger
from opsassist.settings import Settings

if TYPE_CHECKING:
    from opsassist.chat.answerlog import AnswerRecord
    from opsassist.progress import Tracker

log = get_logger(__name__)

SET_NAME = "feedback"
EXPERIMENT_SET = "feedback"  # MLflow experiment <prefix>-feedback
PAGE_SIZE = 100
Verdict = Literal["good", "bad"]


class WebUIUnavailable(RuntimeError):
    """Open WebUI's API cannot be reached or refused the request (the task is retried)."""


# --- files ----------------------------------------------------------------------------------------
def set_path(settings: Settings) -> Path:
    return settings.feedback_dir / "feedback.jsonl"


def deadletter_path(settings: Settings) -> Path:
    return settings.feedback_dir / "deadletter.jsonl"


def checkpoint_path(settings: Settings) -> Path:
    return settings.feedback_dir / "checkpoint.json"


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    items = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except ValueError:  # a torn last line of a killed writer: the next run rewrites it
                log.warning("feedback: unreadable line skipped", extra={"line": number})
    return items


def _append_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    lines = [json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows]
    if not lines:
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("".join(lines))
        handle.flush()
        os.fsync(handle.fileno())
    return len(lines)


def read_set(settings: Settings) -> list[dict[str, Any]]:
    """Every item of the feedback set, in the order they were appended."""
    return _read_jsonl(set_path(settings))


def read_checkpoint(settings: Settings) -> int:
    """The newest ``updated_at`` (Open WebUI's epoch seconds) imported so far (0: none)."""
    path = checkpoint_path(settings)
    if not path.exists():
        return 0
    return int(json.loads(path.read_text(encoding="utf-8")).get("updated_at", 0))


def write_checkpoint(settings: Settings, updated_at: int) -> None:
    path = checkpoint_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps({"updated_at": updated_at}) + "\n", encoding="utf-8")
    os.replace(partial, path)


# --- the set --------------------------------------------------------------------------------------
def item_id(feedback_id: str, updated_at: int, verdict: str) -> str:
    digest = hashlib.sha256(f"{feedback_id}\x1f{updated_at}\x1f{verdict}".encode()).hexdigest()
    return f"fb-{digest[:20]}"


def append_items(settings: Settings, items: Sequence[dict[str, Any]]) -> int:
    """Append the items whose id the set does not hold yet; returns how many were added."""
    known = {item["id"] for item in read_set(settings)}
    fresh: list[dict[str, Any]] = []
    for item in items:
        if item["id"] not in known:
            known.add(item["id"])
            fresh.append(item)
    return _append_jsonl(set_path(settings), fresh)


def latest_ratings(items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The current rating of each Open WebUI feedback (its newest version)."""
    latest: dict[str, dict[str, Any]] = {}
    for item in items:
        key = str(item.get("feedback_id") or item["id"])
        if key not in latest or str(item["rated_at"]) >= str(latest[key]["rated_at"]):
            latest[key] = item
    return list(latest.values())


_SPACE = re.compile(r"\s+")


def question_key(text: str) -> str:
    """Questions that differ only in case, spacing or a trailing question mark are one."""
    return _SPACE.sub(" ", text).strip().rstrip("?!.").strip().casefold()


def flagged_questions(settings: Settings, min_bad: int = 3) -> list[dict[str, Any]]:
    """Questions whose answers were rated bad at least ``min_bad`` times (current ratings).

    Each: ``question`` (as last asked), ``bad_count``, ``last_rated_at`` (ISO time of the newest
    bad rating), ``index_version`` (of that rating's answer) and ``sources`` (the sources the
    bad answers cited: ``source``, ``section``, ``bad_count``), most often rated bad first."""
    groups: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for item in latest_ratings(read_set(settings)):
        if item.get("rating") == "bad":
            groups[question_key(str(item.get("question", "")))].append(item)
    flagged = []
    for bad in groups.values():
        if len(bad) < min_bad:
            continue
        bad.sort(key=lambda i: str(i["rated_at"]))
        newest = bad[-1]
        cited: collections.Counter[tuple[str, str]] = collections.Counter()
        for item in bad:
            for source in {(s.get("source", ""), s.get("section", "")) for s in item["sources"]}:
                cited[source] += 1
        flagged.append(
            {
                "question": newest["question"],
                "bad_count": len(bad),
                "last_rated_at": newest["rated_at"],
                "index_version": newest.get("index_version"),
                "sources": [
                    {"source": source, "section": section, "bad_count": count}
                    for (source, section), count in cited.most_common()
                ],
            }
        )
    flagged.sort(key=lambda f: (-f["bad_count"], f["last_rated_at"]), reverse=False)
    return flagged


def bad_share_by_version(items: Iterable[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per index version (current ratings): ratings, bad ratings and the share of bad ones."""
    counts: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for item in latest_ratings(items):
        version = str(item.get("index_version") or "unknown")
        counts[version][0] += 1
        counts[version][1] += item.get("rating") == "bad"
    return {
        version: {"ratings": total, "bad": bad, "bad_share": bad / total}
        for version, (total, bad) in sorted(counts.items())
    }


# --- Open WebUI -----------------------------------------------------------------------------------
def fetch_feedback(settings: Settings, transport: Any = None) -> list[dict[str, Any]]:
    """Every rating of the chat server's model (``OPSASSIST_CHAT_MODEL_ID``, as Open WebUI lists
    it) that Open WebUI holds, with the chat snapshot (the admin-only export). Connection errors,
    timeouts and non-200 answers raise :class:`WebUIUnavailable`."""
    import httpx

    token = settings.feedback_webui_token.get_secret_value()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    base = settings.feedback_webui_url.rstrip("/")
    try:
        with httpx.Client(
            base_url=base,
            headers=headers,
            timeout=settings.feedback_timeout_seconds,
            transport=transport,
        ) as client:
            response = client.get(
                "/api/v1/evaluations/feedbacks/all/export",
                params={"model_id": settings.chat_model_id},
            )
    except httpx.HTTPError as exc:
        raise WebUIUnavailable(
            f"Open WebUI at {base} is unreachable: {type(exc).__name__}: {exc}"
        ) from exc
    if response.status_code != 200:
        raise WebUIUnavailable(
            f"Open WebUI at {base} answered HTTP {response.status_code} to the feedback export: "
            f"{response.text[:200]}"
        )
    data = response.json()
    if not isinstance(data, list):
        raise WebUIUnavailable(f"Open WebUI's feedback export is not a list: {str(data)[:200]}")
    return data


@dataclasses.dataclass(slots=True)
class Rating:
    """One Open WebUI rating, as far as the join needs it."""

    feedback_id: str
    updated_at: int
    verdict: Verdict
    message_id: str
    chat_id: str
    model_id: str
    reason: str
    comment: str
    question: str  # from the chat snapshot ("" when the snapshot lacks it)
    message_at: int | None  # the rated message's time (epoch seconds) from the snapshot


class Malformed(ValueError):
    """A rating the loop cannot use (the message is the dead letter's reason)."""


def _snapshot_messages(raw: Mapping[str, Any]) -> dict[str, Any]:
    chat = ((raw.get("snapshot") or {}).get("chat") or {}).get("chat") or {}
    messages = (chat.get("history") or {}).get("messages") or {}
    return messages if isinstance(messages, dict) else {}


def parse_rating(raw: Mapping[str, Any]) -> Rating:
    """A rating from one exported feedback, or :class:`Malformed` with the reason."""
    if raw.get("type", "rating") != "rating":
        raise Malformed(f"type {raw.get('type')!r} is not a rating")
    data, meta = raw.get("data") or {}, raw.get("meta") or {}
    value: Any = data.get("rating")
    number = value if isinstance(value, int) and not isinstance(value, bool) else None
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        number = int(value)
    if number not in (1, -1):
        raise Malformed(f"rating {value!r} is not 1 or -1")
    message_id = str(meta.get("message_id") or "")
    if not raw.get("id") or not message_id:
        raise Malformed("no feedback id or rated message id")
    messages = _snapshot_messages(raw)
    message = messages.get(message_id) or {}
    parent = messages.get(str(message.get("parentId") or "")) or {}
    question = str(parent.get("content") or "") if parent.get("role") == "user" else ""
    stamp = message.get("timestamp")
    return Rating(
        feedback_id=str(raw["id"]),
        updated_at=int(raw.get("updated_at") or raw.get("created_at") or 0),
        verdict="good" if number == 1 else "bad",
        message_id=message_id,
        chat_id=str(meta.get("chat_id") or ""),
        model_id=str(data.get("model_id") or meta.get("model_id") or ""),
        reason=str(data.get("reason") or ""),
        comment=str(data.get("comment") or ""),
        question=question,
        message_at=int(stamp) if isinstance(stamp, int | float) else None,
    )


def _iso(epoch: int) -> str:
    return dt.datetime.fromtimestamp(epoch, tz=dt.UTC).isoformat()


def to_item(rating: Rating, answer: AnswerRecord, joined_by: str) -> dict[str, Any]:
    """The feedback set's item of a rating joined to its answer."""
    return {
        "id": item_id(rating.feedback_id, rating.updated_at, rating.verdict),
        "split": "dev",
        "feedback_id": rating.feedback_id,
        "rated_at": _iso(rating.updated_at),
        "rating": rating.verdict,
        "reason": rating.reason,
        "comment": rating.comment,
        "question": answer.question,
        "standalone": answer.standalone,
        "language": answer.language,
        "answer_id": answer.id,
        "answered_at": answer.at.isoformat(),
        "correlation_id": answer.correlation_id,
        "webui_chat_id": rating.chat_id,
        "webui_message_id": rating.message_id,
        "model_id": rating.model_id,
        "index_version": answer.index_version,
        "mode": answer.mode,
        "model": answer.model,
        "joined_by": joined_by,
        "sources": [
            {
                "source": s.get("source", ""),
                "section": s.get("section", ""),
                "source_type": s.get("source_type", ""),
                "verdict": rating.verdict,
            }
            for s in answer.sources
        ],
    }


def _fallback(
    rating: Rating, candidates: Sequence[AnswerRecord], window: int
) -> AnswerRecord | None:
    """The answer to the same question nearest in time to the rated message, within
    ``window`` seconds (the rating's time when the snapshot has no message time)."""
    if not rating.question:
        return None
    key = question_key(rating.question)
    moment = dt.datetime.fromtimestamp(rating.message_at or rating.updated_at, tz=dt.UTC)
    best: tuple[float, AnswerRecord] | None = None
    for answer in candidates:
        if question_key(answer.question) != key:
            continue
        distance = abs((answer.at - moment).total_seconds())
        if distance <= window and (best is None or distance < best[0]):
            best = (distance, answer)
    return best[1] if best else None


def join_ratings(
    settings: Settings, ratings: Sequence[Rating]
) -> tuple[list[dict[str, Any]], list[Rating]]:
    """Items of the ratings joined to the answer log, and the ratings joined neither way."""
    from opsassist.chat.answerlog import answers_between, answers_by_message

    by_message = answers_by_message(settings, [r.message_id for r in ratings])
    items, pending = [], []
    for rating in ratings:
        answer = by_message.get(rating.message_id)
        if answer is not None:
            items.append(to_item(rating, answer, "message_id"))
        else:
            pending.append(rating)
    unjoined: list[Rating] = []
    if pending:
        window = settings.feedback_join_window_seconds
        moments = [r.message_at or r.updated_at for r in pending]
        candidates = answers_between(
            settings,
            dt.datetime.fromtimestamp(min(moments) - window, tz=dt.UTC),
            dt.datetime.fromtimestamp(max(moments) + window, tz=dt.UTC),
        )
        for rating in pending:
            answer = _fallback(rating, candidates, window)
            if answer is None:
                unjoined.append(rating)
            else:
                items.append(to_item(rating, answer, "question_time"))
    return items, unjoined


def import_feedback(
    settings: Settings,
    *,
    tracker: Tracker | None = None,
    transport: Any = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Fetch, join and append new ratings; then advance the checkpoint. Returns the counts."""
    since = read_checkpoint(settings)
    exported = fetch_feedback(settings, transport)  # raises when Open WebUI is down
    fresh = [raw for raw in exported if int(raw.get("updated_at") or 0) >= since]
    if tracker is not None:
        tracker.update(0, len(fresh))
    ratings: list[Rating] = []
    dead: list[dict[str, Any]] = []
    stamp = (now or dt.datetime.now(dt.UTC)).isoformat()
    for number, raw in enumerate(fresh, start=1):
        try:
            ratings.append(parse_rating(raw))
        except Malformed as exc:
            dead.append({"reason": "malformed", "detail": str(exc), "at": stamp, "payload": raw})
        if tracker is not None and number % PAGE_SIZE == 0:
            tracker.update(number)
    items, unjoined = join_ratings(settings, ratings)
    for rating in unjoined:
        dead.append(
            {
                "reason": "unjoined",
                "detail": "no answer in the answer log for the rated message or its question",
                "at": stamp,
                "payload": dataclasses.asdict(rating),
            }
        )
    known_dead = {
        (d.get("reason"), json.dumps(d.get("payload"), sort_keys=True, default=str))
        for d in _read_jsonl(deadletter_path(settings))
    }
    dead = [
        d
        for d in dead
        if (d["reason"], json.dumps(d["payload"], sort_keys=True, default=str)) not in known_dead
    ]
    added = append_items(settings, items)
    _append_jsonl(deadletter_path(settings), dead)
    newest = max([since, *(int(raw.get("updated_at") or 0) for raw in fresh)])
    write_checkpoint(settings, newest)  # only after the items and dead letters are on disk
    if tracker is not None:
        tracker.update(len(fresh), len(fresh))
    reasons = collections.Counter(d["reason"] for d in dead)
    summary = {
        "exported": len(exported),
        "new_or_updated": len(fresh),
        "joined": len(items),
        "joined_by_message_id": sum(1 for i in items if i["joined_by"] == "message_id"),
        "joined_by_question_time": sum(1 for i in items if i["joined_by"] == "question_time"),
        "added": added,
        "unjoined": len(unjoined),
        "dead_letters": dict(reasons),
        "checkpoint": newest,
    }
    log.info("feedback imported", extra=summary)
    return summary


# --- MLflow ---------------------------------------------------------------------------------------
def track_bad_share(
    settings: Settings, run_tags: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Log ``feedback_bad_share`` (and ``feedback_ratings``, ``feedback_bad``) per index version
    to MLflow experiment ``<prefix>-feedback``: one run per index version (tag
    ``opsassist.index_version``), a new point (step = ratings so far) only when the figures
    changed, so a re-run with no new rating logs nothing."""
    import time

    from mlflow.entities import Metric, RunTag

    from opsassist.evaluation import tracking

    shares = bad_share_by_version(read_set(settings))
    mlflow = tracking.client(settings)
    experiment = tracking.ensure_experiment(
        mlflow, settings, tracking.experiment_name(settings, EXPERIMENT_SET)
    )
    logged: dict[str, Any] = {}
    for version, figures in shares.items():
        runs = tracking.runs_by_tag(settings, EXPERIMENT_SET, "opsassist.index_version", version)
        if runs:
            run_id = str(runs[0].info.run_id)
            history = mlflow.get_metric_history(run_id, "feedback_ratings")
            last = history[-1].value if history else None
            shares_history = mlflow.get_metric_history(run_id, "feedback_bad_share")
            last_share = shares_history[-1].value if shares_history else None
            if last == figures["ratings"] and last_share == figures["bad_share"]:
                continue
        else:
            tags = {"opsassist.set": SET_NAME, "opsassist.index_version": version}
            run = mlflow.create_run(experiment, run_name=f"feedback-{version}", tags=tags)
            run_id = str(run.info.run_id)
        now = int(time.time() * 1000)
        step = int(figures["ratings"])
        mlflow.log_batch(
            run_id,
            metrics=[
                Metric(f"feedback_{name}", float(value), now, step)
                for name, value in (
                    ("bad_share", figures["bad_share"]),
                    ("ratings", figures["ratings"]),
                    ("bad", figures["bad"]),
                )
            ],
            tags=[RunTag(k, v) for k, v in (run_tags or {}).items()],
        )
        mlflow.set_terminated(run_id, "FINISHED")
        logged[version] = {**figures, "run_id": run_id}
    log.info("feedback bad share logged", extra={"versions": len(shares), "logged": len(logged)})
    return {"versions": shares, "logged": logged}

"""Notices of answers made without the model, or without the index.

When the model is down, times out, refuses the prompt, loops or says nothing, the answer is the
composed one (``opsassist.chat.compose``) after one of these notices; the notice comes first so
a reader (or a client showing the first line) sees it at once.
"""

from __future__ import annotations

import re

MODEL_NOTICE = "⚠ Model unavailable — showing runbook steps directly"
INTERRUPTED_NOTICE = "⚠ The model stopped answering — runbook steps follow"
EMPTY_NOTICE = "⚠ The model returned no answer — showing runbook steps directly"
UNCITED_NOTICE = "⚠ The model's answer cited no source — runbook steps follow"
LOOP_NOTICE = "⚠ The model's answer was stopped (it repeated itself) — runbook steps follow"
INDEX_NOTICE = "⚠ Knowledge index unavailable — I cannot look up runbooks right now"


_ADDRESS = re.compile(
    r"\s*\b(?:at|to|from)?\s*(?:https?://|\d{1,3}(?:\.\d{1,3}){3}:)[^\s]*[^\s:,;)]"
)


def public_reason(reason: str) -> str:
    """A failure reason fit for the engineer reading the answer: no internal addresses (the
    full reason is in the server's log)."""
    return " ".join(_ADDRESS.sub("", reason).split()).strip(" :") or "unavailable"


def model_notice(reason: str, notice: str = MODEL_NOTICE) -> str:
    return f"{notice} ({public_reason(reason)})."


def index_unavailable(reason: str) -> str:
    return (
        f"{INDEX_NOTICE} ({reason}).\n\n"
        "No answer was generated: without the runbooks it would be a guess. Check that the "
        "runbook index is built and promoted (`opsassist versions`, the runbooks_index DAG) "
        "and ask again."
    )

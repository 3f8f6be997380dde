"""A question's vector in the default model pair leans on the English-only model for English
questions and on the multilingual one for Russian questions; indexed passages keep equal weights.
The real packaged models (MiniLM through ONNX Runtime, USE through its numpy encoder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from opsassist.embedding import (
    DEFAULT_MODEL,
    ENGLISH_ONLY_QUERY_WEIGHT,
    MINILM_MODEL,
    USE_MODEL,
    concatenate_queries,
    embed_texts,
    english_view,
    query_part_inputs,
    query_part_weights,
)
from opsassist.embedding_onnx import query_encoder

PAIR = [MINILM_MODEL, USE_MODEL]


def test_weights_follow_the_question_language() -> None:
    en = query_part_weights(PAIR, "etcd has no leader since the SAN firmware update")
    ru = query_part_weights(PAIR, "у etcd нет лидера после обновления прошивки СХД")
    assert en == [ENGLISH_ONLY_QUERY_WEIGHT["en"], 1 - ENGLISH_ONLY_QUERY_WEIGHT["en"]]
    assert ru == pytest.approx(
        [ENGLISH_ONLY_QUERY_WEIGHT["ru"], 1 - ENGLISH_ONLY_QUERY_WEIGHT["ru"]]
    )
    assert ru[0] < en[0]
    # no English-only part, or a single model: equal weights whatever the language
    assert query_part_weights(["multilingual-e5-small", USE_MODEL], "нет лидера") == [0.5, 0.5]
    assert query_part_weights([MINILM_MODEL], "нет лидера") == [1.0]


def test_the_english_only_part_reads_a_russian_questions_english_view() -> None:
    question = "под в CrashLoopBackOff постоянно перезапускается"
    view = english_view(question)
    words = view.split()
    assert words[0] == "CrashLoopBackOff" and "pod" in words and "restart" in words
    assert not any("а" <= ch <= "я" for ch in view)  # no Cyrillic left
    (minilm_weight, minilm_text), (use_weight, use_text) = query_part_inputs(PAIR, question)
    assert minilm_weight + use_weight == pytest.approx(1.0)
    assert minilm_text == view and use_text == question  # USE reads the Russian itself
    assert minilm_weight == pytest.approx(ENGLISH_ONLY_QUERY_WEIGHT["ru"])
    # an English question is read as it is
    assert query_part_inputs(PAIR, "pod keeps restarting")[0][1] == "pod keeps restarting"
    # nothing an English-only model can read: the multilingual part alone
    assert english_view("привет как дела") == ""
    assert query_part_weights(PAIR, "привет как дела") == [0.0, 1.0]


def test_a_part_without_weight_is_not_run_and_rows_are_unit_length() -> None:
    calls: list[list[str]] = []

    def part(dimension: int, value: float):  # type: ignore[no-untyped-def]
        def encode(texts):  # type: ignore[no-untyped-def]
            calls.append(list(texts))
            return np.full((len(texts), dimension), value / np.sqrt(dimension), dtype=np.float32)

        return encode

    texts = ["pod keeps restarting", "под постоянно перезапускается"]
    matrix = concatenate_queries(PAIR, [part(4, 1.0), part(6, 1.0)], [4, 6], texts)
    assert matrix.shape == (2, 10)
    assert np.allclose(np.linalg.norm(matrix, axis=1), 1.0)
    en_weight, ru_weight = ENGLISH_ONLY_QUERY_WEIGHT["en"], ENGLISH_ONLY_QUERY_WEIGHT["ru"]
    if en_weight == 1.0:  # the multilingual part is asked for the Russian question only
        # and the English-only part reads the Russian question's English view
        assert calls == [[texts[0], english_view(texts[1])], [texts[1]]]
        assert not matrix[0, 4:].any()
    # the Russian row: the parts' norms in the ratio of their weights
    ratio = np.linalg.norm(matrix[1, :4]) / np.linalg.norm(matrix[1, 4:])
    assert ratio == pytest.approx(ru_weight / (1 - ru_weight), rel=1e-5)


def test_onnx_and_torch_pair_vectors_agree_and_score_as_weighted_cosines(tmp_path: Path) -> None:
    encode = query_encoder(DEFAULT_MODEL, tmp_path / "models")
    questions = ["disk almost full on a node", "на ноде заканчивается место на диске"]
    fast = encode(questions)
    slow = embed_texts(questions, DEFAULT_MODEL, role="query")
    assert np.allclose(fast, slow, atol=1e-4)
    passage = embed_texts(["Node filesystem space is filling up"], DEFAULT_MODEL)[0]
    minilm = embed_texts(["Node filesystem space is filling up"], MINILM_MODEL)[0]
    use = embed_texts(["Node filesystem space is filling up"], USE_MODEL)[0]
    for question, row in zip(questions, fast, strict=True):
        (minilm_weight, minilm_text), (use_weight, _) = query_part_inputs(PAIR, question)
        weights = [minilm_weight, use_weight]
        q_minilm = embed_texts([minilm_text], MINILM_MODEL, role="query")[0]
        q_use = embed_texts([question], USE_MODEL, role="query")[0]
        weighted = weights[0] * float(q_minilm @ minilm) + weights[1] * float(q_use @ use)
        norm = float(np.hypot(weights[0], weights[1])) * np.sqrt(2)
        assert float(row @ passage) == pytest.approx(weighted / norm, abs=1e-4)

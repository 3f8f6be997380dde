"""ONNX Runtime query embeddings equal the torch embeddings the indexes are built with, the
model is exported once per data directory, and the chat pipeline picks the runtime from settings.
Real model (the packaged all-MiniLM-L6-v2), real torch and ONNX Runtime; nothing faked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from opsassist.chat.pipeline import ChatPipeline
from opsassist.embedding import embed_texts
from opsassist.embedding_onnx import OnnxQueryEncoder
from opsassist.settings import Settings

TEXTS = [
    "why does my pod keep crash looping?",
    "etcd has no leader",
    "Почему под перезапускается?",  # non-ASCII
    "node filesystem almost out of space " * 80,  # longer than the 256-token limit: truncated
    "",
]


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> OnnxQueryEncoder:
    return OnnxQueryEncoder("all-MiniLM-L6-v2", tmp_path_factory.mktemp("models"))


def test_onnx_vectors_equal_torch_vectors_one_by_one_and_batched(
    encoder: OnnxQueryEncoder,
) -> None:
    expected = embed_texts(TEXTS, "all-MiniLM-L6-v2")
    batched = encoder(TEXTS)  # padded to the longest text
    single = np.stack([encoder([text])[0] for text in TEXTS])
    for got in (batched, single):
        assert got.shape == expected.shape and got.dtype == np.float32
        assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        assert float((got * expected).sum(axis=1).min()) > 0.99999
        assert float(np.abs(got - expected).max()) < 1e-4
    assert encoder([]).shape == (0, expected.shape[1])


def test_the_model_is_exported_once_per_data_directory(encoder: OnnxQueryEncoder) -> None:
    path = encoder.path
    assert path.exists() and path.suffix == ".onnx"
    stamp = path.stat().st_mtime_ns
    again = OnnxQueryEncoder("all-MiniLM-L6-v2", path.parent)
    assert again.path == path and path.stat().st_mtime_ns == stamp  # loaded, not exported
    assert not list(path.parent.glob("*.tmp"))
    assert np.allclose(again(["etcd has no leader"]), encoder(["etcd has no leader"]))


def test_chat_pipeline_uses_onnx_for_minilm_and_torch_when_configured(tmp_path: Path) -> None:
    minilm = {"data_dir": tmp_path, "embedding_model": "all-MiniLM-L6-v2"}
    onnx = ChatPipeline(Settings(**minilm), None, None, None)  # type: ignore[arg-type]
    assert isinstance(onnx._query_encoder(), OnnxQueryEncoder)
    assert list((tmp_path / "models").glob("*.onnx"))
    torch = ChatPipeline(
        Settings(**minilm, query_embedding_runtime="torch"),
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
    )
    assert torch._query_encoder() is None
    assert np.allclose(torch._encode(["pod"]), onnx._encode(["pod"]), atol=1e-4)


@pytest.fixture(scope="module")
def pair_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data directory for the default pair's tests: MiniLM is exported to it once."""
    return tmp_path_factory.mktemp("pair")


def test_the_default_pair_embeds_minilm_through_onnx_and_use_through_its_own_encoder(
    pair_data_dir: Path,
) -> None:
    """The default pair of models (MiniLM + USE): MiniLM's half through ONNX Runtime, USE's
    through its numpy encoder, scaled and concatenated as the indexes' vectors are."""
    from opsassist.embedding import embed_query

    pipeline = ChatPipeline(Settings(data_dir=pair_data_dir), None, None, None)  # type: ignore[arg-type]
    assert pipeline._query_encoder() is not None
    assert list((pair_data_dir / "models").glob("all-MiniLM-L6-v2-*.onnx"))  # exported once
    for question in ("под постоянно перезапускается", "etcd has no leader"):
        vector = pipeline._encode([question])[0]
        both = embed_query(question, "all-MiniLM-L6-v2+use-multilingual-v3")
        assert vector.shape == (896,) and vector.dtype == np.float32
        assert float(vector @ both) > 0.99999 and np.allclose(vector, both, atol=1e-4)


def test_search_embeds_the_question_as_the_chat_server_does(pair_data_dir: Path) -> None:
    from opsassist.embedding import embed_query
    from opsassist.search import question_vector

    settings = Settings(data_dir=pair_data_dir)
    vector = question_vector("disk almost full on a node", settings)
    expected = embed_query("disk almost full on a node", settings.embedding_model)
    assert np.allclose(vector, expected, atol=1e-4)
    assert list((pair_data_dir / "models").glob("*.onnx"))

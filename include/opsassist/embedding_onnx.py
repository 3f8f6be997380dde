"""Query embeddings through ONNX Runtime: the same vectors as :mod:`opsassist.embedding`, faster.

The chat server embeds one short question per request, where PyTorch's per-call overhead
dominates: all-MiniLM-L6-v2 takes about 9 ms per question on two CPU cores with torch and about
4.5 ms with ONNX Runtime (``benchmarks/query_embedding.py``). The vectors are the same (cosine
1.0 within float rounding, checked by ``tests/unit/test_embedding_onnx.py``), so questions
embedded here search indexes built with torch.

The transformer is exported from the packaged sentence-transformers weights once, with
``torch.onnx.export``, to ``<data dir>/models/<model>-<hash>.onnx`` (written atomically, named
after the weights and the exporter's versions, so a new model or torch exports again); later
processes only load that file. Pooling (mean over tokens) and the unit-length normalisation are
done here, as sentence-transformers does for this model family. A model whose pipeline is not
"transformer, mean pooling[, normalise]" is refused: the caller falls back to torch.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from opsassist.embedding import load_model, resolve_model_path
from opsassist.logs import get_logger

log = get_logger(__name__)
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_lock = threading.Lock()


class UnsupportedModel(RuntimeError):
    """The model's pipeline is not one this encoder reproduces (use torch)."""


def _pipeline_check(model: Any) -> int:
    """The model's max sequence length, if its pipeline is transformer + mean pooling."""
    modules = list(model)
    names = [type(m).__name__ for m in modules]
    if len(modules) < 2 or names[0] != "Transformer" or names[1] != "Pooling":
        raise UnsupportedModel(f"pipeline {names}: not transformer + pooling")
    mode = getattr(modules[1], "pooling_mode", None)
    if mode != "mean" and not (
        mode is None and getattr(modules[1], "pooling_mode_mean_tokens", False)
    ):
        raise UnsupportedModel(f"pooling {mode!r} is not mean pooling")
    if any(name not in ("Normalize",) for name in names[2:]):
        raise UnsupportedModel(f"pipeline {names}: extra modules")
    return int(model.max_seq_length or 256)


def _export_path(root: Path, name: str) -> Path:
    from importlib.metadata import version

    weights = Path(resolve_model_path(name))
    digest = hashlib.sha256()
    digest.update(f"{name}|torch {version('torch')}|onnx {version('onnx')}".encode())
    for path in sorted(weights.rglob("*")) if weights.is_dir() else []:
        if path.is_file() and path.suffix in (".safetensors", ".bin", ".json", ".txt"):
            digest.update(path.name.encode())
            digest.update(str(path.stat().st_size).encode())
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)
    return root / f"{safe}-{digest.hexdigest()[:12]}.onnx"


def _export(model: Any, target: Path) -> None:
    import torch

    class Encoder(torch.nn.Module):  # positional inputs for the exporter
        def __init__(self, transformer: Any) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            out = self.transformer(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
            return out.last_hidden_state

    sample = model.tokenizer(
        ["a question", "a longer question about pods"], return_tensors="pt", padding=True
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.tmp")
    dynamic = {name: {0: "batch", 1: "tokens"} for name in (*INPUTS, "last_hidden_state")}
    with torch.no_grad():
        torch.onnx.export(
            Encoder(model[0].auto_model).eval(),
            tuple(sample[name] for name in INPUTS),
            str(partial),
            input_names=list(INPUTS),
            output_names=["last_hidden_state"],
            dynamic_axes=dynamic,
            opset_version=17,
            dynamo=False,
        )
    os.replace(partial, target)  # atomic: a concurrent reader sees the whole file or none


class OnnxQueryEncoder:
    """``texts -> unit vectors`` (float32 matrix), as :func:`opsassist.embedding.embed_texts`."""

    def __init__(self, model_name: str, cache_dir: Path, threads: int = 0) -> None:
        import onnxruntime as ort

        self.model_name = model_name
        self.path = _export_path(cache_dir, model_name)
        with _lock:
            if not self.path.exists():
                model = load_model(model_name)
                self.max_length = _pipeline_check(model)
                log.info("exporting the embedding model to ONNX", extra={"path": str(self.path)})
                _export(model, self.path)
            else:
                self.max_length = _max_length(model_name)
        self.tokenizer = _tokenizer(model_name, self.max_length)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or min(4, os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        # no busy-waiting between questions: the cores are shared with searches (and, on a
        # small machine, the model server); p95 is lower this way, p50 ~1 ms higher
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            str(self.path), options, providers=["CPUExecutionProvider"]
        )
        self.dimension = int(self.session.get_outputs()[0].shape[-1] or 0)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        encoded = self.tokenizer.encode_batch(list(texts))  # truncated, padded to the longest
        feeds = {
            "input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encoded], dtype=np.int64),
        }
        hidden = self.session.run(None, feeds)[0]
        mask = feeds["attention_mask"][..., None].astype(np.float32)
        pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return np.asarray(pooled / np.clip(norms, 1e-12, None), dtype=np.float32)


def _tokenizer(model_name: str, max_length: int) -> Any:
    """The model's fast tokenizer from its ``tokenizer.json`` (the ``tokenizers`` library: no
    transformers or torch import), truncating and padding as sentence-transformers does."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(resolve_model_path(model_name)) / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=max_length)
    pad_id = tokenizer.token_to_id("[PAD]")
    tokenizer.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]")
    return tokenizer


def _max_length(model_name: str) -> int:
    """The max sequence length from the sentence-transformers config, without loading torch."""
    import json

    config = Path(resolve_model_path(model_name)) / "sentence_bert_config.json"
    try:
        return int(json.loads(config.read_text()).get("max_seq_length") or 256)
    except (OSError, ValueError):
        return 256


QueryEncoder = Callable[[Sequence[str]], np.ndarray]


_build_lock = threading.Lock()


def query_encoder(
    model_name: str, cache_dir: Path, device: str = "cpu", runtime: str = "onnx"
) -> QueryEncoder:
    """Question embeddings of ``model_name``, the vectors ``embed_texts(role="query")`` gives:
    on a CPU with the ``onnx`` runtime every sentence-transformers part (MiniLM) runs through
    ONNX Runtime, USE through its numpy encoder restored from its prepared state
    (:mod:`opsassist.embedding_use`) and the others (e5) through their own encoders, so a
    question is embedded without importing torch once the export exists. A part that cannot be
    exported falls back to its torch encoder (logged once). ``a+b`` names concatenate as
    :mod:`opsassist.embedding` does. Built once per arguments and process: concurrent first
    callers (the chat server's warm-up and its first requests) wait for one build."""
    with _build_lock:
        return _query_encoder(model_name, cache_dir, device, runtime)


@lru_cache(maxsize=8)
def _query_encoder(model_name: str, cache_dir: Path, device: str, runtime: str) -> QueryEncoder:
    from opsassist.embedding import (
        USE_DIMENSION,
        USE_MODEL,
        concatenate_queries,
        embed_texts,
        is_sentence_transformer,
        model_dimension,
    )

    fast = runtime == "onnx" and device == "cpu"
    names = model_name.split("+")
    parts: list[QueryEncoder] = []
    dimensions: list[int] = []
    for name in names:
        if fast and is_sentence_transformer(name):
            try:
                onnx = OnnxQueryEncoder(name, cache_dir)
                parts.append(onnx)
                dimensions.append(onnx.dimension)
                continue
            except Exception as exc:
                log.warning(
                    "ONNX query embeddings unavailable: using torch",
                    extra={"model": name, "error": f"{type(exc).__name__}: {exc}"},
                )
        if fast and name == USE_MODEL:
            from opsassist.embedding_use import prepared_use

            use = prepared_use(cache_dir)
            parts.append(lambda texts, use=use: use.encode(texts, "query", 32))  # type: ignore[misc]
            dimensions.append(USE_DIMENSION)
            continue
        parts.append(
            lambda texts, name=name: embed_texts(texts, name, 32, device, role="query")  # type: ignore[misc]
        )
        dimensions.append(model_dimension(name, device))
    if len(parts) == 1:
        return parts[0]

    def encode(texts: Sequence[str]) -> np.ndarray:
        return concatenate_queries(names, parts, dimensions, texts)

    return encode

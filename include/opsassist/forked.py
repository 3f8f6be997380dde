"""Compute a numpy array in a forked child while this process does something else.

A cold ``opsassist search`` has two independent halves of about the same length: opening the
index (importing LanceDB) and loading the question encoder (ONNX Runtime, USE). Python threads
cannot run them side by side (both are interpreter-bound: measured, the two halves took longer
together in threads than one after the other), but two processes can, one per core: the child,
forked before either half starts, embeds the question and sends the vector back through a pipe.

:func:`in_child` returns a callable that waits for the array; it gives ``None`` when the child
failed or fork is unavailable, and the caller then computes the array itself.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable

import numpy as np

_HEADER = struct.Struct("<I")  # length of the .npy bytes that follow


def in_child(compute: Callable[[], np.ndarray]) -> Callable[[], np.ndarray | None]:
    """Run ``compute`` in a forked child; the returned callable waits for its result."""
    if not hasattr(os, "fork"):
        return lambda: None
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: compute, send, leave without running the parent's exit handlers
        status = 1
        try:
            os.close(read_end)
            import io

            buffer = io.BytesIO()
            np.save(buffer, np.asarray(compute()), allow_pickle=False)
            payload = buffer.getvalue()
            with os.fdopen(write_end, "wb") as out:
                out.write(_HEADER.pack(len(payload)) + payload)
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)

    def result() -> np.ndarray | None:
        import io

        with os.fdopen(read_end, "rb") as pipe:
            data = pipe.read()
        os.waitpid(pid, 0)
        if len(data) < _HEADER.size:
            return None
        (size,) = _HEADER.unpack_from(data)
        payload = data[_HEADER.size :]
        if len(payload) != size:
            return None
        return np.asarray(np.load(io.BytesIO(payload), allow_pickle=False))

    return result

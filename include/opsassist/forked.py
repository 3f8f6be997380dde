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

import contextlib
import os
import signal
import struct
from collections.abc import Callable

import numpy as np

_HEADER = struct.Struct("<I")  # length of the .npy bytes that follow


class ChildResult:
    """The array a forked child computes: call it to wait for the array (``None`` when the child
    failed or there is no child); :meth:`cancel` ends a child whose result is no longer wanted
    (so it cannot write to the terminal after its parent has reported an error and left)."""

    def __init__(self, pid: int | None = None, read_end: int | None = None) -> None:
        self._pid = pid
        self._read_end = read_end

    def __call__(self) -> np.ndarray | None:
        if self._pid is None or self._read_end is None:
            return None
        import io

        with os.fdopen(self._read_end, "rb") as pipe:
            data = pipe.read()
        self._read_end = None
        self._reap()
        if len(data) < _HEADER.size:
            return None
        (size,) = _HEADER.unpack_from(data)
        payload = data[_HEADER.size :]
        if len(payload) != size:
            return None
        return np.asarray(np.load(io.BytesIO(payload), allow_pickle=False))

    def cancel(self) -> None:
        if self._pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._pid, signal.SIGKILL)
        if self._read_end is not None:
            os.close(self._read_end)
            self._read_end = None
        self._reap()

    def _reap(self) -> None:
        if self._pid is not None:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self._pid, 0)
            self._pid = None


def in_child(compute: Callable[[], np.ndarray]) -> ChildResult:
    """Run ``compute`` in a forked child; calling the result waits for the array."""
    if not hasattr(os, "fork"):
        return ChildResult()
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
    return ChildResult(pid, read_end)

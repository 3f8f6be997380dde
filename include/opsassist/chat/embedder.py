"""Query embeddings batched across concurrent requests.

Sixteen questions arriving together cost sixteen forward passes when embedded one by one, and on
a small CPU they also fight over the cores. Here the first caller encodes its query at once (no
waiting window, so a lone request pays nothing extra); queries that arrive meanwhile queue up and
are encoded together in one pass by the next leader: the caller whose query heads the queue.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import numpy as np


class _Item:
    __slots__ = ("error", "event", "lead", "text", "vector")

    def __init__(self, text: str) -> None:
        self.text = text
        self.event = threading.Event()
        self.vector: np.ndarray | None = None
        self.error: BaseException | None = None
        self.lead = False


class BatchingEmbedder:
    """Callable ``text -> vector`` (thread-safe) over a batch encoder ``texts -> matrix``."""

    def __init__(self, encode: Callable[[Sequence[str]], np.ndarray], max_batch: int = 32) -> None:
        self._encode = encode
        self.max_batch = max(1, max_batch)
        self._lock = threading.Lock()
        self._queue: list[_Item] = []
        self._busy = False
        self.batches = 0  # number of encoder calls (for tests and curiosity)

    def __call__(self, text: str) -> np.ndarray:
        item = _Item(text)
        with self._lock:
            self._queue.append(item)
            leader = not self._busy
            self._busy = True
        if leader:
            self._run_batch()
        else:
            item.event.wait()
            if item.lead:  # handed the lead: encode the next batch (ours is at its head)
                self._run_batch()
        if item.error is not None:
            raise item.error
        assert item.vector is not None
        return item.vector

    def _run_batch(self) -> None:
        with self._lock:
            batch = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
        texts = list(dict.fromkeys(i.text for i in batch))
        try:
            matrix = self._encode(texts)
            rows = {text: matrix[n] for n, text in enumerate(texts)}
            for item in batch:
                item.vector = rows[item.text]
        except BaseException as exc:  # every waiter gets the error, none hangs
            for item in batch:
                item.error = exc
        finally:
            self.batches += 1
            with self._lock:
                successor = self._queue[0] if self._queue else None
                if successor is None:
                    self._busy = False
                else:
                    successor.lead = True
            for item in batch:
                item.event.set()
            if successor is not None:
                successor.event.set()

"""Progress of long steps, one helper for the CLI and the DAG tasks.

``progress(what, total)`` is a context manager yielding a :class:`Tracker`; the step calls
``tracker.update(done, total)`` (or ``tracker.advance(n)``) as it goes:

- in a terminal (a console whose output is a TTY, given as ``console`` or, for library steps
  the CLI calls, set around the command with :func:`terminal`): a rich progress bar (count,
  elapsed time, time left), gone when the step ends;
- everywhere else (DAG tasks, CI, pipes, ``--json``): log lines at INFO on the given logger with
  the counts and the rate, at most one every ``every_seconds`` plus one at the end, e.g.
  ``embedding chunks: 128/419 (30.5%), 12.3/s, 10.4 s elapsed, ~23.7 s left`` with the same
  figures as structured fields (``progress_done``, ``progress_total``, ``progress_rate``,
  ``progress_elapsed_s``).

Nothing heavy is imported: rich only when a bar is shown.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

DEFAULT_EVERY_SECONDS = 10.0
ProgressCallback = Callable[[int, int], None]
_terminal: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "opsassist_progress_console", default=None
)


@contextlib.contextmanager
def terminal(console: Any) -> Iterator[None]:
    """Show the progress of library steps run inside this block as bars on ``console`` (when
    it is a terminal); ``None`` keeps them as log lines."""
    token = _terminal.set(console)
    try:
        yield
    finally:
        _terminal.reset(token)


class Tracker:
    """Counts of one step; reports through a rich bar or log lines (see the module doc)."""

    def __init__(
        self,
        what: str,
        total: int | None,
        logger: logging.Logger | None,
        every_seconds: float,
        bar: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.total = total
        self.done = 0
        self.lines = 0  # log lines written so far
        self._logger = logger
        self._every = every_seconds
        self._bar = bar
        self._task = bar.add_task(what, total=total) if bar is not None else None
        self._clock = clock
        self._started = clock()
        self._last_line = self._started

    # --- what a step calls ----------------------------------------------------------------------
    def update(self, done: int, total: int | None = None) -> None:
        """``done`` items of ``total`` (a callback of the shape ``(done, total)``)."""
        self.done = done
        if total is not None:
            self.total = total
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=self.total)
            return
        now = self._clock()
        if now - self._last_line >= self._every:
            self._log(now, final=False)

    def advance(self, count: int = 1) -> None:
        self.update(self.done + count)

    def __call__(self, done: int, total: int) -> None:
        self.update(done, total)

    # --- figures ----------------------------------------------------------------------------------
    def figures(self, now: float | None = None) -> dict[str, Any]:
        elapsed = max((now if now is not None else self._clock()) - self._started, 1e-9)
        rate = self.done / elapsed
        fields: dict[str, Any] = {
            "progress_step": self.what,
            "progress_done": self.done,
            "progress_total": self.total,
            "progress_rate": round(rate, 2),
            "progress_elapsed_s": round(elapsed, 1),
        }
        if self.total and rate > 0 and self.done < self.total:
            fields["progress_left_s"] = round((self.total - self.done) / rate, 1)
        return fields

    def line(self, now: float | None = None) -> str:
        f = self.figures(now)
        count = f"{self.done}/{self.total}" if self.total is not None else f"{self.done}"
        if self.total:
            count += f" ({100.0 * self.done / self.total:.1f}%)"
        rate, elapsed = f["progress_rate"], f["progress_elapsed_s"]
        text = f"{self.what}: {count}, {rate:.1f}/s, {elapsed} s elapsed"
        if "progress_left_s" in f:
            text += f", ~{f['progress_left_s']} s left"
        return text

    def _log(self, now: float, final: bool) -> None:
        self._last_line = now
        if self._logger is None:
            return
        self.lines += 1
        fields = self.figures(now) | {"progress_final": final}
        self._logger.info(self.line(now), extra=fields)

    def finish(self) -> None:
        if self._bar is None:
            self._log(self._clock(), final=True)


@contextlib.contextmanager
def progress(
    what: str,
    total: int | None = None,
    *,
    logger: logging.Logger | None = None,
    console: Any = None,
    every_seconds: float = DEFAULT_EVERY_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[Tracker]:
    """Track one long step: a rich bar on ``console`` (default: the one :func:`terminal` set)
    when it is a terminal, else log lines on ``logger`` (counts and rate; none when ``logger`` is
    None). The final line is written when the block ends without an error."""
    console = console if console is not None else _terminal.get()
    if console is not None and getattr(console, "is_terminal", False):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        with Progress(
            TextColumn(f"[bold]{what}[/bold]"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        ) as bar:
            yield Tracker(what, total, None, every_seconds, bar, clock)
        return
    tracker = Tracker(what, total, logger, every_seconds, None, clock)
    yield tracker
    tracker.finish()

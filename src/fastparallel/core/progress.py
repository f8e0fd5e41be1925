"""Progress reporting: a fastprogress bar, plain log lines, or a user callback.

The bar counts completed items. fastprogress (which pulls in a web framework) is
imported only when a bar is actually shown, never at ``import fastparallel``.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from fastparallel.options import ProgressCallback

__all__ = ["Progress", "in_notebook", "make_progress"]


class Progress(Protocol):
    def update(self, done: int) -> None: ...
    def comment(self, text: str) -> None:
        """Show ``text`` (such as "3 retried, 1 timed out") beside the count, from now on."""

    def close(self, ok: bool) -> None: ...


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where a bar should render as HTML)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:
        return False
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def _stdout_is_terminal() -> bool:
    try:
        return bool(sys.stdout.isatty())
    except (AttributeError, ValueError):
        return False


class CallbackProgress:
    """Calls ``callback(done, total)`` from the calling thread after each finished chunk."""

    def __init__(self, callback: ProgressCallback, total: int | None):
        self._callback = callback
        self._total = total

    def update(self, done: int) -> None:
        self._callback(done, self._total)

    def comment(self, text: str) -> None:
        pass  # a callback(done, total) has no place for it; the log has it (INFO)

    def close(self, ok: bool) -> None:
        pass


def _bar_class(notebook: bool) -> Any:
    """fastprogress's notebook (HTML) or console bar, imported on the first bar."""
    import warnings

    with warnings.catch_warnings():
        # fastprogress 1.0 imports matplotlib when it finds a notebook and, without it, warns
        # that bars fall back to the console: not so for ours, which picks NBProgressBar.
        warnings.filterwarnings("ignore", message="Couldn't import ipywidgets")
        from fastprogress.fastprogress import ConsoleProgressBar, NBProgressBar
    return NBProgressBar if notebook else ConsoleProgressBar


class BarProgress:
    """A fastprogress bar: HTML in a notebook, a redrawn line in a terminal."""

    min_interval = 0.1

    def __init__(self, total: int | None, notebook: bool):
        self._bar = _bar_class(notebook)(
            None, total=total if total is not None else "noinfer", leave=True
        )
        self._total = total
        self._last = 0.0
        self._done = 0
        self._bar.update(0)

    def comment(self, text: str) -> None:
        self._bar.comment = text  # fastprogress shows it after the count at the next redraw

    def update(self, done: int) -> None:
        self._done = done
        now = time.monotonic()
        if now - self._last >= self.min_interval or (
            self._total is not None and done >= self._total
        ):
            self._last = now
            self._bar.update(done)

    def close(self, ok: bool) -> None:
        if not ok:
            with contextlib.suppress(Exception):
                self._bar.on_interrupt()
            return
        if self._total is None:
            self._bar.total = self._done
        if self._bar.last_v is not None:  # fastprogress ends the bar itself when it reaches total
            self._bar.update(self._done)
        if not _stdout_is_terminal() or in_notebook():
            return
        print(flush=True)  # leave the finished bar on its own line


class LineProgress:
    """For logs and CI (no terminal): a few newline-terminated lines on stderr, no redraws."""

    milestones = (0.25, 0.5, 0.75)
    min_interval = 30.0

    def __init__(self, total: int | None):
        self._total = total
        self._start = self._last = time.monotonic()
        self._next_milestone = 0
        self._done = 0
        self._comment = ""

    def comment(self, text: str) -> None:
        self._comment = text

    def _line(self, done: int, final: bool = False) -> None:
        elapsed = time.monotonic() - self._start
        if self._total:
            text = f"fastparallel: {done}/{self._total} items ({100 * done / self._total:.0f}%) in {elapsed:.1f}s"
        else:
            text = f"fastparallel: {done} items in {elapsed:.1f}s"
        if self._comment:
            text += f" ({self._comment})"
        print(text + (" - done" if final else ""), file=sys.stderr, flush=True)

    def _passed_milestone(self, done: int) -> bool:
        """Whether ``done`` passed one or more milestones not reported yet (skips them)."""
        assert self._total
        passed = False
        while (
            self._next_milestone < len(self.milestones)
            and done >= self.milestones[self._next_milestone] * self._total
        ):
            self._next_milestone += 1
            passed = True
        return passed

    def update(self, done: int) -> None:
        self._done = done
        if self._total:
            if done < self._total and self._passed_milestone(done):
                self._line(done)
            return
        now = time.monotonic()
        if now - self._last >= self.min_interval:
            self._last = now
            self._line(done)

    def close(self, ok: bool) -> None:
        self._line(self._done, final=ok)


def make_progress(
    progress: bool | int | ProgressCallback | None, total: int | None
) -> Progress | None:
    """The reporter for ``progress=``: None, a callback, a bar, or plain lines."""
    if not progress:
        return None
    if callable(progress):
        return CallbackProgress(progress, total)
    notebook = in_notebook()
    if notebook or _stdout_is_terminal():
        return BarProgress(total, notebook)
    return LineProgress(total)

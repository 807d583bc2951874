"""Progress bars that suit where the output goes.

On a terminal a tqdm bar redraws itself with carriage returns and cursor moves; in a log
file those pile up as one unreadable line.  `bar` returns a tqdm bar when stderr is a
terminal and otherwise a `LineProgress`, which writes plain lines: one per step
(`lines="step"`, e.g. per epoch), one when the bar closes (`lines="close"`), or none
(`lines=None`, for bars nested inside one that already logs).
"""

from __future__ import annotations

import sys
import time
from typing import Iterable, Literal

Lines = Literal["step", "close"] | None


def on_terminal() -> bool:
    """Whether stderr (where the bars go) is an interactive terminal."""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def bar(iterable: Iterable | None = None, *, lines: Lines = "close", disable: bool = False, **kwargs):
    """A tqdm bar on a terminal, else a `LineProgress` writing `lines` (see the module
    docstring); `kwargs` are tqdm's (total, desc, unit, leave, initial, ...)."""
    if on_terminal():
        from tqdm.auto import tqdm

        return tqdm(iterable, disable=disable, **kwargs)
    return LineProgress(iterable, lines=None if disable else lines, **kwargs)


class LineProgress:
    """The part of tqdm's interface the call sites use (iteration, update, set_postfix,
    close), writing whole lines to stderr instead of redrawing."""

    def __init__(self, iterable: Iterable | None = None, *, lines: Lines = "close", total: int | None = None,
                 desc: str = "", unit: str = "it", initial: int = 0, **_ignored):
        self.iterable, self.lines, self.desc, self.unit = iterable, lines, desc, unit
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.n, self.postfix = total, initial, ""
        self.start, self.closed = time.perf_counter(), False

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update()
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.lines == "step":
            self._write()

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_description(self, desc: str = "", refresh: bool = True) -> None:
        self.desc = desc

    def close(self) -> None:
        if not self.closed and self.lines == "close":
            self._write()
        self.closed = True

    def _write(self) -> None:
        of = f"/{self.total}" if self.total is not None else ""
        elapsed = time.perf_counter() - self.start
        postfix = f", {self.postfix}" if self.postfix else ""
        label = f"{self.desc}: " if self.desc else ""
        print(f"{label}{self.n}{of} {self.unit} ({elapsed:.1f} s){postfix}", file=sys.stderr, flush=True)

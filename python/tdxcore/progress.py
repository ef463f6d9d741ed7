"""Progress on stderr: on a terminal a bar with the total and an ETA (tqdm, imported only when a
bar is shown, so commands start fast), elsewhere one plain line per item, and nothing when
quiet."""

from __future__ import annotations

import sys
from typing import Any, Optional


class Progress:
    """`total` items of `unit`; `step(what)` after each. `show`: True (a bar on a terminal, else
    lines), None (a bar on a terminal, else nothing: the library's default) or False."""

    def __init__(self, total: int, unit: str, show: Optional[bool] = None) -> None:
        self.total, self.unit, self.done = total, unit, 0
        tty = sys.stderr.isatty()
        self.bar: Any = None
        self.lines = bool(show) and not tty
        if show is not False and tty:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit=f" {unit}", file=sys.stderr, dynamic_ncols=True, leave=False)

    def step(self, what: str) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.set_postfix_str(what, refresh=False)
            self.bar.update(1)
        elif self.lines:
            print(f"  {self.done}/{self.total} {self.unit}: {what}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

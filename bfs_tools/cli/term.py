"""The terminal without click: rich consoles and the progress bar.

cli/output.py imports click (its SIZE parameter type); the commands that run
without click (cli/entry.py) take their progress bar from here. rich itself is
imported only when a console or a bar is shown. Names from disk are never
interpreted as markup.
"""

from __future__ import annotations

import os
import sys


def stdout_is_tty() -> bool:
    return sys.stdout.isatty()


def stderr_is_tty() -> bool:
    return sys.stderr.isatty()


_console = None
_err_console = None


def console():
    """A rich console on stdout that never interprets markup in our text."""
    global _console
    if _console is None:
        from rich.console import Console

        _console = Console(markup=False, highlight=False, emoji=False,
                           no_color=bool(os.environ.get("NO_COLOR")))
    return _console


def err_console():
    global _err_console
    if _err_console is None:
        from rich.console import Console

        _err_console = Console(stderr=True, markup=False, highlight=False, emoji=False,
                               no_color=bool(os.environ.get("NO_COLOR")))
    return _err_console


class Progress:
    """A rich progress bar on a terminal (stderr); nothing otherwise."""

    def __init__(self, description: str, total: int | None = None, enabled: bool | None = None):
        self.enabled = stderr_is_tty() if enabled is None else enabled
        self.description = description
        self.total = total
        self._progress = None
        self._task = None

    def __enter__(self) -> Progress:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
            )
            from rich.progress import (
                Progress as RichProgress,
            )

            self._progress = RichProgress(TextColumn("{task.description}"), BarColumn(),
                                          MofNCompleteColumn(), TimeElapsedColumn(),
                                          console=err_console(), transient=True)
            self._progress.__enter__()
            self._task = self._progress.add_task(self.description, total=self.total)
        return self

    def advance(self, n: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def update(self, *, completed: int | None = None, total: int | None = None,
               description: str | None = None) -> None:
        if self._progress is not None:
            kwargs = {}
            if completed is not None:
                kwargs["completed"] = completed
            if total is not None:
                kwargs["total"] = total
            if description is not None:
                kwargs["description"] = description
            self._progress.update(self._task, **kwargs)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

"""Output helpers shared by the commands: sizes, JSON, the console, progress.

Data goes to stdout, messages to stderr. rich is imported only when a terminal
needs it; names from disk are never interpreted as markup.
"""

from __future__ import annotations

import os
import re
import sys

import click

from ..errors import UsageError

_SUFFIX = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50,
           "e": 1 << 60}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmgtpe]?)(i?b)?\s*$", re.IGNORECASE)


def parse_size(text: str, what: str = "size") -> int:
    """`4096`, `4k`, `256M`, `1G`, `16T` (binary, case-insensitive; `KiB`/`KB` too)."""
    m = _SIZE_RE.match(str(text))
    if not m:
        raise UsageError(f"invalid {what} {text!r}: expected a number with an optional "
                         "suffix k, M, G, T")
    return int(m.group(1)) * _SUFFIX[m.group(2).lower()]


class SizeType(click.ParamType):
    name = "SIZE"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        try:
            return parse_size(value, param.name if param else "size")
        except UsageError as e:
            self.fail(str(e), param, ctx)


SIZE = SizeType()


def human(n: int) -> str:
    """Bytes with a binary unit: 1.5 MiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if abs(n) < 1024 or unit == "EiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}".replace(".0 ", " ")
        n /= 1024
    return str(n)


def emit_json(obj) -> None:
    # imported here: only --json output needs it, every command's start-up does not
    import json

    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def emit_json_line(obj) -> None:
    import json

    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")


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


def message(text: str) -> None:
    """A message for the user (stderr)."""
    click.echo(text, err=True)


def warn(text: str) -> None:
    click.echo(f"bfs: warning: {text}", err=True)


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

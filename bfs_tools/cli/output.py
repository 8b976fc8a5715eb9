"""Output helpers shared by the commands: sizes, JSON, messages; the consoles
and the progress bar (cli/term.py).

Data goes to stdout, messages to stderr. rich is imported only when a terminal
needs it; names from disk are never interpreted as markup.
"""

from __future__ import annotations

import re
import sys

import click

from ..errors import UsageError

# the terminal lives in a module without click (the commands cli/entry.py runs
# without it use it too); re-exported for the commands that import it from here
from .term import Progress, console, err_console, stderr_is_tty, stdout_is_tty  # noqa: F401

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


def message(text: str) -> None:
    """A message for the user (stderr)."""
    click.echo(text, err=True)


def warn(text: str) -> None:
    click.echo(f"bfs: warning: {text}", err=True)

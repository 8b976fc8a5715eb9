"""What the `bfs` executable needs before and without click: writing a line,
the error policy (one line `bfs: error: ...` and a documented exit code), and
the end of the process. cli/main.py applies the same policy to click commands.
"""

from __future__ import annotations

import os
import sys


def echo(text: str, err: bool = False) -> None:
    """click.echo(text, err=err) without importing click where it is not already:
    a line and a flush. A line holding an escape character goes through
    click.echo, which strips styles when the stream is not a terminal (names
    come from the image)."""
    if "\x1b" in text or "click" in sys.modules:
        click_echo = __import__("click").echo
        click_echo(text, err=err)
        return
    stream = sys.stderr if err else sys.stdout
    stream.write(text + "\n")
    stream.flush()


def error(message: str) -> None:
    echo(f"bfs: error: {message}", err=True)


def failure_code(e: BaseException, is_check: bool, debug: bool) -> int:
    """Report an exception a command raised and return its exit code: check's
    follow fsck(8) (8 operational error, 32 cancelled), the others
    bfs_tools/errors.py. Called from an `except` block; with `debug` a BfsError
    or a bug is re-raised (the traceback) instead."""
    from ..errors import BfsError

    if isinstance(e, BfsError):
        if debug:
            raise e
        error(str(e))
        return 8 if is_check else e.exit_code
    if isinstance(e, KeyboardInterrupt):
        error("interrupted")
        return 32 if is_check else 130
    if isinstance(e, BrokenPipeError):
        quiet_stdout()
        return 0
    if debug or not isinstance(e, Exception):
        raise e
    # a bug: say so in one line, no traceback unless asked
    error(f"internal error: {type(e).__name__}: {e} (run with BFS_DEBUG=1 for a traceback)")
    return 8 if is_check else 70


def flush_stdout() -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        quiet_stdout()


def quiet_stdout() -> None:
    """Point stdout at /dev/null: the reader went away (`bfs ls IMG | head`), and
    flushing what is left must not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


# what a command leaves for os._exit to drop with the process (exit_now)
_KEPT: list = []


def keep_until_exit(obj) -> None:
    """Keep obj alive until the process ends in exit_now: freeing a large image's
    objects one at a time (keys, nodes, cached inodes) is time spent for nothing
    when the process is about to go."""
    _KEPT.append(obj)


def exit_now(code: int) -> None:
    """Flush the output and leave without the interpreter's teardown. By then the
    image is closed and every file the command wrote is closed; what is left is
    freeing each object of a large check or copy one at a time (~25 ms for the
    standard library tree, ~50 ms of CPU for 100,000 files)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:
            if stream is sys.stdout:
                quiet_stdout()
        except ValueError:
            pass
    os._exit(code)

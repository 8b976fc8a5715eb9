"""The `bfs` executable. `check`, `cat` and `cp` with plain arguments run
without click; everything else is cli/main.py.

Importing click costs ~20 ms, a tenth of checking an image of the standard
library and a fifth of `cat`'s and `cp`'s start-up: `check` is what scripts and
boot sequences run most, `cat`'s bandwidth is compared with dd's and `cp`'s
time with `cp --reflink` on btrfs. Plain means what click would parse the same
way (cli/check_run.py check_args, cli/cat_run.py cat_args, cli/cp_run.py
cp_args); anything else (help, usage errors, interactive repairs) goes through
click, whose commands run the same functions. The error policy is the same
either way (cli/plain.py).
"""

from __future__ import annotations

import gc
import os
import signal
import sys


def entry() -> None:
    argv = sys.argv[1:]
    command = _plain_command(argv)
    if command is None:
        from .main import run

        code = run()
    else:
        # No cyclic garbage collection in this process: it is a short one that
        # ends in os._exit, the command's objects live to its end, and the
        # imports alone would trigger some 25 collections.
        gc.disable()
        code = _run_plain(*command)
    from .plain import exit_now

    exit_now(code)


def _plain_command(argv: list[str]):
    """(run: () -> exit code, is_check) for a plain `check`, `cat` or `cp`, else None."""
    if argv[:1] == ["check"]:
        from .check_run import check_args, run_check

        parsed = check_args(argv[1:])
        if parsed is not None:
            image, kw = parsed
            return (lambda: run_check(image, **kw)), True
    elif argv[:1] == ["cat"]:
        from .cat_run import cat_args, run_cat

        parsed = cat_args(argv[1:])
        if parsed is not None:
            return (lambda: run_cat(*parsed)), False
    elif argv[:1] == ["cp"]:
        from .cp_run import cp_args, run_cp

        parsed = cp_args(argv[1:])
        if parsed is not None:
            image, src_path, dst_path, kw = parsed
            return (lambda: run_cp(image, src_path, dst_path, **kw, ends_process=True)), False
    return None


def _run_plain(run, is_check: bool) -> int:
    from .plain import failure_code, flush_stdout

    # `bfs cat IMG F | head`: end quietly when the reader goes away, like coreutils
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    debug = bool(os.environ.get("BFS_DEBUG"))
    try:
        code = run()
    except (Exception, KeyboardInterrupt) as e:
        code = failure_code(e, is_check, debug)
    flush_stdout()
    return code

"""The `bfs` executable: `bfs check` with plain arguments runs without click;
everything else is cli/main.py.

Importing click costs ~20 ms, a tenth of checking an image of the standard
library, and `check` is what scripts and boot sequences run most
(fsck/command.py). The error policy is main.py's, for a check: one line
`bfs: error: ...` and the fsck(8) exit codes (BFS_DEBUG=1: the traceback).
"""

from __future__ import annotations

import gc
import os
import signal
import sys


def entry() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["check"]:
        from ..fsck.command import fast_args

        parsed = fast_args(argv[1:])
        if parsed is not None:
            # No cyclic garbage collection in this process: it is a short one
            # that ends in os._exit, the check's objects live to its end (the
            # collector is off during the check anyway: bfs_tools/gcpause.py) and
            # the imports alone would trigger some 25 collections.
            gc.disable()
            code = _run_check(*parsed)
            _flush()
            os._exit(code)   # (why not the interpreter's teardown: main.entry)
    from .main import entry as main_entry

    main_entry()


def _run_check(image: str, kw: dict) -> int:
    from ..errors import BfsError
    from ..fsck.command import echo, run_check

    # `bfs check IMG | head`: end quietly when the reader goes away, like coreutils
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    debug = bool(os.environ.get("BFS_DEBUG"))
    try:
        return run_check(image, **kw)
    except BfsError as e:
        if debug:
            raise
        echo(f"bfs: error: {e}", err=True)
        return 8
    except KeyboardInterrupt:
        echo("bfs: error: interrupted", err=True)
        return 32
    except BrokenPipeError:
        _quiet_stdout()
        return 0
    except Exception as e:  # a bug: say so in one line, no traceback unless asked
        if debug:
            raise
        echo(f"bfs: error: internal error: {type(e).__name__}: {e} (run with BFS_DEBUG=1 "
             "for a traceback)", err=True)
        return 8


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:
            if stream is sys.stdout:
                _quiet_stdout()
        except ValueError:
            pass


def _quiet_stdout() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
